#include "ipckit/core/futex.hpp"

#include <gtest/gtest.h>

#include <chrono>

#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using FutexTest = testing::LeakCheckedTest;

TEST_F(FutexTest, WaitReturnsChangedWhenValueDiffers) {
  std::atomic<std::uint32_t> w{1};
  EXPECT_EQ(futex_wait(w, 0, Deadline::after(1s)), FutexResult::changed);
}

TEST_F(FutexTest, WaitTimesOutAtTheDeadline) {
  std::atomic<std::uint32_t> w{0};
  const Deadline deadline = Deadline::after(20ms);
  EXPECT_EQ(futex_wait(w, 0, deadline), FutexResult::timed_out);
  EXPECT_TRUE(deadline.expired()) << "futex_wait reported timed_out before its deadline";
}

TEST_F(FutexTest, WakeCrossesProcesses) {
  auto seg = Segment::anonymous(1 << 16);
  auto& w = seg.make<std::atomic<std::uint32_t>>(0u);
  auto& ready = seg.make<std::atomic<std::uint32_t>>(0u);
  auto child = Process::spawn([&] {
    ready.store(1);
    while (w.load() == 0) futex_wait(w, 0, Deadline::after(10s));
    return w.load() == 7 ? 0 : 1;
  });
  while (ready.load() == 0) std::this_thread::yield();
  w.store(7);
  futex_wake_all(w);
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success());
}

TEST_F(FutexTest, WakeWithoutSleepersWakesNobody) {
  std::atomic<std::uint32_t> w{0};
  EXPECT_EQ(futex_wake_all(w), 0);
}

TEST(Deadline, NeverDoesNotExpire) {
  EXPECT_TRUE(Deadline::never().is_never());
  EXPECT_FALSE(Deadline::never().expired());
  EXPECT_EQ(Deadline::never().remaining(), Deadline::clock::duration::max());
}

TEST(Deadline, HugeTimeoutSaturatesToNever) {
  EXPECT_TRUE(Deadline::after(std::chrono::hours::max()).is_never());
}

TEST(Deadline, ZeroOrNegativeTimeoutIsAlreadyExpired) {
  EXPECT_TRUE(Deadline::after(0s).expired());
  EXPECT_TRUE(Deadline::after(-5s).expired());
  EXPECT_EQ(Deadline::after(-5s).remaining(), Deadline::clock::duration::zero());
}

TEST(Deadline, CappedTakesTheEarlier) {
  const auto d = Deadline::after(10s);
  EXPECT_LT(d.capped(1ms).when(), d.when());
  EXPECT_EQ(Deadline::after(1ms).capped(10s).when() <= Deadline::after(2ms).when(), true);
}

}  // namespace
}  // namespace ipckit
