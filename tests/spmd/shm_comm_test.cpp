// ShmComm and spmd::run with real forked ranks: the shared test bodies (comm_bodies.hpp,
// also run under mpirun against MpiComm), then what only the shared-memory backend
// promises: a rank that throws or is killed ends every other rank's wait with peer_dead,
// run() reports which rank failed and why, and nothing is left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/run.hpp"
#include "leak_check.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ShmCommTest = testing::LeakCheckedTest;
using testing::error_of;

template <class F>
std::optional<spmd::RunError> run_error_of(int n, F&& fn) {
  try {
    spmd::run(n, fn);
  } catch (const spmd::RunError& e) {
    return e;
  }
  return std::nullopt;
}

TEST_F(ShmCommTest, RankThatThrowsIsReportedAndTheOthersEndWithPeerDead) {
  const auto err = run_error_of(4, [](Comm& c) {
    if (c.rank() == 2) throw std::runtime_error("rank two gives up");
    c.barrier();  // the others wait here for rank 2
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), make_error_code(errc::child_failed));
  EXPECT_EQ(err->failed_rank(), 2);
  EXPECT_NE(std::string(err->what()).find("rank two gives up"), std::string::npos) << err->what();
  for (const auto& r : err->ranks()) {
    if (r.rank == 2) continue;
    EXPECT_TRUE(r.peer_dead) << "rank " << r.rank << ": " << r.error;
  }
}

TEST_F(ShmCommTest, RankKilledWhileOthersWaitInRecvAndBarrier) {
  // Rank 1 records its pid and sleeps; the test kills it. Rank 0 waits in recv from it,
  // ranks 2 and 3 in a barrier.
  SharedArray<pid_t> pid(1);
  std::thread killer([&] {
    for (int i = 0; i < 5000 && __atomic_load_n(&pid[0], __ATOMIC_ACQUIRE) == 0; ++i)
      std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);
    ::kill(__atomic_load_n(&pid[0], __ATOMIC_ACQUIRE), SIGKILL);
  });
  const auto err = run_error_of(4, [&](Comm& c) {
    if (c.rank() == 1) {
      __atomic_store_n(&pid[0], ::getpid(), __ATOMIC_RELEASE);
      std::this_thread::sleep_for(60s);
    } else if (c.rank() == 0) {
      int v = 0;
      c.recv(1, std::span(&v, 1));
    } else {
      c.barrier();
    }
  });
  killer.join();
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1);
  EXPECT_TRUE(err->ranks()[1].status.signaled());
  EXPECT_EQ(err->ranks()[1].status.value, SIGKILL);
  for (int r : {0, 2, 3}) EXPECT_TRUE(err->ranks()[static_cast<std::size_t>(r)].peer_dead) << r;
}

// What a rank sent before it died still arrives; then the next receive fails.
TEST_F(ShmCommTest, MessagesSentBeforeARankDiesStillArrive) {
  const auto err = run_error_of(2, [](Comm& c) {
    if (c.rank() == 1) {
      for (int i = 0; i < 10; ++i) c.send(0, std::span<const int>(&i, 1));
      ::_exit(9);  // dies without a word
    }
    for (int i = 0; i < 10; ++i) {
      int v = -1;
      c.recv(1, std::span(&v, 1));
      if (v != i) throw std::runtime_error("message " + std::to_string(i) + " lost");
    }
    int more = 0;
    c.recv(1, std::span(&more, 1));  // peer_dead
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1);
  EXPECT_TRUE(err->ranks()[0].peer_dead) << err->ranks()[0].error;
}

TEST_F(ShmCommTest, BadInputIsRejectedWithSpecificErrors) {
  EXPECT_EQ(error_of([] { spmd::run(0, [](Comm&) {}); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { spmd::run(2, [](Comm&) {}, {.ring_bytes = 1000, .spin = {}}); }),
            errc::invalid_argument);
  spmd::run(2, [](Comm& c) {
    const auto expect = [&](errc want, auto&& f) {
      if (error_of(f) != want) throw std::runtime_error("expected another error code");
    };
    int v = 0;
    expect(errc::invalid_argument, [&] { c.send(2, std::span<const int>(&v, 1)); });
    expect(errc::invalid_argument, [&] { c.recv(-1, std::span(&v, 1)); });
    expect(errc::invalid_argument, [&] { (void)c.broadcast(v, 5); });
    // A receive of the wrong size fails and consumes the message; the next one is fine.
    if (c.rank() == 0) {
      const std::int64_t big = 7;
      c.send(1, std::span<const std::int64_t>(&big, 1));
      c.send(1, std::span<const int>(&v, 1));
    } else {
      expect(errc::size_mismatch, [&] { c.recv(0, std::span(&v, 1)); });
      c.recv(0, std::span(&v, 1));
    }
    // Collectives whose ranks pass different sizes: every rank learns it.
    std::vector<double> mine(c.rank() == 0 ? 3 : 4, 1.0);
    expect(errc::size_mismatch, [&] { c.broadcast(std::span(mine), 0); });
  });
}

// A collective one rank never joins: the others end with peer_dead once it has exited.
TEST_F(ShmCommTest, ACollectiveOneRankSkipsEndsWithPeerDead) {
  const auto err = run_error_of(3, [](Comm& c) {
    if (c.rank() != 0) c.barrier();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->ranks()[1].peer_dead);
  EXPECT_TRUE(err->ranks()[2].peer_dead);
  EXPECT_TRUE(err->ranks()[0].status.success());
}

}  // namespace
}  // namespace ipckit
