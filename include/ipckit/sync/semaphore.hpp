/// @class ipckit::Semaphore
/// Semaphore: a process-shared counting semaphore. Place it in shared memory (Segment) before
/// fork, or construct it by name in a named Segment. Waits follow a WaitPolicy (spin, then
/// sleep) and every wait has a timed form.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipckit/core/deadline.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

class Semaphore {
 public:
  /// Largest count.
  static constexpr std::uint32_t kMaxValue = 0x7fffffff;

  /// A semaphore holding `initial` units. Throws Error(errc::invalid_argument) when
  /// initial > kMaxValue.
  explicit Semaphore(std::uint32_t initial = 0, WaitPolicy policy = WaitPolicy::hybrid());
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  /// Adds n to the count and wakes up to n sleepers. Throws Error(errc::invalid_argument) if
  /// the count would exceed kMaxValue; the count is unchanged then.
  void post(std::uint32_t n = 1);
  /// Takes one unit if available; never blocks.
  [[nodiscard]] bool try_wait() noexcept;
  /// Blocks until a unit is available and takes it.
  void wait();
  /// Returns false, having taken nothing, if no unit became available before the deadline.
  [[nodiscard]] bool wait_until(const Deadline& deadline);
  /// wait_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(Deadline::after(timeout));
  }
  /// The count now (a snapshot).
  [[nodiscard]] std::uint32_t value() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }

 protected:
  /// @cond internal
  // A semaphore whose count may never pass `limit` (BoundedSemaphore).
  Semaphore(std::uint32_t initial, WaitPolicy policy, std::uint32_t limit);
  /// @endcond

 private:
  [[maybe_unused]] std::uint32_t magic_;  // identifies the layout in a memory dump
  std::uint32_t limit_;                   // the largest count post() may reach (read as untrusted)
  WaitPolicy policy_;
  alignas(64) std::atomic<std::uint32_t> count_;
  alignas(64) EventCount ec_;  // own line: notifiers read it without stealing count_'s line
};

/// BoundedSemaphore: a Semaphore whose count may not rise above its initial value (Python's
/// multiprocessing.BoundedSemaphore): a post() that would pass it throws
/// Error(errc::invalid_argument) ("released too many times") and changes nothing, which
/// catches a release without a matching acquire.
class BoundedSemaphore : public Semaphore {
 public:
  /// A semaphore holding `initial` units, at most `initial` ever.
  explicit BoundedSemaphore(std::uint32_t initial = 1, WaitPolicy policy = WaitPolicy::hybrid())
      : Semaphore(initial, policy, initial) {}
};

}  // namespace ipckit
