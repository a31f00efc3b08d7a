#include "ipckit/sync/barrier.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

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
using BarrierTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::Mode;

// Exit codes a child reports for how its barrier call ended.
enum Outcome : int {
  kPassed = 10,   // the call returned: the phase completed
  kBroken = 11,   // errc::barrier_broken
  kTimeout = 12,  // errc::timeout
  kOtherError = 13,
};

template <class F>
int outcome_of(F&& f) {
  try {
    f();
    return kPassed;
  } catch (const Error& e) {
    if (e.is(errc::barrier_broken)) return kBroken;
    if (e.is(errc::timeout)) return kTimeout;
    return kOtherError;
  }
}

// Waits (with a generous limit, only so that a hang fails instead of stalling) and returns the
// exit code, or -signal if the child was killed.
int exit_code(Process& p) {
  auto st = p.wait_for(10s);
  if (!st) {
    p.kill(SIGKILL);
    st = p.wait();
    return -1000;  // hung
  }
  return st->exited() ? st->value : -st->value;
}

class BarrierModeTest : public testing::LeakCheckedTest,
                        public ::testing::WithParamInterface<Mode> {};

INSTANTIATE_TEST_SUITE_P(Barrier, BarrierModeTest, testing::all_modes(), testing::mode_name);

TEST_P(BarrierModeTest, NoPartyOvertakesAndPhasesAreConsecutive) {
  constexpr int kParties = 4;
  constexpr std::uint32_t kPhases = 200;
  // Two rows: a party that left phase p writes row (p+1)%2, never the row others still check.
  struct Slots {
    std::array<std::array<std::atomic<std::uint32_t>, kParties>, 2> row;
  };
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(kParties, GetParam().policy);
  auto& slots = seg.make<Slots>();
  for (auto& r : slots.row) {
    for (auto& v : r) v.store(~0u);
  }
  auto kids = testing::spawn_n(kParties, [&](int rank) {
    for (std::uint32_t p = 0; p < kPhases; ++p) {
      auto& row = slots.row[p % 2];
      row[static_cast<std::size_t>(rank)].store(p, std::memory_order_relaxed);
      const std::uint32_t phase = barrier.arrive_and_wait();
      if (phase != p) return 1;  // phase numbers are consecutive, from 0
      for (const auto& v : row) {
        if (v.load(std::memory_order_relaxed) != p) return 2;  // someone had not arrived
      }
    }
    return 0;
  });
  std::vector<int> codes;
  for (auto& k : kids) codes.push_back(exit_code(k));
  EXPECT_EQ(codes, std::vector<int>(kParties, 0))
      << "1: wrong phase number, 2: a party passed the barrier early, -1000: hung";
  EXPECT_FALSE(barrier.broken());
}

TEST_P(BarrierModeTest, KilledAttachedPartyBreaksBarrierForWaiters) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(3u, GetParam().policy);
  auto& attached = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto victim = Process::spawn([&] {
    barrier.attach();
    attached.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 1; }));
  auto waiters = testing::spawn_n(2, [&](int) {
    waiting.fetch_add(1, std::memory_order_release);
    return outcome_of([&] { (void)barrier.arrive_and_wait(); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 2; }));
  std::this_thread::sleep_for(10ms);  // most likely inside arrive_and_wait now; either is fine
  victim.kill(SIGKILL);
  for (auto& w : waiters) EXPECT_EQ(exit_code(w), kBroken);
  EXPECT_TRUE(victim.wait().signaled());
  EXPECT_TRUE(barrier.broken());
}

TEST_P(BarrierModeTest, TimeoutBreaksBarrierForTheOthers) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(3u, GetParam().policy);
  auto& waiting = seg.make<Flag>(0u);
  auto patient = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { (void)barrier.arrive_and_wait(); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  auto impatient = Process::spawn([&] {
    const Deadline deadline = Deadline::after(50ms);
    const int r = outcome_of([&] { (void)barrier.arrive_and_wait_until(deadline); });
    return (r == kTimeout && !deadline.expired()) ? 1 : r;  // 1: too early
  });
  EXPECT_EQ(exit_code(impatient), kTimeout) << "1: timed out before the timeout";
  EXPECT_EQ(exit_code(patient), kBroken);
  EXPECT_TRUE(barrier.broken());
}

TEST_F(BarrierTest, PartyThatDiesBeforeItsFirstWaitBreaksBarrierIfAttached) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(3u);
  auto victim = Process::spawn([] {
    for (;;) ::pause();
  });
  barrier.attach(victim.pid());  // the parent registers it; the victim never touches the barrier
  auto waiters = testing::spawn_n(
      2, [&](int) { return outcome_of([&] { (void)barrier.arrive_and_wait(); }); });
  victim.kill(SIGKILL);
  EXPECT_TRUE(victim.wait().signaled());
  for (auto& w : waiters) EXPECT_EQ(exit_code(w), kBroken);
  EXPECT_TRUE(barrier.broken());
}

TEST_F(BarrierTest, PartyThatExitedBeforeWaitersArriveBreaksBarrier) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(2u);
  auto early = Process::spawn([&] {
    barrier.attach();
    return 0;
  });
  EXPECT_TRUE(early.wait().success());
  auto waiter =
      Process::spawn([&] { return outcome_of([&] { (void)barrier.arrive_and_wait(); }); });
  EXPECT_EQ(exit_code(waiter), kBroken);
}

TEST_F(BarrierTest, BrokenBarrierStaysBrokenForLaterCallers) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(3u);
  auto timed_out =
      Process::spawn([&] { return outcome_of([&] { (void)barrier.arrive_and_wait_for(10ms); }); });
  ASSERT_EQ(exit_code(timed_out), kTimeout);
  ASSERT_TRUE(barrier.broken());
  // The remaining parties (a child and this process) arrive later: they must be refused, not
  // left waiting for the party that gave up.
  auto late =
      Process::spawn([&] { return outcome_of([&] { (void)barrier.arrive_and_wait_for(5s); }); });
  EXPECT_EQ(exit_code(late), kBroken);
  EXPECT_EQ(error_of([&] { (void)barrier.arrive_and_wait(); }), errc::barrier_broken);
  EXPECT_EQ(error_of([&] { (void)barrier.arrive_and_wait(); }), errc::barrier_broken);
  EXPECT_TRUE(barrier.broken());
}

TEST_F(BarrierTest, BreakBarrierWakesWaiters) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(2u, WaitPolicy::block());
  auto& waiting = seg.make<Flag>(0u);
  auto waiter = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { (void)barrier.arrive_and_wait(); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  barrier.break_barrier();
  EXPECT_EQ(exit_code(waiter), kBroken);
  EXPECT_TRUE(barrier.broken());
}

TEST_F(BarrierTest, RejectsZeroOrTooManyParties) {
  EXPECT_EQ(error_of([] { Barrier b(0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Barrier b(Barrier::kMaxParties + 1); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Barrier b(Barrier::kMaxParties); }), std::error_code{});
  auto seg = Segment::anonymous(1 << 16);
  EXPECT_EQ(error_of([&] { (void)seg.make<Barrier>(0u); }), errc::invalid_argument);
}

TEST_F(BarrierTest, AttachingMoreProcessesThanPartiesIsInvalidArgument) {
  Barrier b(2);
  const pid_t me = ::getpid();
  b.attach();
  b.attach(me);                     // idempotent: still one slot
  const pid_t other = me + 100000;  // any pid: attach only records it
  b.attach(other);
  b.attach(other);
  EXPECT_EQ(error_of([&] { b.attach(other + 1); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { b.attach(me); }), std::error_code{});
  EXPECT_FALSE(b.broken());
}

TEST_F(BarrierTest, SinglePartyBarrierNeverBlocks) {
  Barrier b(1, WaitPolicy::block());
  EXPECT_EQ(b.parties(), 1u);
  for (std::uint32_t i = 0; i < 5; ++i) {
    // An already-expired deadline: any wait at all would time out.
    EXPECT_EQ(b.arrive_and_wait_until(Deadline::after(0s)), i);
  }
  EXPECT_EQ(b.arrive_and_wait(), 5u);
  EXPECT_FALSE(b.broken());
}

TEST_F(BarrierTest, ParentAndChildAlternatePhases) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(2u);
  auto child = Process::spawn([&] {
    for (std::uint32_t p = 0; p < 50; ++p) {
      if (barrier.arrive_and_wait() != p) return 1;
    }
    return 0;
  });
  for (std::uint32_t p = 0; p < 50; ++p) ASSERT_EQ(barrier.arrive_and_wait(), p);
  EXPECT_EQ(exit_code(child), 0);
}

}  // namespace
}  // namespace ipckit
