/// @class ipckit::Barrier
/// Barrier: a reusable barrier for N processes in shared memory. Each phase ends when all N
/// parties have arrived. When a party dies (checked between bounded sleeps; by pid and start
/// time, so a recycled pid does not pass for it) or a wait times out, the barrier breaks:
/// every waiting and later caller gets errc::barrier_broken instead of hanging. Parties are
/// the processes that called attach() or have waited at least once. Every word a peer could
/// scribble on (party count, wait policy) is checked or clamped where it is read: garbage
/// there gives errc::bad_layout, never a wild read or an endless wait.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

class Barrier {
 public:
  /// Most parties a barrier may have.
  static constexpr std::uint32_t kMaxParties = 256;

  /// A barrier for `parties` processes. Throws Error(errc::invalid_argument) unless
  /// 1 <= parties <= kMaxParties.
  explicit Barrier(std::uint32_t parties, WaitPolicy policy = WaitPolicy::hybrid());
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  /// Registers `pid` (default: the caller) as a party, so that its death breaks the barrier
  /// even before its first wait. Idempotent. Throws Error(errc::invalid_argument) when more
  /// than parties() distinct processes attach.
  void attach(pid_t pid = 0);

  /// Arrives and blocks until every party has arrived; returns the number of the phase that
  /// completed (0, 1, 2, ...). Throws Error(errc::barrier_broken) if the barrier is or
  /// becomes broken.
  std::uint32_t arrive_and_wait() { return arrive_and_wait_until(Deadline::never()); }
  /// As arrive_and_wait(); when the deadline passes first, breaks the barrier and throws
  /// Error(errc::timeout) (the other parties then get barrier_broken).
  std::uint32_t arrive_and_wait_until(const Deadline& deadline);
  /// arrive_and_wait_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::uint32_t arrive_and_wait_for(std::chrono::duration<Rep, Period> timeout) {
    return arrive_and_wait_until(Deadline::after(timeout));
  }

  /// Breaks the barrier on purpose: every waiter and later caller gets barrier_broken.
  void break_barrier() noexcept;
  /// True once the barrier is broken (for good).
  [[nodiscard]] bool broken() const noexcept {
    return broken_.load(std::memory_order_acquire) != 0;
  }
  /// The number of parties. Throws Error(errc::bad_layout) when the shared party count is
  /// not in 1..kMaxParties.
  [[nodiscard]] std::uint32_t parties() const;

 private:
  void check_parties_alive(std::uint32_t phase, std::uint32_t parties);

  [[maybe_unused]] std::uint32_t magic_;  // identifies the layout in a memory dump
  std::uint32_t parties_;
  WaitPolicy policy_;
  // Arrivals are read-modify-written by every party; waiters poll only the phase line, so
  // the arrivals of a round do not bounce the line the waiters are watching.
  alignas(64) std::atomic<std::uint32_t> arrived_{0};
  alignas(64) std::atomic<std::uint32_t> phase_{0};
  std::atomic<std::uint32_t> broken_{0};
  alignas(64) EventCount ec_;  // own line: notifiers read it without stealing phase_'s line
  alignas(64) std::array<std::atomic<ProcessIdentity>, kMaxParties> ids_{};
};

}  // namespace ipckit
