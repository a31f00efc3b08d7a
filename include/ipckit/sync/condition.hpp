/// @class ipckit::Condition
/// Condition: a condition variable between processes, over ipckit's robust Mutex (Python's
/// multiprocessing.Condition). Place it in shared memory next to the Mutex and the data they
/// guard:
///
///     ipckit::ScopedLock lk(shared.mutex);   // or mutex.lock()
///     shared.cond.wait(shared.mutex, [&] { return shared.items > 0; });
///     ...                                    // elsewhere, after changing items under the lock:
///     shared.cond.notify_one();
///
/// A wait releases the mutex, sleeps until notified, and takes the mutex again before it
/// returns, always (also on timeout). If the mutex's owner died while the waiter slept, the wait
/// returns errc::owner_dead with the mutex held, as Mutex::lock() does: repair the data first.
/// Waits may wake without a notify (spuriously), as with std::condition_variable: the
/// predicate forms loop. A waiter that dies holds nothing; a notifier that dies before it
/// notifies leaves the waiters to their timeouts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/sync/event_count.hpp"
#include "ipckit/sync/mutex.hpp"

namespace ipckit {

class Condition {
 public:
  /// A condition whose waits follow `policy` (its spin and futex sleep; between sleeps of at
  /// most check_interval a waiter looks again, so a lost wake-up costs one interval).
  explicit Condition(WaitPolicy policy = WaitPolicy::hybrid()) noexcept;
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;

  /// Releases `m` (which the calling thread holds), waits for a notify, then locks `m` again.
  /// Returns errc::owner_dead (holding `m`) when its owner died meanwhile, else an empty code.
  std::error_code wait(Mutex& m) { return wait_until(m, Deadline::never()); }
  /// Like wait(m); returns errc::timeout (holding `m` again) when no notify came by the
  /// deadline. A deadline that passes while `m` is being taken again does not count.
  std::error_code wait_until(Mutex& m, const Deadline& deadline);
  /// wait_until(m, Deadline::after(timeout)).
  template <class Rep, class Period>
  std::error_code wait_for(Mutex& m, std::chrono::duration<Rep, Period> timeout) {
    return wait_until(m, Deadline::after(timeout));
  }

  /// Waits until pred() holds (checked with `m` held, first before waiting). Throws
  /// Error(errc::owner_dead), holding `m`, when its owner died meanwhile: the data pred reads
  /// may be half-updated.
  template <class Pred>
  void wait(Mutex& m, Pred pred) {
    (void)wait_until(m, Deadline::never(), pred);
  }
  /// Like wait(m, pred); returns pred() as it was at the deadline (false: it timed out), with
  /// `m` held either way.
  template <class Pred>
  bool wait_until(Mutex& m, const Deadline& deadline, Pred pred) {
    while (!pred()) {
      const std::error_code ec = wait_until(m, deadline);
      if (ec == errc::owner_dead) {
        throw Error(errc::owner_dead, "Condition::wait: the mutex's owner died while it waited");
      }
      if (ec == errc::timeout) return pred();
    }
    return true;
  }
  /// wait_until(m, Deadline::after(timeout), pred).
  template <class Rep, class Period, class Pred>
  bool wait_for(Mutex& m, std::chrono::duration<Rep, Period> timeout, Pred pred) {
    return wait_until(m, Deadline::after(timeout), pred);
  }

  /// Wakes one waiter (or more: a spinning waiter also sees the notify).
  void notify_one() noexcept;
  /// Wakes every waiter.
  void notify_all() noexcept;

 private:
  [[maybe_unused]] std::uint32_t magic_;  // identifies the layout in a memory dump
  WaitPolicy policy_;
  alignas(64) std::atomic<std::uint32_t> seq_{0};  // bumped by every notify
  alignas(64) EventCount ec_;
};

}  // namespace ipckit
