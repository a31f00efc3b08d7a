#include "ipckit/sync/semaphore.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
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
using SemaphoreTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::Mode;
using testing::wait_for_start;

class SemaphoreModeTest : public testing::LeakCheckedTest,
                          public ::testing::WithParamInterface<Mode> {};

INSTANTIATE_TEST_SUITE_P(Semaphore, SemaphoreModeTest,
                         ::testing::Values(Mode{"hybrid", WaitPolicy::hybrid()},
                                           Mode{"block", WaitPolicy::block()}),
                         testing::mode_name);

TEST_P(SemaphoreModeTest, CountingLockAroundPlainCounterGivesExactTotal) {
  constexpr int kProcs = 8;
  constexpr int kIters = 20'000;
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<Semaphore>(1u, GetParam().policy);
  auto& counter = seg.make<std::uint64_t>(0u);  // deliberately not atomic
  auto& go = seg.make<std::atomic<std::uint32_t>>(0u);
  auto kids = testing::spawn_n(kProcs, [&](int) {
    wait_for_start(go);
    for (int i = 0; i < kIters; ++i) {
      sem.wait();
      counter = counter + 1;
      sem.post();
    }
    return 0;
  });
  go.store(1, std::memory_order_release);
  ASSERT_TRUE(testing::all_succeed(kids, 60s));
  EXPECT_EQ(counter, std::uint64_t{kProcs} * kIters);
  EXPECT_EQ(sem.value(), 1u);
}

TEST_P(SemaphoreModeTest, ProducersAndConsumersAcrossProcessesBalance) {
  constexpr int kProducers = 2;
  constexpr int kConsumers = 3;
  constexpr std::uint32_t kPerProducer = 3000;  // posted in batches of 1..5
  constexpr std::uint32_t kPerConsumer = kProducers * kPerProducer / kConsumers;
  auto seg = Segment::anonymous(1 << 16);
  auto& items = seg.make<Semaphore>(0u, GetParam().policy);
  auto& taken = seg.make<std::atomic<std::uint32_t>>(0u);
  auto& go = seg.make<std::atomic<std::uint32_t>>(0u);
  auto producers = testing::spawn_n(kProducers, [&](int rank) {
    wait_for_start(go);
    std::uint32_t posted = 0;
    for (std::uint32_t batch = 1 + static_cast<std::uint32_t>(rank); posted < kPerProducer;
         batch = batch % 5 + 1) {
      const std::uint32_t n = std::min(batch, kPerProducer - posted);
      items.post(n);
      posted += n;
      if (posted % 256 < 5) std::this_thread::yield();  // let consumers drain now and then
    }
    return 0;
  });
  auto consumers = testing::spawn_n(kConsumers, [&](int) {
    for (std::uint32_t i = 0; i < kPerConsumer; ++i) {
      if (!items.wait_for(10s)) return 1;
      taken.fetch_add(1, std::memory_order_relaxed);
    }
    return 0;
  });
  go.store(1, std::memory_order_release);
  EXPECT_TRUE(testing::all_succeed(producers, 30s));
  EXPECT_TRUE(testing::all_succeed(consumers, 30s)) << "a consumer starved";
  EXPECT_EQ(taken.load(), kProducers * kPerProducer);
  EXPECT_EQ(items.value(), 0u);
  EXPECT_FALSE(items.try_wait());
}

TEST_P(SemaphoreModeTest, WaitBlocksUntilAnotherProcessPosts) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<Semaphore>(0u, GetParam().policy);
  auto& woke = seg.make<std::atomic<std::uint32_t>>(0u);
  auto child = Process::spawn([&] {
    sem.wait();
    woke.store(1, std::memory_order_release);
    return 0;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(woke.load(std::memory_order_acquire), 0u) << "wait() returned with count 0";
  sem.post();
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value()) << "the waiter was never woken";
  EXPECT_TRUE(st->success());
  EXPECT_EQ(woke.load(), 1u);
  EXPECT_EQ(sem.value(), 0u);
}

TEST_P(SemaphoreModeTest, WaitForTimesOutReturningFalseAndTakesNothing) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<Semaphore>(0u, GetParam().policy);
  const Deadline deadline = Deadline::after(50ms);
  EXPECT_FALSE(sem.wait_until(deadline));
  EXPECT_TRUE(deadline.expired()) << "wait gave up before its deadline";
  EXPECT_EQ(sem.value(), 0u);
  // A unit posted after the timeout stays there for the next taker.
  sem.post();
  EXPECT_EQ(sem.value(), 1u);
  EXPECT_TRUE(sem.wait_for(0ms));
  EXPECT_EQ(sem.value(), 0u);
}

TEST_P(SemaphoreModeTest, TimedOutWaiterInAnotherProcessLeavesLaterPostsAlone) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<Semaphore>(0u, GetParam().policy);
  auto child = Process::spawn([&] { return sem.wait_for(30ms) ? 1 : 0; });
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success()) << st->describe() << " (1: took a unit nobody posted)";
  sem.post(2);
  EXPECT_EQ(sem.value(), 2u);
}

TEST_F(SemaphoreTest, TryWaitOnZeroIsFalse) {
  Semaphore sem(0);
  EXPECT_FALSE(sem.try_wait());
  EXPECT_EQ(sem.value(), 0u);
  sem.post();
  EXPECT_TRUE(sem.try_wait());
  EXPECT_FALSE(sem.try_wait());
}

TEST_F(SemaphoreTest, PostAddsCount) {
  Semaphore sem(2);
  sem.post(3);
  EXPECT_EQ(sem.value(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(sem.try_wait()) << i;
  EXPECT_FALSE(sem.try_wait());
}

TEST_F(SemaphoreTest, PostBeyondMaxValueThrowsAndLeavesCountUnchanged) {
  Semaphore sem(Semaphore::kMaxValue - 1);
  sem.post();
  EXPECT_EQ(sem.value(), Semaphore::kMaxValue);
  EXPECT_EQ(error_of([&] { sem.post(); }), errc::invalid_argument);
  EXPECT_EQ(sem.value(), Semaphore::kMaxValue);

  Semaphore small(5);
  EXPECT_EQ(error_of([&] { small.post(Semaphore::kMaxValue); }), errc::invalid_argument);
  EXPECT_EQ(small.value(), 5u);
  EXPECT_EQ(error_of([&] { small.post(0xffffffffu); }), errc::invalid_argument);
  EXPECT_EQ(small.value(), 5u);
  small.post(Semaphore::kMaxValue - 5);
  EXPECT_EQ(small.value(), Semaphore::kMaxValue);
}

TEST_F(SemaphoreTest, InitialValueAboveMaxIsInvalidArgument) {
  EXPECT_EQ(error_of([] { Semaphore s(Semaphore::kMaxValue + 1); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Semaphore s(0xffffffffu); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Semaphore s(Semaphore::kMaxValue); }), std::error_code{});
  auto seg = Segment::anonymous(1 << 16);
  EXPECT_EQ(error_of([&] { (void)seg.make<Semaphore>(Semaphore::kMaxValue + 1); }),
            errc::invalid_argument);
}

TEST_F(SemaphoreTest, ConstructedByNameIsSharedWithOpener) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 16);
  auto& sem = seg.construct<Semaphore>("sem", 0u);
  auto child = Process::spawn([&] {
    auto mine = Segment::open(name);
    auto& s = mine.find<Semaphore>("sem");
    s.post(3);
    return 0;
  });
  ASSERT_TRUE(child.wait().success());
  EXPECT_EQ(sem.value(), 3u);
  EXPECT_TRUE(sem.wait_for(0ms));
}

}  // namespace
}  // namespace ipckit
