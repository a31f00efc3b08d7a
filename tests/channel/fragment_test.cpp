// The fragment layer (lib/channel/fragment.hpp): messages of any size through a ByteRing
// between two real processes, resumable writes, and records a hostile writer made.
#include "channel/fragment.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit::detail {
namespace {

using FragmentTest = testing::LeakCheckedTest;
using testing::exit_code;

// A pseudo-random message whose bytes follow from its size and seed.
std::vector<std::byte> message(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> m(n);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ULL + n + 1;
  for (auto& b : m) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return m;
}

std::uint64_t checksum(std::span<const std::byte> s) {
  std::uint64_t h = 1469598103934665603u;
  for (std::byte b : s) h = (h ^ std::to_integer<std::uint64_t>(b)) * 1099511628211u;
  return h;
}

std::vector<std::byte> record(std::uint64_t total, std::vector<std::byte> body) {
  std::vector<std::byte> r(8);
  std::memcpy(r.data(), &total, 8);
  r.insert(r.end(), body.begin(), body.end());
  return r;
}

// Reads every record the ring holds now; the message, once one is whole.
std::optional<std::vector<std::byte>> read_available(ByteRing& ring, FragmentReader& reader) {
  std::optional<std::vector<std::byte>> out;
  while (auto rec = ring.try_peek()) {
    if (auto msg = reader.feed(*rec, "test")) out.emplace(msg->bytes.begin(), msg->bytes.end());
    ring.release();
  }
  return out;
}

// Sizes around every boundary: empty, one record exactly, one byte over, many records.
const std::vector<std::size_t> kSizes = {0,        1,         4096 - 8,   4096 - 7,
                                         4096,     64 * 1024, 256 * 1024, 256 * 1024 + 1,
                                         1u << 20, 3u << 20,  5'000'011};

// A producer process writes every message (in parts cut at different places, blocking while
// the ring is full); the parent reads them back. Every byte arrives, in order, once.
TEST_F(FragmentTest, MessagesOfEverySizeCrossBetweenProcessesWhole) {
  ByteRing ring(std::uint64_t{1} << 16);  // 64 KiB: large messages lap it many times
  auto producer = Process::spawn([&] {
    ring.attach_producer();
    FragmentWriter w;
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      const auto m = message(kSizes[i], i);
      const std::span<const std::byte> s(m);
      const std::size_t a = s.size() / 3, b = s.size() / 2;
      w.start({s.subspan(0, a), s.subspan(a, b - a), s.subspan(b)});
      w.write_all(ring, 4096);
      if (!w.done() || w.sent() != m.size()) return 1;
    }
    ring.close();
    return 0;
  });
  ring.attach_consumer();
  FragmentReader reader(std::uint64_t{1} << 30);
  std::size_t got = 0;
  for (;;) {
    std::span<const std::byte> rec;
    try {
      rec = ring.peek();
    } catch (const Error& e) {
      ASSERT_TRUE(e.is(errc::closed)) << e.what();
      break;
    }
    ASSERT_LE(rec.size(), 4096u);
    const auto msg = reader.feed(rec, "test");
    if (msg) {
      ASSERT_LT(got, kSizes.size()) << "a message more than was sent";
      const auto want = message(kSizes[got], got);
      ASSERT_EQ(msg->bytes.size(), want.size()) << "message " << got;
      EXPECT_EQ(checksum(msg->bytes), checksum(want)) << "message " << got;
      EXPECT_EQ(msg->in_record, want.size() <= 4096 - 8) << "message " << got;
      ++got;
    }
    ring.release();
  }
  EXPECT_EQ(got, kSizes.size());
  EXPECT_EQ(exit_code(producer), 0);
}

// write() moves what fits and can be called again; staged records stay invisible until the
// producer publishes, then appear at once.
TEST_F(FragmentTest, ResumableWriteStagesWhatFitsAndFinishesLater) {
  ByteRing ring(std::uint64_t{1} << 16);
  ring.attach_producer();
  ring.attach_consumer();
  const auto m = message(200'000, 7);
  FragmentWriter w;
  w.start({std::span<const std::byte>(m)});
  ASSERT_TRUE(w.write(ring, 8192, FragmentWriter::Mode::stage));
  EXPECT_TRUE(w.active());
  EXPECT_GT(w.sent(), 0u);
  EXPECT_LT(w.sent(), m.size()) << "a 64 KiB ring cannot hold 200 KB";
  EXPECT_FALSE(ring.try_peek()) << "staged records showed before publish()";
  EXPECT_FALSE(w.write(ring, 8192, FragmentWriter::Mode::stage)) << "no room, nothing moves";
  ring.publish();
  FragmentReader reader(m.size());
  std::optional<std::vector<std::byte>> out;
  while (!(out = read_available(ring, reader))) {
    ASSERT_TRUE(w.write(ring, 8192, FragmentWriter::Mode::commit)) << "room freed, no move";
  }
  EXPECT_TRUE(w.done());
  EXPECT_EQ(*out, m);
}

// A writer orphaned halfway (its source is gone) finishes the message with zero bytes: the
// reader gets a message of the announced size, the stream stays in step.
TEST_F(FragmentTest, AnOrphanedMessageEndsInZerosAtTheAnnouncedSize) {
  ByteRing ring(std::uint64_t{1} << 16);
  ring.attach_producer();
  ring.attach_consumer();
  auto m = message(100'000, 3);
  FragmentWriter w;
  w.start({std::span<const std::byte>(m)});
  ASSERT_TRUE(w.write(ring, 4096, FragmentWriter::Mode::commit));
  const std::uint64_t before = w.sent();
  w.orphan();
  std::fill(m.begin(), m.end(), std::byte{0xff});  // the source changes: must not be read
  FragmentReader reader(m.size());
  std::optional<std::vector<std::byte>> out;
  while (!(out = read_available(ring, reader))) {
    (void)w.write(ring, 4096, FragmentWriter::Mode::commit);
  }
  ASSERT_EQ(out->size(), m.size());
  const auto original = message(100'000, 3);
  EXPECT_TRUE(std::equal(out->begin(), out->begin() + static_cast<std::ptrdiff_t>(before),
                         original.begin()));
  EXPECT_TRUE(std::all_of(out->begin() + static_cast<std::ptrdiff_t>(before), out->end(),
                          [](std::byte b) { return b == std::byte{0}; }));
}

// What a hostile writer can put in a record is bad_frame, never an over-read or a huge
// allocation.
TEST_F(FragmentTest, HostileRecordsAreBadFrame) {
  const auto bad = [](std::vector<std::vector<std::byte>> records, std::uint64_t limit) {
    FragmentReader reader(limit);
    try {
      for (const auto& r : records) (void)reader.feed(r, "test");
    } catch (const Error& e) {
      return e.is(errc::bad_frame);
    }
    return false;
  };
  EXPECT_TRUE(bad({{std::byte{1}, std::byte{2}, std::byte{3}}}, 1 << 20)) << "short header";
  EXPECT_TRUE(bad({record(4, message(10, 1))}, 1 << 20)) << "a first record past its total";
  EXPECT_TRUE(bad({record(20, message(10, 1)), message(11, 2)}, 1 << 20))
      << "a later record past the total";
  EXPECT_TRUE(bad({record(std::uint64_t{1} << 62, message(10, 1))}, 1 << 20))
      << "a total above the limit";
  EXPECT_TRUE(bad({record(UINT64_MAX, {})}, UINT64_MAX - 1)) << "a total of 2^64 - 1";
  // A refused record leaves nothing half-begun: the next message is read whole.
  FragmentReader reader(1 << 20);
  EXPECT_THROW((void)reader.feed(record(4, message(10, 1)), "test"), Error);
  const auto after = record(6, message(6, 2));
  const auto again = reader.feed(after, "test");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->bytes.size(), 6u);
  // The cursor alone (ShmComm's receive) checks the same.
  FragmentCursor c(100);
  EXPECT_THROW((void)c.take(record(101, {}), "test"), Error);
}

// A reader keeps its buffer: a second large message of no greater size reuses it, and a
// message in one record is handed out in place.
TEST_F(FragmentTest, AWholeRecordIsHandedOutInPlace) {
  FragmentReader reader(1 << 20);
  const auto r = record(5, message(5, 9));
  const auto msg = reader.feed(r, "test");
  ASSERT_TRUE(msg);
  EXPECT_TRUE(msg->in_record);
  EXPECT_EQ(msg->bytes.data(), r.data() + 8);
  EXPECT_EQ(msg->bytes.size(), 5u);
  const auto empty = reader.feed(record(0, {}), "test");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->bytes.empty());
}

}  // namespace
}  // namespace ipckit::detail
