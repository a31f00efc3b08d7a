// The process-shared types used between threads of one process. The same memory orderings
// carry both cases, but only threads let ThreadSanitizer see them: the `tsan` preset builds
// and runs this file (and the pool suite) so that a missing acquire/release shows up as a
// race report. Every test counts and checksums what crossed.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/pool/pool.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/semaphore.hpp"

namespace ipckit {
// Test names say "spin" / "hybrid" / "block", not the policy's bytes.
void PrintTo(const WaitPolicy& p, std::ostream* os) {
  *os << (p.sleep ? (p.spin.count() ? "hybrid" : "block") : "spin");
}
}  // namespace ipckit

namespace {

using namespace std::chrono_literals;
using ipckit::WaitPolicy;

// Fewer items under the sanitizers, which slow every access 5-20x.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr std::uint64_t kItems = 50'000;
#else
constexpr std::uint64_t kItems = 200'000;
#endif

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser: a cheap per-item checksum
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class ThreadsPolicyTest : public ::testing::TestWithParam<WaitPolicy> {};

TEST_P(ThreadsPolicyTest, SpscQueueDeliversEveryItemInOrderBetweenThreads) {
  ipckit::SpscQueue<std::uint64_t> q(256, GetParam());
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kItems; ++i) q.push(i);
    q.close();
  });
  std::uint64_t expect = 0;
  for (;;) {
    std::optional<std::uint64_t> got;
    try {
      got = q.pop_for(10s);
    } catch (const ipckit::Error& e) {  // closed, and drained
      ASSERT_EQ(e.code(), ipckit::errc::closed) << e.what();
      break;
    }
    ASSERT_TRUE(got.has_value()) << "timed out after " << expect << " items";
    ASSERT_EQ(*got, expect) << "out of order or lost";
    ++expect;
  }
  producer.join();
  EXPECT_EQ(expect, kItems);
}

TEST_P(ThreadsPolicyTest, MpmcQueueDeliversEveryItemExactlyOnceBetweenThreads) {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 3;
  constexpr std::uint64_t kEach = kItems / kProducers;
  ipckit::MpmcQueue<std::uint64_t> q(128, GetParam());
  std::vector<std::atomic<std::uint8_t>> seen(kProducers * kEach);
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> checksum{0};
  std::atomic<int> timeouts{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        if (!q.push_for(std::uint64_t(p) * kEach + i, 60s)) {
          timeouts.fetch_add(1);
          return;
        }
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      std::uint64_t sum = 0;
      for (;;) {
        const auto got = q.pop_for(60s);
        if (!got) {  // a lost item shows as a failure, not as a hung test
          timeouts.fetch_add(1);
          break;
        }
        const std::uint64_t v = *got;
        if (v == UINT64_MAX) break;  // one stop marker per consumer
        seen[v].fetch_add(1, std::memory_order_relaxed);
        sum += mix(v);
        received.fetch_add(1, std::memory_order_relaxed);
      }
      checksum.fetch_add(sum, std::memory_order_relaxed);
    });
  }
  for (int p = 0; p < kProducers; ++p) threads[p].join();
  for (int c = 0; c < kConsumers; ++c) (void)q.push_for(UINT64_MAX, 60s);
  for (std::size_t t = kProducers; t < threads.size(); ++t) threads[t].join();

  EXPECT_EQ(timeouts.load(), 0) << "a consumer waited 60 s for an item";
  EXPECT_EQ(received.load(), kProducers * kEach);
  std::uint64_t expect_sum = 0;
  for (std::uint64_t v = 0; v < kProducers * kEach; ++v) expect_sum += mix(v);
  EXPECT_EQ(checksum.load(), expect_sum);
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](auto& s) { return s.load() == 1; }))
      << "an item was lost or received twice";
}

TEST_P(ThreadsPolicyTest, ByteRingDeliversRandomSizesInOrderWithZeroCopyAndBatches) {
  ipckit::ByteRing ring(1 << 14, GetParam());
  constexpr int kMessages = 50'000;
  std::thread producer([&] {
    std::mt19937_64 rng(7);
    std::vector<std::span<const std::byte>> batch;
    std::vector<std::vector<std::byte>> store;
    for (int i = 0; i < kMessages;) {
      if (i % 3 == 0) {  // zero-copy reserve/commit
        const std::size_t n = 8 + rng() % 600;
        auto buf = ring.reserve(n);
        const std::uint64_t tag = mix(i);
        std::memcpy(buf.data(), &i, sizeof i);
        for (std::size_t k = sizeof i; k < n; ++k) buf[k] = std::byte(tag >> (k % 8 * 8));
        ring.commit();
        ++i;
      } else {  // a batch of up to 8 copies, one wake-up
        store.clear();
        batch.clear();
        for (int b = 0; b < 8 && i < kMessages; ++b, ++i) {
          const std::size_t n = 8 + rng() % 900;
          std::vector<std::byte> m(n);
          const std::uint64_t tag = mix(i);
          std::memcpy(m.data(), &i, sizeof i);
          for (std::size_t k = sizeof i; k < n; ++k) m[k] = std::byte(tag >> (k % 8 * 8));
          store.push_back(std::move(m));
        }
        for (auto& m : store) batch.emplace_back(m);
        ring.send_batch(batch);
      }
    }
    ring.close();
  });
  int next = 0;
  bool bad = false;
  for (;;) {
    std::size_t got = 0;
    try {
      got = ring.recv_batch(
          [&](std::span<const std::byte> m) {
            int id = -1;
            std::memcpy(&id, m.data(), sizeof id);
            const std::uint64_t tag = mix(id);
            bool ok = id == next;
            for (std::size_t k = sizeof id; ok && k < m.size(); ++k) {
              ok = m[k] == std::byte(tag >> (k % 8 * 8));
            }
            bad |= !ok;
            ++next;
          },
          64, ipckit::Deadline::after(10s));
    } catch (const ipckit::Error& e) {
      ASSERT_EQ(e.code(), ipckit::errc::closed) << e.what();
      break;
    }
    ASSERT_GT(got, 0u) << "timed out after " << next << " messages";
  }
  producer.join();
  EXPECT_FALSE(bad) << "a message arrived out of order or corrupt";
  EXPECT_EQ(next, kMessages);
}

INSTANTIATE_TEST_SUITE_P(Threads, ThreadsPolicyTest,
                         ::testing::Values(WaitPolicy::spin_only(), WaitPolicy::hybrid(),
                                           WaitPolicy::block()),
                         [](const auto& info) {
                           return info.index == 0   ? std::string("spin")
                                  : info.index == 1 ? std::string("hybrid")
                                                    : std::string("block");
                         });

std::string expected(int i) {
  return std::string(static_cast<std::size_t>(i % 97), static_cast<char>('a' + i % 26));
}

TEST(Threads, ChannelOfStringsCarriesEveryValueBetweenThreads) {
  ipckit::ChannelOptions options;
  options.capacity = 1 << 12;
  ipckit::Channel<std::string> ch(options);
  constexpr int kCount = 20'000;
  std::thread producer([&] {
    for (int i = 0; i < kCount; ++i) ch.send(expected(i));
    ch.close();
  });
  int i = 0;
  for (;; ++i) {
    std::optional<std::string> s;
    try {
      s = ch.recv_for(10s);
    } catch (const ipckit::Error& e) {
      ASSERT_EQ(e.code(), ipckit::errc::closed) << e.what();
      break;
    }
    ASSERT_TRUE(s.has_value());
    ASSERT_EQ(*s, expected(i));
  }
  producer.join();
  EXPECT_EQ(i, kCount);
}

TEST(Threads, MutexKeepsATwoWordInvariantUnderContention) {
  ipckit::Mutex m;
  std::uint64_t a = 0;
  std::uint64_t b = 0;  // always == 2 * a outside the lock
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::atomic<bool> broken{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int r = 0; r < kRounds; ++r) {
        ipckit::ScopedLock lock(m);
        if (b != 2 * a) broken = true;
        ++a;
        b += 2;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_FALSE(broken.load());
  EXPECT_EQ(a, std::uint64_t(kThreads) * kRounds);
  EXPECT_EQ(b, 2 * a);
}

TEST(Threads, SemaphoreHandsOutExactlyThePostedCount) {
  ipckit::Semaphore sem(0);
  constexpr int kTakers = 3;
  constexpr int kPosts = 30'000;
  std::atomic<int> taken{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kTakers; ++t) {
    ts.emplace_back([&] {
      while (!done.load()) {
        if (sem.wait_for(5ms)) taken.fetch_add(1);
      }
      while (sem.try_wait()) taken.fetch_add(1);
    });
  }
  for (int i = 0; i < kPosts; ++i) sem.post();
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (taken.load() < kPosts && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  done = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(taken.load(), kPosts);
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Threads, BarrierPhasesStayInStepAcrossThreads) {
  constexpr int kParties = 4;
  constexpr int kPhases = 500;
  ipckit::Barrier barrier(kParties);
  std::vector<std::atomic<int>> arrived(kPhases);
  std::atomic<bool> bad{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kParties; ++t) {
    ts.emplace_back([&] {
      try {
        for (int p = 0; p < kPhases; ++p) {
          arrived[p].fetch_add(1);
          const std::uint32_t phase = barrier.arrive_and_wait_for(30s);
          // Everyone arrived at phase p before anyone leaves it.
          if (phase != std::uint32_t(p) || arrived[p].load() != kParties) bad = true;
        }
      } catch (const ipckit::Error&) {  // timed out or broken: a failure, not a terminate()
        bad = true;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_FALSE(bad.load());
}

int triple(int x) { return 3 * x; }

TEST(Threads, PoolServesSeveralCallingThreadsAtOnce) {
  ipckit::PoolOptions options;
  options.processes = 2;
  ipckit::Pool pool(options);
  constexpr int kThreads = 4;
  constexpr int kTasks = 500;
  std::atomic<long> sum{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<int> in(kTasks);
      std::iota(in.begin(), in.end(), t * kTasks);
      if (t % 2 == 0) {
        const auto out = pool.map(triple, in);
        for (int i = 0; i < kTasks; ++i) {
          if (out[i] != 3 * in[i]) wrong.fetch_add(1);
          sum.fetch_add(out[i]);
        }
      } else {
        std::vector<ipckit::AsyncResult<int>> rs;
        for (int x : in) rs.push_back(pool.apply_async(triple, x));
        for (int i = 0; i < kTasks; ++i) {
          const int v = rs[i].get();
          if (v != 3 * in[i]) wrong.fetch_add(1);
          sum.fetch_add(v);
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  pool.close();
  pool.join();
  const long n = long(kThreads) * kTasks;
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(sum.load(), 3 * (n * (n - 1) / 2));
}

}  // namespace
