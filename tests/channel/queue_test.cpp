// Queue<T>: many producers and consumers between real processes, items counted and
// checksummed; producers and consumers killed with SIGKILL at random moments (exactly-once
// ledgers); close, timeouts, peer_dead, a named queue, scribbled bytes.
#include "ipckit/channel/queue.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
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
using QueueTest = testing::LeakCheckedTest;

// An item that says who put it and which it was, padded to a length that varies with both
// (so records wrap around the ring at every offset).
std::string item(int producer, int i) {
  std::string s = std::to_string(producer) + ":" + std::to_string(i) + ":";
  s.append(static_cast<std::size_t>((producer * 7 + i * 13) % 97), 'x');
  return s;
}
std::pair<int, int> parse(const std::string& s) {
  const auto a = s.find(':');
  const auto b = s.find(':', a + 1);
  return {std::stoi(s.substr(0, a)), std::stoi(s.substr(a + 1, b - a - 1))};
}

TEST_F(QueueTest, ItemsComeOutInOrderWithTheirValues) {
  Queue<std::string> q(4096);
  for (int i = 0; i < 500; ++i) {
    q.put(item(0, i));
    EXPECT_EQ(q.get(), item(0, i));
  }
  Queue<std::int64_t> ints(1024);
  for (std::int64_t i = 0; i < 10; ++i) ASSERT_TRUE(ints.try_put(i * i));
  for (std::int64_t i = 0; i < 10; ++i) EXPECT_EQ(ints.get(), i * i);
  EXPECT_TRUE(ints.empty());
}

TEST_F(QueueTest, TimedFormsAndAFullQueue) {
  Queue<std::int64_t> q(256);  // 4 records of a cache line each
  EXPECT_FALSE(q.try_get().has_value());
  EXPECT_FALSE(q.get_for(5ms).has_value());
  int put = 0;
  while (q.try_put(put)) ++put;
  EXPECT_EQ(put, 4);
  EXPECT_FALSE(q.put_for(7, 5ms));
  EXPECT_EQ(q.get(), 0);
  EXPECT_TRUE(q.try_put(4));
  for (std::int64_t i = 1; i <= 4; ++i) EXPECT_EQ(q.get(), i);
}

TEST_F(QueueTest, AnItemAboveMaxMessageIsRefusedAndChangesNothing) {
  Queue<std::string> q(1024);
  const auto e = testing::caught<Error>([&] { q.put(std::string(q.max_message() + 1, 'a')); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::message_too_large)) << e->what();
  EXPECT_TRUE(q.empty());
  q.put(std::string(q.max_message(), 'b'));
  EXPECT_EQ(q.get().size(), q.max_message());
}

TEST_F(QueueTest, CloseDrainsThenRefusesAndWakesAWaitingConsumer) {
  Queue<int> q(1024);
  q.put(1);
  q.put(2);
  auto waiter = Process::spawn([&] {
    // Takes both, then waits on the empty queue until close() wakes it.
    if (q.get() != 1 || q.get() != 2) return 1;
    try {
      (void)q.get();
    } catch (const Error& e) {
      return e.is(errc::closed) ? 0 : 2;
    }
    return 3;
  });
  std::this_thread::sleep_for(30ms);
  q.close();
  const auto st = waiter.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
  const auto e = testing::caught<Error>([&] { q.put(3); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::closed));
}

// Producers put kItems each; consumers record every item they get in a shared ledger.
struct Ledger {
  static constexpr int kProducers = 3;
  static constexpr int kItems = 4000;
  std::atomic<std::uint32_t> got[kProducers][kItems];
  std::atomic<std::int32_t> acked[kProducers];  // items whose put() returned
  std::atomic<std::uint32_t> taken;             // items got, by all consumers
};

TEST_F(QueueTest, ManyProducersAndConsumersEveryItemOnceInProducerOrder) {
  auto seg = Segment::anonymous(1 << 20);
  auto& led = seg.make<Ledger>();
  Queue<std::string> q(8192);  // small: producers wait for room, records wrap often
  auto producers = testing::spawn_n(Ledger::kProducers, [&](int p) {
    for (int i = 0; i < Ledger::kItems; ++i) q.put(item(p, i));
    return 0;
  });
  constexpr int kConsumers = 3;
  auto consumers = testing::spawn_n(kConsumers, [&](int) {
    int last[Ledger::kProducers] = {-1, -1, -1};
    for (;;) {
      std::optional<std::string> s;
      try {
        s = q.get_for(30s);
      } catch (const Error& e) {
        // closed by the parent, or every producer has exited and the queue is empty
        return e.is(errc::closed) || e.is(errc::peer_dead) ? 0 : 2;
      }
      if (!s) return 3;
      const auto [p, i] = parse(*s);
      if (*s != item(p, i) || i <= last[p]) return 4;  // corrupt, or out of producer order
      last[p] = i;
      led.got[p][i].fetch_add(1);
      led.taken.fetch_add(1);
    }
  });
  ASSERT_TRUE(testing::all_succeed(producers, 120s));
  while (led.taken.load() < Ledger::kProducers * Ledger::kItems) std::this_thread::sleep_for(1ms);
  q.close();
  ASSERT_TRUE(testing::all_succeed(consumers, 60s));
  for (int p = 0; p < Ledger::kProducers; ++p) {
    for (int i = 0; i < Ledger::kItems; ++i) ASSERT_EQ(led.got[p][i].load(), 1u) << p << " " << i;
  }
}

// close() racing live producers and consumers: every put that returned true is got by a
// consumer before they see "closed and drained" (the two locks must not let a put commit
// after a consumer's last look). Several rounds, the close at a random moment.
TEST_F(QueueTest, EveryPutThatSucceededBeforeCloseIsGotNoneAfter) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 20; ++round) {
    auto seg = Segment::anonymous(1 << 16);
    auto& put_ok = seg.make<std::atomic<std::uint64_t>>(0);
    auto& got = seg.make<std::atomic<std::uint64_t>>(0);
    auto& go = seg.make<std::atomic<std::uint32_t>>(0);
    Queue<std::uint64_t> q(1 << 16);
    auto producers = testing::spawn_n(3, [&](int) {
      testing::wait_for_start(go);
      for (std::uint64_t i = 0;; ++i) {
        try {
          q.put(i);
        } catch (const Error& e) {
          return e.is(errc::closed) ? 0 : 2;
        }
        put_ok.fetch_add(1);
      }
    });
    auto consumers = testing::spawn_n(2, [&](int) {
      testing::wait_for_start(go);
      for (;;) {
        try {
          (void)q.get();
        } catch (const Error& e) {
          return e.is(errc::closed) ? 0 : 2;
        }
        got.fetch_add(1);
      }
    });
    go.store(1);
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    q.close();
    ASSERT_TRUE(testing::all_succeed(producers, 60s));
    ASSERT_TRUE(testing::all_succeed(consumers, 60s));
    ASSERT_EQ(got.load(), put_ok.load()) << "round " << round;
  }
}

TEST_F(QueueTest, ProducersKilledMidPutLoseAtMostTheItemTheyWerePutting) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 20; ++round) {
    auto seg = Segment::anonymous(1 << 20);
    auto& led = seg.make<Ledger>();
    Queue<std::string> q(2048);
    auto producers = testing::spawn_n(Ledger::kProducers, [&](int p) {
      for (int i = 0; i < Ledger::kItems; ++i) {
        q.put(item(p, i));
        led.acked[p].store(i + 1);
      }
      return 0;
    });
    auto consumer = Process::spawn([&] {
      for (;;) {
        std::optional<std::string> s;
        try {
          s = q.get_for(30s);
        } catch (const Error& e) {
          return e.is(errc::closed) || e.is(errc::peer_dead) ? 0 : 2;
        }
        if (!s) return 3;
        const auto [p, i] = parse(*s);
        if (*s != item(p, i)) return 4;
        led.got[p][i].fetch_add(1);
      }
    });
    // Every producer has put once (is registered): only then can the consumer tell that all
    // of them are gone.
    for (int p = 0; p < Ledger::kProducers; ++p) {
      while (led.acked[p].load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    const int at = static_cast<int>(rng() % (Ledger::kItems - 1));  // mid-stream
    while (led.acked[0].load() < at) {
    }
    producers[0].kill(SIGKILL);  // anywhere: in put, holding the lock, between puts
    (void)producers[0].wait();
    for (std::size_t k = 1; k < producers.size(); ++k) ASSERT_TRUE(producers[k].wait_for(120s));
    const auto st = consumer.wait_for(120s);  // the queue drains, then every producer is gone
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->success()) << st->describe();
    for (int p = 0; p < Ledger::kProducers; ++p) {
      const int acked = led.acked[p].load();
      int got = 0;
      for (int i = 0; i < Ledger::kItems; ++i) {
        ASSERT_LE(led.got[p][i].load(), 1u) << "duplicated";
        if (led.got[p][i].load() == 1) {
          ASSERT_EQ(i, got) << "a gap: item " << got << " of producer " << p << " lost";
          ++got;
        }
      }
      // Every acknowledged put was got; the victim's in-flight item may have committed.
      EXPECT_GE(got, acked) << "producer " << p;
      EXPECT_LE(got, acked + 1) << "producer " << p;
    }
  }
}

TEST_F(QueueTest, AConsumerKilledMidGetLosesAtMostTheItemItWasTaking) {
  std::mt19937 rng(99);
  for (int round = 0; round < 20; ++round) {
    auto seg = Segment::anonymous(1 << 20);
    auto& led = seg.make<Ledger>();
    Queue<std::string> q(2048);
    const auto consume = [&](int) {
      for (;;) {
        std::optional<std::string> s;
        try {
          s = q.get_for(30s);
        } catch (const Error& e) {
          return e.is(errc::closed) ? 0 : 2;
        }
        if (!s) return 3;
        const auto [p, i] = parse(*s);
        led.got[p][i].fetch_add(1);
        led.taken.fetch_add(1);
      }
    };
    auto consumers = testing::spawn_n(2, consume);
    auto producer = Process::spawn([&] {
      for (int i = 0; i < Ledger::kItems; ++i) q.put(item(0, i));
      return 0;
    });
    const auto at = static_cast<std::uint32_t>(rng() % (Ledger::kItems / 2));  // mid-stream
    while (led.taken.load() < at) {
    }
    consumers[0].kill(SIGKILL);
    (void)consumers[0].wait();
    ASSERT_TRUE(producer.wait_for(120s));
    // The survivor drains the queue; then close ends it.
    while (!q.empty()) std::this_thread::sleep_for(1ms);
    q.close();  // it records what it took before its next get sees the close
    ASSERT_TRUE(consumers[1].wait_for(60s));
    int missing = 0;
    for (int i = 0; i < Ledger::kItems; ++i) {
      ASSERT_LE(led.got[0][i].load(), 1u) << "item " << i << " got twice";
      if (led.got[0][i].load() == 0) ++missing;
    }
    EXPECT_LE(missing, 1) << "more than the victim's in-flight item lost";
  }
}

TEST_F(QueueTest, AGetOnAnEmptyQueueWhoseProducersAllDiedIsPeerDead) {
  Queue<int> q(1024);
  auto producer = Process::spawn([&] {
    for (int i = 0; i < 3; ++i) q.put(i);
    return 0;
  });
  ASSERT_TRUE(producer.wait_for(30s));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(q.get(), i);  // what it put before it exited
  const auto e = testing::caught<Error>([&] { (void)q.get_for(30s); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::peer_dead)) << e->what();
  q.put(7);  // a producer again: this process
  EXPECT_EQ(q.get(), 7);
  EXPECT_FALSE(q.get_for(30ms).has_value()) << "a live producer: no peer_dead, a timeout";
}

TEST_F(QueueTest, APutOnAFullQueueWhoseConsumersAllDiedIsPeerDead) {
  Queue<std::int64_t> q(256);                                            // 4 items
  auto consumer = Process::spawn([&] { return q.get() == 0 ? 0 : 1; });  // takes one, exits
  q.put(0);
  ASSERT_TRUE(consumer.wait_for(30s));
  for (std::int64_t i = 1; i <= 4; ++i) ASSERT_TRUE(q.put_for(i, 5s));  // fills it
  const auto e = testing::caught<Error>([&] { (void)q.put_for(5, 30s); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::peer_dead)) << e->what();
  EXPECT_EQ(q.get(), 1);  // a consumer again: this process
  EXPECT_TRUE(q.try_put(5));
}

TEST_F(QueueTest, ANamedQueueIsFoundByAnotherProcessAndOtherBytesAreBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  auto q = Queue<std::vector<double>>::construct(seg, "jobs", 4096);
  auto kid = Process::spawn([&] {
    auto mine = Queue<std::vector<double>>::find(seg, "jobs");
    mine.put({1.5, 2.5});
    return 0;
  });
  ASSERT_TRUE(kid.wait_for(30s));
  EXPECT_EQ(q.get(), (std::vector<double>{1.5, 2.5}));
  (void)seg.construct_bytes("not-a-queue", 8192, 64);
  const auto e = testing::caught<Error>([&] { (void)Queue<int>::find(seg, "not-a-queue"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::bad_layout)) << e->what();
}

TEST_F(QueueTest, ScribbledRecordsAreBadLayoutNeverACrash) {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    auto seg = Segment::anonymous(1 << 16);
    constexpr std::size_t kCap = 1024;
    auto q = Queue<std::string>::construct(seg, "q", kCap);
    for (int i = 0; i < 5; ++i) q.put(item(1, i));
    const std::span<std::byte> bytes = seg.lookup_bytes("q");
    std::byte* data = bytes.data() + bytes.size() - kCap;  // the ring: the last kCap bytes
    for (int k = 0; k < 4; ++k) data[rng() % kCap] = static_cast<std::byte>(rng());
    try {
      for (int i = 0; i < 6; ++i) (void)q.try_get();
    } catch (const Error& e) {
      EXPECT_TRUE(e.is(errc::bad_layout) || e.is(errc::bad_frame)) << e.what();
    }
  }
}

// ---- JoinableQueue ------------------------------------------------------------------------

TEST_F(QueueTest, JoinReturnsOnceEveryTaskIsDone) {
  auto seg = Segment::anonymous(1 << 16);
  auto& done = seg.make<std::atomic<std::uint32_t>>(0u);
  JoinableQueue<int> q(4096);
  constexpr int kTasks = 300;
  auto consumers = testing::spawn_n(3, [&](int) {
    for (;;) {
      try {
        (void)q.get();
      } catch (const Error& e) {
        return e.is(errc::closed) ? 0 : 2;
      }
      done.fetch_add(1);
      q.task_done();
    }
  });
  for (int i = 0; i < kTasks; ++i) q.put(i);
  EXPECT_TRUE(q.join_for(60s));
  EXPECT_EQ(done.load(), static_cast<std::uint32_t>(kTasks));  // all of them, not fewer
  EXPECT_EQ(q.abandoned(), 0u);
  q.close();
  EXPECT_TRUE(testing::all_succeed(consumers, 60s));
}

TEST_F(QueueTest, JoinWaitsForATaskGotButNotDone) {
  JoinableQueue<int> q(1024);
  q.put(1);
  EXPECT_FALSE(q.join_for(10ms));
  EXPECT_EQ(q.get(), 1);
  EXPECT_FALSE(q.join_for(10ms)) << "got, not done";
  q.task_done();
  EXPECT_TRUE(q.join_for(0ms));
  const auto e = testing::caught<Error>([&] { q.task_done(); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::invalid_argument)) << e->what();
  q.put(2);  // a task_done that did not count leaves this one pending
  EXPECT_FALSE(q.join_for(10ms));
}

TEST_F(QueueTest, TaskDoneByAProcessThatGotNothingIsRefused) {
  JoinableQueue<int> q(1024);
  q.put(1);
  auto other = Process::spawn([&] {
    try {
      q.task_done();
    } catch (const Error& e) {
      return e.is(errc::invalid_argument) ? 0 : 2;
    }
    return 1;
  });
  const auto st = other.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
  EXPECT_FALSE(q.join_for(10ms));
}

TEST_F(QueueTest, AConsumerThatDiesHoldingTasksDoesNotHangJoin) {
  JoinableQueue<int> q(4096);
  for (int i = 0; i < 10; ++i) q.put(i);
  auto victim = Process::spawn([&] {
    for (int i = 0; i < 3; ++i) (void)q.get();  // three tasks, never done
    ::raise(SIGKILL);
    return 0;
  });
  (void)victim.wait();
  for (int i = 3; i < 10; ++i) {
    (void)q.get();
    q.task_done();
  }
  EXPECT_TRUE(q.join_for(30s)) << "the dead consumer's tasks are released";
  EXPECT_EQ(q.abandoned(), 3u);
}

TEST_F(QueueTest, ConsumersKilledAtRandomNeverHangJoinAndEveryTaskIsAccounted) {
  std::mt19937 rng(5);
  for (int round = 0; round < 10; ++round) {
    auto seg = Segment::anonymous(1 << 16);
    auto& done = seg.make<std::atomic<std::uint32_t>>(0u);
    JoinableQueue<int> q(2048);
    constexpr int kTasks = 2000;
    auto consumers = testing::spawn_n(3, [&](int) {
      for (;;) {
        try {
          (void)q.get();
        } catch (const Error& e) {
          return e.is(errc::closed) ? 0 : 2;
        }
        q.task_done();
        done.fetch_add(1);
      }
    });
    auto producer = Process::spawn([&] {
      for (int i = 0; i < kTasks; ++i) q.put(i);
      return 0;
    });
    const auto at = static_cast<std::uint32_t>(rng() % (kTasks / 2));
    while (done.load() < at) {
    }
    consumers[0].kill(SIGKILL);
    (void)consumers[0].wait();
    ASSERT_TRUE(producer.wait_for(60s));
    ASSERT_TRUE(q.join_for(60s)) << "round " << round;
    // Done by the survivors (or by the victim before it died), or released: at most the one
    // task the victim was holding.
    EXPECT_LE(q.abandoned(), 1u);
    EXPECT_GE(done.load() + q.abandoned(), static_cast<std::uint32_t>(kTasks) - 1);
    q.close();
    for (std::size_t k = 1; k < consumers.size(); ++k) ASSERT_TRUE(consumers[k].wait_for(60s));
  }
}

TEST_F(QueueTest, ANamedJoinableQueueIsFoundAndAPlainOneIsNotJoinable) {
  auto seg = Segment::anonymous(1 << 20);
  auto jq = JoinableQueue<int>::construct(seg, "jq", 4096);
  auto kid = Process::spawn([&] {
    auto mine = JoinableQueue<int>::find(seg, "jq");
    if (mine.get() != 5) return 1;
    mine.task_done();
    return 0;
  });
  jq.put(5);
  EXPECT_TRUE(jq.join_for(30s));
  ASSERT_TRUE(kid.wait_for(30s));
  (void)Queue<int>::construct(seg, "plain", 4096);
  const auto e = testing::caught<Error>([&] { (void)JoinableQueue<int>::find(seg, "plain"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::bad_layout));
}

}  // namespace
}  // namespace ipckit
