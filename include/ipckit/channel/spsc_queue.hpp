// SpscQueue<T>: a bounded single-producer single-consumer queue of trivially copyable T in
// shared memory, with a capacity chosen at run time. One process pushes, one pops; each side
// keeps a private copy of the other side's index and reads the shared one only when the copy
// says full/empty, so a steady stream moves about one cache line per slot. try_ calls never
// block; push/pop wait by the queue's WaitPolicy (spin, hybrid, block), end with errc::closed
// after close() and with errc::peer_dead when every process on the other side has exited.
//
//   ipckit::SpscQueue<Msg> q(1024);        // own shared mapping; fork, then push / pop
//   auto seg = ipckit::Segment::create(name, 1 << 20);
//   auto q2 = ipckit::SpscQueue<Msg>::create(seg, "jobs", 1024);   // elsewhere: ::open(seg, "jobs")
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
namespace detail {

struct SpscQueueHeader {
  static constexpr std::uint32_t kMagic = 0x49535131;  // "ISQ1"
  SpscQueueHeader(std::uint64_t cap, std::uint64_t elem, const WaitPolicy& p) noexcept
      : capacity(cap), elem_size(elem), control(p) {}

  std::uint32_t magic = kMagic;
  std::uint32_t version = 1;
  std::uint64_t capacity;
  std::uint64_t elem_size;
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};  // written by the producer only
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};  // written by the consumer only
  alignas(kCacheLine) ChannelControl control;
};
static_assert(std::is_standard_layout_v<SpscQueueHeader>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace detail

template <class T>
class SpscQueue {
  static_assert(std::is_trivially_copyable_v<T>,
                "SpscQueue<T> copies T as bytes between processes: T must be trivially copyable");

  using Header = detail::SpscQueueHeader;
  static constexpr std::size_t kSlotsOffset =
      (sizeof(Header) + alignof(T) + detail::kCacheLine - 1) / detail::kCacheLine *
      detail::kCacheLine;

 public:
  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 32;

  // Bytes of shared memory a queue of `capacity` slots occupies.
  static constexpr std::size_t bytes_for(std::uint64_t capacity) noexcept {
    return kSlotsOffset + capacity * sizeof(T);
  }

  // A queue in an anonymous shared mapping of its own: make it before fork. `capacity` slots,
  // a power of two in [1, kMaxCapacity]; otherwise throws Error(errc::invalid_argument).
  explicit SpscQueue(std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid())
      : SpscQueue(checked(capacity), policy, [&] { return detail::Region::anonymous(bytes_for(capacity)); }) {}
  // A queue on `seg`'s heap, unnamed (for anonymous segments shared by fork).
  static SpscQueue in(Segment& seg, std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid()) {
    return SpscQueue(checked(capacity), policy, [&] { return detail::Region::in(seg, bytes_for(capacity)); });
  }
  // A queue stored under `name` in `seg`, for unrelated processes. Throws as
  // Segment::construct_bytes does (errc::already_exists, ...).
  static SpscQueue create(Segment& seg, std::string_view name, std::uint64_t capacity,
                          WaitPolicy policy = WaitPolicy::hybrid()) {
    return SpscQueue(checked(capacity), policy,
                     [&] { return detail::Region::create(seg, name, bytes_for(capacity)); });
  }
  // The queue create() made under `name`. Throws errc::not_found, or errc::bad_layout when
  // the bytes there are not an SpscQueue of this T.
  static SpscQueue open(Segment& seg, std::string_view name) {
    return SpscQueue(detail::Region::find(seg, name));
  }

  SpscQueue(SpscQueue&&) noexcept = default;
  SpscQueue& operator=(SpscQueue&&) noexcept = default;

  [[nodiscard]] std::uint64_t capacity() const noexcept { return mask_ + 1; }
  [[nodiscard]] const WaitPolicy& policy() const noexcept { return h_->control.policy; }

  // Producer side. Returns false when the queue is full. Never blocks, never throws (a
  // process attaching as producer for the first time may throw errc::invalid_argument when
  // too many processes attached).
  [[nodiscard]] bool try_push(const T& v) {
    attach_producer_(h_->control.producers, "SpscQueue producer");
    const std::uint64_t head = h_->head.load(std::memory_order_relaxed);
    if (head - tail_cache_ > mask_) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);  // pairs with release in pop
      if (head - tail_cache_ > mask_) return false;
    }
    std::memcpy(static_cast<void*>(slots_ + (head & mask_)), &v, sizeof(T));
    h_->head.store(head + 1, std::memory_order_release);
    wake(h_->control.readable);
    return true;
  }
  // Pushes as many leading elements of `vs` as fit with one publication; returns how many.
  std::size_t try_push_n(std::span<const T> vs) {
    attach_producer_(h_->control.producers, "SpscQueue producer");
    const std::uint64_t head = h_->head.load(std::memory_order_relaxed);
    std::uint64_t room = capacity() - (head - tail_cache_);
    if (room < vs.size()) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);
      room = capacity() - (head - tail_cache_);
    }
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(room, vs.size()));
    if (n == 0) return 0;
    copy_in(head, vs.data(), n);
    h_->head.store(head + n, std::memory_order_release);
    wake(h_->control.readable);
    return n;
  }
  // Blocks while full. Throws Error(errc::closed) once the queue is closed,
  // Error(errc::peer_dead) when every consumer that attached has exited.
  void push(const T& v) { (void)push_until(v, Deadline::never()); }
  // As push(); returns false, having pushed nothing, when the deadline passes first.
  [[nodiscard]] bool push_until(const T& v, const Deadline& deadline) {
    return detail::wait_side(h_->control, h_->control.writable, h_->control.consumers, deadline, "SpscQueue::push",
                     [&] { return try_push(v); }, /*fail_if_closed=*/true);
  }
  template <class Rep, class Period>
  [[nodiscard]] bool push_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return push_until(v, Deadline::after(timeout));
  }

  // Consumer side. Empty optional when the queue is empty.
  [[nodiscard]] std::optional<T> try_pop() {
    T v;
    if (!try_pop(v)) return std::nullopt;
    return v;
  }
  [[nodiscard]] bool try_pop(T& out) {
    attach_consumer_(h_->control.consumers, "SpscQueue consumer");
    const std::uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    if (tail == head_cache_) {
      head_cache_ = h_->head.load(std::memory_order_acquire);  // pairs with release in push
      if (tail == head_cache_) return false;
    }
    std::memcpy(static_cast<void*>(&out), slots_ + (tail & mask_), sizeof(T));
    h_->tail.store(tail + 1, std::memory_order_release);
    wake(h_->control.writable);
    return true;
  }
  // Pops up to out.size() elements with one publication; returns how many.
  std::size_t try_pop_n(std::span<T> out) {
    attach_consumer_(h_->control.consumers, "SpscQueue consumer");
    const std::uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    if (head_cache_ - tail < out.size()) head_cache_ = h_->head.load(std::memory_order_acquire);
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(head_cache_ - tail, out.size()));
    if (n == 0) return 0;
    copy_out(tail, out.data(), n);
    h_->tail.store(tail + n, std::memory_order_release);
    wake(h_->control.writable);
    return n;
  }
  // Blocks while empty. Elements pushed before close() are still delivered; then throws
  // Error(errc::closed). Throws Error(errc::peer_dead) when the queue is empty and every
  // producer that attached has exited.
  T pop() {
    T v;
    (void)pop_until(v, Deadline::never());
    return v;
  }
  [[nodiscard]] bool pop_until(T& out, const Deadline& deadline) {
    return detail::wait_side(h_->control, h_->control.readable, h_->control.producers, deadline, "SpscQueue::pop",
                     [&] { return try_pop(out); }, /*fail_if_closed=*/false);
  }
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout) {
    T v;
    if (!pop_until(v, Deadline::after(timeout))) return std::nullopt;
    return v;
  }

  // Either side: no more pushes; pop() drains what is there, then throws errc::closed.
  void close() noexcept { h_->control.close(); }
  [[nodiscard]] bool closed() const noexcept { return h_->control.is_closed(); }
  // Registers the caller as the producer/consumer now, so that the other side's waits can
  // tell when it dies even before its first push/pop.
  void attach_producer() { attach_producer_(h_->control.producers, "SpscQueue producer"); }
  void attach_consumer() { attach_consumer_(h_->control.consumers, "SpscQueue consumer"); }
  // Elements in the queue now (a snapshot).
  [[nodiscard]] std::uint64_t size() const noexcept {
    return h_->head.load(std::memory_order_acquire) - h_->tail.load(std::memory_order_acquire);
  }

 private:
  template <class Make>
  SpscQueue(std::uint64_t capacity, const WaitPolicy& policy, Make&& make) : region_(make()) {
    h_ = ::new (region_.data()) Header(capacity, sizeof(T), policy);
    bind();
  }
  explicit SpscQueue(detail::Region r) : region_(std::move(r)) {
    h_ = std::launder(reinterpret_cast<Header*>(region_.data()));
    if (region_.size() < sizeof(Header) || h_->magic != Header::kMagic || h_->version != 1) {
      detail::throw_bad_layout("SpscQueue::open", "not an SpscQueue (magic/version)");
    }
    if (h_->elem_size != sizeof(T) || region_.size() < bytes_for(h_->capacity)) {
      detail::throw_bad_layout("SpscQueue::open", "element size or capacity does not match T");
    }
    bind();
  }
  void bind() noexcept {
    mask_ = h_->capacity - 1;
    slots_ = reinterpret_cast<T*>(region_.data() + kSlotsOffset);
    tail_cache_ = h_->tail.load(std::memory_order_acquire);
    head_cache_ = h_->head.load(std::memory_order_acquire);
  }
  static std::uint64_t checked(std::uint64_t capacity) {
    detail::check_capacity(capacity, 1, kMaxCapacity, "SpscQueue capacity");
    return capacity;
  }
  void wake(EventCount& ec) noexcept {
    if (h_->control.policy.sleep) ec.notify(1);
  }
  void copy_in(std::uint64_t head, const T* src, std::size_t n) noexcept {
    const std::size_t at = static_cast<std::size_t>(head & mask_);
    const std::size_t first = std::min<std::size_t>(n, static_cast<std::size_t>(capacity()) - at);
    std::memcpy(static_cast<void*>(slots_ + at), src, first * sizeof(T));
    std::memcpy(static_cast<void*>(slots_), src + first, (n - first) * sizeof(T));
  }
  void copy_out(std::uint64_t tail, T* dst, std::size_t n) noexcept {
    const std::size_t at = static_cast<std::size_t>(tail & mask_);
    const std::size_t first = std::min<std::size_t>(n, static_cast<std::size_t>(capacity()) - at);
    std::memcpy(static_cast<void*>(dst), slots_ + at, first * sizeof(T));
    std::memcpy(static_cast<void*>(dst + first), slots_, (n - first) * sizeof(T));
  }

  detail::Region region_;
  Header* h_ = nullptr;
  T* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t tail_cache_ = 0;  // producer's copy of tail
  std::uint64_t head_cache_ = 0;  // consumer's copy of head
  detail::AttachOnce attach_producer_;
  detail::AttachOnce attach_consumer_;
};

}  // namespace ipckit
