#include "ipckit/channel/mpmc_queue.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "fork_helpers.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using MpmcQueueTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::Mode;
using testing::outcome_of;
using testing::wait_for_start;

struct Msg {
  std::uint64_t seq;
  std::uint64_t check;
};
Msg msg(std::uint64_t seq) { return {seq, testing::mix64(seq)}; }

class MpmcQueueModeTest : public testing::LeakCheckedTest,
                          public ::testing::WithParamInterface<Mode> {};

INSTANTIATE_TEST_SUITE_P(MpmcQueue, MpmcQueueModeTest, testing::all_modes(), testing::mode_name);

// ---- bad input --------------------------------------------------------------------------

TEST_F(MpmcQueueTest, RejectsCapacityThatIsZeroOneNotAPowerOfTwoOrTooLarge) {
  using Q = MpmcQueue<std::uint64_t>;
  EXPECT_EQ(error_of([] { Q q(0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(1); }), errc::invalid_argument) << "the minimum is 2";
  EXPECT_EQ(error_of([] { Q q(3); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(100); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(Q::kMaxCapacity * 2); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(~std::uint64_t{0}); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(2); }), std::error_code{});
}

TEST_F(MpmcQueueTest, BadCapacityInSegmentChangesNothingThere) {
  auto seg = Segment::anonymous(1 << 16);
  const std::size_t free_before = seg.free_memory();
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<int>::in(seg, 0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<int>::in(seg, 5); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<int>::create(seg, "q", 1); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<int>::create(seg, "q", 24); }), errc::invalid_argument);
  EXPECT_EQ(seg.free_memory(), free_before);
  EXPECT_FALSE(seg.find_bytes("q").has_value());
  auto q = MpmcQueue<int>::create(seg, "q", 16);
  EXPECT_EQ(q.capacity(), 16u);
}

TEST_F(MpmcQueueTest, OpenOfMissingNameIsNotFound) {
  auto seg = Segment::anonymous(1 << 16);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<int>::open(seg, "nothing-here"); }), errc::not_found);
}

TEST_F(MpmcQueueTest, OpenOfSomethingElseIsBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  (void)seg.construct<std::uint64_t>("word", 0u);
  (void)seg.construct_bytes("zeros", 8192, 64);
  (void)SpscQueue<std::uint64_t>::create(seg, "spsc", 16);
  (void)MpmcQueue<std::uint64_t>::create(seg, "mpmc64", 16);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<std::uint64_t>::open(seg, "word"); }), errc::bad_layout);
  // Zeros are what an object looks like before its creator publishes it: "not ready yet",
  // never a corrupt layout.
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<std::uint64_t>::open(seg, "zeros"); }), errc::timeout);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<std::uint64_t>::open(seg, "spsc"); }), errc::bad_layout);
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<Msg>::open(seg, "mpmc64"); }), errc::bad_layout)
      << "element size differs";
  EXPECT_EQ(error_of([&] { (void)MpmcQueue<std::uint64_t>::open(seg, "mpmc64"); }),
            std::error_code{});
}

// ---- non-blocking and timed calls ---------------------------------------------------------

TEST_F(MpmcQueueTest, TryCallsOnEmptyAndFullReturnFalse) {
  MpmcQueue<int> q(4);
  int out = -1;
  EXPECT_FALSE(q.try_pop(out));
  EXPECT_EQ(out, -1);
  EXPECT_EQ(q.try_pop(), std::nullopt);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.try_push(i));
  EXPECT_FALSE(q.try_push(99));
  EXPECT_EQ(q.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.try_pop(), i);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

TEST_F(MpmcQueueTest, PopForOnEmptyAndPushForOnFullTimeOutAndChangeNothing) {
  MpmcQueue<int> q(2, WaitPolicy::hybrid());
  const Deadline pop_deadline = Deadline::after(30ms);
  int out = -1;
  EXPECT_FALSE(q.pop_until(out, pop_deadline));
  EXPECT_TRUE(pop_deadline.expired()) << "pop gave up before its deadline";
  EXPECT_EQ(out, -1);
  EXPECT_EQ(q.pop_for(5ms), std::nullopt);
  EXPECT_EQ(q.size(), 0u);

  q.push(1);
  q.push(2);
  const Deadline push_deadline = Deadline::after(30ms);
  EXPECT_FALSE(q.push_until(3, push_deadline));
  EXPECT_TRUE(push_deadline.expired()) << "push gave up before its deadline";
  EXPECT_FALSE(q.push_for(4, 5ms));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.pop_for(5ms), 1);
  EXPECT_EQ(q.pop_for(5ms), 2);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

// ---- close --------------------------------------------------------------------------------

TEST_F(MpmcQueueTest, PushAfterCloseThrowsClosed) {
  MpmcQueue<int> q(4);
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_EQ(error_of([&] { q.push(1); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)q.push_for(1, 10ms); }), errc::closed);
  EXPECT_EQ(q.size(), 0u);
}

// See SpscQueueTest.TryPushAfterCloseAddsNothing.
TEST_F(MpmcQueueTest, TryPushAfterCloseAddsNothing) {
  MpmcQueue<int> q(4);
  q.close();
  bool pushed = false;
  const auto err = error_of([&] { pushed = q.try_push(1); });
  EXPECT_TRUE(err == std::error_code{} || err == errc::closed) << err.message();
  EXPECT_FALSE(pushed);
  EXPECT_EQ(q.size(), 0u);
}

TEST_F(MpmcQueueTest, ElementsPushedBeforeCloseAreDrainedThenPopThrowsClosed) {
  MpmcQueue<std::uint64_t> q(64);
  auto producers = testing::spawn_n(2, [&](int rank) {
    for (std::uint64_t i = 0; i < 20; ++i) q.push(static_cast<std::uint64_t>(rank) * 100 + i);
    return 0;
  });
  ASSERT_TRUE(testing::all_succeed(producers));
  q.close();
  std::vector<std::uint64_t> got;
  for (;;) {
    std::uint64_t v = 0;
    const auto err = error_of([&] { v = q.pop(); });
    if (err == errc::closed) break;
    ASSERT_EQ(err, std::error_code{});
    got.push_back(v);
  }
  std::vector<std::uint64_t> want;
  for (std::uint64_t r = 0; r < 2; ++r) {
    for (std::uint64_t i = 0; i < 20; ++i) want.push_back(r * 100 + i);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(error_of([&] { (void)q.pop_for(10s); }), errc::closed);
}

TEST_P(MpmcQueueModeTest, CloseWakesEveryBlockedConsumer) {
  MpmcQueue<int> q(4, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& waiting = seg.make<Flag>(0u);
  q.attach_producer();
  auto consumers = testing::spawn_n(3, [&](int) {
    waiting.fetch_add(1, std::memory_order_release);
    int v = 0;
    return outcome_of([&] { return q.pop_until(v, Deadline::after(10s)); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 3; }));
  std::this_thread::sleep_for(10ms);  // most likely asleep in pop now; either way is fine
  q.close();
  for (auto& c : consumers) EXPECT_EQ(exit_code(c), testing::kClosed);
}

// ---- many producers, many consumers -------------------------------------------------------

TEST_P(MpmcQueueModeTest, ThreeProducersThreeConsumersDeliverEveryElementExactlyOnce) {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 3;
  const std::uint64_t kPer = testing::scaled(200'000);
  const std::uint64_t kTotal = kProducers * kPer;
  MpmcQueue<Msg> q(256, GetParam().policy);
  SharedArray<std::uint8_t> seen(kTotal);  // times each element was popped
  SharedArray<std::uint64_t> popped(kConsumers);
  auto seg = Segment::anonymous(1 << 16);
  auto& go = seg.make<Flag>(0u);
  // The producers exit before close(): with this process attached as a producer too, the
  // consumers see the end as errc::closed, not as errc::peer_dead.
  q.attach_producer();
  auto consumers = testing::spawn_n(kConsumers, [&](int rank) {
    wait_for_start(go);
    std::array<std::uint64_t, kProducers> next{};  // each producer's elements come in order
    for (;;) {
      Msg m{};
      const int r = outcome_of([&] { m = q.pop(); });
      if (r == testing::kClosed) break;
      if (r != testing::kReturned) return 1;
      if (m.seq >= kTotal || m.check != testing::mix64(m.seq)) return 2;  // torn or invented
      const std::uint64_t from = m.seq / kPer;
      if (m.seq % kPer < next[from]) return 3;  // an element overtook an older one
      next[from] = m.seq % kPer + 1;
      std::atomic_ref<std::uint8_t>(seen[m.seq]).fetch_add(1, std::memory_order_relaxed);
      ++popped[static_cast<std::size_t>(rank)];
    }
    return 0;
  });
  auto producers = testing::spawn_n(kProducers, [&](int rank) {
    wait_for_start(go);
    for (std::uint64_t i = 0; i < kPer; ++i)
      q.push(msg(static_cast<std::uint64_t>(rank) * kPer + i));
    return 0;
  });
  go.store(1, std::memory_order_release);
  EXPECT_TRUE(testing::all_succeed(producers));
  q.close();
  std::vector<int> codes;
  for (auto& c : consumers) codes.push_back(exit_code(c));
  EXPECT_EQ(codes, std::vector<int>(kConsumers, 0))
      << "1: pop failed, 2: torn element, 3: reordered, -1000: hung";
  std::uint64_t missing = 0;
  std::uint64_t repeated = 0;
  std::uint64_t first_bad = kTotal;
  for (std::uint64_t i = 0; i < kTotal; ++i) {
    if (seen[i] != 1 && first_bad == kTotal) first_bad = i;
    missing += seen[i] == 0;
    repeated += seen[i] > 1;
  }
  EXPECT_EQ(missing, 0u) << "first bad element " << first_bad;
  EXPECT_EQ(repeated, 0u) << "first bad element " << first_bad;
  EXPECT_EQ(popped[0] + popped[1] + popped[2], kTotal);
}

// ---- peer death ---------------------------------------------------------------------------

TEST_P(MpmcQueueModeTest, ConsumerGetsPeerDeadOnlyWhenEveryProducerIsKilled) {
  MpmcQueue<int> q(8, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& attached = seg.make<Flag>(0u);
  auto& push_now = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto idle = Process::spawn([&] {
    q.attach_producer();
    attached.fetch_add(1, std::memory_order_release);
    for (;;) ::pause();
  });
  auto late = Process::spawn([&] {
    q.attach_producer();
    attached.fetch_add(1, std::memory_order_release);
    wait_for_start(push_now);
    q.push(7);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 2; }));
  auto consumer = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    int v = 0;
    // One producer dies while this waits: the other is still there, so this is no peer_dead.
    const int first = outcome_of([&] { return q.pop_until(v, Deadline::after(10s)); });
    if (first != testing::kReturned) return 100 + first;
    if (v != 7) return 1;
    waiting.store(2, std::memory_order_release);
    return outcome_of([&] { return q.pop_until(v, Deadline::after(10s)); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);
  idle.kill(SIGKILL);
  EXPECT_TRUE(idle.wait().signaled());
  push_now.store(1, std::memory_order_release);
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 2; }));
  std::this_thread::sleep_for(10ms);
  late.kill(SIGKILL);
  EXPECT_EQ(exit_code(consumer), testing::kPeerDead)
      << "10x: the first pop ended with outcome x; 1: wrong element";
  EXPECT_TRUE(late.wait().signaled());
}

TEST_P(MpmcQueueModeTest, ProducerBlockedInPushGetsPeerDeadWhenEveryConsumerIsKilled) {
  MpmcQueue<int> q(4, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& attached = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto consumers = testing::spawn_n(2, [&](int) -> int {
    q.attach_consumer();
    attached.fetch_add(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 2; }));
  auto producer = Process::spawn([&] {
    while (q.try_push(1)) {
    }
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return q.push_until(2, Deadline::after(10s)); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);
  for (auto& c : consumers) c.kill(SIGKILL);
  EXPECT_EQ(exit_code(producer), testing::kPeerDead);
  for (auto& c : consumers) EXPECT_TRUE(c.wait().signaled());
}

TEST_P(MpmcQueueModeTest, ElementsPushedBeforeProducersDiedAreDeliveredBeforePeerDead) {
  MpmcQueue<int> q(16, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& pushed = seg.make<Flag>(0u);
  auto producers = testing::spawn_n(2, [&](int rank) -> int {
    for (int i = 0; i < 3; ++i) q.push(rank * 10 + i);
    pushed.fetch_add(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return pushed.load(std::memory_order_acquire) == 2; }));
  for (auto& p : producers) p.kill(SIGKILL);
  for (auto& p : producers) EXPECT_TRUE(p.wait().signaled());
  std::vector<int> got;
  for (int i = 0; i < 6; ++i) {
    int v = 0;
    ASSERT_EQ(error_of([&] { EXPECT_TRUE(q.pop_until(v, Deadline::after(10s))); }),
              std::error_code{});
    got.push_back(v);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 10, 11, 12}));
  int v = 0;
  EXPECT_EQ(error_of([&] { (void)q.pop_until(v, Deadline::after(10s)); }), errc::peer_dead);
}

// ---- named segments -----------------------------------------------------------------------

TEST_F(MpmcQueueTest, ProcessesThatOpenTheSegmentByNameShareTheQueue) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  auto q = MpmcQueue<Msg>::create(seg, "jobs", 32, WaitPolicy::block());
  (void)seg.construct<Flag>("attached", 0u);
  auto producers = testing::spawn_n(2, [&name](int rank) {
    auto mine = Segment::open(name);
    auto jobs = MpmcQueue<Msg>::open(mine, "jobs");
    if (jobs.capacity() != 32) return 1;
    // Both attach before either pushes: otherwise the first to finish could leave the
    // consumer facing an empty queue whose every known producer has exited (peer_dead).
    auto& attached = mine.find<Flag>("attached");
    jobs.attach_producer();
    attached.fetch_add(1, std::memory_order_acq_rel);
    while (attached.load(std::memory_order_acquire) < 2) std::this_thread::yield();
    for (std::uint64_t i = 0; i < 100; ++i) {
      jobs.push(msg(static_cast<std::uint64_t>(rank) * 100 + i));
    }
    return 0;
  });
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 200; ++i) {
    const Msg m = q.pop();
    ASSERT_EQ(m.check, testing::mix64(m.seq));
    got.push_back(m.seq);
  }
  EXPECT_TRUE(testing::all_succeed(producers));
  std::sort(got.begin(), got.end());
  for (std::uint64_t i = 0; i < 200; ++i) ASSERT_EQ(got[i], i);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

}  // namespace
}  // namespace ipckit
