/// @class ipckit::MpmcQueue
/// MpmcQueue<T>: a bounded multi-producer multi-consumer queue of trivially copyable T in
/// shared memory, capacity chosen at run time. Each slot carries a sequence number that says
/// whose turn it is (producer of lap k, or consumer of lap k), so producers and consumers
/// claim slots with one CAS on their own cursor and never touch the other side's cursor.
/// Every element pushed is popped exactly once. Blocking calls follow the queue's WaitPolicy,
/// end with errc::closed after close() (consumers drain first) and with errc::peer_dead when
/// every process on the other side has exited.
///
/// A producer killed between claiming a slot and publishing it (a window of one memcpy)
/// leaves that slot unpublished: consumers stop there. A consumer killed between claiming and
/// freeing a slot leaves it full for good: producers stop there one lap later. Producers
/// count for peer_dead from their first push: fork them all and have each attach_producer()
/// before any may finish. This is the price of a bounded queue with run-time capacity that
/// unrelated processes can map at different addresses (Boost.Lockfree's run-time-sized queue
/// keeps raw pointers, see boost_queue.hpp).
///
///     ipckit::MpmcQueue<Job> jobs(4096);      // fork producers and consumers
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/channel/detail/queue_ops.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
namespace detail {

struct MpmcQueueHeader {
  static constexpr std::uint32_t kMagic = 0x494d5131;  // "IMQ1"
  static constexpr std::uint32_t kVersion = 2;
  explicit MpmcQueueHeader(const WaitPolicy& p) noexcept : control(p) {}

  LayoutHeader layout{};  // written by begin_layout()/publish_layout(), validated on open
  alignas(kCacheLine) std::atomic<std::uint64_t> enqueue{0};  // next slot producers claim
  alignas(kCacheLine) std::atomic<std::uint64_t> dequeue{0};  // next slot consumers claim
  alignas(kCacheLine) ChannelControl control;
};
static_assert(std::is_standard_layout_v<MpmcQueueHeader>);

}  // namespace detail

template <class T>
class MpmcQueue : public detail::BlockingQueue<MpmcQueue<T>, T> {
  friend class detail::BlockingQueue<MpmcQueue<T>, T>;
  static_assert(std::is_trivially_copyable_v<T>,
                "MpmcQueue<T> copies T as bytes between processes: T must be trivially copyable");

  using Header = detail::MpmcQueueHeader;
  struct Cell {
    // seq == pos: free for the producer of position pos; seq == pos + 1: holds pos's value.
    std::atomic<std::uint64_t> seq;
    T value;
  };
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
  static_assert(std::is_standard_layout_v<Cell>);
  static_assert(alignof(Cell) <= detail::kCacheLine);
  static constexpr std::size_t kCellsOffset = detail::slots_offset(sizeof(Header));

 public:
  /// Largest capacity (slots).
  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 32;
  /// The layout header's expected values, checked when a queue is opened.
  static constexpr detail::LayoutSpec kLayout{"MpmcQueue", Header::kMagic, Header::kVersion,
                                              sizeof(T),   kCellsOffset,   sizeof(Cell),
                                              2,           kMaxCapacity};

  /// Bytes of shared memory a queue of `capacity` slots occupies.
  static constexpr std::size_t bytes_for(std::uint64_t capacity) noexcept {
    return kCellsOffset + capacity * sizeof(Cell);
  }

  /// `capacity` slots, a power of two in [2, kMaxCapacity]; otherwise throws
  /// Error(errc::invalid_argument). Own anonymous mapping: make it before fork.
  explicit MpmcQueue(std::uint64_t capacity, WaitPolicy policy = WaitPolicy::hybrid())
      : MpmcQueue(detail::Placement::own(), capacity, policy) {}
  /// A queue on `seg`'s heap, unnamed (for anonymous segments shared by fork).
  static MpmcQueue in(Segment& seg, std::uint64_t capacity,
                      WaitPolicy policy = WaitPolicy::hybrid()) {
    return MpmcQueue(detail::Placement::heap(seg), capacity, policy);
  }
  /// Under `name` in `seg`; the caller takes `side` at once (see Side). Throws as
  /// Segment::construct_bytes does (errc::already_exists, ...).
  static MpmcQueue create(Segment& seg, std::string_view name, std::uint64_t capacity,
                          WaitPolicy policy = WaitPolicy::hybrid(), Side side = Side::none) {
    MpmcQueue q(detail::Placement::named(seg, name), capacity, policy);
    q.take(side);
    return q;
  }
  // open(seg, name, side), open_until(seg, name, deadline, side), open_for(seg, name,
  // timeout, side) come from detail::BlockingQueue: the queue create() made under `name`;
  // errc::not_found, errc::timeout (its creator has not finished it), or errc::bad_layout
  // when the bytes there are not a MpmcQueue of this T.

  /// Moves the handle; the queue itself stays where it is.
  MpmcQueue(MpmcQueue&&) noexcept = default;
  /// Moves the handle; the queue itself stays where it is.
  MpmcQueue& operator=(MpmcQueue&&) noexcept = default;

  /// The number of slots.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return mask_ + 1; }

  /// Any number of producers. False when full; never blocks (its retries are bounded, also
  /// when peers scribbled on the cursors). Throws Error(errc::closed) after close() (nothing
  /// pushed), Error(errc::bad_frame) when the shared cursor and slots contradict each other.
  [[nodiscard]] bool try_push(const T& v) {
    attach_producer_(h_->control.producers, "MpmcQueue producer");
    if (h_->control.is_closed()) [[unlikely]]
      detail::throw_closed("MpmcQueue::try_push");
    std::uint64_t pos = h_->enqueue.load(std::memory_order_relaxed);
    for (std::uint32_t tries = 0; tries < kMaxTries; ++tries) {
      Cell& c = cells_[pos & mask_];
      const std::uint64_t seq = c.seq.load(std::memory_order_acquire);  // pairs with pop's release
      const auto diff = static_cast<std::int64_t>(seq - pos);
      if (diff == 0) {
        if (h_->enqueue.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          std::memcpy(static_cast<void*>(&c.value), &v, sizeof(T));
          c.seq.store(pos + 1, std::memory_order_release);
          wake(h_->control.readable);
          return true;
        }
      } else if (diff < 0) {
        return false;  // the slot still holds last lap's value: full
      } else {
        // Another producer took pos: the cursor has moved past it (its CAS precedes the
        // sequence we acquired). A cursor that has not moved was rewound by a peer.
        const std::uint64_t now = h_->enqueue.load(std::memory_order_relaxed);
        if (now == pos) [[unlikely]]
          corrupt("MpmcQueue::try_push", pos, seq);
        pos = now;
      }
    }
    return false;
  }
  // try_pop() returns an optional; push/pop/_until/_for/close come from detail::BlockingQueue.
  using detail::BlockingQueue<MpmcQueue<T>, T>::try_pop;
  /// Any number of consumers. False when empty; never blocks (bounded retries, as try_push).
  /// Throws Error(errc::bad_frame) when the shared cursor and slots contradict each other.
  [[nodiscard]] bool try_pop(T& out) {
    attach_consumer_(h_->control.consumers, "MpmcQueue consumer");
    std::uint64_t pos = h_->dequeue.load(std::memory_order_relaxed);
    for (std::uint32_t tries = 0; tries < kMaxTries; ++tries) {
      Cell& c = cells_[pos & mask_];
      const std::uint64_t seq = c.seq.load(std::memory_order_acquire);  // pairs with push's release
      const auto diff = static_cast<std::int64_t>(seq - (pos + 1));
      if (diff == 0) {
        if (h_->dequeue.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          std::memcpy(static_cast<void*>(&out), &c.value, sizeof(T));
          c.seq.store(pos + mask_ + 1, std::memory_order_release);
          wake(h_->control.writable);
          return true;
        }
      } else if (diff < 0) {
        return false;  // not yet published: empty
      } else {
        const std::uint64_t now = h_->dequeue.load(std::memory_order_relaxed);
        if (now == pos) [[unlikely]]
          corrupt("MpmcQueue::try_pop", pos, seq);
        pos = now;
      }
    }
    return false;
  }
  ///@{
  /// Registers the caller as a producer/consumer now, so that the other side's waits can
  /// tell when it dies even before its first push/pop.
  void attach_producer() { attach_producer_(h_->control.producers, "MpmcQueue producer"); }
  void attach_consumer() { attach_consumer_(h_->control.consumers, "MpmcQueue consumer"); }
  ///@}
  ///@{
  /// Registers process `pid` (say a child just forked to be the producer/consumer) on that
  /// side now, from the process that forked it: the other side then learns of its death
  /// even if it dies before its first operation. Throws errc::invalid_argument for pid <= 0
  /// or a full table.
  void attach_producer(pid_t pid) { h_->control.producers.attach_pid(pid, "MpmcQueue producer"); }
  void attach_consumer(pid_t pid) { h_->control.consumers.attach_pid(pid, "MpmcQueue consumer"); }
  ///@}
  /// Elements in the queue now (a snapshot: claimed pushes minus claimed pops).
  [[nodiscard]] std::uint64_t size() const noexcept {
    const std::uint64_t d = h_->dequeue.load(std::memory_order_acquire);
    const std::uint64_t e = h_->enqueue.load(std::memory_order_acquire);
    return e > d ? e - d : 0;
  }

 private:
  static constexpr const char* kPushWhat = "MpmcQueue::push";
  static constexpr const char* kPopWhat = "MpmcQueue::pop";
  static constexpr const char* kOpenWhat = "MpmcQueue::open";
  detail::ChannelControl& control() const noexcept { return h_->control; }
  const detail::Region& region() const noexcept { return region_; }

  // Consecutive lost races before try_push/try_pop give up and report full/empty: every lost
  // race is another process's progress, so only a peer that scribbled on the slots gets
  // near it; the blocking calls then wait for their deadline.
  static constexpr std::uint32_t kMaxTries = 1u << 16;

  MpmcQueue(const detail::Placement& where, std::uint64_t capacity, const WaitPolicy& policy)
      : region_(where.make(checked(capacity))) {
    h_ = ::new (region_.data()) Header(policy);
    detail::begin_layout(h_->layout, kLayout, capacity);
    bind(capacity);
    for (std::uint64_t i = 0; i < capacity; ++i) {
      ::new (static_cast<void*>(&cells_[i].seq)) std::atomic<std::uint64_t>(i);
    }
    detail::publish_layout(h_->layout, kLayout);
  }
  // An opened queue: `capacity` is what detail::read_layout() validated.
  MpmcQueue(detail::Region r, std::uint64_t capacity) : region_(std::move(r)) {
    h_ = std::launder(reinterpret_cast<Header*>(region_.data()));
    bind(capacity);
  }
  void bind(std::uint64_t capacity) noexcept {
    sleep_ = h_->control.safe_policy().sleep;
    mask_ = capacity - 1;
    cells_ = reinterpret_cast<Cell*>(region_.data() + kCellsOffset);
  }
  void take(Side side) {
    if (side == Side::sender) attach_producer();
    if (side == Side::receiver) attach_consumer();
  }
  [[noreturn]] static void corrupt(const char* what, std::uint64_t pos, std::uint64_t seq) {
    detail::throw_bad_frame(what, "cursor " + std::to_string(pos) + " is behind the sequence " +
                                      std::to_string(seq) +
                                      " of its slot (a peer rewrote the queue)");
  }
  static std::size_t checked(std::uint64_t capacity) {
    detail::check_capacity(kLayout, capacity);
    return detail::layout_bytes(kLayout, capacity);
  }
  void wake(EventCount& ec) noexcept {
    if (sleep_) ec.notify(1);
  }
  // The policy never changes after creation: a copy in the handle keeps the hot path off
  // the shared control line (reading it there after each publish cost 4x the one-way rate).
  bool sleep_ = false;
  detail::Region region_;
  Header* h_ = nullptr;
  Cell* cells_ = nullptr;
  std::uint64_t mask_ = 0;
  detail::AttachOnce attach_producer_;
  detail::AttachOnce attach_consumer_;
};

}  // namespace ipckit
