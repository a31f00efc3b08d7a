// The multiprocessing set of primitives between real processes: Event, Condition (over the
// robust Mutex), RecursiveMutex, BoundedSemaphore. Each in every wait policy where it waits;
// deaths with SIGKILL.
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
#include "ipckit/sync/condition.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/semaphore.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using testing::Mode;
using testing::wait_for_start;

class MpSyncModeTest : public testing::LeakCheckedTest,
                       public ::testing::WithParamInterface<Mode> {};
using MpSyncTest = testing::LeakCheckedTest;

INSTANTIATE_TEST_SUITE_P(MpSync, MpSyncModeTest, testing::all_modes(), testing::mode_name);

// ---- Event --------------------------------------------------------------------------------

TEST_P(MpSyncModeTest, EventSetWakesEveryWaitingProcess) {
  auto seg = Segment::anonymous(1 << 16);
  auto& ev = seg.make<Event>(GetParam().policy);
  auto& waiting = seg.make<std::atomic<std::uint32_t>>(0u);
  auto kids = testing::spawn_n(4, [&](int) {
    waiting.fetch_add(1);
    return ev.wait_for(30s) && ev.is_set() ? 0 : 1;
  });
  while (waiting.load() < 4) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);  // let them sleep (block) or spin
  EXPECT_FALSE(ev.is_set());
  ev.set();
  EXPECT_TRUE(testing::all_succeed(kids, 60s));
}

TEST_P(MpSyncModeTest, EventWaitTimesOutWhileClearAndClearMakesWaitsWaitAgain) {
  auto seg = Segment::anonymous(1 << 16);
  auto& ev = seg.make<Event>(GetParam().policy);
  EXPECT_FALSE(ev.wait_for(5ms));
  ev.set();
  EXPECT_TRUE(ev.wait_for(0ms));
  EXPECT_TRUE(ev.is_set());
  ev.clear();
  EXPECT_FALSE(ev.is_set());
  auto kid = Process::spawn([&] { return ev.wait_for(20ms) ? 1 : 0; });  // times out
  const auto st = kid.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success());
}

TEST_F(MpSyncTest, EventWaiterKilledWhileWaitingLeavesItUsable) {
  auto seg = Segment::anonymous(1 << 16);
  auto& ev = seg.make<Event>(WaitPolicy::block());
  auto victim = Process::spawn([&] {
    ev.wait();
    return 0;
  });
  std::this_thread::sleep_for(20ms);
  victim.kill(SIGKILL);
  (void)victim.wait();
  auto kid = Process::spawn([&] { return ev.wait_for(30s) ? 0 : 1; });
  ev.set();
  const auto st = kid.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success());
}

// ---- Condition ----------------------------------------------------------------------------

struct Box {
  Mutex m;
  Condition cv;
  std::uint64_t items = 0;  // guarded by m
  std::uint64_t taken = 0;
  std::uint64_t sum = 0;
  explicit Box(WaitPolicy p) : cv(p) {}
};

TEST_P(MpSyncModeTest, ConditionProducerConsumerCountsAndChecksumsEveryItem) {
  constexpr int kConsumers = 3;
  constexpr std::uint64_t kItems = 3000;
  auto seg = Segment::anonymous(1 << 16);
  auto& box = seg.make<Box>(GetParam().policy);
  auto consumers = testing::spawn_n(kConsumers, [&](int) {
    for (;;) {
      ScopedLock lk(box.m);
      if (!box.cv.wait_for(box.m, 30s, [&] { return box.items > 0 || box.taken == kItems; })) {
        return 2;  // timed out: a lost notify
      }
      if (box.taken == kItems) return 0;
      --box.items;
      ++box.taken;
      box.sum += box.taken;
      box.cv.notify_all();  // the producer waits for room; the others for the end
    }
  });
  for (std::uint64_t i = 0; i < kItems; ++i) {
    ScopedLock lk(box.m);
    ASSERT_TRUE(box.cv.wait_for(box.m, 30s, [&] { return box.items < 4; }));
    ++box.items;
    box.cv.notify_one();
  }
  EXPECT_TRUE(testing::all_succeed(consumers, 60s));
  EXPECT_EQ(box.taken, kItems);
  EXPECT_EQ(box.items, 0u);
  EXPECT_EQ(box.sum, kItems * (kItems + 1) / 2);
}

TEST_P(MpSyncModeTest, ConditionNotifyAllWakesEveryWaiter) {
  auto seg = Segment::anonymous(1 << 16);
  auto& box = seg.make<Box>(GetParam().policy);
  auto& waiting = seg.make<std::atomic<std::uint32_t>>(0u);
  auto kids = testing::spawn_n(4, [&](int) {
    ScopedLock lk(box.m);
    waiting.fetch_add(1);
    return box.cv.wait_for(box.m, 30s, [&] { return box.items == 1; }) ? 0 : 1;
  });
  while (waiting.load() < 4) std::this_thread::sleep_for(1ms);
  {
    ScopedLock lk(box.m);  // every waiter has released it: they wait
    box.items = 1;
  }
  box.cv.notify_all();
  EXPECT_TRUE(testing::all_succeed(kids, 60s));
}

TEST_P(MpSyncModeTest, ConditionTimeoutReturnsWithTheMutexHeld) {
  auto seg = Segment::anonymous(1 << 16);
  auto& box = seg.make<Box>(GetParam().policy);
  ASSERT_FALSE(box.m.lock());
  EXPECT_EQ(box.cv.wait_for(box.m, 5ms), errc::timeout);
  auto other = Process::spawn([&] { return box.m.try_lock() ? 1 : 0; });  // held: refused
  const auto st = other.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success());
  box.m.unlock();
}

TEST_F(MpSyncTest, ConditionWaiterGetsOwnerDeadWhenTheMutexHolderDies) {
  auto seg = Segment::anonymous(1 << 16);
  auto& box = seg.make<Box>(WaitPolicy::hybrid());
  auto& go = seg.make<std::atomic<std::uint32_t>>(0u);
  ASSERT_FALSE(box.m.lock());
  // The child takes the mutex as soon as the parent waits, notifies, and dies holding it.
  auto holder = Process::spawn([&] {
    wait_for_start(go);
    (void)box.m.lock();
    box.items = 1;
    box.cv.notify_one();
    ::raise(SIGKILL);
    return 0;
  });
  go.store(1, std::memory_order_release);
  const std::error_code ec = box.cv.wait_for(box.m, 30s);
  EXPECT_EQ(ec, errc::owner_dead);
  EXPECT_EQ(box.items, 1u);  // the dead owner's change is there to repair
  box.m.unlock();
  (void)holder.wait();
  // The predicate form reports it as an Error.
  ASSERT_FALSE(box.m.lock());
  auto holder2 = Process::spawn([&] {
    (void)box.m.lock();  // once the parent waits
    box.cv.notify_all();
    ::raise(SIGKILL);
    return 0;
  });
  const auto err = testing::caught<Error>([&] { box.cv.wait(box.m, [&] { return false; }); });
  ASSERT_TRUE(err);
  EXPECT_TRUE(err->is(errc::owner_dead)) << err->what();
  box.m.unlock();
  (void)holder2.wait();
}

// ---- RecursiveMutex -----------------------------------------------------------------------

TEST_F(MpSyncTest, RecursiveMutexIsFreeAfterAsManyUnlocksAsLocks) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<RecursiveMutex>();
  ASSERT_FALSE(m.lock());
  ASSERT_FALSE(m.lock());
  EXPECT_TRUE(m.try_lock());  // the owner again
  const auto held = [&] {
    auto p = Process::spawn([&] { return m.try_lock() ? 1 : 0; });
    const auto st = p.wait_for(30s);
    return st && st->success();  // exit 0: could not take it
  };
  m.unlock();
  m.unlock();
  EXPECT_TRUE(held());
  m.unlock();
  EXPECT_FALSE(held());
}

TEST_F(MpSyncTest, RecursiveMutexHeldTwiceByADeadOwnerIsRecoveredOnce) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<RecursiveMutex>();
  auto holder = Process::spawn([&] {
    (void)m.lock();
    (void)m.lock();
    ::raise(SIGKILL);
    return 0;
  });
  (void)holder.wait();
  EXPECT_EQ(m.lock(), errc::owner_dead);
  m.unlock();  // one unlock frees it: the dead owner's depth is gone
  auto p = Process::spawn([&] {
    if (!m.try_lock()) return 1;
    m.unlock();
    return 0;
  });
  const auto st = p.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success());
}

// ---- BoundedSemaphore ---------------------------------------------------------------------

TEST_F(MpSyncTest, BoundedSemaphoreRefusesAReleaseAboveItsBound) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<BoundedSemaphore>(2u);
  const auto e = testing::caught<Error>([&] { sem.post(); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::invalid_argument));
  EXPECT_NE(std::string(e->what()).find("released too many times"), std::string::npos);
  EXPECT_EQ(sem.value(), 2u);  // unchanged
  ASSERT_TRUE(sem.try_wait());
  EXPECT_TRUE(testing::caught<Error>([&] { sem.post(2); }).has_value());
  EXPECT_EQ(sem.value(), 1u);
  sem.post();
  EXPECT_EQ(sem.value(), 2u);
}

TEST_P(MpSyncModeTest, BoundedSemaphoreLimitsHoldersAcrossProcesses) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<BoundedSemaphore>(2u, GetParam().policy);
  auto& inside = seg.make<std::atomic<std::int32_t>>(0);
  auto& worst = seg.make<std::atomic<std::int32_t>>(0);
  auto kids = testing::spawn_n(5, [&](int) {
    for (int i = 0; i < 200; ++i) {
      if (!sem.wait_for(30s)) return 1;
      const int now = inside.fetch_add(1) + 1;
      int w = worst.load();
      while (now > w && !worst.compare_exchange_weak(w, now)) {
      }
      inside.fetch_sub(1);
      sem.post();
    }
    return 0;
  });
  EXPECT_TRUE(testing::all_succeed(kids, 60s));
  EXPECT_LE(worst.load(), 2);
  EXPECT_EQ(sem.value(), 2u);
}

}  // namespace
}  // namespace ipckit
