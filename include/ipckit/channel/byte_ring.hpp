/// @class ipckit::ByteRing
/// ByteRing: a single-producer single-consumer ring of variable-size messages (0 bytes up to
/// max_message_size()) in shared memory. Zero-copy: the producer reserve()s a contiguous span
/// inside the ring, writes the payload there and commit()s; the consumer peek()s a span of
/// the oldest message and release()s it.
///
/// Layout: each record is an 8-byte header {size, kind} and the payload, 8-byte aligned. The
/// consumer learns that a record is there from its header alone (a zero header means "not
/// yet": the producer zeroes the next header slot before it publishes a record), so there is
/// no producer index to read or keep up to date. A message is never split: when it does not
/// fit before the end of the ring, the producer leaves a padding record and starts again at
/// the front, which is why a message may take at most half the capacity (less 16 bytes).
/// Batched calls stage many messages and wake the consumer once. Blocking calls follow the
/// ring's WaitPolicy, end with errc::closed after close() (the consumer drains first) and
/// errc::peer_dead when the other side died.
///
///     ipckit::ByteRing ring(1 << 20);              // fork, then in the producer:
///     auto buf = ring.reserve(n); fill(buf); ring.commit();
///     // in the consumer:
///     auto msg = ring.peek(); use(msg); ring.release();
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
#include "ipckit/sync/wait_source.hpp"

namespace ipckit {
class Segment;

namespace detail {

struct ByteRingHeader {
  static constexpr std::uint32_t kMagic = 0x49425231;  // "IBR1"
  static constexpr std::uint32_t kVersion = 2;
  explicit ByteRingHeader(const WaitPolicy& p) noexcept : control(p) {}

  LayoutHeader layout{};  // written by begin_layout()/publish_layout(), validated on open
  // Bytes released so far, written by the consumer only; the producer reads it only when its
  // private copy says the ring is too full. There is no shared producer index: records carry
  // their own headers, and a producer that attaches finds its position by walking the
  // published records after tail.
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};
  alignas(kCacheLine) ChannelControl control;
};
static_assert(std::is_standard_layout_v<ByteRingHeader>);

// A record header is one 64-bit word, read and written atomically: size in the low half,
// kind in the high half (little-endian: {uint32 size, uint32 kind} in memory). Zero: no
// record here yet.
struct RecordHeader {
  std::uint32_t size;                                    // payload bytes (data records)
  std::uint32_t kind;                                    // kData or kPadding
  static constexpr std::uint32_t kData = 0x44415441;     // "DATA"
  static constexpr std::uint32_t kPadding = 0x50414444;  // "PADD": skip to the ring's start

  static constexpr std::uint64_t pack(std::uint32_t size, std::uint32_t kind) noexcept {
    return std::uint64_t{size} | (std::uint64_t{kind} << 32);
  }
  static constexpr RecordHeader unpack(std::uint64_t w) noexcept {
    return {static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(w >> 32)};
  }
};
static_assert(sizeof(RecordHeader) == 8);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);

}  // namespace detail

class ByteRing {
 public:
  /// Smallest capacity (bytes).
  static constexpr std::uint64_t kMinCapacity = 64;
  /// Largest capacity (bytes).
  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 40;
  /// Bytes of the header in front of each record.
  static constexpr std::size_t kRecordHeader = sizeof(detail::RecordHeader);
  /// The largest payload a record header can hold: the largest 8-aligned 32-bit size.
  static constexpr std::uint64_t kMaxRecord = 0xFFFF'FFF8;
  /// Where the records start in the ring's memory (the control block before them).
  static constexpr std::size_t kDataOffset = detail::slots_offset(sizeof(detail::ByteRingHeader));
  /// The layout header's expected values, checked when a ring is opened or attached.
  static constexpr detail::LayoutSpec kLayout{"ByteRing",
                                              detail::ByteRingHeader::kMagic,
                                              detail::ByteRingHeader::kVersion,
                                              1,
                                              kDataOffset,
                                              1,
                                              kMinCapacity,
                                              kMaxCapacity};

  /// Bytes of shared memory a ring of `capacity` bytes occupies.
  static std::size_t bytes_for(std::uint64_t capacity) noexcept;
  /// The largest payload a ring of `capacity` bytes accepts: capacity / 2 - 16, and below
  /// 4 GiB (a record header holds a 32-bit size).
  static constexpr std::size_t max_message_for(std::uint64_t capacity) noexcept {
    const std::uint64_t half = capacity / 2 - 2 * kRecordHeader;
    return static_cast<std::size_t>(half < kMaxRecord ? half : kMaxRecord);
  }

  /// A ring of `capacity` bytes (a power of two in [kMinCapacity, kMaxCapacity], otherwise
  /// Error(errc::invalid_argument)) in an anonymous shared mapping of its own: make it
  /// before fork.
  explicit ByteRing(std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid());
  /// On `seg`'s heap, unnamed (anonymous segments shared by fork).
  static ByteRing in(Segment& seg, std::uint64_t capacity,
                     WaitPolicy policy = WaitPolicy::hybrid());
  ///@{
  /// Under `name` in `seg`, for unrelated processes; the caller takes `side` at once (see
  /// Side). create() throws as Segment::construct_bytes does (errc::already_exists, ...).
  /// open() finds it: errc::not_found, errc::timeout (its creator has not finished it),
  /// errc::bad_layout when the bytes there are not a ByteRing; open_for()/open_until() wait
  /// for the name and its creator until the deadline.
  static ByteRing create(Segment& seg, std::string_view name, std::uint64_t capacity,
                         WaitPolicy policy = WaitPolicy::hybrid(), Side side = Side::none);
  static ByteRing open(Segment& seg, std::string_view name, Side side = Side::none);
  static ByteRing open_until(Segment& seg, std::string_view name, const Deadline& deadline,
                             Side side = Side::none);
  template <class Rep, class Period>
  static ByteRing open_for(Segment& seg, std::string_view name,
                           std::chrono::duration<Rep, Period> timeout, Side side = Side::none) {
    return open_until(seg, name, Deadline::after(timeout), side);
  }
  ///@}
  ///@{
  /// In shared memory the caller manages (at least bytes_for(capacity) bytes, 64-byte
  /// aligned, outliving every handle): at() lays a new ring there (Error(errc::invalid_argument)
  /// when the memory is too small or misaligned), attach() opens the ring another process
  /// laid (errc::bad_layout when there is none).
  static ByteRing at(std::span<std::byte> memory, std::uint64_t capacity,
                     WaitPolicy policy = WaitPolicy::hybrid());
  static ByteRing attach(std::span<std::byte> memory);
  ///@}

  /// Moves the handle; the ring itself stays where it is.
  ByteRing(ByteRing&&) noexcept = default;
  /// Moves the handle; the ring itself stays where it is.
  ByteRing& operator=(ByteRing&&) noexcept = default;

  /// The ring's size in bytes.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return mask_ + 1; }
  /// The largest payload it accepts (max_message_for(capacity())).
  [[nodiscard]] std::size_t max_message_size() const noexcept { return max_message_; }
  /// The wait policy the ring was created with.
  [[nodiscard]] const WaitPolicy& policy() const noexcept { return h_->control.policy; }

  // ---- producer ---------------------------------------------------------------------------
  /// A writable span of exactly n bytes inside the ring, or nullopt when there is no room
  /// now. Throws Error(errc::message_too_large) when n > max_message_size() (nothing
  /// changes), Error(errc::invalid_argument) when a reservation is already open,
  /// Error(errc::closed) after close().
  [[nodiscard]] std::optional<std::span<std::byte>> try_reserve(std::size_t n) {
    begin_produce();
    check_reservation(n);
    if (h_->control.is_closed()) [[unlikely]]
      detail::throw_closed("ByteRing::reserve");
    const std::uint64_t record = kRecordHeader + round8(n);
    const std::uint64_t at = whead_ & mask_;
    const std::uint64_t skip = record <= capacity() - at ? 0 : capacity() - at;
    // Room for the padding, the record and the zeroed header slot after it.
    const std::uint64_t need = skip + record + kRecordHeader;
    if (capacity() - (whead_ - tail_cache_) < need) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);  // pairs with release()
      if (capacity() - (whead_ - tail_cache_) < need) return std::nullopt;
    }
    reserved_ = n;
    skip_ = skip;
    return std::span<std::byte>(data_ + ((whead_ + skip) & mask_) + kRecordHeader, n);
  }
  /// Blocks until there is room. Throws errc::closed, errc::peer_dead (every consumer died),
  /// and what try_reserve() throws.
  std::span<std::byte> reserve(std::size_t n) {
    if (auto span = try_reserve(n)) [[likely]]
      return *span;  // room now: no wait machinery on the hot path
    return *reserve_until(n, Deadline::never());
  }
  /// Like reserve(); nullopt when there is still no room at the deadline.
  [[nodiscard]] std::optional<std::span<std::byte>> reserve_until(std::size_t n,
                                                                  const Deadline& deadline);
  ///@{
  /// Publishes the reserved message with its first `used` bytes (default: all of them).
  /// Throws Error(errc::invalid_argument) without a reservation or when used > reserved.
  void commit() { commit(reserved_); }
  void commit(std::size_t used) {
    if (reserved_ != kNone && used <= reserved_ && !holding_) [[likely]] {
      // The common case inline (no batch staged): what stage() and publish() do, in the
      // same order.
      const std::uint64_t rec = whead_ + skip_;
      const std::uint64_t next = rec + kRecordHeader + round8(used);
      header_at(next & mask_).store(0, std::memory_order_relaxed);
      header_at(rec & mask_)
          .store(detail::RecordHeader::pack(static_cast<std::uint32_t>(used),
                                            detail::RecordHeader::kData),
                 std::memory_order_release);  // pairs with try_peek()
      if (skip_ != 0) {
        header_at(whead_ & mask_)
            .store(detail::RecordHeader::pack(0, detail::RecordHeader::kPadding),
                   std::memory_order_release);
      }
      whead_ = next;
      reserved_ = kNone;
      skip_ = 0;
      wake(h_->control.readable);
      return;
    }
    stage(used);
    publish();
  }
  ///@}
  /// Like commit(), but the message stays invisible until the next publish() or commit(): a
  /// batch of staged messages appears to the consumer at once, with one wake-up. (A blocking
  /// reserve() that finds the ring full publishes the staged batch first, so that the
  /// consumer can make room.)
  void stage(std::size_t used);
  /// Makes the staged messages visible and wakes the consumer.
  void publish() noexcept;

  ///@{
  /// Copies a whole message in. try_send returns false when there is no room now; send()
  /// blocks, send_until()/send_for() return false when there is still no room at the
  /// deadline. Throws as reserve() does.
  [[nodiscard]] bool try_send(std::span<const std::byte> msg);
  void send(std::span<const std::byte> msg) { (void)send_until(msg, Deadline::never()); }
  [[nodiscard]] bool send_until(std::span<const std::byte> msg, const Deadline& deadline);
  template <class Rep, class Period>
  [[nodiscard]] bool send_for(std::span<const std::byte> msg,
                              std::chrono::duration<Rep, Period> timeout) {
    return send_until(msg, Deadline::after(timeout));
  }
  ///@}
  /// Sends every message in order, publishing as many as fit at a time (blocking while full).
  /// Every size is checked first: errc::message_too_large before anything is sent.
  void send_batch(std::span<const std::span<const std::byte>> msgs);

  // ---- consumer ---------------------------------------------------------------------------
  /// The oldest unreleased message (valid until release()), or nullopt when there is none.
  /// Throws Error(errc::bad_frame) if the record in shared memory is corrupt.
  [[nodiscard]] std::optional<std::span<const std::byte>> try_peek() {
    begin_consume();
    if (peeked_) return current();
    for (;;) {
      const std::uint64_t at = rpos_ & mask_;
      const std::uint64_t word =
          header_at(at).load(std::memory_order_acquire);  // pairs with stage()
      if (word == 0) return std::nullopt;
      const detail::RecordHeader rh = detail::RecordHeader::unpack(word);
      if (rh.kind == detail::RecordHeader::kPadding && at != 0) {  // at 0 it would loop
        rpos_ += capacity() - at;
        continue;
      }
      // Checked before use: a data record no larger than a message can be, ending inside
      // the ring.
      if (rh.kind != detail::RecordHeader::kData || rh.size > max_message_ ||
          at + kRecordHeader + rh.size > capacity()) [[unlikely]] {
        corrupt(rh);
      }
      peeked_ = true;
      peek_size_ = rh.size;
      return current();
    }
  }
  /// Blocks until a message is there. Throws errc::closed once closed and drained,
  /// errc::peer_dead when empty and every producer died.
  std::span<const std::byte> peek() {
    if (auto msg = try_peek()) [[likely]]
      return *msg;
    return *peek_until(Deadline::never());
  }
  /// Like peek(); nullopt when there is still no message at the deadline.
  [[nodiscard]] std::optional<std::span<const std::byte>> peek_until(const Deadline& deadline);
  /// Frees the peeked message. Throws Error(errc::invalid_argument) when nothing was peeked.
  void release() {
    advance();
    h_->tail.store(rpos_, std::memory_order_release);  // pairs with acquire in try_reserve()
    wake(h_->control.writable);
  }

  ///@{
  /// Copies the oldest message into `out` (resized), or returns it. try_recv returns false
  /// when empty; recv() blocks; recv_until() returns false and recv_for() nullopt when there
  /// is still no message at the deadline. Throws as peek() does.
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
  ///@}
  /// Hands up to `max` available messages to fn(std::span<const std::byte>) in order, waiting
  /// (until `deadline`) only for the first, and frees them with one store. Returns how many.
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

  /// Either side: no more messages; the consumer drains what is there, then gets errc::closed.
  void close() noexcept { h_->control.close(); }
  /// Whether close() was called (from either side, in any process).
  [[nodiscard]] bool closed() const noexcept { return h_->control.is_closed(); }
  ///@{
  /// Registers the caller as the producer/consumer now, so that the other side's waits can
  /// tell when it dies even before its first operation.
  void attach_producer() { begin_produce(); }
  void attach_consumer() { begin_consume(); }
  ///@}
  ///@{
  /// Registers process `pid` (say a child just forked to be the producer/consumer) on that
  /// side now, from the process that forked it: the other side then learns of its death
  /// even if it dies before its first operation. Throws errc::invalid_argument for pid <= 0
  /// or a full table.
  void attach_producer(pid_t pid) { h_->control.producers.attach_pid(pid, "ByteRing producer"); }
  void attach_consumer(pid_t pid) { h_->control.consumers.attach_pid(pid, "ByteRing consumer"); }
  ///@}
  /// For a WaitSet, the consumer's side: ready when a peek/recv would not wait (a message,
  /// closed, a corrupt record, or every producer gone); woken by the producers' notify.
  WaitSource wait_source();
  /// Bytes in use by published messages now (headers and padding included; a snapshot that
  /// walks the records, O(messages)).
  [[nodiscard]] std::uint64_t used_bytes() const noexcept {
    const std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
    return published_end(tail) - tail;
  }

 private:
  ByteRing(detail::Region r, std::uint64_t capacity, const WaitPolicy& policy);
  ByteRing(detail::Region r, std::uint64_t capacity);  // opened: a validated capacity
  void bind(std::uint64_t capacity) noexcept;
  void take(Side side);
  static constexpr std::uint64_t round8(std::uint64_t n) noexcept {
    return (n + 7) & ~std::uint64_t{7};
  }
  // The tail is checked before the handle counts as attached: a handle whose first attach
  // threw checks again on its next call instead of using cursors it never validated.
  void begin_produce() {
    if (attach_producer_.pending()) [[unlikely]] {
      const std::uint64_t tail = load_tail();
      (void)attach_producer_(h_->control.producers, "ByteRing producer");
      tail_cache_ = tail;
      whead_ = published_end(tail_cache_);
      reserved_ = kNone;
      holding_ = false;
    }
  }
  // The shared tail, where a process that attaches starts: a record boundary, so a multiple
  // of 8 (record headers are read and written as aligned words). Throws Error(errc::bad_frame)
  // when the word in shared memory is not.
  [[nodiscard]] std::uint64_t load_tail() const;
  // The end of the published records that start at `from` (a record boundary the consumer
  // released up to): their chain ends at a zeroed header slot.
  [[nodiscard]] std::uint64_t published_end(std::uint64_t from) const noexcept;
  void begin_consume() {
    if (attach_consumer_.pending()) [[unlikely]] {
      const std::uint64_t tail = load_tail();
      (void)attach_consumer_(h_->control.consumers, "ByteRing consumer");
      rpos_ = tail;
      peeked_ = false;
    }
  }
  std::atomic_ref<std::uint64_t> header_at(std::uint64_t offset) const noexcept {
    return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(data_ + offset));
  }
  void check_reservation(std::size_t n) const {
    if (n > max_message_) [[unlikely]]
      too_large(n);
    if (reserved_ != kNone) [[unlikely]]
      reserve_twice();
  }
  std::span<const std::byte> current() const noexcept {
    return {data_ + (rpos_ & mask_) + kRecordHeader, peek_size_};
  }
  void advance() {
    if (!peeked_) [[unlikely]]
      release_without_peek();
    rpos_ += kRecordHeader + round8(peek_size_);
    peeked_ = false;
  }
  void wake(EventCount& ec) noexcept {
    if (sleep_) ec.notify(1);
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
  // The policy never changes after creation: a copy in the handle keeps the hot path off
  // the shared control line (reading it there after each publish cost 4x the one-way rate).
  bool sleep_ = false;
  // Producer-local: the next write position, the last tail seen, the open reservation's
  // size and the padding it needs before it.
  std::uint64_t whead_ = 0;
  std::uint64_t tail_cache_ = 0;
  std::size_t reserved_ = kNone;
  std::uint64_t skip_ = 0;
  // The first staged, unpublished record: its header word, where it goes, and where its
  // padding record goes (kNoPad: none).
  static constexpr std::uint64_t kNoPad = UINT64_MAX;
  bool holding_ = false;
  std::uint64_t held_at_ = 0;
  std::uint64_t held_word_ = 0;
  std::uint64_t held_pad_at_ = kNoPad;
  // Consumer-local: the current record's position and the peeked record's size.
  std::uint64_t rpos_ = 0;
  std::size_t peek_size_ = 0;
  bool peeked_ = false;
  detail::AttachOnce attach_producer_;
  detail::AttachOnce attach_consumer_;
};

}  // namespace ipckit
