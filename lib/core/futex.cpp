#include "ipckit/core/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace ipckit {
namespace {

long futex(const std::atomic<std::uint32_t>& word, int op, std::uint32_t val, const timespec* ts,
           std::uint32_t mask) noexcept {
  // The kernel reads the word; the atomic has the same representation as uint32_t.
  auto* addr = const_cast<std::uint32_t*>(reinterpret_cast<const std::uint32_t*>(&word));
  return ::syscall(SYS_futex, addr, op, val, ts, nullptr, mask);
}

}  // namespace

FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       const Deadline& deadline) noexcept {
  timespec abs{};
  const timespec* ts = nullptr;
  if (!deadline.is_never()) {
    abs = deadline.to_timespec();
    ts = &abs;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so retries after EINTR
  // never stretch the total wait.
  if (futex(word, FUTEX_WAIT_BITSET, expected, ts, FUTEX_BITSET_MATCH_ANY) == 0) {
    return FutexResult::woken;
  }
  switch (errno) {
    case EAGAIN: return FutexResult::changed;
    case ETIMEDOUT: return FutexResult::timed_out;
    default: return FutexResult::woken;  // EINTR: a spurious wake-up
  }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  const long n = futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  return n < 0 ? 0 : static_cast<int>(n);
}

}  // namespace ipckit
