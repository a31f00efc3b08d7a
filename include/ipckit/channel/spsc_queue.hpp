/// @class ipckit::SpscQueue
/// SpscQueue<T>: a bounded single-producer single-consumer queue of trivially copyable T in
/// shared memory, with a capacity chosen at run time. One process pushes, one pops. Each slot
/// carries a sequence number next to its value, so the consumer learns that a slot is full
/// from the slot itself and never reads the producer's index: a message costs one cache-line
/// transfer, as close to the hardware floor as a queue gets. The producer reads the
/// consumer's index only when its private copy says the queue is full. try_ calls never
/// block; push/pop wait by the queue's WaitPolicy (spin, hybrid, block), end with
/// errc::closed after close() and with errc::peer_dead when every process on the other side
/// has exited.
///
///     ipckit::SpscQueue<Msg> q(1024);        // own shared mapping; fork, then push / pop
///     auto seg = ipckit::Segment::create(name, 1 << 20);
///     auto q2 = ipckit::SpscQueue<Msg>::create(seg, "jobs", 1024);
///     auto q3 = ipckit::SpscQueue<Msg>::open_for(seg, "jobs", 5s, ipckit::Side::receiver);
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
#include "ipckit/channel/detail/queue_ops.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
namespace detail {

struct SpscQueueHeader {
  static constexpr std::uint32_t kMagic = 0x49535131;  // "ISQ1"
  static constexpr std::uint32_t kVersion = 2;
  explicit SpscQueueHeader(const WaitPolicy& p) noexcept : control(p) {}

  LayoutHeader layout{};  // written by begin_layout()/publish_layout(), validated on open
  // Messages popped so far, written by the consumer only; the producer reads it only when it
  // believes the queue is full. There is no shared producer index: slots carry their own
  // sequence numbers, and a producer that attaches finds its position by scanning the
  // published slots after tail (a store per push to an index nobody reads halved the
  // one-way rate in measurements).
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};
  alignas(kCacheLine) ChannelControl control;
};
static_assert(std::is_standard_layout_v<SpscQueueHeader>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace detail

template <class T>
class SpscQueue : public detail::BlockingQueue<SpscQueue<T>, T> {
  friend class detail::BlockingQueue<SpscQueue<T>, T>;
  static_assert(std::is_trivially_copyable_v<T>,
                "SpscQueue<T> copies T as bytes between processes: T must be trivially copyable");

  using Header = detail::SpscQueueHeader;
  struct Cell {
    // pos + 1 once the value of position pos is in; anything else: not yet.
    std::atomic<std::uint64_t> seq;
    T value;
  };
  static_assert(std::is_standard_layout_v<Cell>);
  static constexpr std::size_t kSlotsOffset = detail::slots_offset(sizeof(Header));
  static_assert(alignof(Cell) <= detail::kCacheLine);

 public:
  /// Largest capacity (slots).
  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 32;
  /// The layout header's expected values, checked when a queue is opened.
  static constexpr detail::LayoutSpec kLayout{"SpscQueue", Header::kMagic, Header::kVersion,
                                              sizeof(T),   kSlotsOffset,   sizeof(Cell),
                                              1,           kMaxCapacity};

  /// Bytes of shared memory a queue of `capacity` slots occupies.
  static constexpr std::size_t bytes_for(std::uint64_t capacity) noexcept {
    return kSlotsOffset + capacity * sizeof(Cell);
  }

  /// A queue in an anonymous shared mapping of its own: make it before fork. `capacity` slots,
  /// a power of two in [1, kMaxCapacity]; otherwise throws Error(errc::invalid_argument).
  explicit SpscQueue(std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid())
      : SpscQueue(detail::Placement::own(), capacity, policy) {}
  /// A queue on `seg`'s heap, unnamed (for anonymous segments shared by fork).
  static SpscQueue in(Segment& seg, std::uint64_t capacity,
                      WaitPolicy policy = WaitPolicy::hybrid()) {
    return SpscQueue(detail::Placement::heap(seg), capacity, policy);
  }
  /// A queue stored under `name` in `seg`, for unrelated processes; the caller takes `side`
  /// at once (see Side). Throws as Segment::construct_bytes does (errc::already_exists, ...).
  static SpscQueue create(Segment& seg, std::string_view name, std::uint64_t capacity,
                          WaitPolicy policy = WaitPolicy::hybrid(), Side side = Side::none) {
    SpscQueue q(detail::Placement::named(seg, name), capacity, policy);
    q.take(side);
    return q;
  }
  // open(seg, name, side), open_until(seg, name, deadline, side), open_for(seg, name,
  // timeout, side) come from detail::BlockingQueue: the queue create() made under `name`;
  // errc::not_found, errc::timeout (its creator has not finished it), or errc::bad_layout
  // when the bytes there are not a SpscQueue of this T.

  /// Moves the handle; the queue itself stays where it is.
  SpscQueue(SpscQueue&&) noexcept = default;
  /// Moves the handle; the queue itself stays where it is.
  SpscQueue& operator=(SpscQueue&&) noexcept = default;

  /// The number of slots.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return mask_ + 1; }

  /// Producer side. Returns false when the queue is full; never blocks. Throws
  /// Error(errc::closed) after close() (nothing pushed).
  [[nodiscard]] bool try_push(const T& v) {
    begin_produce();
    if (h_->control.is_closed()) [[unlikely]]
      detail::throw_closed("SpscQueue::try_push");
    if (head_ - tail_cache_ > mask_) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);  // pairs with release in pop
      if (head_ - tail_cache_ > mask_) return false;
    }
    put(head_, v);
    ++head_;
    wake(h_->control.readable);
    return true;
  }
  /// Pushes as many leading elements of `vs` as fit, with one wake-up; returns how many.
  [[nodiscard]] std::size_t try_push_n(std::span<const T> vs) {
    begin_produce();
    if (h_->control.is_closed()) [[unlikely]]
      detail::throw_closed("SpscQueue::try_push_n");
    std::uint64_t room = capacity() - (head_ - tail_cache_);
    if (room < vs.size()) {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);
      room = capacity() - (head_ - tail_cache_);
    }
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(room, vs.size()));
    if (n == 0) return 0;
    for (std::size_t i = 0; i < n; ++i) put(head_ + i, vs[i]);
    head_ += n;
    wake(h_->control.readable);
    return n;
  }
  // try_pop() returns an optional; push/pop/_until/_for/close come from detail::BlockingQueue.
  using detail::BlockingQueue<SpscQueue<T>, T>::try_pop;
  /// Consumer side. False when the queue is empty; never blocks.
  [[nodiscard]] bool try_pop(T& out) {
    begin_consume();
    if (!take(tail_, out)) return false;
    ++tail_;
    h_->tail.store(tail_, std::memory_order_release);  // pairs with acquire in push
    wake(h_->control.writable);
    return true;
  }
  /// Pops up to out.size() elements with one store of the index; returns how many.
  [[nodiscard]] std::size_t try_pop_n(std::span<T> out) {
    begin_consume();
    std::size_t n = 0;
    while (n < out.size() && take(tail_ + n, out[n])) ++n;
    if (n == 0) return 0;
    tail_ += n;
    h_->tail.store(tail_, std::memory_order_release);
    wake(h_->control.writable);
    return n;
  }
  ///@{
  /// Registers the caller as the producer/consumer now, so that the other side's waits can
  /// tell when it dies even before its first push/pop.
  void attach_producer() { begin_produce(); }
  void attach_consumer() { begin_consume(); }
  ///@}
  ///@{
  /// Registers process `pid` (say a child just forked to be the producer/consumer) on that
  /// side now, from the process that forked it: the other side then learns of its death
  /// even if it dies before its first operation. Throws errc::invalid_argument for pid <= 0
  /// or a full table.
  void attach_producer(pid_t pid) { h_->control.producers.attach_pid(pid, "SpscQueue producer"); }
  void attach_consumer(pid_t pid) { h_->control.consumers.attach_pid(pid, "SpscQueue consumer"); }
  ///@}
  /// Elements in the queue now (a snapshot; counts the published slots, O(size)).
  [[nodiscard]] std::uint64_t size() const noexcept {
    const std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
    return published_end(tail) - tail;
  }

 private:
  static constexpr const char* kPushWhat = "SpscQueue::push";
  static constexpr const char* kPopWhat = "SpscQueue::pop";
  static constexpr const char* kOpenWhat = "SpscQueue::open";
  detail::ChannelControl& control() const noexcept { return h_->control; }
  const detail::Region& region() const noexcept { return region_; }

  SpscQueue(const detail::Placement& where, std::uint64_t capacity, const WaitPolicy& policy)
      : region_(where.make(checked(capacity))) {
    h_ = ::new (region_.data()) Header(policy);
    detail::begin_layout(h_->layout, kLayout, capacity);
    bind(capacity);
    for (std::uint64_t i = 0; i <= mask_; ++i) {
      ::new (static_cast<void*>(&cells_[i].seq)) std::atomic<std::uint64_t>(0);
    }
    detail::publish_layout(h_->layout, kLayout);
  }
  // An opened queue: `capacity` is what detail::read_layout() validated.
  SpscQueue(detail::Region r, std::uint64_t capacity) : region_(std::move(r)) {
    h_ = std::launder(reinterpret_cast<Header*>(region_.data()));
    bind(capacity);
  }
  void bind(std::uint64_t capacity) noexcept {
    sleep_ = h_->control.safe_policy().sleep;
    mask_ = capacity - 1;
    cells_ = reinterpret_cast<Cell*>(region_.data() + kSlotsOffset);
  }
  void take(Side side) {
    if (side == Side::sender) attach_producer();
    if (side == Side::receiver) attach_consumer();
  }
  // A handle inherited through fork (or opened anew) starts from the shared indices.
  void begin_produce() {
    if (attach_producer_(h_->control.producers, "SpscQueue producer")) [[unlikely]] {
      tail_cache_ = h_->tail.load(std::memory_order_acquire);
      head_ = published_end(tail_cache_);
    }
  }
  void begin_consume() {
    if (attach_consumer_(h_->control.consumers, "SpscQueue consumer")) [[unlikely]] {
      tail_ = h_->tail.load(std::memory_order_acquire);
    }
  }
  void put(std::uint64_t pos, const T& v) noexcept {
    Cell& c = cells_[pos & mask_];
    std::memcpy(static_cast<void*>(&c.value), &v, sizeof(T));
    c.seq.store(pos + 1, std::memory_order_release);  // pairs with acquire in take()
  }
  bool published(std::uint64_t pos) const noexcept {
    return cells_[pos & mask_].seq.load(std::memory_order_acquire) == pos + 1;
  }
  // The first position at or after `from` (a consumed-up-to index) not yet published.
  std::uint64_t published_end(std::uint64_t from) const noexcept {
    std::uint64_t pos = from;
    while (pos - from <= mask_ && published(pos)) ++pos;
    return pos;
  }
  bool take(std::uint64_t pos, T& out) noexcept {
    const Cell& c = cells_[pos & mask_];
    if (c.seq.load(std::memory_order_acquire) != pos + 1) return false;
    std::memcpy(static_cast<void*>(&out), &c.value, sizeof(T));
    return true;
  }
  static std::size_t checked(std::uint64_t capacity) {
    detail::check_capacity(kLayout, capacity);
    return detail::layout_bytes(kLayout, capacity);
  }
  void wake(EventCount& ec) noexcept {
    if (sleep_) ec.notify(1);
  }

  detail::Region region_;
  Header* h_ = nullptr;
  Cell* cells_ = nullptr;
  // The policy never changes after creation: a copy in the handle keeps the hot path off
  // the shared control line (reading it there after each publish cost 4x the one-way rate).
  bool sleep_ = false;
  std::uint64_t mask_ = 0;
  std::uint64_t head_ = 0;        // producer: next position to fill
  std::uint64_t tail_cache_ = 0;  // producer: the consumer's index as last read
  std::uint64_t tail_ = 0;        // consumer: next position to take
  detail::AttachOnce attach_producer_;
  detail::AttachOnce attach_consumer_;
};

}  // namespace ipckit
