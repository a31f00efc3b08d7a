#include "ipckit/sync/event_count.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>

#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using Flag = std::atomic<std::uint32_t>;
using EventCountTest = testing::LeakCheckedTest;
using testing::eventually;
using testing::Mode;

class EventCountModeTest : public testing::LeakCheckedTest,
                           public ::testing::WithParamInterface<Mode> {};

INSTANTIATE_TEST_SUITE_P(EventCount, EventCountModeTest, testing::all_modes(), testing::mode_name);

TEST_P(EventCountModeTest, AwaitReturnsTrueWhenAnotherProcessSetsTheCondition) {
  const WaitPolicy policy = GetParam().policy;
  auto seg = Segment::anonymous(1 << 16);
  auto& ec = seg.make<EventCount>();
  auto& flag = seg.make<Flag>(0u);
  auto& started = seg.make<Flag>(0u);
  auto child = Process::spawn([&] {
    // Give the waiter time to get past spinning (and asleep, where it sleeps).
    testing::wait_for_start(started);
    const bool sleeps = policy.sleep;
    if (sleeps && !eventually([&] { return ec.waiters() > 0; })) return 1;
    if (!sleeps) std::this_thread::sleep_for(20ms);
    flag.store(1, std::memory_order_release);
    ec.notify_all();
    return 0;
  });
  started.store(1, std::memory_order_release);
  const bool ready = ec.await([&] { return flag.load(std::memory_order_acquire) == 1; },
                              Deadline::after(10s), policy);
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success()) << st->describe() << " (1: the waiter never went to sleep)";
  EXPECT_TRUE(ready);
  EXPECT_EQ(flag.load(), 1u);
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST_P(EventCountModeTest, AwaitTimesOutReturningFalseAfterAtLeastTheTimeout) {
  EventCount ec;
  int polls = 0;
  const Deadline deadline = Deadline::after(100ms);
  const bool ready = ec.await(
      [&] {
        ++polls;
        return false;
      },
      deadline, GetParam().policy);
  EXPECT_FALSE(ready);
  EXPECT_TRUE(deadline.expired()) << "await gave up before its deadline";
  EXPECT_GE(polls, 2);
  EXPECT_EQ(ec.waiters(), 0u) << "a timed-out waiter must unregister";
}

TEST_P(EventCountModeTest, AwaitWithExpiredDeadlineStillPollsOnce) {
  EventCount ec;
  EXPECT_TRUE(ec.await([] { return true; }, Deadline::after(0s), GetParam().policy));
  EXPECT_FALSE(ec.await([] { return false; }, Deadline::after(0s), GetParam().policy));
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST_P(EventCountModeTest, CheckExceptionAbandonsTheWait) {
  WaitPolicy policy = GetParam().policy;
  policy.check_interval = 5ms;
  auto seg = Segment::anonymous(1 << 16);
  auto& ec = seg.make<EventCount>();
  auto& peer_gone = seg.make<Flag>(0u);
  auto& checks = seg.make<Flag>(0u);
  auto child = Process::spawn([&] {
    if (!eventually([&] { return checks.load() > 0; })) return 1;
    peer_gone.store(1, std::memory_order_release);  // no notify: only check() can notice
    return 0;
  });
  bool threw = false;
  try {
    (void)ec.await([] { return false; }, Deadline::after(10s), policy,
                   [&] {
                     checks.fetch_add(1);
                     if (peer_gone.load(std::memory_order_acquire) != 0)
                       throw std::runtime_error("peer gone");
                   });
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()) == "peer gone";
  }
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success()) << st->describe() << " (1: check() never ran)";
  EXPECT_TRUE(threw) << "the exception from check() must propagate out of await()";
  EXPECT_GE(checks.load(), 2u) << "check() runs between bounded sleeps, not only once";
  EXPECT_EQ(ec.waiters(), 0u) << "an abandoned wait must unregister";
}

TEST_F(EventCountTest, CheckRunsWhileTheWaiterSleeps) {
  WaitPolicy policy = WaitPolicy::block();
  policy.check_interval = 5ms;
  EventCount ec;
  int checks = 0;
  const bool ready =
      ec.await([] { return false; }, Deadline::after(100ms), policy, [&] { ++checks; });
  EXPECT_FALSE(ready);
  EXPECT_GE(checks, 1) << "100 ms of sleeping in 5 ms slices, and check() never ran";
}

TEST_F(EventCountTest, NotifyWithoutWaitersLeavesNoTrace) {
  EventCount ec;
  const EventCount::Key before = ec.prepare_wait();
  ec.cancel_wait();
  ec.notify_all();
  ec.notify(1);
  EXPECT_EQ(ec.waiters(), 0u);
  const EventCount::Key after = ec.prepare_wait();
  ec.cancel_wait();
  EXPECT_EQ(after.epoch, before.epoch) << "nobody waited: notify must not touch the futex word";
}

TEST_F(EventCountTest, PrepareAndCancelWaitCountWaiters) {
  EventCount ec;
  EXPECT_EQ(ec.waiters(), 0u);
  (void)ec.prepare_wait();
  EXPECT_EQ(ec.waiters(), 1u);
  (void)ec.prepare_wait();
  EXPECT_EQ(ec.waiters(), 2u);
  ec.cancel_wait();
  EXPECT_EQ(ec.waiters(), 1u);
  ec.cancel_wait();
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST_F(EventCountTest, NotifyBetweenPrepareAndWaitIsNotLost) {
  EventCount ec;
  const EventCount::Key key = ec.prepare_wait();
  ec.notify_all();
  EXPECT_EQ(ec.wait(key, Deadline::after(10s)), FutexResult::changed);
  EXPECT_EQ(ec.waiters(), 0u) << "wait() unregisters";
}

TEST_F(EventCountTest, WaitWithoutNotifyTimesOutAndUnregisters) {
  EventCount ec;
  const EventCount::Key key = ec.prepare_wait();
  const Deadline deadline = Deadline::after(30ms);
  EXPECT_EQ(ec.wait(key, deadline), FutexResult::timed_out);
  EXPECT_TRUE(deadline.expired()) << "wait returned timed_out before its deadline";
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST_F(EventCountTest, NotifyWakesSleeperInAnotherProcess) {
  auto seg = Segment::anonymous(1 << 16);
  auto& ec = seg.make<EventCount>();
  auto& flag = seg.make<std::atomic<std::uint32_t>>(0u);
  // The waiter's protocol: register, look at the condition, sleep. (Without the look, a
  // notify landing between the registration and the key's read would be missed by design.)
  auto child = Process::spawn([&] {
    const Deadline deadline = Deadline::after(10s);
    for (;;) {
      const EventCount::Key key = ec.prepare_wait();
      if (flag.load(std::memory_order_acquire) != 0) {
        ec.cancel_wait();
        return 0;
      }
      if (ec.wait(key, deadline) == FutexResult::timed_out) return 1;
    }
  });
  ASSERT_TRUE(eventually([&] { return ec.waiters() == 1; }));
  // Registered but maybe not yet asleep: the single notify must still reach it.
  flag.store(1, std::memory_order_release);
  ec.notify_all();
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value()) << "the child never woke up";
  EXPECT_TRUE(st->success()) << st->describe();
  EXPECT_EQ(ec.waiters(), 0u);
}

}  // namespace
}  // namespace ipckit
