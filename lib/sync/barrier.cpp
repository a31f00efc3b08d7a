#include "ipckit/sync/barrier.hpp"

#include <unistd.h>

#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kBarrierMagic = 0x49424131;  // "IBA1"
}

Barrier::Barrier(std::uint32_t parties, WaitPolicy policy)
    : magic_(kBarrierMagic), parties_(parties), policy_(policy) {
  if (parties == 0 || parties > kMaxParties) {
    throw_error(errc::invalid_argument, "Barrier: parties must be 1.." +
                                            std::to_string(kMaxParties) + ", got " +
                                            std::to_string(parties));
  }
}

std::uint32_t Barrier::parties() const {
  const std::uint32_t n = __atomic_load_n(&parties_, __ATOMIC_RELAXED);
  if (n == 0 || n > kMaxParties) {
    throw_error(errc::bad_layout, "Barrier: the shared party count " + std::to_string(n) +
                                      " is outside 1.." + std::to_string(kMaxParties) +
                                      " (overwritten by a peer?)");
  }
  return n;
}

void Barrier::attach(pid_t pid) {
  const std::uint32_t n = parties();
  ProcessIdentity id = current_identity();
  if (pid != 0 && pid != current_pid()) {
    id = process_identity(pid);
    if (id == 0) id = static_cast<std::uint32_t>(pid);  // not running: its pid alone
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    ProcessIdentity cur = ids_[i].load(std::memory_order_acquire);
    if (cur == id) return;
    if (cur == 0 && ids_[i].compare_exchange_strong(cur, id, std::memory_order_acq_rel)) {
      return;
    }
    if (cur == id) return;  // another thread of ours won the race for this slot
  }
  throw_error(errc::invalid_argument, "Barrier::attach(" + std::to_string(identity_pid(id)) +
                                          "): all " + std::to_string(n) + " party slots are taken");
}

void Barrier::break_barrier() noexcept {
  broken_.store(1, std::memory_order_release);
  ec_.notify_all();
}

void Barrier::check_parties_alive(std::uint32_t phase, std::uint32_t parties) {
  for (std::uint32_t i = 0; i < parties; ++i) {
    const ProcessIdentity id = ids_[i].load(std::memory_order_acquire);
    if (id != 0 && !identity_alive(id)) {
      // A party may complete the phase and exit just after we polled: its phase store
      // precedes its exit, so a phase that moved on means nothing is broken.
      if (phase_.load(std::memory_order_acquire) != phase) return;
      break_barrier();
      throw_error(errc::barrier_broken,
                  "Barrier: party process " + std::to_string(identity_pid(id)) + " died");
    }
  }
}

std::uint32_t Barrier::arrive_and_wait_until(const Deadline& deadline) {
  if (broken()) throw_error(errc::barrier_broken, "Barrier: broken before arrival");
  const std::uint32_t n = parties();  // read once: what this call checks is what it uses
  attach();
  // Read the phase before arriving: it cannot advance until we have arrived.
  const std::uint32_t phase = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
    // Last to arrive: reset the count, then publish the new phase (release orders the reset
    // before any party of the next phase reads the phase and arrives).
    arrived_.store(0, std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_release);
    ec_.notify_all();
    return phase;
  }
  const auto done = [&] {
    return phase_.load(std::memory_order_acquire) != phase ||
           broken_.load(std::memory_order_acquire) != 0;
  };
  const bool ready =
      ec_.await(done, deadline, read_policy(policy_), [&] { check_parties_alive(phase, n); });
  if (phase_.load(std::memory_order_acquire) != phase) return phase;
  if (!ready) {
    break_barrier();
    throw_error(errc::timeout, "Barrier: timed out waiting for the other parties");
  }
  throw_error(errc::barrier_broken, "Barrier: broken while waiting");
}

}  // namespace ipckit
