/// @file
/// ipckit::WaitSet: wait for the first of several queues, channels, connections, events,
/// process exits, links, pool results and timers, with a deadline; Python's
/// multiprocessing.connection.wait(), for everything ipckit has.
///
///     ipckit::WaitSet ws;
///     auto jobs = ws.add(job_queue);          // a get() would not block
///     auto kid = ws.add(worker_process);      // the process exited
///     auto tick = ws.add_timer(std::chrono::seconds(1));
///     for (auto key : ws.wait()) {
///       if (key == jobs) handle(job_queue.get());
///       ...
///     }
///
/// "Ready" means the call one waits to make would not block now: it returns a value, or it
/// throws (a queue closed and drained, every producer dead, a peer hung up). A WaitSet only
/// reports; it takes nothing. Readiness is level-triggered: a source stays ready until what
/// made it ready is consumed, and another process may consume it first (use the try_/_for
/// forms after a wake-up when several consumers share an object).
///
/// Shared-memory sources (queues, channels, events) are slept on with one futex_waitv(2) for
/// all of them, so a notify wakes the waiter at once, as a lone wait would be. Deaths of peers
/// are not announced by anyone: the set looks for them every kPeerCheck while it sleeps.
/// Descriptors (processes, links, sockets) go through epoll.
///
/// fd() hands out a descriptor (an epoll instance) that is readable whenever the set may have
/// something ready, for an outer event loop (epoll, asio, libuv); then call wait_for(0s).
/// With shared-memory sources a helper thread sleeps on them for that descriptor.
///
/// A WaitSet belongs to one thread of one process; the objects added must outlive their keys
/// (remove() them first).
#pragma once

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/wait_source.hpp"

namespace ipckit {

/// Waits for the first of several sources to be ready (see the file comment). Move-only.
class WaitSet {
 public:
  /// Identifies an added source in what wait() returns.
  using Key = std::size_t;
  /// Longest sleep before dead peers are looked for again.
  static constexpr std::chrono::milliseconds kPeerCheck{20};
  /// Most shared-memory sources in one set (futex_waitv takes 128 words, two are the set's).
  static constexpr std::size_t kMaxShared = 126;

  /// An empty set.
  WaitSet();
  ///@{
  /// Moves the sources (the moved-from set is empty).
  WaitSet(WaitSet&&) noexcept;
  WaitSet& operator=(WaitSet&&) noexcept;
  ///@}
  ~WaitSet();

  /// Adds anything with a wait_source() (Queue, JoinableQueue, Channel, Connection, Event,
  /// Process, Link, Listener, AsyncResult; see ipckit/sync/wait_source.hpp). Throws
  /// Error(errc::invalid_argument) past kMaxShared shared-memory sources, or for a source
  /// that cannot be waited for (a Process without a pidfd).
  template <class T>
  Key add(T& object) {
    return add_source(wait_source(object));
  }
  /// Adds a source described by hand.
  Key add_source(WaitSource source);
  /// Adds a descriptor, ready when poll() reports one of `events` (POLLIN: readable).
  Key add_fd(int fd, short events = POLLIN);
  /// Adds a timer, ready from `at` on (and until removed).
  Key add_timer(const Deadline& at);
  /// Adds a timer, ready `after` from now on.
  template <class Rep, class Period>
  Key add_timer(std::chrono::duration<Rep, Period> after) {
    return add_timer(Deadline::after(after));
  }
  /// Removes a source; false when the key is not (or no longer) in the set.
  bool remove(Key key) noexcept;
  /// Sources in the set.
  [[nodiscard]] std::size_t size() const noexcept;

  /// Blocks until at least one source is ready; returns the keys of all ready ones, in the
  /// order they were added. Throws Error(errc::invalid_argument) on an empty set.
  std::vector<Key> wait() { return wait_until(Deadline::never()); }
  /// Like wait(); empty when none was ready by the deadline (wait_for(0s): a poll).
  std::vector<Key> wait_until(const Deadline& deadline);
  /// wait_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::vector<Key> wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(Deadline::after(timeout));
  }

  /// A descriptor for an outer event loop, readable when a source may be ready (and, while
  /// the set has shared-memory sources, at least every kPeerCheck, so that dead peers are
  /// seen); on each readiness call wait_for(0s), which also re-arms it. Owned by the set.
  int fd();

  struct Impl;  // lib/sync/wait_set.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

/// A Process is ready once it has exited (then wait() returns at once).
WaitSource wait_source(const Process& p);
/// An Event is ready while it is set.
WaitSource wait_source(Event& e);

}  // namespace ipckit
