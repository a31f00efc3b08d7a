// Channels whose peers misbehave: a peer that rewrites a layout header, a capacity word, the
// cursors or slot sequences of a queue, truncates the segment under a sleeping receiver, or
// leaves an identity whose pid was recycled. Every call returns, times out or throws the
// documented error; none crashes, hangs, or waits for a process that is gone.
// Over 600 lines: every channel type against the same hostile peer, kept side by side.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/detail/layout.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "proc_scan.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using HostilePeerTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::Payloads;

// Exit codes of a child that reports how a call ended, beside testing::Outcome's (10..15).
enum HostileOutcome : int {
  kFine = 0,           // every call ended as allowed
  kOpened = 20,        // open() succeeded
  kBadLayout = 21,     // errc::bad_layout
  kUnexpected = 22,    // any other error (printed to stderr)
  kTimedOutHere = 23,  // a _for call returned nothing
};

// Stores a 4- or 8-byte word into shared memory with one atomic store, as a peer does.
void store_word(std::byte* at, std::uint64_t value, std::size_t width) {
  if (width == 4) {
    __atomic_store_n(reinterpret_cast<std::uint32_t*>(at), static_cast<std::uint32_t>(value),
                     __ATOMIC_RELEASE);
  } else {
    __atomic_store_n(reinterpret_cast<std::uint64_t*>(at), value, __ATOMIC_RELEASE);
  }
}

// Runs `write` in a peer process that shares the memory, and waits for it.
template <class Write>
void as_peer(Write&& write) {
  auto peer = Process::spawn([&] { write(); });
  ASSERT_EQ(exit_code(peer, 10s), 0) << "the scribbling peer itself failed";
}

int unexpected(const char* call, const Error& e) {
  std::fprintf(stderr, "%s threw: %s\n", call, e.what());
  return kUnexpected;
}

// ---- 1. a header rewritten before anyone opened the object ---------------------------------

struct HeaderScribble {
  const char* what;
  std::size_t offset;  // in the LayoutHeader
  std::uint64_t value;
  std::size_t width;
};

std::vector<HeaderScribble> scribbles_for(const detail::LayoutSpec& spec) {
  using detail::LayoutHeader;
  constexpr std::size_t kCap = offsetof(LayoutHeader, capacity);
  return {
      {"capacity 0", kCap, 0, 8},
      {"capacity 3", kCap, 3, 8},
      {"capacity 2^60", kCap, std::uint64_t{1} << 60, 8},
      {"capacity 2^31 (a power of two far beyond its bytes)", kCap, std::uint64_t{1} << 31, 8},
      {"element size + 1", offsetof(LayoutHeader, elem_size), spec.elem_size + 1, 8},
      {"another magic", offsetof(LayoutHeader, magic), spec.magic ^ 0x00ff00ffu, 4},
      {"version + 1", offsetof(LayoutHeader, version), spec.version + 1u, 4},
  };
}

// For each scribble: the object is created by this process, one header word rewritten by a
// peer, then opened by a third process, which must get bad_layout (and must not crash).
template <class Create, class Open>
void expect_scribbled_header_is_bad_layout(const detail::LayoutSpec& spec, Create&& create,
                                           Open&& open) {
  for (const auto& s : scribbles_for(spec)) {
    SCOPED_TRACE(std::string(spec.type) + ", " + s.what);
    auto seg = Segment::anonymous(1 << 20);
    create(seg);
    const std::span<std::byte> bytes = seg.lookup_bytes("obj");
    as_peer([&] { store_word(bytes.data() + s.offset, s.value, s.width); });
    auto opener = Process::spawn([&] {
      try {
        open(seg);
        return static_cast<int>(kOpened);
      } catch (const Error& e) {
        return e.is(errc::bad_layout) ? static_cast<int>(kBadLayout) : unexpected("open", e);
      }
    });
    EXPECT_EQ(exit_code(opener, 10s), kBadLayout)
        << kOpened << ": opened; " << kUnexpected << ": another error; negative: killed by "
        << "that signal";
  }
}

TEST_F(HostilePeerTest, SpscQueueOpenOfAHeaderAPeerRewroteIsBadLayout) {
  using Q = SpscQueue<std::uint64_t>;
  expect_scribbled_header_is_bad_layout(
      Q::kLayout, [](Segment& seg) { (void)Q::create(seg, "obj", 64); },
      [](Segment& seg) { (void)Q::open(seg, "obj", Side::receiver); });
}

TEST_F(HostilePeerTest, MpmcQueueOpenOfAHeaderAPeerRewroteIsBadLayout) {
  using Q = MpmcQueue<std::uint64_t>;
  expect_scribbled_header_is_bad_layout(
      Q::kLayout, [](Segment& seg) { (void)Q::create(seg, "obj", 64); },
      [](Segment& seg) { (void)Q::open(seg, "obj", Side::receiver); });
}

TEST_F(HostilePeerTest, ByteRingOpenOfAHeaderAPeerRewroteIsBadLayout) {
  expect_scribbled_header_is_bad_layout(
      ByteRing::kLayout, [](Segment& seg) { (void)ByteRing::create(seg, "obj", 4096); },
      [](Segment& seg) { (void)ByteRing::open(seg, "obj", Side::receiver); });
}

// ---- 2. a capacity word rewritten after open ----------------------------------------------

constexpr std::uint64_t kRingCapacity = 4096;

std::uint64_t* capacity_word(std::span<std::byte> object) {
  return reinterpret_cast<std::uint64_t*>(object.data() + offsetof(detail::LayoutHeader, capacity));
}

// Producer and consumer open the ring, then a peer flips its capacity word between 2^41 and
// 0 for as long as they exchange messages: both keep the capacity they validated, and every
// message arrives whole and in order.
TEST_F(HostilePeerTest, ByteRingKeepsItsValidatedCapacityWhileAPeerFlipsTheSharedWord) {
  auto seg = Segment::anonymous(1 << 20);
  (void)ByteRing::create(seg, "ring", kRingCapacity, WaitPolicy::hybrid());
  std::uint64_t* const cap = capacity_word(seg.lookup_bytes("ring"));
  auto& opened = seg.make<Flag>(0u);
  auto& flipping = seg.make<Flag>(0u);
  auto& stop = seg.make<Flag>(0u);
  const std::uint64_t count = testing::scaled(10'000);
  const Payloads p(ByteRing::max_message_for(kRingCapacity), 21);

  auto producer = Process::spawn([&] {
    auto ring = ByteRing::open(seg, "ring", Side::sender);
    opened.fetch_add(1, std::memory_order_release);
    testing::wait_for_start(flipping);
    for (std::uint64_t i = 0; i < count; ++i) {
      if (!ring.send_for(p.of(i), 10s)) return 1;
    }
    return ring.capacity() == kRingCapacity ? 0 : 2;
  });
  auto consumer = Process::spawn([&] {
    auto ring = ByteRing::open(seg, "ring", Side::receiver);
    opened.fetch_add(1, std::memory_order_release);
    testing::wait_for_start(flipping);
    for (std::uint64_t i = 0; i < count; ++i) {
      const auto m = ring.recv_for(10s);
      if (!m) {
        std::fprintf(stderr, "message %llu never came\n", static_cast<unsigned long long>(i));
        return 1;
      }
      if (!p.matches(i, *m)) {
        std::fprintf(stderr, "message %llu: %zu bytes, %zu expected, or torn\n",
                     static_cast<unsigned long long>(i), m->size(), p.size_of(i));
        return 2;
      }
    }
    return ring.capacity() == kRingCapacity &&
                   ring.max_message_size() == ByteRing::max_message_for(kRingCapacity)
               ? 0
               : 3;
  });
  auto flipper = Process::spawn([&] {
    while (opened.load(std::memory_order_acquire) < 2) {
      if (stop.load(std::memory_order_relaxed) != 0) return 1;
      std::this_thread::sleep_for(100us);
    }
    const std::uint64_t garbage[] = {std::uint64_t{1} << 41, 0};
    for (std::uint64_t i = 0; stop.load(std::memory_order_relaxed) == 0; ++i) {
      __atomic_store_n(cap, garbage[i & 1], __ATOMIC_RELAXED);
      if (i == 0) flipping.store(1, std::memory_order_release);
    }
    return 0;
  });
  const int produced = exit_code(producer, 30s);
  const int consumed = exit_code(consumer, 30s);
  stop.store(1, std::memory_order_relaxed);
  EXPECT_EQ(exit_code(flipper, 10s), 0);
  EXPECT_EQ(produced, 0) << "1: a send timed out, 2: capacity changed, negative: a signal";
  EXPECT_EQ(consumed, 0) << "1: a message never came, 2: a message was wrong, 3: capacity "
                            "changed, negative: killed by that signal";
}

// A peer flips the capacity word between the right value and garbage while another process
// opens the ring again and again: each open sees a whole header, valid or not.
TEST_F(HostilePeerTest, ByteRingOpenRacingAPeerFlippingTheCapacityIsRightOrBadLayout) {
  auto seg = Segment::anonymous(1 << 20);
  (void)ByteRing::create(seg, "ring", kRingCapacity);
  std::uint64_t* const cap = capacity_word(seg.lookup_bytes("ring"));
  struct Tally {
    std::atomic<std::uint64_t> right{0};
    std::atomic<std::uint64_t> bad_layout{0};
    std::atomic<std::uint64_t> wrong{0};
    std::atomic<std::uint64_t> other{0};
  };
  auto& tally = seg.make<Tally>();
  auto& flipping = seg.make<Flag>(0u);
  auto& stop = seg.make<Flag>(0u);
  auto flipper = Process::spawn([&] {
    // 2^20: a power of two in range that the ring's bytes cannot hold.
    const std::uint64_t garbage[] = {std::uint64_t{1} << 41, 0, 3, std::uint64_t{1} << 20};
    for (std::uint64_t i = 0; stop.load(std::memory_order_relaxed) == 0; ++i) {
      __atomic_store_n(cap, garbage[i % 4], __ATOMIC_RELAXED);
      __atomic_store_n(cap, kRingCapacity, __ATOMIC_RELAXED);
      if (i == 0) flipping.store(1, std::memory_order_release);
    }
    return 0;
  });
  // At least kMinOpens, and on until both outcomes were seen (bounded).
  constexpr std::uint64_t kMinOpens = 3000;
  constexpr std::uint64_t kMaxOpens = 200'000;
  auto opener = Process::spawn([&] {
    testing::wait_for_start(flipping);
    for (std::uint64_t n = 0; n < kMaxOpens; ++n) {
      if (n >= kMinOpens && tally.right.load() > 0 && tally.bad_layout.load() > 0) break;
      try {
        const auto ring = ByteRing::open(seg, "ring");
        const bool right = ring.capacity() == kRingCapacity &&
                           ring.max_message_size() == ByteRing::max_message_for(kRingCapacity);
        if (!right) {
          std::fprintf(stderr, "opened with capacity %llu\n",
                       static_cast<unsigned long long>(ring.capacity()));
        }
        (right ? tally.right : tally.wrong).fetch_add(1);
      } catch (const Error& e) {
        if (e.is(errc::bad_layout)) {
          tally.bad_layout.fetch_add(1);
        } else {
          (void)unexpected("ByteRing::open", e);
          tally.other.fetch_add(1);
        }
      }
    }
    return 0;
  });
  const int opened = exit_code(opener, 30s);
  stop.store(1, std::memory_order_relaxed);
  EXPECT_EQ(exit_code(flipper, 10s), 0);
  EXPECT_EQ(opened, 0) << "negative: the opener was killed by that signal";
  EXPECT_EQ(tally.wrong.load(), 0u) << "opens that returned a ring of the wrong capacity";
  EXPECT_EQ(tally.other.load(), 0u) << "opens that threw something other than bad_layout";
  EXPECT_GT(tally.right.load(), 0u) << "no open ever succeeded";
  EXPECT_GT(tally.bad_layout.load(), 0u) << "the flipper never raced an open: proves nothing";
}

// ---- 3. an MpmcQueue's cursors and slots rewritten ------------------------------------------

using Mpmc = MpmcQueue<std::uint64_t>;
constexpr std::uint64_t kMpmcCapacity = 8;

std::uint64_t* enqueue_word(std::span<std::byte> q) {
  return reinterpret_cast<std::uint64_t*>(q.data() + offsetof(detail::MpmcQueueHeader, enqueue));
}
std::uint64_t* dequeue_word(std::span<std::byte> q) {
  return reinterpret_cast<std::uint64_t*>(q.data() + offsetof(detail::MpmcQueueHeader, dequeue));
}
// A cell is {atomic<uint64_t> seq; T value}: its sequence number is its first word.
std::uint64_t* seq_word(std::span<std::byte> q, std::uint64_t slot) {
  return reinterpret_cast<std::uint64_t*>(q.data() + Mpmc::kLayout.data_offset +
                                          slot * Mpmc::kLayout.slot_bytes);
}

// In a child: opens the queue "q" and runs each call `rounds` times; every call must return
// (any value) or throw bad_frame. Returns kFine, or kUnexpected after printing the error.
int mpmc_calls_outcome(Segment& seg, int rounds, bool timed_calls) {
  auto q = Mpmc::open(seg, "q");
  const auto allowed = [](const char* call, auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      if (!e.is(errc::bad_frame)) return unexpected(call, e);
    }
    return static_cast<int>(kFine);
  };
  for (int r = 0; r < rounds; ++r) {
    const std::uint64_t v = 1000 + static_cast<std::uint64_t>(r);
    int rc = allowed("try_push", [&] { (void)q.try_push(v); });
    if (rc == kFine) rc = allowed("try_pop", [&] { (void)q.try_pop(); });
    if (rc == kFine && timed_calls) rc = allowed("pop_for", [&] { (void)q.pop_for(100ms); });
    if (rc == kFine && timed_calls) rc = allowed("push_for", [&] { (void)q.push_for(v, 100ms); });
    if (rc != kFine) return rc;
  }
  return kFine;
}

TEST_F(HostilePeerTest, MpmcQueueWithARewoundEnqueueCursorReturnsOrIsBadFrameNeverHangs) {
  auto seg = Segment::anonymous(1 << 20);
  auto q = Mpmc::create(seg, "q", kMpmcCapacity);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(q.try_push(i));
  const auto bytes = seg.lookup_bytes("q");
  as_peer([&] { __atomic_store_n(enqueue_word(bytes), 0, __ATOMIC_RELEASE); });
  auto caller = Process::spawn([&] { return mpmc_calls_outcome(seg, 3, true); });
  EXPECT_EQ(exit_code(caller, 10s), kFine) << "-1000: hung; other negative: killed by a signal";
}

TEST_F(HostilePeerTest, MpmcQueueWithARewoundDequeueCursorReturnsOrIsBadFrameNeverHangs) {
  auto seg = Segment::anonymous(1 << 20);
  auto q = Mpmc::create(seg, "q", kMpmcCapacity);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(q.try_push(i));
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(q.try_pop().has_value());
  const auto bytes = seg.lookup_bytes("q");
  as_peer([&] { __atomic_store_n(dequeue_word(bytes), 0, __ATOMIC_RELEASE); });
  auto caller = Process::spawn([&] { return mpmc_calls_outcome(seg, 3, true); });
  EXPECT_EQ(exit_code(caller, 10s), kFine) << "-1000: hung; other negative: killed by a signal";
}

TEST_F(HostilePeerTest, MpmcQueueWithGarbageSlotSequencesReturnsOrIsBadFrameNeverHangs) {
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto seg = Segment::anonymous(1 << 20);
    auto q = Mpmc::create(seg, "q", kMpmcCapacity);
    for (std::uint64_t i = 0; i < seed % (kMpmcCapacity + 1); ++i) ASSERT_TRUE(q.try_push(i));
    const auto bytes = seg.lookup_bytes("q");
    as_peer([&] {
      for (std::uint64_t s = 0; s < kMpmcCapacity; ++s) {
        // Small garbage near the cursors as well as wild values.
        const std::uint64_t g = testing::mix64(seed * 131 + s);
        __atomic_store_n(seq_word(bytes, s), seed % 2 == 0 ? g : g % 32, __ATOMIC_RELEASE);
      }
      if (seed % 3 == 0)
        __atomic_store_n(enqueue_word(bytes), testing::mix64(seed), __ATOMIC_RELEASE);
      if (seed % 3 == 1)
        __atomic_store_n(dequeue_word(bytes), testing::mix64(~seed), __ATOMIC_RELEASE);
    });
    auto caller = Process::spawn([&] { return mpmc_calls_outcome(seg, 1, true); });
    EXPECT_EQ(exit_code(caller, 10s), kFine) << "-1000: hung; other negative: killed by a signal";
  }
}

TEST_F(HostilePeerTest, MpmcQueueCallsNeverHangWhileAPeerScribblesCursorsAndSlots) {
  auto seg = Segment::anonymous(1 << 20);
  (void)Mpmc::create(seg, "q", kMpmcCapacity);
  const auto bytes = seg.lookup_bytes("q");
  auto& scribbling = seg.make<Flag>(0u);
  auto& stop = seg.make<Flag>(0u);
  auto scribbler = Process::spawn([&] {
    for (std::uint64_t i = 1; stop.load(std::memory_order_relaxed) == 0; ++i) {
      const std::uint64_t g = testing::mix64(i);
      std::uint64_t* word = nullptr;
      switch (g % 4) {
        case 0: word = enqueue_word(bytes); break;
        case 1: word = dequeue_word(bytes); break;
        default: word = seq_word(bytes, (g >> 8) % kMpmcCapacity); break;
      }
      __atomic_store_n(word, (g >> 16) % 4 == 0 ? g : (g >> 20) % 64, __ATOMIC_RELEASE);
      if (i == 1) scribbling.store(1, std::memory_order_release);
    }
    return 0;
  });
  auto caller = Process::spawn([&] {
    testing::wait_for_start(scribbling);
    const int rc = mpmc_calls_outcome(seg, 500, false);
    return rc != kFine ? rc : mpmc_calls_outcome(seg, 2, true);
  });
  const int code = exit_code(caller, 20s);
  stop.store(1, std::memory_order_relaxed);
  EXPECT_EQ(exit_code(scribbler, 10s), 0);
  EXPECT_EQ(code, kFine) << "-1000: hung; other negative: killed by a signal";
}

// ---- 8. the segment truncated under a sleeping receiver ------------------------------------

// The wait modes that sleep (a spinning receiver is never asleep when the truncation comes).
struct SleepingMode {
  const char* name;
  WaitMode mode;
};
void PrintTo(const SleepingMode& m, std::ostream* os) { *os << m.name; }

class TruncatedSegmentTest : public testing::LeakCheckedTest,
                             public ::testing::WithParamInterface<SleepingMode> {};

INSTANTIATE_TEST_SUITE_P(HostilePeer, TruncatedSegmentTest,
                         ::testing::Values(SleepingMode{"block", WaitMode::block},
                                           SleepingMode{"hybrid", WaitMode::hybrid}),
                         [](const ::testing::TestParamInfo<SleepingMode>& info) {
                           return std::string(info.param.name);
                         });

// A peer (same user) ftruncate()s the named segment to 0 while a receiver sleeps in
// recv_for(): the receiver gets bad_layout, not SIGBUS; so does Segment::check_backing().
TEST_P(TruncatedSegmentTest, ReceiverAsleepInRecvGetsBadLayoutNotSigbus) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  ChannelOptions options;
  options.mode = GetParam().mode;
  options.capacity = 4096;
  auto ch = Channel<std::string>::create(seg, "ch", options, Side::sender);
  auto flags = Segment::anonymous(1 << 16);
  auto& waiting = flags.make<Flag>(0u);
  auto receiver = Process::spawn([&] {
    auto mine = Segment::open(name);
    auto in = Channel<std::string>::open(mine, "ch", Side::receiver);
    waiting.store(1, std::memory_order_release);
    try {
      return in.recv_for(2s).has_value() ? static_cast<int>(testing::kReturned)
                                         : static_cast<int>(kTimedOutHere);
    } catch (const Error& e) {
      return e.is(errc::bad_layout) ? static_cast<int>(kBadLayout) : unexpected("recv_for", e);
    }
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  // Asleep in the kernel (futex), not on its way there.
  ASSERT_TRUE(eventually([&] { return testing::process_state(receiver.pid()) == 'S'; }));
  as_peer([&] {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
    if (fd < 0 || ::ftruncate(fd, 0) != 0) std::_Exit(1);
    ::close(fd);
  });
  EXPECT_EQ(exit_code(receiver, 10s), kBadLayout)
      << "-7: killed by SIGBUS; " << kTimedOutHere << ": recv_for timed out as if nothing "
      << "happened; " << kUnexpected << ": another error";
  EXPECT_EQ(error_of([&] { seg.check_backing(); }), errc::bad_layout);
  // Size it again, so that this process's own handles touch backed pages when destroyed.
  ASSERT_EQ(::ftruncate(seg.fd(), static_cast<off_t>(seg.size())), 0);
  EXPECT_EQ(error_of([&] { seg.check_backing(); }), std::error_code{});
}

// ---- 11. a peer identity whose pid was recycled ------------------------------------------

TEST_F(HostilePeerTest, IdentityAliveComparesStartTimeNotJustThePid) {
  const ProcessIdentity me = process_identity(::getpid());
  ASSERT_NE(me, 0u);
  EXPECT_EQ(me, current_identity());
  EXPECT_TRUE(identity_alive(me));
  const auto tag = static_cast<std::uint32_t>(me >> 32);
  ASSERT_NE(tag, 0u) << "no start time in the identity (no /proc?)";
  const std::uint32_t other = tag + 1 == 0 ? 1 : tag + 1;
  EXPECT_FALSE(
      identity_alive((std::uint64_t{other} << 32) | static_cast<std::uint32_t>(::getpid())));
}

// The producer attached and exited; a peer then rewrites its entry in the channel's producer
// table to name a live process (same pid) with another start time, as when the kernel
// recycles the pid: the consumer must still see every producer dead.
TEST_F(HostilePeerTest, ProducerEntryWithALivePidButAnotherStartTimeCountsAsDead) {
  auto seg = Segment::anonymous(1 << 20);
  ChannelOptions options;
  options.capacity = 4096;
  auto ch = Channel<std::uint64_t>::create(seg, "ch", options, Side::receiver);
  auto& producer_id = seg.make<std::atomic<ProcessIdentity>>(0u);
  auto producer = Process::spawn([&] {
    ch.attach_sender();
    producer_id.store(current_identity(), std::memory_order_release);
  });
  ASSERT_EQ(exit_code(producer, 10s), 0);
  const ProcessIdentity dead = producer_id.load(std::memory_order_acquire);
  ASSERT_NE(dead, 0u);

  // Where the table keeps it: the one 8-byte word of the ring's header equal to it.
  const auto bytes = seg.lookup_bytes("ch");
  std::vector<std::size_t> at;
  for (std::size_t off = 0; off + 8 <= ByteRing::kDataOffset; off += 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, bytes.data() + off, 8);
    if (w == dead) at.push_back(off);
  }
  ASSERT_EQ(at.size(), 1u) << "the producer's identity is not in the ring's header exactly once";
  auto* entry = reinterpret_cast<std::uint64_t*>(bytes.data() + at.front());

  auto sleeper = Process::spawn([] {
    for (;;) ::pause();
  });
  const ProcessIdentity live = process_identity(sleeper.pid());
  ASSERT_NE(live, 0u);
  // Control: the entry naming the live sleeper exactly is a live producer (so this entry is
  // the one consulted): the receive times out.
  as_peer([&] { __atomic_store_n(entry, live, __ATOMIC_RELEASE); });
  EXPECT_EQ(error_of([&] { EXPECT_FALSE(ch.recv_for(100ms).has_value()); }), std::error_code{});

  const auto tag = static_cast<std::uint32_t>(live >> 32);
  const std::uint32_t bogus = tag + 1 == 0 ? 1 : tag + 1;
  const ProcessIdentity recycled = (std::uint64_t{bogus} << 32) | (live & 0xffffffffu);
  as_peer([&] { __atomic_store_n(entry, recycled, __ATOMIC_RELEASE); });
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(5s); }), errc::peer_dead)
      << "a pid that is alive but started at another time was taken for the producer";
  sleeper.kill(SIGKILL);
  EXPECT_TRUE(sleeper.wait().signaled());
}

// ---- 12(d). the producer dies before its first send ----------------------------------------

TEST_F(HostilePeerTest, ReceiverBlockedInRecvGetsPeerDeadWhenTheSenderDiesBeforeItsFirstSend) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  const int code = testing::outcome_when_peer_is_killed(
      [&] {
        auto mine = Segment::open(name);
        ChannelOptions options;
        options.capacity = 4096;
        (void)Channel<std::string>::create(mine, "c", options, Side::sender);
      },
      [&] {
        auto mine = Segment::open(name);
        auto in = Channel<std::string>::open_for(mine, "c", 5s, Side::receiver);
        (void)in.recv();
      });
  EXPECT_EQ(code, testing::kPeerDead) << "-1000: the receiver hung (or a child did)";
}

// Neither side took a Side: the producer program made the segment and the channel and died
// before its first send. Nobody else alive has the segment open, so nobody can ever send:
// the receiver gets peer_dead instead of waiting forever.
TEST_F(HostilePeerTest, ReceiverGetsPeerDeadWhenTheOnlyOtherProcessInTheSegmentDied) {
  const std::string name = shm_name();
  const int code = testing::outcome_when_peer_is_killed(
      [&] {
        auto* seg = new Segment(Segment::create(name, 1 << 20));  // kept until it is killed
        ChannelOptions options;
        options.capacity = 4096;
        (void)Channel<std::string>::create(*seg, "c", options);
      },
      [&] {
        auto mine = Segment::open(name);
        auto in = Channel<std::string>::open(mine, "c");
        (void)in.recv();
      });
  Segment::remove(name);  // the creator was killed: its name is left to us
  EXPECT_EQ(code, testing::kPeerDead) << "-1000: the receiver hung (or a child did)";
}

// The same, but another process in the segment (here the test, its creator) is alive and
// could still send: the receiver waits for its deadline, with no false peer_dead.
TEST_F(HostilePeerTest, ReceiverWaitsWhileAnotherProcessInTheSegmentLives) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  ChannelOptions options;
  options.capacity = 4096;
  auto ch = Channel<std::string>::create(seg, "c", options);
  auto receiver = Process::spawn([&] {
    auto mine = Segment::open(name);
    auto in = Channel<std::string>::open(mine, "c");
    try {
      return in.recv_for(300ms).has_value() ? 1 : 0;
    } catch (const Error&) {
      return 2;
    }
  });
  EXPECT_EQ(exit_code(receiver, 10s), 0) << "1: a message from nowhere; 2: an error";
}

// The receiver made the segment and the channel itself and waits for a sender program that
// has not started yet: nobody else ever came, so nobody has died: it waits (no peer_dead).
TEST_F(HostilePeerTest, ReceiverThatCreatedTheSegmentWaitsForASenderNotStartedYet) {
  const std::string name = shm_name();
  auto receiver = Process::spawn([&] {
    auto seg = Segment::create(name, 1 << 20);
    ChannelOptions options;
    options.capacity = 4096;
    auto in = Channel<std::string>::create(seg, "c", options, Side::receiver);
    try {
      return in.recv_for(300ms).has_value() ? 1 : 0;
    } catch (const Error&) {
      return 2;
    }
  });
  EXPECT_EQ(exit_code(receiver, 10s), 0) << "1: a message from nowhere; 2: an error";
}

// Made before fork, the channel cannot know its sender until the sender acts; the parent
// registers the child it forked, so a child that dies before its first send is seen dead.
TEST_F(HostilePeerTest, ForkedSenderRegisteredByPidIsSeenDeadBeforeItsFirstSend) {
  ChannelOptions options;
  options.capacity = 4096;
  Channel<std::string> ch(options);
  auto kid = Process::spawn([] {
    ::raise(SIGKILL);  // dies before it ever touches the channel
    return 0;
  });
  ch.attach_sender(kid.pid());
  auto receiver = Process::spawn([&] {
    try {
      (void)ch.recv_for(10s);
      return 1;
    } catch (const Error& e) {
      return e.is(errc::peer_dead) ? 0 : 2;
    }
  });
  EXPECT_EQ(exit_code(receiver, 20s), 0) << "1: recv_for timed out (the dead sender went unseen)";
  (void)kid.wait();
}

}  // namespace
}  // namespace ipckit
