// fuzz_fragment: the fragment layer (lib/channel/fragment.hpp), the one place the pool and
// ShmComm cut large messages into ring records and put them back together. The input is
// [mode][u16 param][rest]:
//  - mode 0, a hostile writer: `rest` is records ([u16 size][bytes] each) fed to a
//    FragmentReader and a FragmentCursor with a limit of `param` KiB. Only errc::bad_frame
//    may come out; every message handed out has exactly the size its first record announced,
//    and the cursor agrees with the reader on where each message ends.
//  - mode 1, a round trip: `rest` is a message, written by a FragmentWriter (records of at
//    most 16 + param % 4096 bytes, from up to four parts cut where the input says) into a real
//    ByteRing and read back by a FragmentReader in turns, writer and reader interleaved: the
//    message must come out whole and unchanged, and nothing else may.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "channel/fragment.hpp"
#include "fuzz_support.hpp"
#include "ipckit/channel/byte_ring.hpp"

namespace {

using ipckit::ByteRing;
using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;
using ipckit::fuzz::fail;
namespace d = ipckit::detail;

void hostile(std::uint16_t limit_kib, ipckit::fuzz::Input& in) {
  const std::uint64_t limit = std::uint64_t{limit_kib} << 10;
  d::FragmentReader reader(limit);
  d::FragmentCursor cursor(limit);
  for (const auto rec : ipckit::fuzz::split_records(in, 256)) {
    const bool first = !cursor.started();
    std::uint64_t announced = 0;
    if (first && rec.size() >= d::kFragmentHeader) std::memcpy(&announced, rec.data(), 8);
    bool cursor_failed = false;
    try {
      (void)cursor.take(rec, "fuzz");
    } catch (const Error& e) {
      expect(e, {errc::bad_frame});
      cursor_failed = true;
    }
    std::optional<d::FragmentReader::Message> msg;
    try {
      msg = reader.feed(rec, "fuzz");
    } catch (const Error& e) {
      expect(e, {errc::bad_frame});
      if (!cursor_failed) fail("the reader refused a record the cursor took");
      return;
    }
    if (cursor_failed) fail("the reader took a record the cursor refused");
    if (msg.has_value() != cursor.complete()) fail("reader and cursor disagree on a message's end");
    if (msg) {
      if (first && msg->bytes.size() != announced) fail("a message of another size than announced");
      if (msg->in_record && msg->bytes.data() != rec.data() + d::kFragmentHeader) {
        fail("a message said to be in its record is not");
      }
      cursor.reset();
    }
  }
}

void round_trip(std::uint16_t param, ipckit::fuzz::Input& in) {
  // Where to cut the message into parts.
  const auto cut1 = in.take<std::uint16_t>();
  const auto cut2 = in.take<std::uint16_t>();
  const auto cut3 = in.take<std::uint16_t>();
  const std::span<const std::byte> msg = in.rest();
  const std::size_t a = std::min<std::size_t>(cut1, msg.size());
  const std::size_t b = std::clamp<std::size_t>(cut2, a, msg.size());
  const std::size_t c = std::clamp<std::size_t>(cut3, b, msg.size());
  ByteRing ring(std::uint64_t{1} << 12);  // small: a message spans many records and laps
  ring.attach_producer();
  ring.attach_consumer();
  d::FragmentWriter writer;
  writer.start({msg.subspan(0, a), msg.subspan(a, b - a), msg.subspan(b, c - b), msg.subspan(c)});
  if (writer.total() != msg.size()) fail("the writer's total is not the parts' sum");
  d::FragmentReader reader(msg.size());
  const std::size_t max_record = 16 + param % 4096;
  std::optional<std::vector<std::byte>> got;
  for (int turns = 0; turns < 100000 && !got; ++turns) {
    const bool wrote = writer.write(ring, max_record, d::FragmentWriter::Mode::commit);
    bool read = false;
    while (auto rec = ring.try_peek()) {
      if (got) fail("a record after the message was whole");
      const auto m = reader.feed(*rec, "fuzz");
      if (m) got.emplace(m->bytes.begin(), m->bytes.end());
      ring.release();
      read = true;
    }
    if (!wrote && !read) fail("neither side moved: the writer is stuck");
  }
  if (!got) fail("the message never came out whole");
  if (!writer.done()) fail("the reader had the message before the writer finished");
  if (got->size() != msg.size() ||
      (!msg.empty() && std::memcmp(got->data(), msg.data(), msg.size()) != 0)) {
    fail("the message came out changed");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return -1;
  ipckit::fuzz::Input in(data, size);
  const std::uint8_t mode = in.take<std::uint8_t>() % 2;
  const auto param = in.take<std::uint16_t>();
  if (mode == 0) {
    hostile(param, in);
  } else {
    round_trip(param, in);
  }
  return 0;
}
