/// @namespace ipckit::spmd
/// spmd::run: the shared-memory way to run an SPMD program on one machine. Forks n ranks,
/// each calling fn(Comm&) with a ShmComm, and returns when all have finished. If a rank
/// throws or dies, every other rank's blocking call ends with Error(errc::peer_dead) (no
/// hang), and run() throws RunError naming the rank that failed first and why.
///
///     ipckit::spmd::run(4, [](ipckit::Comm& comm) { solve(comm); });
///     ipckit::spmd::run(4, solve, {.timeout = 10min, .call_timeout = 30s});  // bounded
///
/// By default nothing is timed: a rank that is alive but never answers (stopped by SIGSTOP or
/// a debugger, deadlocked, computing forever) keeps the ranks that wait for it, and run(),
/// waiting, by design; a rank that exited or died is always noticed. RunOptions::timeout
/// bounds the whole run and RunOptions::call_timeout every blocking call; with either set, a
/// stopped rank makes nobody wait forever.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/spmd/comm.hpp"

namespace ipckit::spmd {

/// Options of run().
struct RunOptions {
  /// Capacity of each point-to-point ring (one per ordered pair of ranks that talk, made on
  /// the first message): a power of two, at least 64 KiB. Larger messages go in fragments.
  /// There is room for rings to 27 peers per rank (a 3-D stencil), or to all of them when
  /// there are at most 28 ranks; a send that needs one more ring fails with
  /// errc::out_of_memory.
  std::size_t ring_bytes = std::size_t{1} << 21;
  /// Busy polling before a waiting rank sleeps (then it sleeps on a futex, waking every
  /// 20 ms to check that the ranks it waits for are alive).
  std::chrono::nanoseconds spin{50'000};
  /// Pin rank r to the r-th CPU this process may run on, when there are at least as many
  /// CPUs as ranks (as mpirun --bind-to core does); memory-bound ranks then keep their cache
  /// and never share a core. Turn it off when several runs share the machine at once (each
  /// would pin its rank 0 to the same CPU).
  bool pin = true;
  /// Deadline for the whole run, counted from the call to run(); 0: none. When it passes
  /// with ranks still running, run() kills every rank (SIGKILL), reaps them and throws
  /// RunError with errc::timeout, naming the ranks that had not finished and which of them
  /// were stopped ("spmd::run: deadline of 2000 ms passed; ranks 1 (stopped), 3 still
  /// running").
  std::chrono::milliseconds timeout{0};
  /// The longest a single blocking call of the ShmComm (send, recv, probe, wait/wait_all,
  /// sendrecv, every collective; not wait_any/wait_some, which poll) may take, from its
  /// start to its end; 0: no
  /// limit. Past it the call throws Error(errc::timeout) naming the call and the rank(s) it
  /// was waiting for. Set it well above the longest a call may legitimately wait: the
  /// slowest rank's work between two calls plus the transfer. After a timed-out call the
  /// communicator is not usable for further calls with the ranks involved (a timed-out
  /// collective breaks the collectives): let the error end the rank. Once a rank has ended
  /// with an error, run() also gives the ranks still running call_timeout to end (healthy
  /// ones do, with peer_dead, at their next blocking call), then kills them and reports them
  /// as not finished.
  std::chrono::milliseconds call_timeout{0};
};

/// How one rank ended.
struct RankOutcome {
  int rank = 0;       ///< the rank
  ExitStatus status;  ///< how its process ended
  /// what() of the exception that ended it ("" when it returned)
  std::string error;
  bool peer_dead = false;       ///< it stopped because another rank died (a consequence)
  bool call_timed_out = false;  ///< it stopped because a blocking call hit call_timeout
  /// Still running when run() gave up on it (the run's deadline, or call_timeout after
  /// another rank failed): run() killed it with SIGKILL.
  bool unfinished = false;
  bool stopped = false;  ///< unfinished, and stopped (SIGSTOP, a debugger) at that moment
  /// The exception that ended it, rebuilt as its own type when that type was given to
  /// register_exception (before run()) and its encoding fits 4 KiB; null otherwise (`error`
  /// has its text either way). `std::rethrow_exception(o.exception)` throws it.
  std::exception_ptr exception;
};

/// Thrown by run() when a rank did not return normally, with a message that names the cause
/// and every rank's outcome. code() is errc::timeout when the run ended because of a timeout
/// (the run's deadline passed, or a call_timeout with no other failure behind it), else
/// errc::child_failed.
class RunError : public Error {
 public:
  /// The error run() throws: the message, every rank's outcome and the code (see above).
  RunError(const std::string& what, std::vector<RankOutcome> ranks, errc code = errc::child_failed);
  /// Every rank's outcome, by rank.
  [[nodiscard]] const std::vector<RankOutcome>& ranks() const noexcept { return ranks_; }
  /// The rank whose failure is the cause, or -1: the lowest rank that failed by itself (not
  /// with peer_dead, a call timeout, or killed by run()); else the lowest stopped rank; else
  /// the lowest rank whose call timed out; else the lowest unfinished rank.
  [[nodiscard]] int failed_rank() const noexcept { return failed_; }

 private:
  std::vector<RankOutcome> ranks_;
  int failed_ = -1;
};

/// Forks n ranks, each calling fn(Comm&) with a ShmComm, and returns when all have finished;
/// throws RunError when one did not (see the namespace comment).
/// Throws Error(errc::invalid_argument) for n < 1 or n > 1024, a bad ring size or a negative
/// timeout, before anything is forked. When a rank cannot be forked (EAGAIN at a process
/// limit such as RLIMIT_NPROC, ENOMEM), the ranks already started are killed and reaped and
/// run() throws Error with that errno ("spmd::run: could not start rank 2 of ranks 0-3
/// (...): fork() failed (...): Resource temporarily unavailable").
void run(int n, const std::function<void(Comm&)>& fn, const RunOptions& options = {});

}  // namespace ipckit::spmd
