/// @class ipckit::SharedWindow
/// SharedWindow<T>: an array that every rank of a communicator maps, each rank owning a part
/// of it, so that neighbours read (and write) each other's parts in place instead of copying
/// them through messages (MPI_Win_allocate_shared). Made collectively; fence() separates the
/// writes before it from the reads after it, on every rank.
///
///     ipckit::SharedWindow<double> w(comm, n);          // n doubles of this rank's
///     fill(w.local());
///     w.fence();
///     use(w.of((comm.rank() + 1) % comm.size()));        // the right neighbour's, in place
///     w.fence();                                         // before anyone writes again
///
/// ShmComm: one memfd segment (its pages reserved, so a full /dev/shm is errc::out_of_memory
/// on every rank, never a SIGBUS later) that rank 0 makes and the others open through
/// /proc/PID/fd; nothing is named, nothing can leak. MpiComm: MPI_Win_allocate_shared,
/// when every rank of the communicator is on one node (else errc::invalid_argument on every
/// rank); it is freed collectively, so every rank must destroy its window (MPI's rule).
/// Parts are 64-byte aligned; T must be trivially copyable.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

#include "ipckit/core/error.hpp"
#include "ipckit/spmd/comm.hpp"

namespace ipckit {

template <class T>
class SharedWindow {
  static_assert(std::is_trivially_copyable_v<T>, "SharedWindow<T>: T must be trivially copyable");

 public:
  /// Collective: this rank's part holds `count` elements (the ranks' counts may differ),
  /// zero-filled. Throws Error on every rank when the memory cannot be made (errc::out_of_memory,
  /// the OS error), when the parts add up to more than a segment holds (ShmComm;
  /// errc::invalid_argument) or, under MPI, when the ranks are not on one node.
  SharedWindow(Comm& comm, std::size_t count)
      : comm_(&comm), memory_(comm.allocate_shared(count * sizeof(T))) {}

  /// This rank's part.
  [[nodiscard]] std::span<T> local() const { return of(comm_->rank()); }
  /// Rank `r`'s part; Error(errc::invalid_argument) for a rank outside [0, size()).
  [[nodiscard]] std::span<T> of(int r) const {
    if (r < 0 || r >= comm_->size()) {
      throw Error(errc::invalid_argument, "SharedWindow::of: rank " + std::to_string(r) +
                                              " is outside [0, " + std::to_string(comm_->size()) +
                                              ")");
    }
    const std::span<std::byte> b = memory_->part(r);
    return {reinterpret_cast<T*>(b.data()), b.size() / sizeof(T)};  // NOLINT: the part holds Ts
  }
  /// Collective: every rank's writes before it are seen by every rank's reads after it.
  void fence() { memory_->fence(); }
  /// Not collective: a full memory fence on this rank (MPI_Win_sync in MPI's unified model),
  /// for ranks that order their accesses by other means: a rank writes, sync()s, then tells
  /// a peer (a message); the peer, told, sync()s and reads.
  void sync() const noexcept { std::atomic_thread_fence(std::memory_order_seq_cst); }

 private:
  Comm* comm_;
  std::unique_ptr<SharedMemory> memory_;
};

}  // namespace ipckit
