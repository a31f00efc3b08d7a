#include "ipckit/channel/channel.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ChannelTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::outcome_of;
using testing::Payloads;
using testing::wait_for_start;

struct Pod {
  std::uint64_t seq;
  double value;
  char tag[8];
};

// A type that goes through cereal.
struct Record {
  std::string name;
  std::vector<std::string> tags;
  std::map<std::string, std::vector<int>> index;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, tags, index);
  }
  bool operator==(const Record&) const = default;
};

// The parameter: a transport and, for shared memory, a wait mode.
struct Kind {
  const char* name;
  Transport transport;
  WaitMode mode;
};
void PrintTo(const Kind& k, std::ostream* os) { *os << k.name; }
std::string kind_name(const ::testing::TestParamInfo<Kind>& info) { return info.param.name; }

ChannelOptions options(const Kind& k, std::uint64_t capacity = std::uint64_t{1} << 16) {
  ChannelOptions o;
  o.transport = k.transport;
  o.mode = k.mode;
  o.capacity = capacity;
  return o;
}

std::string as_string(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Record record(std::uint64_t seq) {
  Record r;
  r.name = "record-" + std::to_string(seq);
  for (std::uint64_t i = 0; i < seq % 5; ++i) r.tags.push_back(std::string(i * 3, 'a' + i));
  for (std::uint64_t i = 0; i < seq % 3; ++i) {
    r.index["k" + std::to_string(i)] = std::vector<int>(seq % 17, static_cast<int>(i));
  }
  return r;
}

class ChannelKindTest : public testing::LeakCheckedTest,
                        public ::testing::WithParamInterface<Kind> {
 protected:
  // As ByteRingModeTest::large_count: spin runs carry fewer large messages.
  static std::uint64_t large_count(std::uint64_t n) {
    const bool spins = GetParam().transport == Transport::shm && GetParam().mode == WaitMode::spin;
    return testing::scaled(spins ? n / 4 : n);
  }
  // This process forks the two sides and uses neither: it must not hold the pipe's ends.
  template <class T>
  static void step_aside(Channel<T>& ch) {
    if (ch.socket() != nullptr) ch.socket()->disown();
  }
};

INSTANTIATE_TEST_SUITE_P(Channel, ChannelKindTest,
                         ::testing::Values(Kind{"shm_spin", Transport::shm, WaitMode::spin},
                                           Kind{"shm_hybrid", Transport::shm, WaitMode::hybrid},
                                           Kind{"shm_block", Transport::shm, WaitMode::block},
                                           Kind{"pipe", Transport::socket, WaitMode::hybrid}),
                         kind_name);

// ---- bad input --------------------------------------------------------------------------

TEST_F(ChannelTest, RejectsCapacityThatIsZeroNotAPowerOfTwoOrOutOfRange) {
  for (const std::uint64_t capacity :
       {std::uint64_t{0}, std::uint64_t{100}, std::uint64_t{32}, ~std::uint64_t{0}}) {
    ChannelOptions o;
    o.capacity = capacity;
    EXPECT_EQ(error_of([&] { Channel<int> ch(o); }), errc::invalid_argument) << capacity;
  }
  auto seg = Segment::anonymous(1 << 16);
  const std::size_t free_before = seg.free_memory();
  ChannelOptions bad;
  bad.capacity = 1000;
  EXPECT_EQ(error_of([&] { (void)Channel<int>::create(seg, "ch", bad); }), errc::invalid_argument);
  EXPECT_EQ(seg.free_memory(), free_before);
  EXPECT_FALSE(seg.find_bytes("ch").has_value());
  ChannelOptions good;
  good.capacity = 1024;
  EXPECT_EQ(error_of([&] { (void)Channel<int>::create(seg, "ch", good); }), std::error_code{});
}

// As ByteRingTest.CapacityAboveMaximumIsRejectedBeforeAnyMemoryIsMapped, through Channel.
TEST_F(ChannelTest, CapacityAboveMaximumIsRejectedBeforeAnyMemoryIsMapped) {
  ChannelOptions o;
  o.capacity = ByteRing::kMaxCapacity * 2;
  EXPECT_EQ(error_of([&] { Channel<int> ch(o); }), errc::invalid_argument);
}

TEST_F(ChannelTest, MaxMessageSizeComesFromTheTransport) {
  ChannelOptions shm;
  shm.capacity = 4096;
  EXPECT_EQ(Channel<std::string>(shm).max_message_size(), ByteRing::max_message_for(4096));
  EXPECT_EQ(Channel<std::string>(shm).transport(), Transport::shm);
  ChannelOptions pipe;
  pipe.transport = Transport::socket;
  pipe.max_message = 12345;
  EXPECT_EQ(Channel<std::string>(pipe).max_message_size(), 12345u);
  EXPECT_EQ(Channel<std::string>(pipe).transport(), Transport::socket);
}

TEST_F(ChannelTest, ValueLargerThanTheShmRingIsMessageTooLargeAndNothingIsSent) {
  ChannelOptions o;
  o.capacity = 4096;
  Channel<std::string> raw(o);
  const std::size_t max = raw.max_message_size();
  EXPECT_EQ(error_of([&] { raw.send(std::string(max + 1, 'x')); }), errc::message_too_large);
  EXPECT_EQ(error_of([&] { (void)raw.try_send(std::string(5000, 'x')); }), errc::message_too_large);
  EXPECT_EQ(raw.ring()->used_bytes(), 0u);
  raw.send(std::string(max, 'y'));
  EXPECT_EQ(raw.try_recv(), std::string(max, 'y'));

  Channel<Record> encoded(o);  // through cereal
  Record big;
  big.tags.assign(100, std::string(30, 't'));
  EXPECT_EQ(error_of([&] { encoded.send(big); }), errc::message_too_large);
  EXPECT_EQ(encoded.ring()->used_bytes(), 0u);
  encoded.send(record(7));
  EXPECT_EQ(encoded.try_recv(), record(7));
}

TEST_F(ChannelTest, ValueLargerThanPipeMaxMessageIsMessageTooLarge) {
  ChannelOptions o;
  o.transport = Transport::socket;
  o.max_message = 100;
  Channel<std::string> ch(o);
  EXPECT_EQ(error_of([&] { ch.send(std::string(101, 'x')); }), errc::message_too_large);
  EXPECT_EQ(error_of([&] { (void)ch.try_send(std::string(101, 'x')); }), errc::message_too_large);
}

TEST_F(ChannelTest, OpenOfMissingNameIsNotFoundAndOfSomethingElseIsBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  (void)SpscQueue<std::uint64_t>::create(seg, "queue", 64);
  (void)seg.construct<std::uint64_t>("word", 0u);
  EXPECT_EQ(error_of([&] { (void)Channel<int>::open(seg, "nothing-here"); }), errc::not_found);
  EXPECT_EQ(error_of([&] { (void)Channel<int>::open(seg, "queue"); }), errc::bad_layout);
  EXPECT_EQ(error_of([&] { (void)Channel<int>::open(seg, "word"); }), errc::bad_layout);
}

// ---- close --------------------------------------------------------------------------------

TEST_P(ChannelKindTest, SendAfterCloseThrowsClosed) {
  Channel<std::string> ch(options(GetParam()));
  ch.close();
  EXPECT_EQ(error_of([&] { ch.send("x"); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.try_send("x"); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.send_for("x", 10ms); }), errc::closed);
}

TEST_P(ChannelKindTest, ValuesSentBeforeCloseAreDrainedThenRecvThrowsClosed) {
  Channel<std::string> ch(options(GetParam()));
  auto sender = Process::spawn([&] {
    for (int i = 0; i < 20; ++i) ch.send(std::string(static_cast<std::size_t>(i), 'a' + i));
    ch.close();
    return 0;
  });
  ASSERT_EQ(exit_code(sender), 0);  // closed and gone before anything is read
  for (int i = 0; i < 20; ++i) {
    std::optional<std::string> v;
    ASSERT_EQ(error_of([&] { v = ch.recv_for(10s); }), std::error_code{}) << i;
    EXPECT_EQ(v, std::string(static_cast<std::size_t>(i), 'a' + i));
  }
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(10s); }), errc::closed);
}

// ---- between processes --------------------------------------------------------------------

TEST_P(ChannelKindTest, PingPongBetweenTwoProcesses) {
  const int kRounds = static_cast<int>(testing::scaled(4000));
  Channel<Pod> ping(options(GetParam()));
  Channel<std::string> pong(options(GetParam()));
  auto peer = Process::spawn([&] {
    for (;;) {
      Pod p{};
      if (outcome_of([&] { p = ping.recv(); }) == testing::kClosed) break;
      pong.send(std::string(p.tag) + ":" + std::to_string(p.seq) + ":" +
                std::to_string(static_cast<long long>(p.value * 2)));
    }
    pong.close();
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) {
    Pod p{static_cast<std::uint64_t>(i), i * 1.5, "ping"};
    ping.send(p);
    const std::string back = pong.recv();
    ASSERT_EQ(back,
              "ping:" + std::to_string(i) + ":" + std::to_string(static_cast<long long>(i * 3)));
  }
  ping.close();
  EXPECT_EQ(error_of([&] { (void)pong.recv_for(10s); }), errc::closed);
  EXPECT_EQ(exit_code(peer), 0);
}

TEST_P(ChannelKindTest, StringsOfRandomSizesArriveIntactAndInOrder) {
  const std::uint64_t kCount = large_count(100'000);
  Channel<std::string> ch(options(GetParam()));
  const Payloads p(8192, 31);
  auto sender = Process::spawn([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) ch.send(as_string(p.of(i)));
    ch.close();
    return 0;
  });
  std::uint64_t got = 0;
  for (;;) {
    std::string s;
    const auto err = error_of([&] { s = ch.recv(); });
    if (err == errc::closed) break;
    ASSERT_EQ(err, std::error_code{}) << "after " << got;
    ASSERT_TRUE(p.matches(got, std::as_bytes(std::span(s.data(), s.size())))) << "string " << got;
    ++got;
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(sender), 0);
}

TEST_P(ChannelKindTest, VectorsOfRandomSizesArriveIntactAndInOrder) {
  const std::uint64_t kCount = large_count(20'000);
  Channel<std::vector<std::uint32_t>> ch(options(GetParam()));
  const auto make = [](std::uint64_t seq) {
    std::vector<std::uint32_t> v(testing::mix64(seq) % 2048);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = static_cast<std::uint32_t>(seq * 2654435761u + i);
    }
    return v;
  };
  auto sender = Process::spawn([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) ch.send(make(i));
    ch.close();
    return 0;
  });
  std::uint64_t got = 0;
  for (;;) {
    std::vector<std::uint32_t> v;
    const auto err = error_of([&] { v = ch.recv(); });
    if (err == errc::closed) break;
    ASSERT_EQ(err, std::error_code{}) << "after " << got;
    ASSERT_EQ(v, make(got)) << "vector " << got;
    ++got;
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(sender), 0);
}

TEST_P(ChannelKindTest, CerealEncodedValuesArriveIntactAndInOrder) {
  const std::uint64_t kCount = testing::scaled(5'000);
  Channel<Record> ch(options(GetParam()));
  auto sender = Process::spawn([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) ch.send(record(i));
    ch.close();
    return 0;
  });
  std::uint64_t got = 0;
  for (;;) {
    Record r;
    const auto err = error_of([&] { r = ch.recv(); });
    if (err == errc::closed) break;
    ASSERT_EQ(err, std::error_code{}) << "after " << got;
    ASSERT_EQ(r, record(got)) << "record " << got;
    ++got;
  }
  EXPECT_EQ(got, kCount);
  EXPECT_EQ(exit_code(sender), 0);
}

// ---- non-blocking and timed calls ---------------------------------------------------------

TEST_P(ChannelKindTest, TryRecvOnEmptyIsNulloptWhileTheSenderIsQuiet) {
  Channel<int> ch(options(GetParam()));
  auto seg = Segment::anonymous(1 << 16);
  auto& go = seg.make<Flag>(0u);
  auto& attached = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    ch.attach_sender();
    attached.store(1, std::memory_order_release);
    wait_for_start(go);
    ch.send(17);
    ch.close();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 1; }));
  EXPECT_EQ(ch.try_recv(), std::nullopt);
  const Deadline deadline = Deadline::after(20ms);
  int v = -1;
  EXPECT_FALSE(ch.recv_until(v, deadline));
  EXPECT_TRUE(deadline.expired()) << "recv gave up before its deadline";
  EXPECT_EQ(v, -1);
  EXPECT_EQ(ch.recv_for(5ms), std::nullopt);
  go.store(1, std::memory_order_release);
  EXPECT_EQ(ch.recv_for(10s), 17);
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(10s); }), errc::closed);
  EXPECT_EQ(exit_code(sender), 0);
}

TEST_F(ChannelTest, TrySendAndSendForOnFullShmRingReturnFalseAndSendNothing) {
  ChannelOptions o;
  o.capacity = 256;
  o.mode = WaitMode::block;
  Channel<std::uint64_t> ch(o);
  std::uint64_t sent = 0;
  while (ch.try_send(sent)) ++sent;
  ASSERT_GE(sent, 2u);
  ASSERT_LE(sent, 256u / 8);
  const Deadline deadline = Deadline::after(20ms);
  EXPECT_FALSE(ch.send_until(999, deadline));
  EXPECT_TRUE(deadline.expired()) << "send gave up before its deadline";
  EXPECT_FALSE(ch.send_for(998, 5ms));
  for (std::uint64_t i = 0; i < sent; ++i) EXPECT_EQ(ch.try_recv(), i);
  EXPECT_EQ(ch.try_recv(), std::nullopt);
}

// ---- values that do not decode ------------------------------------------------------------

TEST_P(ChannelKindTest, ValueThatFailsToDecodeIsBadFrameAndTheNextStillArrives) {
  Channel<std::uint64_t> numbers(options(GetParam()));
  Channel<Record> records(options(GetParam()));
  auto sender = Process::spawn([&] {
    const std::byte three[3] = {};
    auto encoded = codec::encode(record(4));
    encoded.pop_back();  // truncated
    if (numbers.ring() != nullptr) {
      numbers.ring()->send(three);
      records.ring()->send(encoded);
    } else {
      numbers.socket()->send(three);
      records.socket()->send(encoded);
    }
    numbers.send(42);
    numbers.close();
    records.send(record(5));
    records.close();
    return 0;
  });
  EXPECT_EQ(error_of([&] { (void)numbers.recv(); }), errc::bad_frame);
  EXPECT_EQ(numbers.recv_for(10s), 42u);
  EXPECT_EQ(error_of([&] { (void)numbers.recv(); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)records.recv(); }), errc::bad_frame);
  EXPECT_EQ(records.recv_for(10s), record(5));
  EXPECT_EQ(error_of([&] { (void)records.recv(); }), errc::closed);
  EXPECT_EQ(exit_code(sender), 0);
}

// ---- peer death ---------------------------------------------------------------------------

TEST_P(ChannelKindTest, ReceiverBlockedInRecvGetsPeerDeadWhenSenderIsKilled) {
  Channel<std::string> ch(options(GetParam()));
  auto seg = Segment::anonymous(1 << 16);
  auto& waiting = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    ch.send("last words");
    for (;;) ::pause();
  });
  auto receiver = Process::spawn([&] {
    const auto first = ch.recv_for(10s);
    if (first != "last words") return 1;
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return ch.recv_for(10s).has_value(); });
  });
  step_aside(ch);
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);  // most likely inside recv now; either way is fine
  sender.kill(SIGKILL);
  EXPECT_EQ(exit_code(receiver), testing::kPeerDead) << "1: the first message was lost";
  EXPECT_TRUE(sender.wait().signaled());
}

TEST_P(ChannelKindTest, SenderBlockedOnFullChannelGetsPeerDeadWhenReceiverIsKilled) {
  Channel<std::string> ch(options(GetParam(), 4096));
  auto seg = Segment::anonymous(1 << 16);
  auto& received = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto receiver = Process::spawn([&] {
    if (!ch.recv_for(10s)) return 1;
    received.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  auto sender = Process::spawn([&] {
    const std::string m(1000, 'f');
    ch.send(m);
    wait_for_start(received);
    while (ch.try_send(m)) {
    }
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return ch.send_for(m, 10s); });
  });
  step_aside(ch);
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);
  receiver.kill(SIGKILL);
  EXPECT_EQ(exit_code(sender), testing::kPeerDead) << "11: timed out, the receiver looked alive";
  EXPECT_TRUE(receiver.wait().signaled());
}

TEST_P(ChannelKindTest, ValuesSentBeforeSenderDiedAreDeliveredBeforePeerDead) {
  Channel<std::string> ch(options(GetParam()));
  auto seg = Segment::anonymous(1 << 16);
  auto& sent = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    for (int i = 0; i < 3; ++i) ch.send("value " + std::to_string(i));
    sent.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return sent.load(std::memory_order_acquire) == 1; }));
  sender.kill(SIGKILL);
  EXPECT_TRUE(sender.wait().signaled());
  for (int i = 0; i < 3; ++i) {
    std::optional<std::string> v;
    ASSERT_EQ(error_of([&] { v = ch.recv_for(10s); }), std::error_code{}) << i;
    EXPECT_EQ(v, "value " + std::to_string(i));
  }
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(10s); }), errc::peer_dead);
}

// ---- named segments -----------------------------------------------------------------------

TEST_F(ChannelTest, ProcessThatOpensTheSegmentByNameSendsValues) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  ChannelOptions o;
  o.capacity = 8192;
  o.mode = WaitMode::block;
  auto ch = Channel<Record>::create(seg, "records", o);
  EXPECT_EQ(error_of([&] { (void)Channel<Record>::create(seg, "records", o); }),
            errc::already_exists);
  auto peer = Process::spawn([&name] {
    auto mine = Segment::open(name);
    auto out = Channel<Record>::open(mine, "records");
    if (out.max_message_size() != ByteRing::max_message_for(8192)) return 1;
    for (std::uint64_t i = 0; i < 500; ++i) out.send(record(i));
    out.close();
    return 0;
  });
  for (std::uint64_t i = 0; i < 500; ++i) {
    std::optional<Record> r;
    ASSERT_EQ(error_of([&] { r = ch.recv_for(10s); }), std::error_code{}) << i;
    ASSERT_EQ(r, record(i));
  }
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(10s); }), errc::closed);
  EXPECT_EQ(exit_code(peer), 0);
}

}  // namespace
}  // namespace ipckit
