// SharedMutex between real processes: readers together, writers alone, dead holders of
// either kind released.
#include "ipckit/sync/shared_mutex.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using testing::Mode;

class SharedMutexTest : public testing::LeakCheckedTest,
                        public ::testing::WithParamInterface<Mode> {};
INSTANTIATE_TEST_SUITE_P(SharedMutex, SharedMutexTest, testing::all_modes(), testing::mode_name);
using SharedMutexDeathTest = testing::LeakCheckedTest;

struct Data {
  std::uint64_t a = 0;  // guarded: always equal to b outside a write
  std::uint64_t b = 0;
  std::atomic<std::int32_t> readers{0};
  std::atomic<std::int32_t> writers{0};
  std::atomic<std::int32_t> bad{0};
};

TEST_P(SharedMutexTest, ReadersShareItWritersHoldItAloneAndNoUpdateIsLost) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>(GetParam().policy);
  auto& d = seg.make<Data>();
  constexpr int kIters = 2000;
  auto writers = testing::spawn_n(2, [&](int) {
    for (int i = 0; i < kIters; ++i) {
      if (m.lock()) return 1;
      if (d.writers.fetch_add(1) != 0 || d.readers.load() != 0) d.bad.fetch_add(1);
      d.a += 1;
      d.b += 1;
      d.writers.fetch_sub(1);
      m.unlock();
    }
    return 0;
  });
  auto readers = testing::spawn_n(2, [&](int) {
    for (int i = 0; i < kIters; ++i) {
      if (m.lock_shared()) return 1;
      d.readers.fetch_add(1);
      if (d.writers.load() != 0 || d.a != d.b) d.bad.fetch_add(1);
      d.readers.fetch_sub(1);
      m.unlock_shared();
    }
    return 0;
  });
  EXPECT_TRUE(testing::all_succeed(writers, 120s));
  EXPECT_TRUE(testing::all_succeed(readers, 120s));
  EXPECT_EQ(d.bad.load(), 0);
  EXPECT_EQ(d.a, 2u * kIters);
}

TEST_P(SharedMutexTest, TwoReadersHoldItAtOnce) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>(GetParam().policy);
  auto& inside = seg.make<std::atomic<std::int32_t>>(0);
  auto kids = testing::spawn_n(2, [&](int) {
    if (m.lock_shared()) return 1;
    inside.fetch_add(1);
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (inside.load() < 2) {  // the other one gets in while this one holds it
      if (std::chrono::steady_clock::now() > until) return 2;
      std::this_thread::sleep_for(100us);
    }
    m.unlock_shared();
    return 0;
  });
  EXPECT_TRUE(testing::all_succeed(kids, 60s));
}

TEST_F(SharedMutexDeathTest, AWriterKilledHoldingItIsTakenOverWithOwnerDead) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>();
  auto holder = Process::spawn([&] {
    (void)m.lock();
    ::raise(SIGKILL);
    return 0;
  });
  (void)holder.wait();
  EXPECT_EQ(m.lock_for(30s), errc::owner_dead);
  m.unlock();
  EXPECT_FALSE(m.lock_shared_for(30s));  // clean again
  m.unlock_shared();
}

TEST_F(SharedMutexDeathTest, ZeroTimeoutsRecoverFromADeadWriterAndEveryoneIsTold) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>();
  auto holder = Process::spawn([&] {
    (void)m.lock();
    ::raise(SIGKILL);
    return 0;
  });
  (void)holder.wait();
  // A reader clears the dead writer (with no wait at all) and is told.
  EXPECT_EQ(m.lock_shared_for(0ms), errc::owner_dead);
  m.unlock_shared();
  // The next writer is told too: only a writer can repair the data.
  EXPECT_EQ(m.lock_for(0ms), errc::owner_dead);
  EXPECT_FALSE(m.try_lock()) << "held (by this process): no second writer";
  m.unlock();
  EXPECT_FALSE(m.lock_for(0ms)) << "repaired and unlocked: clean again";
  m.unlock();
}

TEST_F(SharedMutexDeathTest, UnlockByAProcessThatDoesNotHoldItChangesNothing) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>();
  ASSERT_FALSE(m.lock());
  auto other = Process::spawn([&] {
    m.unlock();  // not its lock
    return m.try_lock_shared() ? 1 : 0;
  });
  const auto st = other.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
  m.unlock();
}

TEST_F(SharedMutexDeathTest, AReaderKilledHoldingItDoesNotBlockAWriter) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>(WaitPolicy::block());
  auto holder = Process::spawn([&] {
    (void)m.lock_shared();
    ::raise(SIGKILL);
    return 0;
  });
  (void)holder.wait();
  EXPECT_FALSE(m.lock_for(30s));  // the dead reader's count is dropped
  m.unlock();
}

TEST_F(SharedMutexDeathTest, TimedFormsGiveUpWhileALiveHolderHasIt) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<SharedMutex>();
  auto& go = seg.make<std::atomic<std::uint32_t>>(0u);
  auto reader = Process::spawn([&] {
    (void)m.lock_shared();
    go.store(1);
    while (go.load() != 2) std::this_thread::sleep_for(100us);
    m.unlock_shared();
    return 0;
  });
  while (go.load() != 1) std::this_thread::sleep_for(100us);
  EXPECT_EQ(m.lock_for(20ms), errc::timeout);
  EXPECT_FALSE(m.try_lock());
  EXPECT_TRUE(m.try_lock_shared());  // readers share it
  m.unlock_shared();
  go.store(2);
  ASSERT_TRUE(reader.wait_for(30s));
  EXPECT_FALSE(m.lock_for(30s));
  EXPECT_FALSE(m.try_lock_shared());  // a writer holds it
  m.unlock();
}

}  // namespace
}  // namespace ipckit
