// fuzz_byte_ring: ByteRing over memory a peer scribbled on. A small ring is laid with at() in
// an exactly sized, 64-byte aligned heap buffer (so ASan sees any access outside it), a few
// valid messages are produced, and then the input patches the data area, record headers, the
// shared tail and the closed flag, as a misbehaving peer could. A fresh consumer drains it
// (try_peek/release, try_recv) and a fresh producer reserves and commits over it: only
// messages, errc::bad_frame and (when the input set the closed flag) errc::closed may come
// out, and every span handed out must lie inside the data area. Mode 1 attaches arbitrary
// bytes instead: errc::bad_layout, or a ring that then behaves as above.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "fuzz_support.hpp"
#include "ipckit/channel/byte_ring.hpp"

namespace {

using ipckit::ByteRing;
using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;
using ipckit::fuzz::fail;
using ipckit::fuzz::Input;

struct Buffer {
  explicit Buffer(std::size_t n)
      : size(n), p(static_cast<std::byte*>(::operator new(n, std::align_val_t(64)))) {
    std::memset(p, 0, n);
  }
  ~Buffer() { ::operator delete(p, std::align_val_t(64)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::size_t size;
  std::byte* p;
};

// Where the data area lies: the last capacity bytes of the ring's memory.
struct Area {
  const std::byte* begin;
  const std::byte* end;
  void check(std::span<const std::byte> s) const {
    if (s.data() < begin || s.data() + s.size() > end ||
        s.size() > static_cast<std::size_t>(end - begin)) {
      fail("a span outside the ring's data area");
    }
  }
};

void consume(std::span<std::byte> mem, const Area& area, Input& in) {
  ByteRing ring = ByteRing::attach(mem);
  const std::uint8_t how = in.take<std::uint8_t>();
  std::vector<std::byte> out;
  // Every record advances at least 8 bytes; a padding record at most once per lap.
  const std::size_t bound = 2 * (ring.capacity() / 8) + 4;
  try {
    for (std::size_t i = 0; i < bound; ++i) {
      if ((how >> (i % 8)) & 1) {
        if (!ring.try_recv(out)) return;
        if (out.size() > ring.max_message_size()) fail("a message longer than max_message");
      } else {
        const auto msg = ring.try_peek();
        if (!msg) return;
        area.check(*msg);
        const auto again = ring.try_peek();  // peeking twice gives the same message
        if (!again || again->data() != msg->data() || again->size() != msg->size()) {
          fail("a second peek saw another message");
        }
        ring.release();
      }
    }
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
  }
}

void produce(std::span<std::byte> mem, const Area& area, Input& in, bool closed) {
  ByteRing ring = ByteRing::attach(mem);
  const std::uint8_t n = in.take<std::uint8_t>() & 15;
  try {
    for (std::uint8_t i = 0; i < n; ++i) {
      const std::size_t want = in.take<std::uint16_t>() % (ring.max_message_size() + 1);
      const auto buf = ring.try_reserve(want);
      if (!buf) break;
      if (buf->size() != want) fail("a reservation of the wrong size");
      area.check(*buf);
      std::memset(buf->data(), 0xA5, buf->size());
      if (i & 1) {
        ring.stage(want / 2);
      } else {
        ring.commit();
      }
    }
    ring.publish();
    (void)ring.used_bytes();
  } catch (const Error& e) {
    if (closed && e.is(errc::closed)) return;
    expect(e, {errc::bad_frame});
  }
}

// Applies the input's patches: what a peer could write into the ring's shared memory.
void patch(std::byte* base, std::byte* data, std::uint64_t cap, Input& in, bool& closed) {
  auto* h = std::launder(reinterpret_cast<ipckit::detail::ByteRingHeader*>(base));
  const std::uint8_t count = in.take<std::uint8_t>() & 31;
  for (std::uint8_t i = 0; i < count && !in.empty(); ++i) {
    const std::uint8_t op = in.take<std::uint8_t>();
    const std::uint64_t at = in.take<std::uint16_t>();
    switch (op % 5) {
      case 0: {  // a record header: size and kind (kind from a short list, or raw)
        const std::uint32_t size = in.take<std::uint32_t>();
        static constexpr std::uint32_t kKinds[] = {ipckit::detail::RecordHeader::kData,
                                                   ipckit::detail::RecordHeader::kPadding, 0};
        const std::uint32_t kind =
            (op & 0x80) != 0 ? in.take<std::uint32_t>() : kKinds[(op >> 3) % 3];
        const std::uint64_t w = ipckit::detail::RecordHeader::pack(size, kind);
        std::memcpy(data + ((at * 8) & (cap - 1)), &w, 8);
        break;
      }
      case 1: {  // raw bytes anywhere in the data area
        const auto bytes = in.bytes(in.take<std::uint8_t>());
        const std::uint64_t off = at & (cap - 1);
        const std::size_t n = std::min<std::size_t>(bytes.size(), cap - off);
        if (n != 0) std::memcpy(data + off, bytes.data(), n);
        break;
      }
      case 2:  // the consumer's tail, near the records or anywhere
        h->tail.store((op & 0x80) != 0 ? in.take<std::uint64_t>() : at, std::memory_order_relaxed);
        break;
      case 3:
        h->control.closed.store(1, std::memory_order_relaxed);
        closed = true;
        break;
      default: {  // zero a header slot (a record not published yet)
        const std::uint64_t z = 0;
        std::memcpy(data + ((at * 8) & (cap - 1)), &z, 8);
        break;
      }
    }
  }
}

void run_laid(Input& in) {
  const std::uint64_t cap = ByteRing::kMinCapacity << (in.take<std::uint8_t>() % 6);  // 64..2048
  Buffer buf(ByteRing::bytes_for(cap));
  const std::span<std::byte> mem(buf.p, buf.size);
  std::byte* data = buf.p + buf.size - cap;
  const Area area{data, buf.p + buf.size};
  {
    ByteRing ring = ByteRing::at(mem, cap, ipckit::WaitPolicy::spin_only());
    const std::uint8_t valid = in.take<std::uint8_t>() % 8;
    const std::uint8_t consumed = in.take<std::uint8_t>() % 8;
    for (std::uint8_t i = 0; i < valid; ++i) {
      const std::size_t n = in.take<std::uint8_t>() % (ring.max_message_size() + 1);
      std::vector<std::byte> msg(n, std::byte{static_cast<unsigned char>(i)});
      if (!ring.try_send(msg)) break;
    }
    std::vector<std::byte> out;
    for (std::uint8_t i = 0; i < consumed; ++i) {
      if (!ring.try_recv(out)) break;
    }
  }
  bool closed = false;
  patch(buf.p, data, cap, in, closed);
  consume(mem, area, in);
  produce(mem, area, in, closed);
  consume(mem, area, in);
}

void run_attach(Input& in) {
  const auto bytes = in.rest();
  // Room for the header and a small ring after it, whatever the bytes say.
  Buffer buf(std::max<std::size_t>(ByteRing::bytes_for(ByteRing::kMinCapacity),
                                   (bytes.size() + 63) & ~std::size_t{63}));
  if (!bytes.empty()) std::memcpy(buf.p, bytes.data(), std::min(bytes.size(), buf.size));
  try {
    ByteRing probe = ByteRing::attach(std::span(buf.p, buf.size));
    // A ring: the peer tables are another matter (a full table is errc::invalid_argument,
    // documented), so give them back empty before attaching as both sides.
    auto* h = std::launder(reinterpret_cast<ipckit::detail::ByteRingHeader*>(buf.p));
    ::new (&h->control.producers) ipckit::detail::PeerTable();
    ::new (&h->control.consumers) ipckit::detail::PeerTable();
    std::byte* data = buf.p + ByteRing::bytes_for(probe.capacity()) - probe.capacity();
    const Area area{data, data + probe.capacity()};
    Input none(nullptr, 0);
    consume(std::span(buf.p, buf.size), area, none);
    produce(std::span(buf.p, buf.size), area, none, probe.closed());
  } catch (const Error& e) {
    expect(e, {errc::bad_layout});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return -1;
  Input in(data, size);
  if ((in.take<std::uint8_t>() & 1) == 0) {
    run_laid(in);
  } else {
    run_attach(in);
  }
  return 0;
}
