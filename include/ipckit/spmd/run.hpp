// spmd::run: the shared-memory way to run an SPMD program on one machine. Forks n ranks,
// each calling fn(Comm&) with a ShmComm, and returns when all have finished. If a rank
// throws or dies, every other rank's blocking call ends with Error(errc::peer_dead) (no
// hang), and run() throws RunError naming the rank that failed first and why.
//
//   ipckit::spmd::run(4, [](ipckit::Comm& comm) { solve(comm); });
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/spmd/comm.hpp"

namespace ipckit::spmd {

struct RunOptions {
  // Capacity of each point-to-point ring (one per ordered pair of ranks that talk, made on
  // the first message): a power of two, at least 64 KiB. Larger messages go in pieces.
  // There is room for rings to 27 peers per rank (a 3-D stencil), or to all of them when
  // there are at most 28 ranks; a send that needs one more ring fails with
  // errc::out_of_memory.
  std::size_t ring_bytes = std::size_t{1} << 21;
  // Busy polling before a waiting rank sleeps (then it sleeps on a futex, waking every
  // 20 ms to check that the ranks it waits for are alive).
  std::chrono::nanoseconds spin{50'000};
  // Pin rank r to the r-th CPU this process may run on, when there are at least as many
  // CPUs as ranks (as mpirun --bind-to core does); memory-bound ranks then keep their cache
  // and never share a core. Turn it off when several runs share the machine at once (each
  // would pin its rank 0 to the same CPU).
  bool pin = true;
};

// How one rank ended.
struct RankOutcome {
  int rank = 0;
  ExitStatus status;
  std::string error;       // what() of the exception that ended it ("" when it returned)
  bool peer_dead = false;  // it stopped because another rank died (a consequence)
};

// Thrown by run() when a rank did not return normally: errc::child_failed, a message that
// names the first failing rank and why, and every rank's outcome.
class RunError : public Error {
 public:
  RunError(const std::string& what, std::vector<RankOutcome> ranks);
  [[nodiscard]] const std::vector<RankOutcome>& ranks() const noexcept { return ranks_; }
  // The rank whose failure is the cause (the lowest rank that did not stop with
  // peer_dead), or -1.
  [[nodiscard]] int failed_rank() const noexcept { return failed_; }

 private:
  std::vector<RankOutcome> ranks_;
  int failed_ = -1;
};

// Throws Error(errc::invalid_argument) for n < 1 or n > 1024, or a bad ring size, before
// anything is forked.
void run(int n, const std::function<void(Comm&)>& fn, const RunOptions& options = {});

}  // namespace ipckit::spmd
