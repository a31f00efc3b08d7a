#include "ipckit/channel/byte_ring.hpp"

#include <cstring>
#include <new>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit {
namespace {
std::size_t checked(std::uint64_t capacity) {
  detail::check_capacity(ByteRing::kLayout, capacity);
  return detail::layout_bytes(ByteRing::kLayout, capacity);
}
}  // namespace

std::size_t ByteRing::bytes_for(std::uint64_t capacity) noexcept {
  return kDataOffset + static_cast<std::size_t>(capacity);
}

ByteRing::ByteRing(std::uint64_t capacity, WaitPolicy policy)
    : ByteRing(detail::Region::anonymous(checked(capacity)), capacity, policy) {}

ByteRing ByteRing::in(Segment& seg, std::uint64_t capacity, WaitPolicy policy) {
  return ByteRing(detail::Region::in(seg, checked(capacity)), capacity, policy);
}

ByteRing ByteRing::create(Segment& seg, std::string_view name, std::uint64_t capacity,
                          WaitPolicy policy, Side side) {
  ByteRing r(detail::Region::create(seg, name, checked(capacity)), capacity, policy);
  r.take(side);
  return r;
}

ByteRing ByteRing::open(Segment& seg, std::string_view name, Side side) {
  return open_until(seg, name, Deadline::after(std::chrono::seconds(0)), side);
}

ByteRing ByteRing::open_until(Segment& seg, std::string_view name, const Deadline& deadline,
                              Side side) {
  std::uint64_t capacity = 0;
  detail::Region region =
      detail::Region::open(seg, name, kLayout, deadline, "ByteRing::open", capacity);
  ByteRing r(std::move(region), capacity);
  r.take(side);
  return r;
}

ByteRing ByteRing::at(std::span<std::byte> memory, std::uint64_t capacity, WaitPolicy policy) {
  const std::size_t need = checked(capacity);
  if (memory.size() < need ||
      reinterpret_cast<std::uintptr_t>(memory.data()) % detail::kCacheLine != 0) {
    throw_error(
        errc::invalid_argument,
        "ByteRing::at: " + std::to_string(memory.size()) + " bytes at " +
            std::to_string(reinterpret_cast<std::uintptr_t>(memory.data()) % detail::kCacheLine) +
            " past a cache line; a ring of " + std::to_string(capacity) + " needs " +
            std::to_string(need) + ", cache-line aligned");
  }
  return ByteRing(detail::Region::view(memory.data(), memory.size()), capacity, policy);
}

ByteRing ByteRing::attach(std::span<std::byte> memory) {
  const detail::LayoutRead read = detail::read_layout(kLayout, memory, "ByteRing::attach");
  if (read.state != detail::LayoutState::ready) {
    detail::throw_bad_layout("ByteRing::attach", "no ring has been laid out there yet");
  }
  return ByteRing(detail::Region::view(memory.data(), memory.size()), read.capacity);
}

ByteRing::ByteRing(detail::Region r, std::uint64_t capacity, const WaitPolicy& policy)
    : region_(std::move(r)) {
  h_ = ::new (region_.data()) detail::ByteRingHeader(policy);
  detail::begin_layout(h_->layout, kLayout, capacity);
  bind(capacity);
  header_at(0).store(0, std::memory_order_relaxed);  // segment memory may hold old bytes
  detail::publish_layout(h_->layout, kLayout);
}

ByteRing::ByteRing(detail::Region r, std::uint64_t capacity) : region_(std::move(r)) {
  h_ = std::launder(reinterpret_cast<detail::ByteRingHeader*>(region_.data()));
  bind(capacity);
}

void ByteRing::bind(std::uint64_t capacity) noexcept {
  sleep_ = h_->control.safe_policy().sleep;
  mask_ = capacity - 1;
  max_message_ = max_message_for(capacity);
  data_ = region_.data() + kDataOffset;
  // Cursors are set for real when a process first produces or consumes (begin_*).
}

void ByteRing::take(Side side) {
  if (side == Side::sender) attach_producer();
  if (side == Side::receiver) attach_consumer();
}

std::optional<std::span<std::byte>> ByteRing::reserve_until(std::size_t n,
                                                            const Deadline& deadline) {
  begin_produce();
  check_reservation(n);  // errors before any wait
  std::optional<std::span<std::byte>> out = try_reserve(n);
  if (out) return out;
  // The consumer cannot free room it cannot see: a staged batch goes out before we wait.
  if (holding_) publish();
  out.reset();
  if (!detail::wait_side(
          h_->control, h_->control.writable, h_->control.consumers, region_, deadline,
          "ByteRing::reserve", [&] { return (out = try_reserve(n)).has_value(); }, true)) {
    return std::nullopt;
  }
  return out;
}

void ByteRing::stage(std::size_t used) {
  if (reserved_ == kNone) {
    throw_error(errc::invalid_argument, "ByteRing::commit: no open reservation");
  }
  if (used > reserved_) {
    throw_error(errc::invalid_argument, "ByteRing::commit(" + std::to_string(used) +
                                            "): more than the " + std::to_string(reserved_) +
                                            " bytes reserved");
  }
  // Order matters: the slot after the record is zeroed before the record's header is
  // stored, and a padding record is stored after the record it leads to, so the consumer
  // never reads a header slot holding bytes of an older lap. The first record of a batch
  // (and its padding) is held back until publish(): the consumer stops at it, so the whole
  // batch appears at once or not at all.
  const std::uint64_t rec = whead_ + skip_;
  const std::uint64_t next = rec + kRecordHeader + round8(used);
  const std::uint64_t word =
      detail::RecordHeader::pack(static_cast<std::uint32_t>(used), detail::RecordHeader::kData);
  const std::uint64_t pad = detail::RecordHeader::pack(0, detail::RecordHeader::kPadding);
  header_at(next & mask_).store(0, std::memory_order_relaxed);
  if (!holding_) {
    holding_ = true;
    held_at_ = rec & mask_;
    held_word_ = word;
    held_pad_at_ = skip_ != 0 ? (whead_ & mask_) : kNoPad;
  } else {
    header_at(rec & mask_).store(word, std::memory_order_release);
    if (skip_ != 0) header_at(whead_ & mask_).store(pad, std::memory_order_release);
  }
  whead_ = next;
  reserved_ = kNone;
  skip_ = 0;
}

void ByteRing::publish() noexcept {
  if (holding_) {
    header_at(held_at_).store(held_word_, std::memory_order_release);  // pairs with try_peek()
    if (held_pad_at_ != kNoPad) {
      header_at(held_pad_at_)
          .store(detail::RecordHeader::pack(0, detail::RecordHeader::kPadding),
                 std::memory_order_release);
    }
    holding_ = false;
  }
  wake(h_->control.readable);
}

std::uint64_t ByteRing::load_tail() const {
  const std::uint64_t tail = h_->tail.load(std::memory_order_acquire);  // pairs with release()
  if ((tail & (kRecordHeader - 1)) != 0) [[unlikely]] {
    throw_error(errc::bad_frame,
                "ByteRing: corrupt tail " + std::to_string(tail) + " (not a record boundary)");
  }
  return tail;
}

std::uint64_t ByteRing::published_end(std::uint64_t from) const noexcept {
  std::uint64_t pos = from;
  if ((pos & (kRecordHeader - 1)) != 0) return pos;  // a corrupt tail: no records to walk
  while (pos - from < capacity()) {
    const std::uint64_t at = pos & mask_;
    const auto rh = detail::RecordHeader::unpack(header_at(at).load(std::memory_order_acquire));
    if (rh.kind == detail::RecordHeader::kPadding && at != 0) {
      pos += capacity() - at;
    } else if (rh.kind == detail::RecordHeader::kData && rh.size <= max_message_) {
      pos += kRecordHeader + round8(rh.size);
    } else {
      break;
    }
  }
  return pos;
}

bool ByteRing::try_send(std::span<const std::byte> msg) {
  if (closed()) detail::throw_closed("ByteRing::try_send");
  const auto buf = try_reserve(msg.size());
  if (!buf) return false;
  if (!msg.empty()) std::memcpy(buf->data(), msg.data(), msg.size());
  commit();
  return true;
}

bool ByteRing::send_until(std::span<const std::byte> msg, const Deadline& deadline) {
  const auto buf = reserve_until(msg.size(), deadline);
  if (!buf) return false;
  if (!msg.empty()) std::memcpy(buf->data(), msg.data(), msg.size());
  commit();
  return true;
}

void ByteRing::send_batch(std::span<const std::span<const std::byte>> msgs) {
  for (const auto& m : msgs) check_reservation(m.size());
  for (const auto& m : msgs) {
    auto buf = try_reserve(m.size());
    if (!buf) {
      publish();  // let the consumer drain what is staged, then wait for room
      buf = reserve(m.size());
    }
    if (!m.empty()) std::memcpy(buf->data(), m.data(), m.size());
    stage(m.size());
  }
  publish();
}

std::optional<std::span<const std::byte>> ByteRing::peek_until(const Deadline& deadline) {
  begin_consume();
  std::optional<std::span<const std::byte>> out;
  if (!detail::wait_side(
          h_->control, h_->control.readable, h_->control.producers, region_, deadline,
          "ByteRing::peek", [&] { return (out = try_peek()).has_value(); }, false)) {
    return std::nullopt;
  }
  return out;
}

WaitSource ByteRing::wait_source() {
  begin_consume();
  WaitSource s;
  s.event = &h_->control.readable;
  s.ready = [this](bool check_peers) {
    if (try_peek().has_value() || closed()) return true;  // try_peek throws on a bad record
    return check_peers && detail::side_gone(h_->control.producers, region_);
  };
  return s;
}

bool ByteRing::try_recv(std::vector<std::byte>& out) {
  const auto msg = try_peek();
  if (!msg) return false;
  out.assign(msg->begin(), msg->end());
  release();
  return true;
}

std::vector<std::byte> ByteRing::recv() {
  std::vector<std::byte> out;
  (void)recv_until(out, Deadline::never());
  return out;
}

bool ByteRing::recv_until(std::vector<std::byte>& out, const Deadline& deadline) {
  const auto msg = peek_until(deadline);
  if (!msg) return false;
  out.assign(msg->begin(), msg->end());
  release();
  return true;
}

void ByteRing::too_large(std::size_t n) const {
  throw_error(errc::message_too_large, "ByteRing: a message of " + std::to_string(n) +
                                           " bytes can never fit a ring of " +
                                           std::to_string(capacity()) + " bytes (at most " +
                                           std::to_string(max_message_) + ")");
}

void ByteRing::reserve_twice() {
  throw_error(errc::invalid_argument,
              "ByteRing::reserve: a reservation is already open; commit() it first");
}

void ByteRing::release_without_peek() {
  throw_error(errc::invalid_argument, "ByteRing::release: no message was peeked");
}

void ByteRing::corrupt(const detail::RecordHeader& rh) const {
  throw_error(errc::bad_frame, "ByteRing: corrupt record (kind " + std::to_string(rh.kind) +
                                   ", size " + std::to_string(rh.size) + ", at most " +
                                   std::to_string(max_message_) + ")");
}

}  // namespace ipckit
