#include "ipckit/channel/spsc_queue.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using SpscQueueTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::Mode;
using testing::outcome_of;

// A message that says which one it is and carries a check word derived from that.
struct Msg {
  std::uint64_t seq;
  std::uint64_t check;
};
Msg msg(std::uint64_t seq) { return {seq, testing::mix64(seq)}; }

class SpscQueueModeTest : public testing::LeakCheckedTest,
                          public ::testing::WithParamInterface<Mode> {};

INSTANTIATE_TEST_SUITE_P(SpscQueue, SpscQueueModeTest, testing::all_modes(), testing::mode_name);

// ---- bad input --------------------------------------------------------------------------

TEST_F(SpscQueueTest, RejectsCapacityThatIsZeroNotAPowerOfTwoOrTooLarge) {
  using Q = SpscQueue<std::uint64_t>;
  EXPECT_EQ(error_of([] { Q q(0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(3); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(1000); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(Q::kMaxCapacity * 2); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(Q::kMaxCapacity + 1); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(~std::uint64_t{0}); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Q q(1); }), std::error_code{});
  EXPECT_EQ(error_of([] { Q q(1024); }), std::error_code{});
}

TEST_F(SpscQueueTest, BadCapacityInSegmentChangesNothingThere) {
  auto seg = Segment::anonymous(1 << 16);
  const std::size_t free_before = seg.free_memory();
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::in(seg, 0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::in(seg, 6); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::create(seg, "q", 0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::create(seg, "q", 12); }), errc::invalid_argument);
  EXPECT_EQ(
      error_of([&] { (void)SpscQueue<int>::create(seg, "q", SpscQueue<int>::kMaxCapacity * 2); }),
      errc::invalid_argument);
  EXPECT_EQ(seg.free_memory(), free_before) << "a rejected capacity allocated segment memory";
  EXPECT_FALSE(seg.find_bytes("q").has_value()) << "a rejected create registered the name";
  auto q = SpscQueue<int>::create(seg, "q", 16);  // the name is still free
  EXPECT_EQ(q.capacity(), 16u);
}

TEST_F(SpscQueueTest, CapacityOneHoldsOneElement) {
  SpscQueue<int> q(1);
  EXPECT_TRUE(q.try_push(7));
  EXPECT_FALSE(q.try_push(8));
  EXPECT_EQ(q.try_pop(), 7);
  EXPECT_TRUE(q.try_push(9));
  EXPECT_EQ(q.try_pop(), 9);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

TEST_F(SpscQueueTest, OpenOfMissingNameIsNotFound) {
  auto seg = Segment::anonymous(1 << 16);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::open(seg, "nothing-here"); }), errc::not_found);
}

TEST_F(SpscQueueTest, OpenOfSomethingElseIsBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  (void)seg.construct<std::uint64_t>("word", 0u);
  (void)seg.construct_bytes("zeros", 4096, 64);
  (void)MpmcQueue<std::uint64_t>::create(seg, "mpmc", 16);
  (void)SpscQueue<std::uint64_t>::create(seg, "spsc64", 16);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<std::uint64_t>::open(seg, "word"); }), errc::bad_layout);
  // Zeros are what an object looks like before its creator publishes it: "not ready yet",
  // never a corrupt layout.
  EXPECT_EQ(error_of([&] { (void)SpscQueue<std::uint64_t>::open(seg, "zeros"); }), errc::timeout);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<std::uint64_t>::open(seg, "mpmc"); }), errc::bad_layout);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<std::uint32_t>::open(seg, "spsc64"); }),
            errc::bad_layout)
      << "element size differs";
  EXPECT_EQ(error_of([&] { (void)SpscQueue<std::uint64_t>::open(seg, "spsc64"); }),
            std::error_code{});
}

TEST_F(SpscQueueTest, CreateUnderTakenNameIsAlreadyExists) {
  auto seg = Segment::anonymous(1 << 16);
  auto q = SpscQueue<int>::create(seg, "q", 8);
  EXPECT_EQ(error_of([&] { (void)SpscQueue<int>::create(seg, "q", 8); }), errc::already_exists);
}

// ---- non-blocking and timed calls ---------------------------------------------------------

TEST_F(SpscQueueTest, TryCallsOnEmptyAndFullReturnFalse) {
  SpscQueue<int> q(4);
  int out = -1;
  EXPECT_FALSE(q.try_pop(out));
  EXPECT_EQ(out, -1);
  EXPECT_EQ(q.try_pop(), std::nullopt);
  std::array<int, 4> buf{};
  EXPECT_EQ(q.try_pop_n(buf), 0u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.try_push(i));
  EXPECT_FALSE(q.try_push(99));
  const std::array<int, 2> more{100, 101};
  EXPECT_EQ(q.try_push_n(more), 0u);
  EXPECT_EQ(q.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.try_pop(), i);
}

TEST_F(SpscQueueTest, PopForOnEmptyReturnsNulloptAndChangesNothing) {
  SpscQueue<int> q(4, WaitPolicy::hybrid());
  const Deadline deadline = Deadline::after(30ms);
  int out = -1;
  EXPECT_FALSE(q.pop_until(out, deadline));
  EXPECT_TRUE(deadline.expired()) << "pop gave up before its deadline";
  EXPECT_EQ(out, -1);
  EXPECT_EQ(q.pop_for(10ms), std::nullopt);
  EXPECT_EQ(q.size(), 0u);
  EXPECT_TRUE(q.try_push(5));
  EXPECT_EQ(q.pop_for(10ms), 5);
}

TEST_F(SpscQueueTest, PushForOnFullReturnsFalseAndLeavesContentsIntact) {
  SpscQueue<int> q(4, WaitPolicy::block());
  for (int i = 0; i < 4; ++i) q.push(i);
  const Deadline deadline = Deadline::after(30ms);
  EXPECT_FALSE(q.push_until(99, deadline));
  EXPECT_TRUE(deadline.expired()) << "push gave up before its deadline";
  EXPECT_FALSE(q.push_for(98, 10ms));
  EXPECT_EQ(q.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.try_pop(), i);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

TEST_F(SpscQueueTest, TryPushNPushesTheLeadingElementsThatFitAndWrapsAround) {
  SpscQueue<int> q(8);
  const std::array<int, 5> first{0, 1, 2, 3, 4};
  EXPECT_EQ(q.try_push_n(first), 5u);
  std::array<int, 3> three{};
  EXPECT_EQ(q.try_pop_n(three), 3u);
  EXPECT_EQ(three, (std::array<int, 3>{0, 1, 2}));
  std::vector<int> ten{5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  EXPECT_EQ(q.try_push_n(ten), 6u) << "only 6 of 8 slots were free";
  std::array<int, 16> out{};
  EXPECT_EQ(q.try_pop_n(out), 8u);
  EXPECT_EQ(std::vector<int>(out.begin(), out.begin() + 8),
            (std::vector<int>{3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(q.size(), 0u);
}

// ---- close --------------------------------------------------------------------------------

TEST_F(SpscQueueTest, PushAfterCloseThrowsClosed) {
  SpscQueue<int> q(4);
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_EQ(error_of([&] { q.push(1); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)q.push_for(1, 10ms); }), errc::closed);
  EXPECT_EQ(q.size(), 0u);
}

// close() means "no more pushes"; the non-blocking push must not slip an element in after it
// either (it may report that by returning false or by throwing errc::closed).
TEST_F(SpscQueueTest, TryPushAfterCloseAddsNothing) {
  SpscQueue<int> q(4);
  q.close();
  bool pushed = false;
  const auto err = error_of([&] { pushed = q.try_push(1); });
  EXPECT_TRUE(err == std::error_code{} || err == errc::closed) << err.message();
  EXPECT_FALSE(pushed);
  EXPECT_EQ(q.size(), 0u);
  const std::array<int, 2> two{2, 3};
  std::size_t n = 0;
  (void)error_of([&] { n = q.try_push_n(two); });
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(q.size(), 0u);
}

TEST_F(SpscQueueTest, ElementsPushedBeforeCloseAreDrainedThenPopThrowsClosed) {
  SpscQueue<std::uint64_t> q(64);
  auto producer = Process::spawn([&] {
    for (std::uint64_t i = 0; i < 40; ++i) q.push(i);
    q.close();
    return 0;
  });
  ASSERT_EQ(exit_code(producer), 0);
  for (std::uint64_t i = 0; i < 40; ++i) {
    std::uint64_t v = 0;
    ASSERT_EQ(error_of([&] { v = q.pop(); }), std::error_code{}) << "element " << i;
    EXPECT_EQ(v, i);
  }
  EXPECT_EQ(error_of([&] { (void)q.pop(); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)q.pop_for(10s); }), errc::closed);
  EXPECT_EQ(q.try_pop(), std::nullopt);
}

TEST_P(SpscQueueModeTest, CloseWakesConsumerBlockedInPop) {
  SpscQueue<int> q(4, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& waiting = seg.make<Flag>(0u);
  q.attach_producer();  // a live producer: the consumer must not see peer_dead
  auto consumer = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    int v = 0;
    return outcome_of([&] { return q.pop_until(v, Deadline::after(10s)); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);  // most likely asleep in pop now; either way is fine
  q.close();
  EXPECT_EQ(exit_code(consumer), testing::kClosed);
}

TEST_P(SpscQueueModeTest, CloseWakesProducerBlockedInPush) {
  SpscQueue<int> q(2, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& waiting = seg.make<Flag>(0u);
  q.attach_consumer();
  auto producer = Process::spawn([&] {
    while (q.try_push(1)) {
    }
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return q.push_until(2, Deadline::after(10s)); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);
  q.close();
  EXPECT_EQ(exit_code(producer), testing::kClosed);
  EXPECT_EQ(q.size(), 2u);
}

// ---- streams across processes -------------------------------------------------------------

TEST_P(SpscQueueModeTest, MillionSequenceNumbersArriveInOrderWithoutLossOrDuplicates) {
  const std::uint64_t kCount = testing::scaled(1'000'000);
  SpscQueue<Msg> q(1024, GetParam().policy);
  auto producer = Process::spawn([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) q.push(msg(i));
    q.close();
    return 0;
  });
  std::uint64_t got = 0;
  for (;;) {
    Msg m{};
    const auto err = error_of([&] { m = q.pop(); });
    if (err == errc::closed) break;
    ASSERT_EQ(err, std::error_code{}) << "after " << got << " messages";
    ASSERT_EQ(m.seq, got) << "lost, duplicated or reordered";
    ASSERT_EQ(m.check, testing::mix64(got)) << "torn element " << got;
    ++got;
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(producer), 0);
}

TEST_P(SpscQueueModeTest, BatchedPushNAndPopNAcrossProcessesKeepEveryElementInOrder) {
  const std::uint64_t kCount = testing::scaled(1'000'000);
  // A small queue and batches up to twice its size: partial batches and split copies at the
  // end of the slot array happen all the time.
  SpscQueue<Msg> q(64, GetParam().policy);
  auto producer = Process::spawn([&] {
    std::vector<Msg> batch;
    std::uint64_t next = 0;
    while (next < kCount) {
      const std::uint64_t want = 1 + testing::mix64(next) % 128;
      batch.clear();
      for (std::uint64_t i = next; i < std::min(kCount, next + want); ++i) batch.push_back(msg(i));
      const std::size_t n = q.try_push_n(batch);
      next += n;
      if (n == 0) {
        q.push(batch.front());  // wait as the mode says
        ++next;
      }
    }
    q.close();
    return 0;
  });
  std::vector<Msg> out(128);
  std::uint64_t got = 0;
  std::uint64_t round = 0;
  for (;;) {
    const std::size_t want = 1 + static_cast<std::size_t>(testing::mix64(~round++) % 128);
    std::size_t n = q.try_pop_n(std::span(out).first(want));
    if (n == 0) {
      const auto err = error_of([&] { out[0] = q.pop(); });
      if (err == errc::closed) break;
      ASSERT_EQ(err, std::error_code{});
      n = 1;
    }
    for (std::size_t i = 0; i < n; ++i, ++got) {
      ASSERT_EQ(out[i].seq, got) << "lost, duplicated or reordered";
      ASSERT_EQ(out[i].check, testing::mix64(got)) << "torn element " << got;
    }
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(producer), 0);
}

// ---- peer death ---------------------------------------------------------------------------

TEST_P(SpscQueueModeTest, ConsumerBlockedInPopGetsPeerDeadWhenProducerIsKilled) {
  SpscQueue<int> q(8, GetParam().policy);
  EXPECT_EQ(testing::outcome_when_peer_is_killed([&] { q.attach_producer(); },
                                                 [&] {
                                                   int v = 0;
                                                   return q.pop_until(v, Deadline::after(10s));
                                                 }),
            testing::kPeerDead)
      << "11: timed out instead of noticing the dead producer";
}

TEST_P(SpscQueueModeTest, ProducerBlockedInPushGetsPeerDeadWhenConsumerIsKilled) {
  SpscQueue<int> q(4, GetParam().policy);
  EXPECT_EQ(testing::outcome_when_peer_is_killed([&] { q.attach_consumer(); },
                                                 [&] {
                                                   while (q.try_push(1)) {
                                                   }
                                                   return q.push_until(2, Deadline::after(10s));
                                                 }),
            testing::kPeerDead);
}

TEST_P(SpscQueueModeTest, ElementsPushedBeforeProducerDiedAreDeliveredBeforePeerDead) {
  SpscQueue<int> q(8, GetParam().policy);
  auto seg = Segment::anonymous(1 << 16);
  auto& pushed = seg.make<Flag>(0u);
  auto producer = Process::spawn([&] {
    for (int i = 1; i <= 3; ++i) q.push(i);
    pushed.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return pushed.load(std::memory_order_acquire) == 1; }));
  producer.kill(SIGKILL);
  EXPECT_TRUE(producer.wait().signaled());
  for (int i = 1; i <= 3; ++i) {
    int v = 0;
    ASSERT_EQ(error_of([&] { EXPECT_TRUE(q.pop_until(v, Deadline::after(10s))); }),
              std::error_code{});
    EXPECT_EQ(v, i);
  }
  int v = 0;
  EXPECT_EQ(error_of([&] { (void)q.pop_until(v, Deadline::after(10s)); }), errc::peer_dead);
}

// ---- handles inherited through fork -------------------------------------------------------

// One consumer at a time, but not always the same process: a consumer that exits is
// replaced by a child forked later from the creator, whose handle was never used to pop.
// The newcomer must see the queue as it is in shared memory, not as its handle last saw it.
TEST_F(SpscQueueTest, ReplacementConsumerForkedLaterSeesOnlyWhatIsLeft) {
  SpscQueue<int> q(8);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(q.try_push(i));
  auto first = Process::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      if (q.try_pop() != i) return 1;
    }
    return 0;
  });
  ASSERT_EQ(exit_code(first), 0);
  auto second = Process::spawn([&] {
    if (q.try_pop().has_value()) return 1;  // the queue is empty
    std::array<int, 4> buf{};
    if (q.try_pop_n(buf) != 0) return 2;
    return 0;
  });
  EXPECT_EQ(exit_code(second), 0) << "1: try_pop, 2: try_pop_n returned an element of an empty "
                                     "queue";
  EXPECT_EQ(q.size(), 0u);
}

// The same for a replacement producer: it must not overwrite elements still in the queue.
TEST_F(SpscQueueTest, ReplacementProducerForkedLaterDoesNotOverwriteUnconsumedElements) {
  SpscQueue<int> q(8);
  auto first = Process::spawn([&] {
    for (int i = 0; i < 20; ++i) {
      if (!q.push_for(i, 10s)) return 1;
    }
    return 0;
  });
  for (int i = 0; i < 16; ++i) {
    int v = -1;
    ASSERT_TRUE(q.pop_until(v, Deadline::after(10s)));
    ASSERT_EQ(v, i);
  }
  ASSERT_EQ(exit_code(first), 0);
  ASSERT_EQ(q.size(), 4u);  // 16..19 are still in the queue
  auto second = Process::spawn([&] {
    const std::array<int, 8> batch{100, 101, 102, 103, 104, 105, 106, 107};
    return static_cast<int>(q.try_push_n(batch));
  });
  EXPECT_EQ(exit_code(second), 4) << "only 4 slots were free";
  std::vector<int> rest;
  while (auto v = q.try_pop()) rest.push_back(*v);
  EXPECT_EQ(rest, (std::vector<int>{16, 17, 18, 19, 100, 101, 102, 103}));
}

// ---- named segments -----------------------------------------------------------------------

TEST_F(SpscQueueTest, WaiterThatOncePushedStillGetsPeerDeadWhenTheRealProducerDies) {
  SpscQueue<int> q(8, WaitPolicy::hybrid());
  q.push(1);  // this process is now registered as a producer too
  EXPECT_EQ(q.pop(), 1);
  auto seg = Segment::anonymous(1 << 16);
  auto& attached = seg.make<Flag>(0u);
  auto producer = Process::spawn([&] {
    q.attach_producer();
    attached.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 1; }));
  producer.kill(SIGKILL);
  EXPECT_TRUE(producer.wait().signaled());
  int v = 0;
  EXPECT_EQ(error_of([&] { (void)q.pop_until(v, Deadline::after(10s)); }), errc::peer_dead)
      << "the waiter counted itself as a live producer";
}

TEST_F(SpscQueueTest, ProcessThatOpensTheSegmentByNameExchangesElements) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  auto requests = SpscQueue<Msg>::create(seg, "requests", 16, WaitPolicy::block());
  auto replies = SpscQueue<Msg>::create(seg, "replies", 16, WaitPolicy::block());
  auto peer = Process::spawn([&name] {
    auto mine = Segment::open(name);
    auto in = SpscQueue<Msg>::open(mine, "requests");
    auto out = SpscQueue<Msg>::open(mine, "replies");
    if (in.capacity() != 16 || in.policy().sleep != true) return 1;
    for (;;) {
      Msg m{};
      if (outcome_of([&] { m = in.pop(); }) == testing::kClosed) break;
      out.push(msg(m.seq * 2));
    }
    out.close();
    return 0;
  });
  for (std::uint64_t i = 0; i < 500; ++i) {
    requests.push(msg(i));
    const Msg r = replies.pop();
    ASSERT_EQ(r.seq, 2 * i);
    ASSERT_EQ(r.check, testing::mix64(2 * i));
  }
  requests.close();
  EXPECT_EQ(error_of([&] { (void)replies.pop_for(10s); }), errc::closed);
  EXPECT_EQ(exit_code(peer), 0);
}

}  // namespace
}  // namespace ipckit
