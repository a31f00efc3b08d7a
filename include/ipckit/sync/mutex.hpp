/// @class ipckit::Mutex
/// Mutex: a process-shared, robust mutex. When a process dies holding it, the next locker gets
/// the lock together with errc::owner_dead, the mutex is made consistent, and nobody
/// deadlocks. Meets BasicLockable/Lockable, so std::lock_guard and std::unique_lock work;
/// ScopedLock also tells whether the previous owner died.
#pragma once

#include <pthread.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <system_error>

#include "ipckit/core/deadline.hpp"

namespace ipckit {

class Mutex {
 public:
  /// An unlocked mutex (robust, process-shared). Throws Error with the errno of
  /// pthread_mutex_init if it fails.
  Mutex();
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  // No destructor: objects in shared memory are never destroyed (glibc needs no cleanup for a
  // process-shared mutex).

  /// Blocks until the caller holds the mutex. Returns errc::owner_dead (still holding it) when
  /// the previous owner died while holding it: the guarded data may be half-updated and should
  /// be repaired before unlock(). Returns an empty error_code otherwise. Throws Error on
  /// misuse reported by the OS (EDEADLK: the calling thread already holds it). Sleeps in steps
  /// of at most 20 ms, so that a wake-up lost to a process killed inside unlock() costs one
  /// step, never a hang.
  std::error_code lock();
  /// Like lock() but gives up at the deadline, returning errc::timeout without the lock.
  std::error_code lock_until(const Deadline& deadline);
  /// lock_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::error_code lock_for(std::chrono::duration<Rep, Period> timeout) {
    return lock_until(Deadline::after(timeout));
  }
  /// Takes the mutex if free (also when recovering it from a dead owner); never blocks.
  [[nodiscard]] bool try_lock() noexcept;
  /// Releases the mutex, which the calling thread holds.
  void unlock() noexcept;

 private:
  friend class RecursiveMutex;
  friend class Condition;
  // Takes it if free, as try_lock() does, and says how: nullopt when it is held, else the
  // code lock() would return (owner_dead included).
  std::optional<std::error_code> try_lock_reporting();
  struct Recursive {};
  explicit Mutex(Recursive);
  std::error_code finish_lock(int rc, const char* what);

  [[maybe_unused]] std::uint32_t magic_;  // identifies the layout in a memory dump
  pthread_mutex_t m_{};
};

/// RecursiveMutex: a process-shared, robust mutex that the thread holding it may lock again
/// (Python's multiprocessing.RLock); it is free once unlocked as many times as it was locked.
/// When its owner dies holding it (at any depth), the next locker gets it once, with
/// errc::owner_dead, as with Mutex. A Condition takes a Mutex only: releasing a recursive
/// lock held twice would not free it.
class RecursiveMutex {
 public:
  /// An unlocked recursive mutex. Throws Error with the errno of pthread_mutex_init.
  RecursiveMutex() : m_(Mutex::Recursive{}) {}
  RecursiveMutex(const RecursiveMutex&) = delete;
  RecursiveMutex& operator=(const RecursiveMutex&) = delete;

  /// As Mutex::lock(); the owner may lock again (up to the implementation's depth limit: EAGAIN
  /// is thrown as Error).
  std::error_code lock() { return m_.lock(); }
  /// As Mutex::lock_until().
  std::error_code lock_until(const Deadline& deadline) { return m_.lock_until(deadline); }
  /// lock_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::error_code lock_for(std::chrono::duration<Rep, Period> timeout) {
    return lock_until(Deadline::after(timeout));
  }
  /// Takes it if free or held by the caller; never blocks.
  [[nodiscard]] bool try_lock() noexcept { return m_.try_lock(); }
  /// Undoes one lock() of the calling thread.
  void unlock() noexcept { m_.unlock(); }

 private:
  Mutex m_;
};

/// RAII lock that records whether the mutex was recovered from a dead owner.
class ScopedLock {
 public:
  /// Locks `m` (Mutex::lock(), which may throw).
  explicit ScopedLock(Mutex& m) : m_(m), ec_(m.lock()) {}
  ScopedLock(const ScopedLock&) = delete;
  ScopedLock& operator=(const ScopedLock&) = delete;
  /// Unlocks.
  ~ScopedLock() { m_.unlock(); }
  /// True when the previous owner died holding the mutex.
  [[nodiscard]] bool owner_died() const noexcept { return static_cast<bool>(ec_); }

 private:
  Mutex& m_;
  std::error_code ec_;
};

}  // namespace ipckit
