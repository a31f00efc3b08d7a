// ByteRing: a single-producer single-consumer ring of variable-size messages (0 bytes up to
// max_message_size()) in shared memory. Zero-copy: the producer reserve()s a contiguous span
// inside the ring, writes the payload there and commit()s; the consumer peek()s a span of
// the oldest message and release()s it. A message is never split: when it does not fit
// before the end of the ring, the producer leaves a padding record and starts again at the
// front, which is why a message may take at most half the capacity. Records are 8-byte
// aligned (an 8-byte header, then the payload). Batched calls publish many messages with one
// store and one wake-up. Blocking calls follow the ring's WaitPolicy, end with errc::closed
// after close() (the consumer drains first) and errc::peer_dead when the other side died.
//
//   ipckit::ByteRing ring(1 << 20);              // fork, then in the producer:
//   auto buf = ring.reserve(n); fill(buf); ring.commit();
//   // in the consumer:
//   auto msg = ring.peek(); use(msg); ring.release();
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
class Segment;

namespace detail {

struct ByteRingHeader {
  static constexpr std::uint32_t kMagic = 0x49425231;  // "IBR1"
  ByteRingHeader(std::uint64_t cap, const WaitPolicy& p) noexcept : capacity(cap), control(p) {}

  std::uint32_t magic = kMagic;
  std::uint32_t version = 1;
  std::uint64_t capacity;
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};  // bytes published (producer)
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};  // bytes released (consumer)
  alignas(kCacheLine) ChannelControl control;
};
static_assert(std::is_standard_layout_v<ByteRingHeader>);

struct RecordHeader {
  std::uint32_t size;  // payload bytes (data records)
  std::uint32_t kind;  // kData or kPadding
  static constexpr std::uint32_t kData = 0x44415441;     // "DATA"
  static constexpr std::uint32_t kPadding = 0x50414444;  // "PADD": skip to the ring's start
};
static_assert(sizeof(RecordHeader) == 8);

}  // namespace detail

class ByteRing {
 public:
  static constexpr std::uint64_t kMinCapacity = 64;
  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 40;
  static constexpr std::size_t kRecordHeader = sizeof(detail::RecordHeader);

  // Bytes of shared memory a ring of `capacity` bytes occupies.
  static std::size_t bytes_for(std::uint64_t capacity) noexcept;
  // The largest payload a ring of `capacity` bytes accepts: capacity / 2 - 8.
  static constexpr std::size_t max_message_for(std::uint64_t capacity) noexcept {
    return static_cast<std::size_t>(capacity / 2 - kRecordHeader);
  }

  // A ring of `capacity` bytes (a power of two in [kMinCapacity, kMaxCapacity], otherwise
  // Error(errc::invalid_argument)) in an anonymous shared mapping of its own: make it
  // before fork.
  explicit ByteRing(std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid());
  // On `seg`'s heap, unnamed (anonymous segments shared by fork).
  static ByteRing in(Segment& seg, std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid());
  // Under `name` in `seg`, for unrelated processes; open() finds it (errc::not_found,
  // errc::bad_layout when the bytes there are not a ByteRing).
  static ByteRing create(Segment& seg, std::string_view name, std::uint64_t capacity,
                         WaitPolicy policy = WaitPolicy::hybrid());
  static ByteRing open(Segment& seg, std::string_view name);

  ByteRing(ByteRing&&) noexcept = default;
  ByteRing& operator=(ByteRing&&) noexcept = default;

  [[nodiscard]] std::uint64_t capacity() const noexcept { return mask_ + 1; }
  [[nodiscard]] std::size_t max_message_size() const noexcept { return max_message_; }
  [[nodiscard]] const WaitPolicy& policy() const noexcept { return h_->control.policy; }

  // ---- producer ---------------------------------------------------------------------------
  // A writable span of exactly n bytes inside the ring, or nullopt when there is no room
  // now. Throws Error(errc::message_too_large) when n > max_message_size() (nothing
  // changes), Error(errc::invalid_argument) when a reservation is already open.
  [[nodiscard]] std::optional<std::span<std::byte>> try_reserve(std::size_t n) {
    begin_produce();
    check_reservation(n);
    const std::uint64_t need = kRecordHeader + round8(n);
    const std::uint64_t at = whead_ & mask_;
    const std::uint64_t skip = need <= capacity() - at ? 0 : capacity() - at;
    if (capacity() - (whead_ - tail_cache_) < skip + need) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);  // pairs with release()
      if (capacity() - (whead_ - tail_cache_) < skip + need) return std::nullopt;
    }
    if (skip != 0) {
      write_header(at, 0, detail::RecordHeader::kPadding);
      whead_ += skip;
    }
    reserved_ = n;
    return std::span<std::byte>(data_ + (whead_ & mask_) + kRecordHeader, n);
  }
  // Blocks until there is room. Throws errc::closed, errc::peer_dead (every consumer died),
  // and what try_reserve() throws.
  std::span<std::byte> reserve(std::size_t n) { return *reserve_until(n, Deadline::never()); }
  [[nodiscard]] std::optional<std::span<std::byte>> reserve_until(std::size_t n,
                                                                 const Deadline& deadline);
  // Publishes the reserved message with its first `used` bytes (default: all of them).
  // Throws Error(errc::invalid_argument) without a reservation or when used > reserved.
  void commit() { commit(reserved_); }
  void commit(std::size_t used) {
    stage(used);
    publish();
  }
  // Like commit(), but leaves the message unpublished until the next publish() or commit():
  // a batch of staged messages costs one store and one wake-up.
  void stage(std::size_t used);
  void publish() noexcept {
    h_->head.store(whead_, std::memory_order_release);  // pairs with acquire in try_peek()
    wake(h_->control.readable);
  }

  // Copies a whole message in. try_send returns false when there is no room now.
  [[nodiscard]] bool try_send(std::span<const std::byte> msg);
  void send(std::span<const std::byte> msg) { (void)send_until(msg, Deadline::never()); }
  [[nodiscard]] bool send_until(std::span<const std::byte> msg, const Deadline& deadline);
  template <class Rep, class Period>
  [[nodiscard]] bool send_for(std::span<const std::byte> msg,
                              std::chrono::duration<Rep, Period> timeout) {
    return send_until(msg, Deadline::after(timeout));
  }
  // Sends every message in order, publishing as many as fit at a time (blocking while full).
  void send_batch(std::span<const std::span<const std::byte>> msgs);

  // ---- consumer ---------------------------------------------------------------------------
  // The oldest unreleased message (valid until release()), or nullopt when there is none.
  // Throws Error(errc::bad_frame) if the record in shared memory is corrupt.
  [[nodiscard]] std::optional<std::span<const std::byte>> try_peek() {
    begin_consume();
    if (peeked_) return current();
    for (;;) {
      if (rpos_ == head_cache_) {
        head_cache_ = h_->head.load(std::memory_order_acquire);  // pairs with publish()
        if (rpos_ == head_cache_) return std::nullopt;
      }
      detail::RecordHeader rh;
      std::memcpy(&rh, data_ + (rpos_ & mask_), sizeof rh);
      if (rh.kind == detail::RecordHeader::kPadding) {
        rpos_ += capacity() - (rpos_ & mask_);
        continue;
      }
      // Checked before use: a record must be a data record that ends inside the ring and
      // inside what the producer published.
      if (rh.kind != detail::RecordHeader::kData || rh.size > max_message_ ||
          (rpos_ & mask_) + kRecordHeader + rh.size > capacity() ||
          rpos_ + kRecordHeader + round8(rh.size) > head_cache_) [[unlikely]] {
        corrupt(rh);
      }
      peeked_ = true;
      peek_size_ = rh.size;
      return current();
    }
  }
  // Blocks until a message is there. Throws errc::closed once closed and drained,
  // errc::peer_dead when empty and every producer died.
  std::span<const std::byte> peek() { return *peek_until(Deadline::never()); }
  [[nodiscard]] std::optional<std::span<const std::byte>> peek_until(const Deadline& deadline);
  // Frees the peeked message. Throws Error(errc::invalid_argument) when nothing was peeked.
  void release() {
    advance();
    h_->tail.store(rpos_, std::memory_order_release);  // pairs with acquire in try_reserve()
    wake(h_->control.writable);
  }

  // Copies the oldest message into `out` (resized). try_recv returns false when empty.
  [[nodiscard]] bool try_recv(std::vector<std::byte>& out);
  std::vector<std::byte> recv();
  [[nodiscard]] bool recv_until(std::vector<std::byte>& out, const Deadline& deadline);
  template <class Rep, class Period>
  [[nodiscard]] std::optional<std::vector<std::byte>> recv_for(
      std::chrono::duration<Rep, Period> timeout) {
    std::vector<std::byte> out;
    if (!recv_until(out, Deadline::after(timeout))) return std::nullopt;
    return out;
  }
  // Hands up to `max` available messages to fn(std::span<const std::byte>) in order, waiting
  // (until `deadline`) only for the first, and frees them with one store. Returns how many.
  template <class F>
  std::size_t recv_batch(F&& fn, std::size_t max = SIZE_MAX,
                         const Deadline& deadline = Deadline::never()) {
    std::size_t n = 0;
    if (max == 0 || !peek_until(deadline)) return 0;
    while (n < max) {
      const auto msg = try_peek();
      if (!msg) break;
      fn(*msg);
      advance();
      ++n;
    }
    h_->tail.store(rpos_, std::memory_order_release);
    wake(h_->control.writable);
    return n;
  }

  // Either side: no more messages; the consumer drains what is there, then gets errc::closed.
  void close() noexcept { h_->control.close(); }
  [[nodiscard]] bool closed() const noexcept { return h_->control.is_closed(); }
  void attach_producer() { begin_produce(); }
  void attach_consumer() { begin_consume(); }
  // Bytes in use now (messages, headers and padding; a snapshot).
  [[nodiscard]] std::uint64_t used_bytes() const noexcept {
    return h_->head.load(std::memory_order_acquire) - h_->tail.load(std::memory_order_acquire);
  }

 private:
  ByteRing(std::uint64_t capacity, const WaitPolicy& policy, detail::Region r);
  explicit ByteRing(detail::Region r);
  void bind() noexcept;
  static constexpr std::uint64_t round8(std::uint64_t n) noexcept { return (n + 7) & ~std::uint64_t{7}; }
  void begin_produce() {
    if (attach_producer_(h_->control.producers, "ByteRing producer")) {
      whead_ = h_->head.load(std::memory_order_acquire);
      tail_cache_ = h_->tail.load(std::memory_order_acquire);
      reserved_ = kNone;
    }
  }
  void begin_consume() {
    if (attach_consumer_(h_->control.consumers, "ByteRing consumer")) {
      rpos_ = h_->tail.load(std::memory_order_acquire);
      head_cache_ = h_->head.load(std::memory_order_acquire);
      peeked_ = false;
    }
  }
  void check_reservation(std::size_t n) const {
    if (n > max_message_) [[unlikely]] too_large(n);
    if (reserved_ != kNone) [[unlikely]] reserve_twice();
  }
  void write_header(std::uint64_t at, std::uint32_t size, std::uint32_t kind) noexcept {
    const detail::RecordHeader rh{size, kind};
    std::memcpy(data_ + at, &rh, sizeof rh);
  }
  std::span<const std::byte> current() const noexcept {
    return {data_ + (rpos_ & mask_) + kRecordHeader, peek_size_};
  }
  void advance() {
    if (!peeked_) [[unlikely]] release_without_peek();
    rpos_ += kRecordHeader + round8(peek_size_);
    peeked_ = false;
  }
  void wake(EventCount& ec) noexcept {
    if (h_->control.policy.sleep) ec.notify(1);
  }
  [[noreturn]] void too_large(std::size_t n) const;
  [[noreturn]] static void reserve_twice();
  [[noreturn]] static void release_without_peek();
  [[noreturn]] void corrupt(const detail::RecordHeader& rh) const;

  static constexpr std::size_t kNone = SIZE_MAX;

  detail::Region region_;
  detail::ByteRingHeader* h_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t mask_ = 0;
  std::size_t max_message_ = 0;
  // Producer-local: the next write position (ahead of head while staging), the last tail
  // seen, and the open reservation's size.
  std::uint64_t whead_ = 0;
  std::uint64_t tail_cache_ = 0;
  std::size_t reserved_ = kNone;
  // Consumer-local: the current record's position, the last head seen, the peeked record.
  std::uint64_t rpos_ = 0;
  std::uint64_t head_cache_ = 0;
  std::size_t peek_size_ = 0;
  bool peeked_ = false;
  detail::AttachOnce attach_producer_;
  detail::AttachOnce attach_consumer_;
};

}  // namespace ipckit
