#include "ipckit/sync/semaphore.hpp"

#include <algorithm>
#include <string>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kSemaphoreMagic = 0x49534d31;  // "ISM1"
}

Semaphore::Semaphore(std::uint32_t initial, WaitPolicy policy)
    : Semaphore(initial, policy, kMaxValue) {}

Semaphore::Semaphore(std::uint32_t initial, WaitPolicy policy, std::uint32_t limit)
    : magic_(kSemaphoreMagic), limit_(limit), policy_(policy), count_(initial) {
  if (initial > kMaxValue) {
    throw_error(errc::invalid_argument,
                "Semaphore: initial value " + std::to_string(initial) + " exceeds kMaxValue");
  }
}

void Semaphore::post(std::uint32_t n) {
  const std::uint32_t limit = std::min(limit_, kMaxValue);  // a peer may have written anything
  std::uint32_t c = count_.load(std::memory_order_relaxed);
  do {
    if (c > kMaxValue) {
      throw_error(errc::bad_layout, "Semaphore::post: the shared count " + std::to_string(c) +
                                        " is above kMaxValue (overwritten by a peer?)");
    }
    if (limit < kMaxValue && (c > limit || n > limit - c)) {
      throw_error(errc::invalid_argument, "BoundedSemaphore::post(" + std::to_string(n) +
                                              "): released too many times (count " +
                                              std::to_string(c) + ", bound " +
                                              std::to_string(limit) + ")");
    }
    if (n > kMaxValue - c) {
      throw_error(errc::invalid_argument, "Semaphore::post(" + std::to_string(n) +
                                              ") would exceed kMaxValue (count " +
                                              std::to_string(c) + ")");
    }
  } while (!count_.compare_exchange_weak(c, c + n, std::memory_order_release,
                                         std::memory_order_relaxed));
  ec_.notify(static_cast<int>(n));
}

bool Semaphore::try_wait() noexcept {
  std::uint32_t c = count_.load(std::memory_order_relaxed);
  while (c > 0) {
    if (count_.compare_exchange_weak(c, c - 1, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

void Semaphore::wait() { (void)wait_until(Deadline::never()); }

bool Semaphore::wait_until(const Deadline& deadline) {
  return ec_.await([this] { return try_wait(); }, deadline, read_policy(policy_));
}

}  // namespace ipckit
