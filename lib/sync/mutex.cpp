#include "ipckit/sync/mutex.hpp"

#include <cerrno>
#include <chrono>
#include <ctime>

#include "ipckit/core/error.hpp"
#include "ipckit/core/futex.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kMutexMagic = 0x494d5831;  // "IMX1"

// Waits in steps of at most kStep. A robust futex can lose its wake-up: a locker killed
// inside pthread_mutex_unlock(), after it freed the word and before it woke a waiter (or a
// waiter killed after its wake-up, before it took the word), leaves the others asleep on a
// lock that a third process may take and release without a wake-up. The kernel's robust-list
// cleanup does not cover that case. A later attempt finds the word as it really is, so the
// loss costs one step (found by tests/chaos; reproducer tests/chaos/mutex_lost_wakeup.cpp).
constexpr std::chrono::milliseconds kStep{20};

// pthread_mutex_clocklock(CLOCK_MONOTONIC) until `step`. GCC 12's ThreadSanitizer does not
// intercept clocklock: it would not see the lock taken, and would report every access the
// lock guards as a race. TSan builds wait on CLOCK_REALTIME instead (intercepted); a clock
// jump then only stretches one step.
int lock_until_step(pthread_mutex_t* m, const Deadline& step) {
#if defined(__SANITIZE_THREAD__)
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(step.remaining());
  const long long ns = static_cast<long long>(now.tv_nsec) + left.count();
  const timespec ts{now.tv_sec + static_cast<time_t>(ns / 1'000'000'000),
                    static_cast<long>(ns % 1'000'000'000)};
  return pthread_mutex_timedlock(m, &ts);
#else
  const timespec ts = step.to_timespec();
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

// Takes the lock by `deadline`: one trylock first (uncontended: no clock read; held by this
// thread: EBUSY there, EDEADLK from the loop), then steps. A step that timed out before the
// deadline (or, in TSan builds, ended early because the realtime clock jumped) is simply the
// next attempt. Returns the pthread result for finish_lock().
int lock_in_steps(pthread_mutex_t* m, const Deadline& deadline) {
  const int first = pthread_mutex_trylock(m);
  if (first != EBUSY) [[likely]]
    return first;
  // Held: most holders keep it for well under a microsecond (a queue's put, a counter), and a
  // futex sleep and wake-up costs tens. Spin a little first (about 1-2 us), as glibc's
  // adaptive mutexes do (robust mutexes have no adaptive kind).
  for (int i = 0; i < 64; ++i) {
    cpu_relax();
    const int rc = pthread_mutex_trylock(m);
    if (rc != EBUSY) return rc;
  }
  for (;;) {
    const int rc = lock_until_step(m, deadline.capped(kStep));
    if (rc != ETIMEDOUT || deadline.expired()) return rc;
  }
}

// A process-shared, robust mutex of `type`.
void init_robust(pthread_mutex_t* m, int type) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&attr, type);
  const int rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_errno(rc, "pthread_mutex_init(process-shared, robust)");
}

}  // namespace

Mutex::Mutex() : magic_(kMutexMagic) { init_robust(&m_, PTHREAD_MUTEX_ERRORCHECK); }
Mutex::Mutex(Recursive) : magic_(kMutexMagic) { init_robust(&m_, PTHREAD_MUTEX_RECURSIVE); }

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

std::error_code Mutex::lock() {
  return finish_lock(lock_in_steps(&m_, Deadline::never()), "Mutex::lock()");
}

std::error_code Mutex::lock_until(const Deadline& deadline) {
  return finish_lock(lock_in_steps(&m_, deadline), "Mutex::lock_until()");
}

bool Mutex::try_lock() noexcept {
  const int rc = pthread_mutex_trylock(&m_);
  if (rc == EOWNERDEAD) pthread_mutex_consistent(&m_);
  return rc == 0 || rc == EOWNERDEAD;
}

std::optional<std::error_code> Mutex::try_lock_reporting() {
  const int rc = pthread_mutex_trylock(&m_);
  if (rc == EBUSY) return std::nullopt;
  return finish_lock(rc, "Mutex::try_lock()");
}

void Mutex::unlock() noexcept { pthread_mutex_unlock(&m_); }

}  // namespace ipckit
