/// @file
/// Futex wait/wake on a 32-bit atomic that may live in shared memory (process-shared: the
/// FUTEX_PRIVATE flag is never used). The building block under EventCount and the sync types.
#pragma once

#include <atomic>
#include <cstdint>

#include "ipckit/core/deadline.hpp"

namespace ipckit {

static_assert(sizeof(std::atomic<std::uint32_t>) == 4 &&
              std::atomic<std::uint32_t>::is_always_lock_free);

/// How futex_wait() returned.
enum class FutexResult {
  woken,      ///< woken by futex_wake, or a spurious wake-up: re-check the condition
  changed,    ///< *word != expected when the call was made
  timed_out,  ///< the deadline passed
};

/// Sleeps while *word == expected, until woken or `deadline`. Signals (EINTR) are absorbed as
/// spurious wake-ups. Never throws.
FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       const Deadline& deadline = Deadline::never()) noexcept;

/// Wakes up to `count` sleepers on `word`; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;
/// Wakes every sleeper on `word`; returns how many were woken.
inline int futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  return futex_wake(word, 0x7fffffff);
}

/// A CPU hint for spin loops (PAUSE on x86).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace ipckit
