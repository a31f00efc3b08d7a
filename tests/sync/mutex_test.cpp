#include "ipckit/sync/mutex.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using Flag = std::atomic<std::uint32_t>;
using MutexTest = testing::LeakCheckedTest;
using testing::eventually;

static_assert(std::is_trivially_destructible_v<Mutex>, "Segment::make<Mutex> needs this");

// Shared state for the tests: the mutex, the data it guards and flags for the handshakes.
struct Shared {
  Mutex mutex;
  std::uint64_t data = 0;  // guarded by mutex; deliberately not atomic
  Flag locked{0};          // the child holds the mutex
  Flag release{0};         // the parent asks the child to unlock
  Flag go{0};              // start gate
};

// Spawns a child that locks m, sets `data` to a half-updated value, raises `locked` and then
// never unlocks: it sleeps until killed.
Process spawn_holder_that_hangs(Shared& s) {
  return Process::spawn([&s] {
    if (s.mutex.lock()) return 1;
    s.data = 0xdead;  // the "half-updated" state the next owner must repair
    s.locked.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
}

// Kills the holder with SIGKILL once it holds the mutex, and reaps it.
void kill_holder(Process& holder, Shared& s) {
  ASSERT_TRUE(eventually([&] { return s.locked.load(std::memory_order_acquire) == 1; }))
      << "the child never took the mutex";
  holder.kill(SIGKILL);
  const ExitStatus st = holder.wait();
  ASSERT_TRUE(st.signaled()) << st.describe();
}

TEST_F(MutexTest, EightProcessesIncrementPlainCounterExactly) {
  constexpr int kProcs = 8;
  constexpr int kIters = 100'000;
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto kids = testing::spawn_n(kProcs, [&](int) {
    testing::wait_for_start(s.go);
    for (int i = 0; i < kIters; ++i) {
      if (s.mutex.lock()) return 1;
      s.data = s.data + 1;
      s.mutex.unlock();
    }
    return 0;
  });
  s.go.store(1, std::memory_order_release);
  ASSERT_TRUE(testing::all_succeed(kids, 60s));
  EXPECT_EQ(s.data, std::uint64_t{kProcs} * kIters);
}

TEST_F(MutexTest, WorksWithLockGuard) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  {
    std::lock_guard<Mutex> guard(s.mutex);
    auto child = Process::spawn([&] { return s.mutex.try_lock() ? 1 : 0; });
    const auto st = child.wait_for(10s);
    ASSERT_TRUE(st.has_value());
    EXPECT_TRUE(st->success()) << "try_lock succeeded while the lock_guard held the mutex";
  }
  auto child = Process::spawn([&] {
    if (!s.mutex.try_lock()) return 1;
    s.mutex.unlock();
    return 0;
  });
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success()) << "the lock_guard did not unlock";
}

TEST_F(MutexTest, WorksWithUniqueLock) {
  Mutex m;
  std::unique_lock<Mutex> lock(m, std::try_to_lock);
  EXPECT_TRUE(lock.owns_lock());
  lock.unlock();
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

TEST_F(MutexTest, NextLockerGetsOwnerDeadAfterOwnerIsKilled) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto holder = spawn_holder_that_hangs(s);
  kill_holder(holder, s);
  if (HasFatalFailure()) return;

  EXPECT_EQ(s.mutex.lock(), errc::owner_dead);
  // We hold it: another process cannot take it, and the data is there to be repaired.
  auto probe = Process::spawn([&] { return s.mutex.try_lock() ? 1 : 0; });
  EXPECT_TRUE(probe.wait().success()) << "the recovered mutex was not held by the recoverer";
  EXPECT_EQ(s.data, 0xdeadu);
  s.data = 1;
  s.mutex.unlock();

  EXPECT_EQ(s.mutex.lock(), std::error_code{}) << "the mutex must be consistent again";
  EXPECT_EQ(s.data, 1u);
  s.mutex.unlock();
  auto other = Process::spawn([&] {
    if (s.mutex.lock()) return 1;
    s.data += 1;
    s.mutex.unlock();
    return 0;
  });
  EXPECT_TRUE(other.wait().success());
  EXPECT_EQ(s.data, 2u);
}

TEST_F(MutexTest, LockerBlockedWhileOwnerIsKilledGetsOwnerDead) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto holder = spawn_holder_that_hangs(s);
  ASSERT_TRUE(eventually([&] { return s.locked.load() == 1; }));
  auto waiter = Process::spawn([&] {
    s.go.store(1, std::memory_order_release);
    const std::error_code ec = s.mutex.lock();  // blocks until the holder dies
    s.mutex.unlock();
    return ec == errc::owner_dead ? 0 : 1;
  });
  ASSERT_TRUE(eventually([&] { return s.go.load() == 1; }));
  std::this_thread::sleep_for(10ms);  // let the waiter block in lock()
  holder.kill(SIGKILL);
  EXPECT_TRUE(holder.wait().signaled());
  const auto st = waiter.wait_for(10s);
  ASSERT_TRUE(st.has_value()) << "the waiter stayed blocked after the owner died";
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(MutexTest, ScopedLockReportsOwnerDied) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto holder = spawn_holder_that_hangs(s);
  kill_holder(holder, s);
  if (HasFatalFailure()) return;
  {
    ScopedLock lock(s.mutex);
    EXPECT_TRUE(lock.owner_died());
    s.data = 0;
  }
  {
    ScopedLock lock(s.mutex);
    EXPECT_FALSE(lock.owner_died());
  }
  EXPECT_TRUE(s.mutex.try_lock()) << "ScopedLock did not unlock";
  s.mutex.unlock();
}

TEST_F(MutexTest, TryLockRecoversFromDeadOwner) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto holder = spawn_holder_that_hangs(s);
  kill_holder(holder, s);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(s.mutex.try_lock());
  s.mutex.unlock();
  EXPECT_EQ(s.mutex.lock(), std::error_code{}) << "try_lock must leave the mutex consistent";
  s.mutex.unlock();
}

TEST_F(MutexTest, LockForTimesOutWhileAnotherProcessHoldsIt) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<Shared>();
  auto holder = Process::spawn([&] {
    if (s.mutex.lock()) return 1;
    s.locked.store(1, std::memory_order_release);
    const bool released = eventually([&] { return s.release.load() == 1; });
    s.mutex.unlock();
    return released ? 0 : 2;
  });
  ASSERT_TRUE(eventually([&] { return s.locked.load(std::memory_order_acquire) == 1; }));
  const Deadline deadline = Deadline::after(50ms);
  EXPECT_EQ(s.mutex.lock_until(deadline), errc::timeout);
  EXPECT_TRUE(deadline.expired()) << "lock gave up before its deadline";
  EXPECT_EQ(s.mutex.lock_for(1ms), errc::timeout);
  EXPECT_FALSE(s.mutex.try_lock());
  EXPECT_EQ(s.mutex.lock_until(Deadline::after(0ms)), errc::timeout);
  s.release.store(1, std::memory_order_release);
  EXPECT_EQ(s.mutex.lock_for(10s), std::error_code{});
  s.mutex.unlock();
  const auto st = holder.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(MutexTest, LockForOnFreeMutexSucceeds) {
  Mutex m;
  EXPECT_EQ(m.lock_for(10ms), std::error_code{});
  m.unlock();
  EXPECT_EQ(m.lock_until(Deadline::never()), std::error_code{});
  m.unlock();
}

TEST_F(MutexTest, RelockingFromSameThreadThrowsDeadlockError) {
  Mutex m;
  ASSERT_EQ(m.lock(), std::error_code{});
  try {
    (void)m.lock();
    ADD_FAILURE() << "relock did not throw";
    m.unlock();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << e.what();
  }
  EXPECT_FALSE(m.try_lock()) << "try_lock on a mutex we hold must fail, not recurse";
  m.unlock();
  EXPECT_TRUE(m.try_lock()) << "still locked after a single unlock";
  m.unlock();
}

}  // namespace
}  // namespace ipckit
