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

void Barrier::attach(pid_t pid) {
  if (pid == 0) pid = ::getpid();
  for (std::uint32_t i = 0; i < parties_; ++i) {
    pid_t cur = pids_[i].load(std::memory_order_acquire);
    if (cur == pid) return;
    if (cur == 0 && pids_[i].compare_exchange_strong(cur, pid, std::memory_order_acq_rel)) {
      return;
    }
    if (cur == pid) return;  // another thread of ours won the race for this slot
  }
  throw_error(errc::invalid_argument, "Barrier::attach(" + std::to_string(pid) + "): all " +
                                          std::to_string(parties_) + " party slots are taken");
}

void Barrier::break_barrier() noexcept {
  broken_.store(1, std::memory_order_release);
  ec_.notify_all();
}

void Barrier::check_parties_alive(std::uint32_t phase) {
  for (std::uint32_t i = 0; i < parties_; ++i) {
    const pid_t pid = pids_[i].load(std::memory_order_acquire);
    if (pid != 0 && !process_alive(pid)) {
      // A party may complete the phase and exit just after we polled: its phase store
      // precedes its exit, so a phase that moved on means nothing is broken.
      if (phase_.load(std::memory_order_acquire) != phase) return;
      break_barrier();
      throw_error(errc::barrier_broken, "Barrier: party process " + std::to_string(pid) + " died");
    }
  }
}

std::uint32_t Barrier::arrive_and_wait_until(const Deadline& deadline) {
  if (broken()) throw_error(errc::barrier_broken, "Barrier: broken before arrival");
  attach();
  // Read the phase before arriving: it cannot advance until we have arrived.
  const std::uint32_t phase = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parties_) {
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
  const bool ready = ec_.await(done, deadline, policy_, [&] { check_parties_alive(phase); });
  if (phase_.load(std::memory_order_acquire) != phase) return phase;
  if (!ready) {
    break_barrier();
    throw_error(errc::timeout, "Barrier: timed out waiting for the other parties");
  }
  throw_error(errc::barrier_broken, "Barrier: broken while waiting");
}

}  // namespace ipckit
