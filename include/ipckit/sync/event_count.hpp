/// @class ipckit::EventCount
/// EventCount: the wait strategy under every blocking call in ipckit. A waiter polls its
/// condition for a bounded time (spin), then sleeps on a futex; a notifier pays one fence and
/// one load when nobody sleeps, and a futex wake only when a waiter is registered. Lives in
/// shared memory; waiters and notifiers may be different processes.
///
///     while (!ready()) { auto key = ec.prepare_wait(); if (ready()) { ec.cancel_wait(); break; }
///                        ec.wait(key, deadline); }
///
/// or simply ec.await(ready, deadline, policy).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/futex.hpp"

namespace ipckit {

/// How a blocking call waits. The three named modes are the ones benchmarks report.
struct WaitPolicy {
  /// Busy polling before the first sleep. Quick producers are met without a kernel wake-up.
  std::chrono::nanoseconds spin{50'000};
  /// false: never sleep, poll until ready or the deadline (lowest latency, burns a core).
  bool sleep = true;
  /// Longest single sleep: between sleeps the waiter re-checks liveness of its peers.
  std::chrono::milliseconds check_interval{20};

  /// `spin`: poll, never sleep (lowest latency, a core busy while waiting).
  static constexpr WaitPolicy spin_only() noexcept { return {std::chrono::nanoseconds{0}, false}; }
  /// `hybrid` (the default): poll for 50 microseconds, then sleep on a futex.
  static constexpr WaitPolicy hybrid() noexcept { return {}; }
  /// `block`: sleep on a futex at once.
  static constexpr WaitPolicy block() noexcept { return {std::chrono::nanoseconds{0}, true}; }
};

/// A wait policy stored in shared memory, as a waiter may use it: any peer may have written
/// anything there, so it is read once, the flag as a byte, and the durations are clamped
/// (spin to [0, 1 s], check_interval to [1 ms, 1 s]: a garbage interval cannot stop a waiter
/// from noticing a dead peer).
[[nodiscard]] inline WaitPolicy read_policy(const WaitPolicy& shared) noexcept {
  unsigned char sleep = 0;
  std::chrono::nanoseconds::rep spin = 0;
  std::chrono::milliseconds::rep check = 0;
  std::memcpy(&sleep, &shared.sleep, 1);
  std::memcpy(&spin, &shared.spin, sizeof spin);
  std::memcpy(&check, &shared.check_interval, sizeof check);
  WaitPolicy p;
  p.sleep = sleep != 0;
  p.spin = std::chrono::nanoseconds(std::clamp<decltype(spin)>(spin, 0, 1'000'000'000));
  p.check_interval = std::chrono::milliseconds(std::clamp<decltype(check)>(check, 1, 1000));
  return p;
}

class EventCount {
 public:
  /// What prepare_wait() returns and wait() takes: the notification count it saw.
  struct Key {
    std::uint32_t epoch;  ///< notifications with sleepers so far (wraps)
  };

  /// No waiters, nothing notified.
  EventCount() noexcept = default;
  EventCount(const EventCount&) = delete;
  EventCount& operator=(const EventCount&) = delete;

  /// Registers the caller as a waiter. Re-check the condition after this, then either
  /// cancel_wait() or wait(key).
  Key prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the fence in notify()
    return Key{epoch_.load(std::memory_order_acquire)};
  }
  /// Unregisters a waiter whose condition became true after prepare_wait().
  void cancel_wait() noexcept { waiters_.fetch_sub(1, std::memory_order_relaxed); }
  /// Sleeps unless notified since prepare_wait(), at most until `deadline`; unregisters.
  FutexResult wait(Key key, const Deadline& deadline = Deadline::never()) noexcept {
    const FutexResult r = futex_wait(epoch_, key.epoch, deadline);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    return r;
  }

  /// Wakes up to `count` sleepers. Call after making the condition true (release store).
  void notify(int count) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with prepare_wait()
    if (waiters_.load(std::memory_order_relaxed) == 0) return;
    epoch_.fetch_add(1, std::memory_order_release);
    futex_wake(epoch_, count);
  }
  /// Wakes every sleeper.
  void notify_all() noexcept { notify(0x7fffffff); }

  /// Waits until `ready()` is true or the deadline passes, following `policy`. `check()` runs
  /// between bounded sleeps (and now and then while spinning); it may throw to abandon the
  /// wait, e.g. when a peer died. Returns ready() as of the last poll.
  template <class Ready, class Check>
  bool await(Ready&& ready, const Deadline& deadline, const WaitPolicy& policy, Check&& check);
  /// await() with no check between sleeps.
  template <class Ready>
  bool await(Ready&& ready, const Deadline& deadline = Deadline::never(),
             const WaitPolicy& policy = WaitPolicy::hybrid()) {
    return await(ready, deadline, policy, [] {});
  }

  /// The futex word a sleeper waits on (what prepare_wait() reads into Key::epoch): for waits
  /// on several EventCounts at once (WaitSet, futex_waitv). Register with prepare_wait() first.
  [[nodiscard]] const std::atomic<std::uint32_t>& word() const noexcept { return epoch_; }

  /// Waiters registered now (a snapshot).
  [[nodiscard]] std::uint32_t waiters() const noexcept {
    return waiters_.load(std::memory_order_relaxed);
  }

 private:
  alignas(8) std::atomic<std::uint32_t> epoch_{0};  // the futex word
  std::atomic<std::uint32_t> waiters_{0};
};

static_assert(std::is_standard_layout_v<EventCount>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

template <class Ready, class Check>
bool EventCount::await(Ready&& ready, const Deadline& deadline, const WaitPolicy& policy,
                       Check&& check) {
  if (ready()) return true;
  using clock = Deadline::clock;
  // Phase 1: poll (skipped in block mode). The clock is read every 64 polls, the first time
  // after 64 of them, so an answer that comes quickly never pays for a clock read.
  const bool poll = !policy.sleep || policy.spin > std::chrono::nanoseconds::zero();
  clock::time_point spin_end{};
  clock::time_point next_check{};
  for (unsigned i = 1; poll; ++i) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 0) {
      const auto now = clock::now();
      if (i == 64) {
        spin_end = policy.sleep ? now + policy.spin : clock::time_point::max();
        next_check = now + policy.check_interval;
      }
      if (now >= spin_end) break;
      if (!deadline.is_never() && now >= deadline.when()) return ready();
      if (now >= next_check) {
        check();
        next_check = now + policy.check_interval;
      }
    }
  }
  // Phase 2: sleep in bounded slices, re-checking peers between them.
  for (;;) {
    const Key key = prepare_wait();
    if (ready()) {
      cancel_wait();
      return true;
    }
    if (deadline.expired()) {
      cancel_wait();
      return ready();
    }
    wait(key, deadline.capped(policy.check_interval));
    if (ready()) return true;
    check();
  }
}

}  // namespace ipckit
