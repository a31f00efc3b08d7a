/// @class ipckit::Event
/// Event: Python's multiprocessing.Event between processes — a flag that set() raises and
/// clear() lowers, and that wait() waits for. Place it in shared memory (Segment::make, or a
/// SharedArray made before fork). Waits follow a WaitPolicy (spin, then sleep on a futex), and
/// every wait has a timed form. A process that dies holds nothing: an Event needs no repair.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipckit/core/deadline.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

struct WaitSource;
class Event;
WaitSource wait_source(Event& e);  // ipckit/sync/wait_set.hpp

class Event {
 public:
  /// A clear event whose waits follow `policy`.
  explicit Event(WaitPolicy policy = WaitPolicy::hybrid()) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// Raises the flag and wakes every waiter (a futex wake only when one sleeps).
  void set() noexcept;
  /// Lowers the flag; waiters wait for the next set().
  void clear() noexcept;
  /// Whether the flag is up (a snapshot; any byte but 0 of the shared word counts as up).
  [[nodiscard]] bool is_set() const noexcept { return flag_.load(std::memory_order_acquire) != 0; }
  /// Returns once the flag is up (at once if it is).
  void wait();
  /// Like wait(); false when the flag was still down at the deadline.
  [[nodiscard]] bool wait_until(const Deadline& deadline);
  /// wait_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(Deadline::after(timeout));
  }

 private:
  friend WaitSource wait_source(Event& e);
  [[maybe_unused]] std::uint32_t magic_;  // identifies the layout in a memory dump
  WaitPolicy policy_;
  alignas(64) std::atomic<std::uint32_t> flag_{0};
  alignas(64) EventCount ec_;  // own line: set() reads it without stealing flag_'s line
};

}  // namespace ipckit
