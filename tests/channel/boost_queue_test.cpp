#include "ipckit/channel/boost_queue.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "channel_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using BoostQueueTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::Mode;
using testing::outcome_of;

struct Msg {
  std::uint64_t seq;
  std::uint64_t check;
};
Msg msg(std::uint64_t seq) { return {seq, testing::mix64(seq)}; }

class BoostQueueModeTest : public testing::LeakCheckedTest,
                           public ::testing::WithParamInterface<Mode> {};
INSTANTIATE_TEST_SUITE_P(BoostQueue, BoostQueueModeTest, testing::all_modes(), testing::mode_name);

TEST_F(BoostQueueTest, TryCallsOnEmptyAndFullReturnFalse) {
  BoostSpscQueue<int, 4> q;
  EXPECT_EQ(q.try_pop(), std::nullopt);
  int pushed = 0;
  while (q.try_push(pushed)) ++pushed;
  EXPECT_GE(pushed, 3) << "Boost keeps one slot free";
  EXPECT_FALSE(q.push_for(99, 1ms));
  for (int i = 0; i < pushed; ++i) EXPECT_EQ(q.try_pop(), i);
  EXPECT_EQ(q.pop_for(1ms), std::nullopt);
}

TEST_F(BoostQueueTest, PushAfterCloseThrowsClosedAndPopDrainsFirst) {
  BoostMpmcQueue<int, 16> q;
  q.push(1);
  q.push(2);
  q.close();
  EXPECT_EQ(error_of([&] { (void)q.try_push(3); }), errc::closed);
  EXPECT_EQ(error_of([&] { q.push(3); }), errc::closed);
  EXPECT_EQ(q.pop(), 1);
  EXPECT_EQ(q.pop(), 2);
  EXPECT_EQ(error_of([&] { (void)q.pop(); }), errc::closed);
}

TEST_P(BoostQueueModeTest, SpscSequenceArrivesInOrderWithoutLossOrDuplicates) {
  const std::uint64_t kCount = testing::scaled(200'000);
  BoostSpscQueue<Msg, 256> q(GetParam().policy);
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
    ASSERT_EQ(err, std::error_code{});
    ASSERT_EQ(m.seq, got) << "lost, duplicated or reordered";
    ASSERT_EQ(m.check, testing::mix64(got));
    ++got;
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(producer), 0);
}

TEST_P(BoostQueueModeTest, MpmcTwoByTwoDeliversEveryMessageExactlyOnce) {
  const std::uint64_t kPerProducer = testing::scaled(50'000);
  BoostMpmcQueue<Msg, 512> q(GetParam().policy);
  SharedArray<std::uint8_t> seen(2 * kPerProducer);
  std::vector<Process> producers;
  for (std::uint64_t p = 0; p < 2; ++p) {
    producers.push_back(Process::spawn([&, p] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) q.push(msg(p * kPerProducer + i));
      return 0;
    }));
  }
  std::vector<Process> consumers;
  for (int c = 0; c < 2; ++c) {
    consumers.push_back(Process::spawn([&] {
      for (;;) {
        Msg m{};
        // Closed by the parent, or every producer gone (after delivering all they pushed).
        const int how = outcome_of([&] { m = q.pop(); });
        if (how == testing::kClosed || how == testing::kPeerDead) return 0;
        if (how != testing::kReturned) return 3;
        if (m.check != testing::mix64(m.seq) || m.seq >= seen.size()) return 2;
        ++seen[m.seq];  // each index is written by the one consumer that popped it
      }
    }));
  }
  for (auto& p : producers) EXPECT_EQ(exit_code(p), 0);
  q.close();
  for (auto& c : consumers) EXPECT_EQ(exit_code(c), 0);
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "message " << i;
}

TEST_P(BoostQueueModeTest, ConsumerBlockedInPopGetsPeerDeadWhenProducerIsKilled) {
  BoostSpscQueue<int, 8> q(GetParam().policy);
  EXPECT_EQ(testing::outcome_when_peer_is_killed([&] { q.attach_producer(); },
                                                 [&] {
                                                   int v = 0;
                                                   return q.pop_until(v, Deadline::after(10s));
                                                 }),
            testing::kPeerDead);
}

TEST_F(BoostQueueTest, ProcessThatOpensTheSegmentByNameExchangesElements) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  auto requests = BoostSpscQueue<Msg, 64>::create(seg, "requests", WaitPolicy::block());
  auto replies = BoostSpscQueue<Msg, 64>::create(seg, "replies", WaitPolicy::block());
  auto peer = Process::spawn([&name] {
    auto mine = Segment::open(name);
    auto in = BoostSpscQueue<Msg, 64>::open(mine, "requests");
    auto out = BoostSpscQueue<Msg, 64>::open(mine, "replies");
    for (;;) {
      Msg m{};
      if (outcome_of([&] { m = in.pop(); }) == testing::kClosed) break;
      out.push(msg(m.seq + 1));
    }
    return 0;
  });
  for (std::uint64_t i = 0; i < 300; ++i) {
    requests.push(msg(i));
    const Msg r = replies.pop();
    ASSERT_EQ(r.seq, i + 1);
    ASSERT_EQ(r.check, testing::mix64(i + 1));
  }
  requests.close();
  EXPECT_EQ(exit_code(peer), 0);
}

TEST_F(BoostQueueTest, OpenOfOtherElementTypeOrCapacityIsBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  auto q = BoostSpscQueue<Msg, 64>::create(seg, "q");
  EXPECT_EQ(error_of([&] { (void)BoostSpscQueue<int, 64>::open(seg, "q"); }), errc::bad_layout);
  EXPECT_EQ(error_of([&] { (void)BoostSpscQueue<Msg, 128>::open(seg, "q"); }), errc::bad_layout);
  EXPECT_EQ(error_of([&] { (void)BoostSpscQueue<Msg, 64>::open(seg, "missing"); }),
            errc::not_found);
}

}  // namespace
}  // namespace ipckit
