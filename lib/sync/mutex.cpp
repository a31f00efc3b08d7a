#include "ipckit/sync/mutex.hpp"

#include <cerrno>
#include <chrono>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kMutexMagic = 0x494d5831;  // "IMX1"
}

Mutex::Mutex() : magic_(kMutexMagic) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  const int rc = pthread_mutex_init(&m_, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_errno(rc, "pthread_mutex_init(process-shared, robust)");
}

std::error_code Mutex::finish_lock(int rc, const char* what) {
  switch (rc) {
    case 0: return {};
    case EOWNERDEAD:
      // We hold it now; mark it usable again and tell the caller to repair the data.
      pthread_mutex_consistent(&m_);
      return make_error_code(errc::owner_dead);
    case ETIMEDOUT: return make_error_code(errc::timeout);
    default: throw_errno(rc, what);
  }
}

// Waits in steps of at most kStep. A robust futex can lose its wake-up: a locker killed
// inside pthread_mutex_unlock(), after it freed the word and before it woke a waiter (or a
// waiter killed after its wake-up, before it took the word), leaves the others asleep on a
// lock that a third process may take and release without a wake-up. The kernel's robust-list
// cleanup does not cover that case. A later attempt finds the word as it really is, so the
// loss costs one step (found by tests/chaos; reproducer tests/chaos/mutex_lost_wakeup.cpp).
constexpr std::chrono::milliseconds kStep{20};

std::error_code Mutex::lock() { return lock_until(Deadline::never()); }

std::error_code Mutex::lock_until(const Deadline& deadline) {
  for (;;) {
    const Deadline step = deadline.capped(kStep);
    const bool last = step.when() == deadline.when();
    const timespec ts = step.to_timespec();
    const int rc = pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts);
    if (rc != ETIMEDOUT || last) {
      return finish_lock(rc, deadline.is_never() ? "Mutex::lock()" : "Mutex::lock_until()");
    }
  }
}

bool Mutex::try_lock() noexcept {
  const int rc = pthread_mutex_trylock(&m_);
  if (rc == EOWNERDEAD) pthread_mutex_consistent(&m_);
  return rc == 0 || rc == EOWNERDEAD;
}

void Mutex::unlock() noexcept { pthread_mutex_unlock(&m_); }

}  // namespace ipckit
