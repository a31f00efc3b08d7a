// Event and Condition: a flag and a notify counter, each with an EventCount to sleep on.
#include "ipckit/sync/event.hpp"

#include "ipckit/sync/condition.hpp"

#include <chrono>
#include <optional>

#include "ipckit/core/futex.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kEventMagic = 0x49455631;      // "IEV1"
constexpr std::uint32_t kConditionMagic = 0x49434e31;  // "ICN1"
}  // namespace

Event::Event(WaitPolicy policy) noexcept : magic_(kEventMagic), policy_(policy) {}

void Event::set() noexcept {
  flag_.store(1, std::memory_order_release);
  ec_.notify_all();
}

void Event::clear() noexcept { flag_.store(0, std::memory_order_release); }

void Event::wait() { (void)wait_until(Deadline::never()); }

bool Event::wait_until(const Deadline& deadline) {
  return ec_.await([this] { return is_set(); }, deadline, read_policy(policy_));
}

Condition::Condition(WaitPolicy policy) noexcept : magic_(kConditionMagic), policy_(policy) {}

std::error_code Condition::wait_until(Mutex& m, const Deadline& deadline) {
  // Read under the lock: a notify that follows a change made under the lock bumps it later.
  const std::uint32_t seen = seq_.load(std::memory_order_acquire);
  m.unlock();
  const bool notified = ec_.await([&] { return seq_.load(std::memory_order_acquire) != seen; },
                                  deadline, read_policy(policy_));
  // The notifier often still holds the mutex for a moment (it notifies, then waits or
  // unlocks): spinning for it, up to 10 us, is cheaper than a futex sleep and wake-up.
  std::optional<std::error_code> got = m.try_lock_reporting();
  if (!got) {
    const auto until = Deadline::clock::now() + std::chrono::microseconds(10);
    for (unsigned i = 1; !(got = m.try_lock_reporting()); ++i) {
      cpu_relax();
      if ((i & 31) == 0 && Deadline::clock::now() >= until) break;
    }
  }
  const std::error_code ec = got ? *got : m.lock();
  if (ec) return ec;  // owner_dead, holding it
  return notified ? std::error_code{} : make_error_code(errc::timeout);
}

void Condition::notify_one() noexcept {
  seq_.fetch_add(1, std::memory_order_release);
  ec_.notify(1);
}

void Condition::notify_all() noexcept {
  seq_.fetch_add(1, std::memory_order_release);
  ec_.notify_all();
}

}  // namespace ipckit
