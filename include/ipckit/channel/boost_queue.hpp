/// @file
/// BoostSpscQueue<T, N> and BoostMpmcQueue<T, N>: Boost.Lockfree's compile-time-capacity
/// queues (spsc_queue<T, capacity<N>> and queue<T, capacity<N>>) placed in shared memory,
/// behind the same interface as SpscQueue<T> / MpmcQueue<T> (try_push, push_until, pop, close,
/// peer_dead, wait policies). Their storage is inline (indices, not pointers), so they work
/// across fork and between unrelated processes mapping a segment at different addresses;
/// Boost's run-time-capacity variants keep raw pointers and do not.
///
/// They are the comparison the channel benchmark measures ipckit's own rings against; the
/// run-time-capacity SpscQueue/MpmcQueue are the default. This header includes Boost (not
/// part of the umbrella header ipckit.hpp). MPMC capacity is below 65535 (Boost's tagged
/// 16-bit indices).
///
///     ipckit::BoostSpscQueue<Msg, 1024> q;    // fork, then push / pop
#pragma once

#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <string_view>
#include <type_traits>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/channel/detail/queue_ops.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit {
namespace detail {

// The shared part: a control block and the Boost queue, never destroyed (shared memory).
template <class Q>
struct BoostQueueShared {
  static constexpr std::uint32_t kMagic = 0x49425131;  // "IBQ1"
  static constexpr std::uint32_t kVersion = 2;
  explicit BoostQueueShared(const WaitPolicy& p) : control(p) {}

  LayoutHeader layout{};  // written by begin_layout()/publish_layout(), validated on open
  alignas(kCacheLine) ChannelControl control;
  alignas(kCacheLine) Q queue;
};

template <class T, std::size_t N, class Q, bool kMulti>
class BoostQueue : public BlockingQueue<BoostQueue<T, N, Q, kMulti>, T> {
  friend class BlockingQueue<BoostQueue<T, N, Q, kMulti>, T>;
  static_assert(std::is_trivially_copyable_v<T>,
                "Boost queues in shared memory copy T as bytes: T must be trivially copyable");
  using Shared = BoostQueueShared<Q>;
  static constexpr const char* kName = kMulti ? "BoostMpmcQueue" : "BoostSpscQueue";

 public:
  static constexpr std::uint64_t kCapacity = N;

  // Boost.Lockfree's queues trust the indices they keep in shared memory: only the header
  // is validated here, so use them between processes that trust each other.
  static constexpr LayoutSpec kLayout{
      kName, Shared::kMagic, Shared::kVersion, sizeof(T), sizeof(Shared), 0, N, N};

  explicit BoostQueue(WaitPolicy policy = WaitPolicy::hybrid())
      : BoostQueue(Placement::own(), policy) {}
  static BoostQueue in(Segment& seg, WaitPolicy policy = WaitPolicy::hybrid()) {
    return BoostQueue(Placement::heap(seg), policy);
  }
  static BoostQueue create(Segment& seg, std::string_view name,
                           WaitPolicy policy = WaitPolicy::hybrid()) {
    return BoostQueue(Placement::named(seg, name), policy);
  }
  // open(seg, name, side) / open_until / open_for come from BlockingQueue: errc::not_found,
  // errc::timeout (its creator has not finished it), or errc::bad_layout unless `name`
  // holds this queue type.

  BoostQueue(BoostQueue&&) noexcept = default;
  BoostQueue& operator=(BoostQueue&&) noexcept = default;

  [[nodiscard]] std::uint64_t capacity() const noexcept { return N; }

  // False when full; throws Error(errc::closed) after close().
  [[nodiscard]] bool try_push(const T& v) {
    attach_producer_(s_->control.producers, kName);
    if (s_->control.is_closed()) [[unlikely]]
      throw_closed(kName);
    if (!s_->queue.push(v)) return false;
    wake(s_->control.readable);
    return true;
  }
  using BlockingQueue<BoostQueue<T, N, Q, kMulti>, T>::try_pop;
  [[nodiscard]] bool try_pop(T& out) {
    attach_consumer_(s_->control.consumers, kName);
    if (!s_->queue.pop(out)) return false;
    wake(s_->control.writable);
    return true;
  }
  void attach_producer() { attach_producer_(s_->control.producers, kName); }
  void attach_consumer() { attach_consumer_(s_->control.consumers, kName); }

 private:
  static constexpr const char* kPushWhat = kMulti ? "BoostMpmcQueue::push" : "BoostSpscQueue::push";
  static constexpr const char* kPopWhat = kMulti ? "BoostMpmcQueue::pop" : "BoostSpscQueue::pop";
  static constexpr const char* kOpenWhat = kMulti ? "BoostMpmcQueue::open" : "BoostSpscQueue::open";
  ChannelControl& control() const noexcept { return s_->control; }

  const Region& region() const noexcept { return region_; }

  BoostQueue(const Placement& where, const WaitPolicy& policy)
      : region_(where.make(sizeof(Shared))) {
    s_ = ::new (region_.data()) Shared(policy);
    begin_layout(s_->layout, kLayout, N);
    sleep_ = policy.sleep;
    publish_layout(s_->layout, kLayout);
  }
  BoostQueue(Region r, std::uint64_t /*capacity: always N*/) : region_(std::move(r)) {
    s_ = std::launder(reinterpret_cast<Shared*>(region_.data()));
    sleep_ = s_->control.safe_policy().sleep;
  }
  void wake(EventCount& ec) noexcept {
    if (sleep_) ec.notify(1);
  }
  void take(Side side) {
    if (side == Side::sender) attach_producer();
    if (side == Side::receiver) attach_consumer();
  }

  Region region_;
  Shared* s_ = nullptr;
  bool sleep_ = false;  // the policy's, copied: the hot path stays off the control line
  AttachOnce attach_producer_;
  AttachOnce attach_consumer_;
};

}  // namespace detail

/// Boost.Lockfree's `spsc_queue<T, capacity<N>>` in shared memory, behind SpscQueue<T>'s
/// interface (see boost_queue.hpp).
template <class T, std::size_t N>
using BoostSpscQueue =
    detail::BoostQueue<T, N, boost::lockfree::spsc_queue<T, boost::lockfree::capacity<N>>, false>;

/// Boost.Lockfree's `queue<T, capacity<N>>` in shared memory (N below 65535), behind
/// MpmcQueue<T>'s interface (see boost_queue.hpp).
template <class T, std::size_t N>
using BoostMpmcQueue =
    detail::BoostQueue<T, N, boost::lockfree::queue<T, boost::lockfree::capacity<N>>, true>;

}  // namespace ipckit
