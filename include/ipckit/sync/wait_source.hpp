/// @file
/// ipckit::WaitSource: what an object tells a WaitSet (ipckit/sync/wait_set.hpp) about how to
/// wait for it. Each waitable type provides `WaitSource wait_source(T&)` next to its own
/// definition (found by argument-dependent lookup): Queue, JoinableQueue, Channel, Connection,
/// Event, Process, Link, Listener, AsyncResult. A type of yours joins in the same way.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

namespace detail {
// A futex word in this process that in-process completions (an AsyncResult settled by the
// pool's driver thread) bump to wake a WaitSet.
class LocalWaker {
 public:
  void wake() noexcept {
    word_.fetch_add(1, std::memory_order_release);
    futex_wake_all(word_);
  }
  [[nodiscard]] const std::atomic<std::uint32_t>& word() const noexcept { return word_; }

 private:
  std::atomic<std::uint32_t> word_{0};
};
}  // namespace detail

/// How a WaitSet waits for one object. Set `ready`, and what can wake a sleeper: `event` (an
/// EventCount in shared memory that is notified when the object may have become ready), `fd`
/// (a descriptor poll() reports `events` on), `at` (a time), or `subscribe` (in-process
/// completions). A source with an fd and no `ready` is ready when poll() says so.
struct WaitSource {
  /// True when the call the waiter means to make would not block now: it returns a value,
  /// or throws (closed, peer_dead...). `check_peers`: also look for dead peers (slower; the
  /// WaitSet asks at least every WaitSet::kPeerCheck). Runs on the waiting thread only.
  std::function<bool(bool check_peers)> ready;
  /// Notified (EventCount::notify) when the object may have become ready.
  EventCount* event = nullptr;
  /// A descriptor to poll, and the events that make the source ready.
  int fd = -1;
  short events = 0;  ///< poll(2) events (POLLIN, POLLOUT ...) of `fd`
  /// A time at which the source becomes ready (a timer).
  Deadline at = Deadline::never();
  /// Arranges for `waker` to be woken when the source becomes ready; returns what must be
  /// kept alive for that (dropped when the source is removed).
  std::function<std::shared_ptr<void>(const std::shared_ptr<detail::LocalWaker>& waker)> subscribe;
};

}  // namespace ipckit
