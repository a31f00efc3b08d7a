/// @class ipckit::CartComm
/// CartComm: a 1-D, 2-D or 3-D grid of processes over any Comm, like MPI_Cart_create. Ranks are
/// laid out row-major (x fastest); each axis is periodic or not. neighbor() names the rank
/// at an offset (diagonals too), or -1 past a non-periodic edge; halo_exchange() sends one
/// buffer to each neighbour and receives one from each, all at once.
///
///     ipckit::CartComm grid(comm, 2, {}, {true, false});   // dims chosen from comm.size()
///     auto [x, y, z] = grid.coords();
///     int east = grid.neighbor(1, 0);
///     CartComm row = grid.sub({true, false});               // this rank's row, 1-D
///     double row_sum = row.comm().allreduce(x, ReduceOp::sum);
#pragma once

#include <array>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "ipckit/spmd/comm.hpp"

namespace ipckit {

class CartComm {
 public:
  /// Coordinates or an offset on the grid: x, y, z (z is 0 on a 2-D grid).
  using Offset = std::array<int, 3>;

  /// A grid of `ndims` (1, 2 or 3) axes over `comm` (which must outlive it). `dims` empty (or
  /// zeros) → chosen from comm.size() as evenly as possible, larger extents first
  /// (MPI_Dims_create); otherwise their product must be comm.size(). `periodic` empty → no axis
  /// periodic. Throws Error(errc::invalid_argument) for a bad ndims, dims or periodic list.
  CartComm(Comm& comm, int ndims, std::vector<int> dims = {}, std::vector<bool> periodic = {});

  /// Collective: the grids of the axes where `remain` is true (MPI_Cart_sub), one for each
  /// position on the others; this rank's, over a new communicator (Comm::split) that the
  /// result owns. Its ranks keep this grid's order; extents and periodicity are those of the
  /// kept axes. Error(errc::invalid_argument) unless `remain` has ndims() entries and one is
  /// true (every rank must pass the same).
  [[nodiscard]] CartComm sub(const std::vector<bool>& remain) const;

  /// Balanced factorisation of nprocs into ndims extents (non-increasing).
  static std::vector<int> dims_for(int nprocs, int ndims);
  /// The 3^ndims - 1 neighbour offsets in halo_exchange()'s order (x fastest, each of -1, 0,
  /// +1 on the grid's axes; the zero offset left out). directions()[k] and directions()[n-1-k] are
  /// opposite.
  static std::vector<Offset> directions(int ndims);

  /// The communicator the grid is over.
  [[nodiscard]] Comm& comm() const noexcept { return comm_; }
  /// comm().rank().
  [[nodiscard]] int rank() const noexcept { return comm_.rank(); }
  /// comm().size().
  [[nodiscard]] int size() const noexcept { return comm_.size(); }
  /// The number of axes (1, 2 or 3).
  [[nodiscard]] int ndims() const noexcept { return ndims_; }
  /// The extent of each axis.
  [[nodiscard]] const std::vector<int>& dims() const noexcept { return dims_; }
  /// True when `axis` wraps around; throws std::out_of_range for an axis past ndims().
  [[nodiscard]] bool periodic(int axis) const {
    return periodic_.at(static_cast<std::size_t>(axis));
  }

  ///@{
  /// This rank's coordinates (unused axes are 0), and any rank's.
  [[nodiscard]] Offset coords() const { return coords_of(rank()); }
  [[nodiscard]] Offset coords_of(int rank) const;
  ///@}
  /// The rank at `c` (wrapped on periodic axes), -1 outside the grid.
  [[nodiscard]] int rank_at(Offset c) const;
  /// The rank at this rank's coordinates plus (dx, dy, dz); -1 past a non-periodic edge.
  [[nodiscard]] int neighbor(int dx, int dy, int dz = 0) const;

  /// MPI_Cart_shift: the ranks `disp` steps down and up along `axis` from this rank,
  /// {source, dest} (-1 past a non-periodic edge). Error(errc::invalid_argument) for an
  /// axis outside [0, ndims()).
  [[nodiscard]] std::pair<int, int> shift(int axis, int disp) const;

  /// For each k in directions(): sends send[k] to the neighbour at directions()[k] and
  /// receives recv[k] from it (what that neighbour sent in the opposite direction). Entries
  /// for directions with no neighbour are ignored (they may be empty). Both spans must have
  /// directions().size() entries, and each recv[k] exactly the size that neighbour sends.
  void halo_exchange(std::span<const std::span<const std::byte>> send,
                     std::span<const std::span<std::byte>> recv);
  /// halo_exchange() that returns at once: one Request (a group) that comm().wait()
  /// completes. The buffers must stay valid, and the send buffers unchanged, until then;
  /// compute what needs no halo meanwhile. Argument errors are thrown here, before
  /// anything is posted.
  ///
  ///     Request halo = grid.ihalo_exchange(send, recv);
  ///     update_interior();
  ///     grid.comm().wait(halo);
  ///     update_rim();
  [[nodiscard]] Request ihalo_exchange(std::span<const std::span<const std::byte>> send,
                                       std::span<const std::span<std::byte>> recv);

  /// ihalo_exchange() as persistent requests (Comm::send_init/recv_init), made once: each
  /// step starts them with comm().start(halo) and completes them with comm().wait(halo).
  /// The buffers must stay valid while the request lives.
  ///
  ///     Request halo = grid.halo_init(send, recv);
  ///     for (int step = 0; step < steps; ++step) {
  ///       grid.comm().start(halo);
  ///       update_interior();
  ///       grid.comm().wait(halo);
  ///       update_rim();
  ///     }
  [[nodiscard]] Request halo_init(std::span<const std::span<const std::byte>> send,
                                  std::span<const std::span<std::byte>> recv);

 private:
  CartComm(Comm& comm, std::shared_ptr<Comm> owned, int ndims, std::vector<int> dims,
           std::vector<bool> periodic);
  Request halo_requests(std::span<const std::span<const std::byte>> send,
                        std::span<const std::span<std::byte>> recv, bool persistent,
                        const char* what);

  std::shared_ptr<Comm> owned_;  // the communicator of a sub() grid
  Comm& comm_;
  int ndims_;
  std::vector<int> dims_;
  std::vector<bool> periodic_;
  std::vector<Offset> dirs_;
};

}  // namespace ipckit
