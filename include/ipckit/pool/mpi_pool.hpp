/// @file
/// ipckit::mpi::Pool: the Pool API across the ranks of an MPI job (library target ipckit::mpi).
/// This header does not include `<mpi.h>`.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "ipckit/pool/pool.hpp"

namespace ipckit::mpi {

/// How an mpi::Pool is made.
struct PoolOptions {
  /// Runs once on each worker rank before its first task. It runs in the rank's own
  /// mpi::Pool constructor, so it need not cross anywhere: any `void()` callable. If it
  /// throws, the pool is broken as a local Pool's is (errc::child_failed, naming the rank).
  Initializer initializer{};
  /// The default of the calls' `timeout` (unset: none). A rank cannot be stopped without
  /// ending the MPI job, so a chunk that runs past its timeout fails with TaskTimeout at once
  /// while its rank finishes it (the result is dropped) and takes no new chunk until then.
  std::optional<std::chrono::nanoseconds> task_timeout{};
  /// With a single rank (the program was started without mpirun), the pool is a local
  /// ipckit::Pool made with these options; `initializer` and `task_timeout` above fill
  /// theirs when they are unset.
  ipckit::PoolOptions single_rank{};
};

/// Pool: the same map / starmap / imap / imap_unordered / apply_async / submit API as
/// ipckit::Pool, and AsyncResults that as_completed(), wait_any() and wait_all() take, over the
/// ranks of an MPI job. Rank 0 drives; every other rank runs tasks. The constructor is
/// collective (every rank makes the pool, as with mpi4py's MPICommExecutor): on rank 0 it
/// returns the driving pool; on the other ranks it serves tasks until rank 0's pool is joined,
/// terminated or destroyed, then returns a pool whose is_driver() is false:
///
///     int main(int argc, char** argv) {
///       ipckit::mpi::Environment env(argc, argv);
///       ipckit::mpi::Pool pool;            // ranks 1..N-1 serve here
///       if (!pool.is_driver()) return 0;   // ... and leave once rank 0's pool is done
///       std::vector<int> sq = pool.map(square, inputs);
///     }
///
/// Started without mpirun (a single rank), the pool is a local ipckit::Pool
/// (PoolOptions::single_rank), so the same program runs on one machine.
///
/// Tasks cross as they do to a forkserver worker: the callable and its inputs by value
/// (bytes or cereal), functions as module offsets checked against the build id, so every rank
/// must run the same build of the program (a rank of another build fails the task with
/// errc::not_found). Inputs and results use the same codec and chunking rule as ipckit::Pool;
/// chunks queue ahead on each rank as on a local worker. Registered exception types
/// (register_exception) come back as themselves when every rank registered them; otherwise a
/// task's exception is a RemoteError whose what() names the rank and host.
///
/// What MPI cannot survive: a rank that dies (a crash, a kill, exit() in a task) ends the
/// whole job, as mpirun does; the dying rank prints which rank, pid and host it was and what
/// task state it was in (fatal signals and exit() while serving), and mpirun names the rank
/// and node too. So there is no WorkerLost and no task_retries. A timeout fails the chunk but
/// cannot stop its rank (PoolOptions::task_timeout); cancel({.running = true}) drops the
/// running chunks' results like cancel() does, and terminate() returns once the ranks have
/// finished the chunks they were running (chunks queued on them are dropped unrun).
///
/// Threads: rank 0's pool calls MPI from its driver thread only, so MPI must provide
/// MPI_THREAD_SERIALIZED (mpi::Environment asks for it), and rank 0 should make no MPI calls
/// of its own while the pool is alive (unless MPI_THREAD_MULTIPLE). Messages use tags
/// 0x1c0-0x1c3 on MPI_COMM_WORLD. SIGINT keeps its disposition (mpirun forwards it).
class Pool : public ipckit::Pool {
 public:
  /// Collective: see the class description. Throws Error(errc::invalid_argument) when MPI is
  /// not initialised (make an mpi::Environment first) or gives less than
  /// MPI_THREAD_SERIALIZED with more than one rank; on a worker rank, Error when an MPI call
  /// fails while it serves.
  explicit Pool(PoolOptions options = {});

  /// True on the rank that drives the pool (rank 0). On the other ranks the pool has served
  /// already: its calls throw Error(errc::invalid_argument), and size() is 0.
  [[nodiscard]] bool is_driver() const noexcept { return driver_; }
  /// This process's rank in MPI_COMM_WORLD.
  [[nodiscard]] int rank() const noexcept { return rank_; }

 private:
  struct Started {
    std::shared_ptr<detail::PoolBackend> backend;
    bool driver = true;
    int rank = 0;
  };
  // Collective: the backend on rank 0 (or the local pool), the served one elsewhere.
  static Started start(PoolOptions options);
  explicit Pool(Started s) noexcept
      : ipckit::Pool(std::move(s.backend)), driver_(s.driver), rank_(s.rank) {}

  bool driver_ = true;
  int rank_ = 0;
};

}  // namespace ipckit::mpi
