/// @class ipckit::SharedMutex
/// SharedMutex: a process-shared readers/writer lock that a dead holder cannot block. Any
/// number of processes hold it shared (lock_shared) or one holds it exclusively (lock). A
/// writer that dies holding it is found (pid and start time) by whoever waits next: a reader
/// that clears it gets errc::owner_dead, and so does every writer until one unlocks it (only a
/// writer can repair the data). A reader that dies holding it is dropped from the count by the
/// next process that waits for it. Timed and try_ forms look for dead holders once before
/// giving up, so a zero timeout still recovers the lock. Writers go first: once a writer waits, new
/// readers wait behind it. Meets SharedLockable, so std::shared_lock and std::unique_lock
/// work (they ignore owner_dead). Readers are counted per process in 64 slots (threads of one
/// process share theirs); a 65th reading process waits for a slot.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

class SharedMutex {
 public:
  /// Reader slots: processes that may hold it shared at once.
  static constexpr std::size_t kReaderSlots = 64;

  /// Unlocked; waits follow `policy` (sleeps last at most its check_interval, between which a
  /// waiter looks for dead holders).
  explicit SharedMutex(WaitPolicy policy = WaitPolicy::hybrid()) noexcept;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  /// Exclusive: waits for the writer before it and every reader. Returns errc::owner_dead,
  /// holding it, when the previous writer died holding it (repair the data), else an empty
  /// code.
  std::error_code lock() { return lock_until(Deadline::never()); }
  /// Like lock(); errc::timeout, without the lock, at the deadline.
  std::error_code lock_until(const Deadline& deadline);
  /// lock_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::error_code lock_for(std::chrono::duration<Rep, Period> timeout) {
    return lock_until(Deadline::after(timeout));
  }
  /// Takes it exclusively if nobody holds it (also from a dead writer); never waits.
  [[nodiscard]] bool try_lock() {
    return lock_until(Deadline::after(std::chrono::seconds(0))) != errc::timeout;
  }
  /// Releases the exclusive hold (nothing when the calling process does not hold it).
  void unlock() noexcept;

  /// Shared: waits while a writer holds it or waits for it. Returns errc::owner_dead when it
  /// took it over from a dead writer (the data may be half-updated), else an empty code.
  std::error_code lock_shared() { return lock_shared_until(Deadline::never()); }
  /// Like lock_shared(); errc::timeout, without the lock, at the deadline.
  std::error_code lock_shared_until(const Deadline& deadline);
  /// lock_shared_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::error_code lock_shared_for(std::chrono::duration<Rep, Period> timeout) {
    return lock_shared_until(Deadline::after(timeout));
  }
  /// Takes it shared if no writer holds or waits for it (a dead one is cleared); never waits.
  [[nodiscard]] bool try_lock_shared() {
    return lock_shared_until(Deadline::after(std::chrono::seconds(0))) != errc::timeout;
  }
  /// Releases one shared hold of the calling process.
  void unlock_shared() noexcept;

 private:
  struct Slot {
    std::atomic<std::uint64_t> id{0};  // the reading process's identity; 0 free, 1 being freed
    std::atomic<std::uint32_t> count{0};
  };
  // A writer died holding it: take it over. True when this call did.
  bool take_from_dead_writer(std::uint64_t me);
  // Frees the slots of dead readers; true when the readers are all gone.
  bool readers_gone();
  // The calling process's slot (claimed when it has none); nullptr when all are taken.
  Slot* my_slot(std::uint64_t me);

  [[maybe_unused]] std::uint32_t magic_;
  WaitPolicy policy_;
  alignas(64) std::atomic<std::uint64_t> writer_{0};  // the writer's identity (holding or waiting)
  std::atomic<std::uint32_t> held_{0};                // 1 while the writer holds it
  alignas(64) Slot slots_[kReaderSlots];
  alignas(64) EventCount ec_;
};

}  // namespace ipckit
