// Start methods. Under the default, StartMethod::forkserver, workers come from a helper that
// was exec'd from the program and never ran main: a lock another thread of the caller holds
// when the pool starts is not held in the workers, a global is as static initialisation left
// it, and only stdin/stdout/stderr are inherited. StartMethod::fork keeps the caller's memory.
// The helper is a real process, killed here with SIGKILL; its workers go with it and the pool
// makes another.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ipckit/core/process.hpp"
#include "ipckit/pool/pool.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using PoolStartTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;

std::mutex g_lock;  // constant-initialised: unlocked in every fresh image of the program
int g_value = 1;    // the tests set it to 2 in the caller
int g_inited = 0;   // set by initializers, in the workers

int locked_square(int x) {
  const std::lock_guard lk(g_lock);
  return x * x;
}
int read_value(int) { return g_value; }
int read_inited(int) { return g_inited; }
void init_to_42() { g_inited = 42; }
int allocate_and_sum(int x) {
  std::vector<int> v(static_cast<std::size_t>(x % 64) + 1, x);
  return std::accumulate(v.begin(), v.end(), 0);
}

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

pid_t parent_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = s.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(s.substr(close + 2));
  char state;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

bool all_gone(const std::vector<pid_t>& pids) {
  return eventually([&] {
    return std::none_of(pids.begin(), pids.end(), [](pid_t p) { return process_alive(p); });
  });
}

// A thread that holds g_lock from construction until destruction.
class LockHolder {
 public:
  LockHolder() {
    std::promise<void> held;
    auto f = held.get_future();
    t_ = std::thread([this, &held] {
      const std::lock_guard lk(g_lock);
      held.set_value();
      while (!release_.load()) std::this_thread::sleep_for(1ms);
    });
    f.wait();
  }
  ~LockHolder() {
    release_ = true;
    t_.join();
  }
  LockHolder(const LockHolder&) = delete;
  LockHolder& operator=(const LockHolder&) = delete;

 private:
  std::atomic<bool> release_{false};
  std::thread t_;
};

// The case: a background thread holds the lock every task takes while the pool starts
// (and while it runs). With no option set, all 200 tasks finish.
TEST_F(PoolStartTest, APoolMadeWhileAnotherThreadHoldsALockItsTasksTakeFinishes) {
  const LockHolder holder;
  Pool pool{2};
  const auto got = pool.map(locked_square, iota_vec(200));
  ASSERT_EQ(got.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
}

// Replacement workers come from the helper too: still no lock held in them.
TEST_F(PoolStartTest, ReplacementWorkersDoNotInheritTheLockEither) {
  const LockHolder holder;
  PoolOptions o;
  o.processes = 2;
  o.maxtasksperchild = 1;
  Pool pool{o};
  const auto got = pool.map(locked_square, iota_vec(20), 1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
  std::uint64_t restarts = 0;
  for (const auto& s : pool.stats()) restarts += s.restarts;
  EXPECT_GE(restarts, 18u);
}

// Threads inside malloc and free while pools start and run tasks that allocate.
TEST_F(PoolStartTest, PoolsStartWhileOtherThreadsAllocate) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> churn;
  for (int t = 0; t < 2; ++t) {
    churn.emplace_back([&stop, t] {
      std::uint64_t x = static_cast<std::uint64_t>(t) + 1;
      while (!stop.load(std::memory_order_relaxed)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        void* p = std::malloc(static_cast<std::size_t>(x >> 52) + 1);
        std::free(p);
      }
    });
  }
  for (int round = 0; round < 5; ++round) {
    Pool pool{2};
    const auto got = pool.map(allocate_and_sum, iota_vec(100));
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(got[static_cast<std::size_t>(i)], i * (i % 64 + 1)) << "round " << round;
    }
  }
  stop = true;
  for (auto& t : churn) t.join();
}

TEST_F(PoolStartTest, ForkserverWorkersSeeGlobalsAsStaticInitialisationLeftThem) {
  g_value = 2;
  {
    Pool pool{1};
    EXPECT_EQ(pool.apply(read_value, 0), 1);
  }
  {
    PoolOptions o;
    o.processes = 1;
    o.start = StartMethod::fork;
    Pool pool{o};
    EXPECT_EQ(pool.apply(read_value, 0), 2);
  }
  g_value = 1;
}

TEST_F(PoolStartTest, ForkserverRunsPortableInitializers) {
  {
    PoolOptions o;
    o.processes = 2;
    o.initializer = init_to_42;
    Pool pool{o};
    for (int v : pool.map(read_inited, iota_vec(10))) EXPECT_EQ(v, 42);
  }
  {
    PoolOptions o;
    o.processes = 2;
    o.initializer = [v = 7] { g_inited = v; };
    Pool pool{o};
    for (int v : pool.map(read_inited, iota_vec(10))) EXPECT_EQ(v, 7);
  }
}

TEST_F(PoolStartTest, AnInitializerThatCannotCrossIsRefusedUnderForkserverOnly) {
  const std::string text = "eleven";
  PoolOptions o;
  o.processes = 1;
  o.initializer = [text] { g_inited = static_cast<int>(text.size()); };
  try {
    Pool pool{o};
    FAIL() << "a lambda capturing a std::string was accepted under forkserver";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument));
    EXPECT_NE(std::string(e.what()).find("StartMethod::fork"), std::string::npos) << e.what();
  }
  o.start = StartMethod::fork;
  Pool pool{o};
  EXPECT_EQ(pool.apply(read_inited, 0), 6);
}

// Opened descriptors stay with the caller (a worker of the helper has 0, 1, 2 and its own).
TEST_F(PoolStartTest, ForkserverWorkersDoNotInheritOpenDescriptors) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);  // not close-on-exec
  const auto open_in_worker = [fd = p[0]](int) { return ::fcntl(fd, F_GETFD) >= 0 ? 1 : 0; };
  {
    Pool pool{1};
    EXPECT_EQ(pool.apply(open_in_worker, 0), 0);
  }
  {
    PoolOptions o;
    o.processes = 1;
    o.start = StartMethod::fork;
    Pool pool{o};
    EXPECT_EQ(pool.apply(open_in_worker, 0), 1);
  }
  ::close(p[0]);
  ::close(p[1]);
}

// SIGKILL to the helper takes its workers (parent-death signal); the pool notices, starts
// another helper and goes on, running again the chunks the dead workers had begun.
TEST_F(PoolStartTest, KillingTheHelperLosesNoTask) {
  PoolOptions o;
  o.processes = 2;
  o.task_retries = 2;
  Pool pool{o};
  EXPECT_EQ(pool.apply(locked_square, 3), 9);
  std::vector<pid_t> workers;
  for (const auto& s : pool.stats()) workers.push_back(s.pid);
  const pid_t helper = parent_of(workers[0]);
  ASSERT_GT(helper, 1);
  ASSERT_NE(helper, ::getpid());
  EXPECT_EQ(parent_of(workers[1]), helper);

  auto slow = pool.map_async(
      [](int x) {
        std::this_thread::sleep_for(20ms);
        return x + 1;
      },
      iota_vec(40), {.chunksize = 1});
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  EXPECT_TRUE(all_gone(workers));
  const auto got = slow.get();
  for (int i = 0; i < 40; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i + 1);
  EXPECT_EQ(pool.map(locked_square, iota_vec(10))[9], 81);
  const pid_t now = pool.stats()[0].pid;
  EXPECT_NE(parent_of(now), helper);
}

// The helper and the workers go when the process that made the pool is killed.
TEST_F(PoolStartTest, HelperAndWorkersDieWithTheirParent) {
  SharedArray<pid_t> info(3);  // two workers, the helper
  Process child = Process::spawn([&info] {
    Pool pool{2};
    (void)pool.apply(locked_square, 1);
    const auto st = pool.stats();
    info[0] = st[0].pid;
    info[1] = st[1].pid;
    __atomic_store_n(&info[2], parent_of(st[0].pid), __ATOMIC_RELEASE);
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return __atomic_load_n(&info[2], __ATOMIC_ACQUIRE) != 0; }));
  const std::vector<pid_t> pids{info[0], info[1], info[2]};
  for (pid_t p : pids) EXPECT_TRUE(process_alive(p));
  child.kill(SIGKILL);
  (void)child.wait();
  EXPECT_TRUE(all_gone(pids));
}

// A pool stops its helper: none is left behind (the fixture checks descriptors and children).
TEST_F(PoolStartTest, StoppingThePoolStopsItsHelper) {
  pid_t helper = -1;
  {
    Pool pool{1};
    EXPECT_EQ(pool.apply(locked_square, 4), 16);
    helper = parent_of(pool.stats()[0].pid);
    ASSERT_GT(helper, 1);
    pool.close();
    pool.join();
  }
  EXPECT_TRUE(all_gone({helper}));
}

// A fork pool's worker keeps a copy of every descriptor the caller had when it was forked,
// the forkserver pool's socket among them: stopping that pool must not wait for it.
TEST_F(PoolStartTest, AForkserverPoolStopsWhileAForkPoolsWorkersHoldItsSocket) {
  auto served = std::make_unique<Pool>(2);
  EXPECT_EQ(served->apply(locked_square, 2), 4);
  PoolOptions o;
  o.processes = 1;
  o.start = StartMethod::fork;
  Pool forked{o};
  served.reset();  // returns: the helper saw the end of its stream
  EXPECT_EQ(forked.apply(locked_square, 3), 9);
}

// The caller ignores SIGCHLD (the kernel then reaps its children itself): the helper starts
// with default dispositions, so it still reaps its workers and reports how they ended.
TEST_F(PoolStartTest, ACallerThatIgnoresSigchldStillGetsWorkerLostWithTheExitCode) {
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGCHLD, &ign, &old), 0);
  {
    Pool pool{1};
    try {
      (void)pool.apply([](int) -> int { ::_exit(7); }, 0);
      ADD_FAILURE() << "no WorkerLost";
    } catch (const WorkerLost& e) {
      // Only a helper that reaped it knows the code (a lost status reads as SIGKILL).
      EXPECT_FALSE(e.status().signaled());
      EXPECT_EQ(e.status().value, 7);
    }
    EXPECT_EQ(pool.apply(locked_square, 5), 25);
  }
  ASSERT_EQ(::sigaction(SIGCHLD, &old, nullptr), 0);
}

}  // namespace
}  // namespace ipckit
