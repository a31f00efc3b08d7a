// mpi::Pool under mpirun (ctest runs it with -np 3 and -np 4, and once without mpirun, where
// the pool is a local one): every rank runs every test, and every test makes its pools
// first, on every rank (the constructor is collective); the worker ranks serve inside it and
// return, so only rank 0 goes on to check. Tasks and results are counted and checksummed.
#include "ipckit/pool/mpi_pool.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../support/mpi_test_main.hpp"
#include "../support/test_util.hpp"
#include "ipckit/core/cpu_count.hpp"
#include "ipckit/pool/exceptions.hpp"
#include "ipckit/spmd/mpi_comm.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
namespace mpi = ipckit::mpi;
using namespace std::chrono_literals;

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}
std::size_t expected_workers() {
  return world_size() > 1 ? static_cast<std::size_t>(world_size() - 1) : ipckit::cpu_count();
}

std::int64_t square(std::int64_t x) { return x * x; }
int add(int a, int b) { return a + b; }
pid_t my_pid(int) { return ::getpid(); }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int throws_on_7(int x) {
  if (x == 7) throw std::runtime_error("seven is bad");
  return x;
}

struct Overdrawn : std::runtime_error {
  Overdrawn() : std::runtime_error("overdrawn") {}
  explicit Overdrawn(int b) : std::runtime_error("overdrawn"), balance(b) {}
  int balance = 0;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(balance);
  }
};
int withdraw(int x) { throw Overdrawn(-x); }

int g_initialised = 0;  // set by the initializer on each worker rank

TEST(MpiPool, MapMatchesASerialLoopAtEveryChunksize) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  EXPECT_EQ(pool.size(), expected_workers());
  std::vector<std::int64_t> in(5000);
  std::iota(in.begin(), in.end(), -2500);
  std::vector<std::int64_t> want;
  for (auto x : in) want.push_back(square(x));
  EXPECT_EQ(pool.map(square, in), want);
  EXPECT_EQ(pool.map(square, in, 1), want);
  EXPECT_EQ(pool.map(square, in, 777), want);
  pool.close();
  pool.join();
}

TEST(MpiPool, StarmapImapUnorderedApplyAndSubmit) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 300; ++i) pairs.emplace_back(i, 2 * i);
  const std::vector<int> sums = pool.starmap(add, pairs);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(sums[static_cast<std::size_t>(i)], 3 * i);

  std::vector<std::int64_t> in(400);
  std::iota(in.begin(), in.end(), 0);
  std::vector<std::int64_t> ordered;
  for (std::int64_t r : pool.imap(square, in, 3)) ordered.push_back(r);
  ASSERT_EQ(ordered.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) EXPECT_EQ(ordered[i], square(in[i]));
  std::multiset<std::int64_t> unordered;
  for (std::int64_t r : pool.imap_unordered(square, in)) unordered.insert(r);
  EXPECT_EQ(unordered, std::multiset<std::int64_t>(ordered.begin(), ordered.end()));

  EXPECT_EQ(pool.apply(add, 20, 22), 42);
  std::vector<ipckit::AsyncResult<int>> futures;
  for (int i = 0; i < 50; ++i) futures.push_back(pool.submit(add, i, 1000));
  std::multiset<int> seen;
  for (auto& f : ipckit::as_completed(futures)) seen.insert(f.get());
  std::multiset<int> want;
  for (int i = 0; i < 50; ++i) want.insert(i + 1000);
  EXPECT_EQ(seen, want);
  EXPECT_TRUE(ipckit::wait_all(futures, 10s));
  pool.close();
  pool.join();
}

TEST(MpiPool, StringsAndVectorsCrossThroughTheCodec) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<std::string> words;
  for (int i = 0; i < 500; ++i)
    words.push_back(std::string(static_cast<std::size_t>(i % 37), 'a' + i % 26));
  const int base = 3;
  const auto out = pool.map(
      [base](const std::string& s) {
        return std::vector<int>(s.size(), base + static_cast<int>(s.size()));
      },
      words, 11);
  ASSERT_EQ(out.size(), words.size());
  for (std::size_t i = 0; i < words.size(); ++i) {
    EXPECT_EQ(out[i], std::vector<int>(words[i].size(), base + static_cast<int>(words[i].size())));
  }
}

TEST(MpiPool, TasksRunOnTheWorkerRanksAndStatsCountEveryChunk) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<int> in(2000, 0);
  const auto pids = pool.map(my_pid, in, 1);
  std::set<pid_t> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.count(::getpid()), 0U) << "a task ran on the driving rank";
  const auto stats = pool.stats();
  ASSERT_EQ(stats.size(), pool.size());
  std::uint64_t chunks = 0, items = 0;
  std::set<pid_t> stat_pids;
  for (const auto& s : stats) {
    chunks += s.tasks;
    items += s.items;
    stat_pids.insert(s.pid);
  }
  EXPECT_EQ(items, in.size());
  EXPECT_EQ(chunks, in.size());
  for (pid_t p : distinct) EXPECT_EQ(stat_pids.count(p), 1U);
}

TEST(MpiPool, ATaskExceptionIsARemoteErrorNamingRankAndHost) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<int> in(20);
  std::iota(in.begin(), in.end(), 0);
  try {
    (void)pool.map(throws_on_7, in, 1);
    FAIL() << "no error";
  } catch (const ipckit::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "std::runtime_error");
    EXPECT_EQ(e.message(), "seven is bad");
    if (world_size() > 1) {
      EXPECT_NE(e.where().find("rank "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(" on "), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(pool.apply(add, 1, 2), 3) << "the pool goes on";
}

TEST(MpiPool, ARegisteredExceptionComesBackAsItself) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  try {
    (void)pool.apply(withdraw, 25);
    FAIL() << "no error";
  } catch (const Overdrawn& e) {
    EXPECT_EQ(e.balance, -25);
  }
}

TEST(MpiPool, OneMillionTrivialTasksChunkedNoneLostNoneDuplicated) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<std::int64_t> in(1'000'000);
  std::iota(in.begin(), in.end(), 1);
  const auto out = pool.map(square, in);
  ASSERT_EQ(out.size(), in.size());
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], square(in[i])) << i;
    sum += out[i] % 1000003;
  }
  std::int64_t want = 0;
  for (auto x : in) want += square(x) % 1000003;
  EXPECT_EQ(sum, want);
}

TEST(MpiPool, ATimeoutFailsTheChunkAndThePoolGoesOn) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  auto slow = pool.apply_async(sleep_ms, std::tuple{400}, {.timeout = 50ms});
  try {
    (void)std::move(slow).get();
    FAIL() << "no timeout";
  } catch (const ipckit::TaskTimeout& e) {
    EXPECT_TRUE(e.is(errc::timeout));
  }
  std::vector<int> in(100, 1);
  EXPECT_EQ(pool.map(sleep_ms, in, 1), in);
  pool.close();
  pool.join();  // waits for the rank that still runs the slow task
}

// Blocks on input 7 until a file exists; returns its input otherwise.
struct StuckOn7 {
  char flag[128];
  int operator()(int x) const {
    while (x == 7 && ::access(flag, F_OK) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return x;
  }
};

void release(const char* flag) {  // lets the stuck rank go on
  const int fd = ::open(flag, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
}

TEST(MpiPool, ChunksQueuedBehindATimedOutOneRunElsewhere) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  StuckOn7 f{};
  std::snprintf(f.flag, sizeof f.flag, "/tmp/ipckit-mpi-pool-test-%d",
                static_cast<int>(::getpid()));
  ::unlink(f.flag);
  std::vector<int> in(400);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> got;
  int timeouts = 0;
  auto it = pool.imap(f, in, {.chunksize = 1, .timeout = 100ms});
  for (;;) {
    try {
      auto r = it.next();
      if (!r) break;
      got.push_back(*r);
    } catch (const ipckit::TaskTimeout&) {
      ++timeouts;
      if (world_size() == 2) release(f.flag);  // one worker rank: nowhere else to run them
    }
  }
  // Every other input came back, although the rank running 7 is still stuck in it (and the
  // chunks queued behind 7 on that rank had to move: waiting for them would hang here). With
  // one worker rank they were skipped there and sent again once it was free.
  EXPECT_EQ(timeouts, 1);
  std::vector<int> want;
  for (int x : in) {
    if (x != 7) want.push_back(x);
  }
  EXPECT_EQ(got, want);
  release(f.flag);
  pool.close();
  pool.join();
  ::unlink(f.flag);
}

TEST(MpiPool, CancelDropsChunksNotBegun) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  std::vector<int> in(400, 10);  // 4 s of work on one rank
  auto ar = pool.map_async(sleep_ms, in, {.chunksize = 1});
  std::this_thread::sleep_for(30ms);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(ar.cancel());
  const auto e = ipckit::testing::caught<Error>([&] { (void)ar.get(); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::cancelled)) << e->what();
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  pool.close();
  pool.join();
  // The chunks queued ahead on the ranks still run; the 400 - queued others do not.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST(MpiPool, TheInitializerRunsOnEveryWorkerRank) {
  mpi::Pool pool({.initializer = [] { g_initialised = 42; }});
  if (!pool.is_driver()) return;
  std::vector<int> in(64, 0);
  const auto got = pool.map([](int) { return g_initialised; }, in, 1);
  EXPECT_EQ(got, std::vector<int>(64, 42));
}

TEST(MpiPool, AnInitializerThatThrowsBreaksThePoolNamingTheRank) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const bool fails = rank == 1 || world_size() == 1;  // one rank, or the local workers
  mpi::Pool pool({.initializer = [fails] {
    if (fails) throw std::runtime_error("no device");
  }});
  if (!pool.is_driver()) return;
  std::vector<int> in(50, 1);
  const auto e = ipckit::testing::caught<Error>([&] {
    for (;;) (void)pool.map(sleep_ms, in, 1);  // until the driver has seen the failure
  });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::child_failed)) << e->what();
  EXPECT_NE(std::string(e->what()).find("no device"), std::string::npos) << e->what();
  if (world_size() > 1) {
    EXPECT_NE(std::string(e->what()).find("rank 1"), std::string::npos) << e->what();
  }
}

TEST(MpiPool, TerminateWhileTasksRunThenANewPoolStartsClean) {
  {
    mpi::Pool pool;
    if (pool.is_driver()) {
      std::vector<int> in(200, 20);
      auto ar = pool.map_async(sleep_ms, in, {.chunksize = 1});
      std::this_thread::sleep_for(50ms);
      pool.terminate();
      const auto e = ipckit::testing::caught<Error>([&] { (void)ar.get(); });
      EXPECT_TRUE(e && e->is(errc::closed));
    }
  }
  mpi::Pool next;
  if (!next.is_driver()) return;
  std::vector<std::int64_t> in(1000);
  std::iota(in.begin(), in.end(), 0);
  const auto out = next.map(square, in, 1);
  for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], square(in[i]));
}

TEST(MpiPool, RankZeroDrivesOnePoolAtATime) {
  mpi::Pool pool;
  if (!pool.is_driver()) return;
  if (world_size() > 1) {
    const auto e = ipckit::testing::caught<Error>([] { mpi::Pool second; });
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->is(errc::invalid_argument)) << e->what();
  }
  EXPECT_EQ(pool.apply(add, 4, 5), 9) << "the first one goes on";
}

TEST(MpiPool, AWorkerRanksPoolRefusesCalls) {
  mpi::Pool pool;
  if (pool.is_driver()) {
    EXPECT_EQ(pool.rank(), 0);
    return;
  }
  EXPECT_EQ(pool.size(), 0U);
  const auto e1 =
      ipckit::testing::caught<Error>([&] { (void)pool.map(square, std::vector<std::int64_t>{1}); });
  EXPECT_TRUE(e1 && e1->is(errc::invalid_argument));
  const auto e2 = ipckit::testing::caught<Error>([&] { pool.close(); });
  EXPECT_TRUE(e2 && e2->is(errc::invalid_argument));
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Environment env(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  ipckit::register_exception<Overdrawn>();
  return ipckit::testing::run_mpi_tests("mpi_pool_test", 120);
}
