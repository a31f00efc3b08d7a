// D2Q9 lattice Boltzmann (BGK) on one rank's block of the domain, with a one-cell halo.
// Populations are stored structure-of-arrays, two copies (read the old, write the new);
// each step pulls the post-collision populations of the previous step from the neighbours
// (streaming) and collides in the same pass. Blocks larger than the last-level cache write
// the new copy with streaming (non-temporal) stores: a normal store would first read each
// line it writes, 216 bytes of memory traffic per update instead of 144. A step is split
// into the interior (cells that read no halo) and the rim, so that the halo exchange can
// run while the interior is updated. Walls are half-way bounce-back (a pull from a
// solid halo cell returns the cell's own opposite population, plus the moving-wall term for
// the lid). The halo is filled from the neighbouring blocks (CartComm::halo_exchange) or,
// for a periodic axis of one block, from the block itself. The decomposition and the
// time loop are in solver.hpp, the command line in main.cpp, the outputs in output.hpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace fluid {

enum class Case { cavity, taylor_green, channel };

struct Params {
  Case flow = Case::cavity;
  int nx = 129;  // global lattice size
  int ny = 129;
  double tau = 0.6;     // relaxation time (> 0.5)
  double u_lid = 0.1;   // cavity: lid speed (lattice units)
  double force = 0.0;   // channel: body force along x
  double tg_u0 = 0.01;  // taylor-green: initial velocity amplitude
  // Two-relaxation-time collision (more stable than BGK at high Re): the antisymmetric part
  // relaxes with a rate set by the "magic" parameter Lambda = 3/16.
  bool trt = false;
  double magic = 3.0 / 16;
  // Populations and the collision in float instead of double (half the memory traffic).
  bool single = false;
  // How the bulk of a step writes the new populations: automatic = streaming stores when
  // the two copies are larger than the last-level cache (fluid::solve decides for the whole
  // domain, whose blocks share the cache). Every choice gives the same bits.
  enum class Stores { automatic, cached, streaming };
  Stores stores = Stores::automatic;
};

// Lattice constants.
inline constexpr int kQ = 9;
inline constexpr std::array<int, kQ> kCx{0, 1, 0, -1, 0, 1, -1, -1, 1};
inline constexpr std::array<int, kQ> kCy{0, 0, 1, 0, -1, 1, 1, -1, -1};
inline constexpr std::array<int, kQ> kOpp{0, 3, 4, 1, 2, 7, 8, 5, 6};
inline constexpr std::array<double, kQ> kW{4.0 / 9,  1.0 / 9,  1.0 / 9,  1.0 / 9, 1.0 / 9,
                                           1.0 / 36, 1.0 / 36, 1.0 / 36, 1.0 / 36};

struct Diagnostics {
  double mass = 0;
  double kinetic = 0;  // sum of rho |u|^2 / 2
  double max_speed = 0;
  double residual = 0;  // sum of |u - u_prev|^2 (for steady-state detection)
};

// The last-level cache's size (sysconf; 32 MiB when unknown): Params::Stores::automatic
// streams when the populations do not fit in it.
std::size_t last_level_cache() noexcept;

// A cache-line aligned allocator: every population array starts on a line (cells_ is a
// whole number of lines), so streaming stores can write whole lines.
template <class T>
struct Aligned {
  using value_type = T;
  Aligned() = default;
  template <class U>
  explicit Aligned(const Aligned<U>& /*other*/) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, std::size_t /*n*/) noexcept { ::operator delete (p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const Aligned<U>& /*other*/) const noexcept {
    return true;
  }
};

// Real: the type of the populations and of the collision arithmetic (double or float);
// moments and diagnostics are reported in double.
template <class Real>
class BlockT {
 public:
  using real = Real;
  // The block [x0, x0 + nx) x [y0, y0 + ny) of the global lattice p.nx x p.ny.
  BlockT(const Params& p, int x0, int y0, int nx, int ny);

  [[nodiscard]] int nx() const noexcept { return nx_; }
  [[nodiscard]] int ny() const noexcept { return ny_; }

  // One step: stream (pull) + collide. The halo of the current populations must be filled.
  void step();
  // The same step in three parts: step_interior() needs no halo (run it while the halo
  // exchange is in flight), step_rim() needs it, finish_step() makes the new populations
  // current.
  // wrap_x: the block is its own neighbour along x (periodic, one block): its x-halo is
  // filled during the sweep, row by row while the row is in cache, instead of by messages
  // (a column of a row-major block costs a cache miss per cell to pack and to unpack).
  void step_interior(bool wrap_x = false);
  void step_rim();
  void finish_step() noexcept;
  // True when the bulk of a step writes with streaming stores (Params::stores).
  [[nodiscard]] bool streaming() const noexcept { return streaming_; }
  // Fills the halo from this block itself on periodic axes (single block along that axis).
  void wrap_x();
  void wrap_y();

  // Cell (x, y) of the block, 0-based interior coordinates.
  [[nodiscard]] double rho(int x, int y) const;
  [[nodiscard]] std::array<double, 2> velocity(int x, int y) const;
  // Sums over the interior; the residual is against the velocities of the previous call.
  [[nodiscard]] Diagnostics diagnostics();

  // Halo buffers: of the interior cells along one side/corner, the populations that cross
  // it (3 per side cell, 1 for a corner: what the neighbour's pull reads); and the halo
  // cells on a side they go to. dir = (dx, dy), each in {-1, 0, 1}.
  [[nodiscard]] std::size_t edge_cells(int dx, int dy) const noexcept;
  // Values in a halo message towards or from dir: edge_cells() x crossing populations.
  [[nodiscard]] std::size_t halo_values(int dx, int dy) const noexcept;
  void pack(int dx, int dy, std::vector<Real>& out) const;   // interior cells facing dir
  void unpack(int dx, int dy, const std::vector<Real>& in);  // halo cells on side dir

  // Marks the halo on a side as a wall (no neighbour): bounce-back there.
  void set_wall(int dx, int dy, bool wall) noexcept;

 private:
  [[nodiscard]] std::size_t at(int x, int y) const noexcept {  // x, y from -1 (halo)
    return static_cast<std::size_t>(x + 1) + static_cast<std::size_t>(y + 1) * stride_;
  }
  void init();
  void step_cell(int x, int y) noexcept;
  void wrap_row_x(int y) noexcept;
  template <bool Trt, bool Stream>
  void step_bulk_row(int y, int xa, int xb) noexcept;

  Params p_;
  int x0_, y0_, nx_, ny_;
  std::size_t stride_;
  std::size_t cells_;
  Real omega_;
  Real omega_minus_;  // TRT: the antisymmetric rate
  bool streaming_ = false;
  std::vector<Real, Aligned<Real>> f_;  // kQ arrays of cells_ values: current
  std::vector<Real, Aligned<Real>> g_;  // next
  std::vector<std::uint8_t> solid_;     // per halo/interior cell: 1 = wall, 2 = moving lid
  std::vector<double> u_prev_;
};

using Block = BlockT<double>;
extern template class BlockT<double>;
extern template class BlockT<float>;

}  // namespace fluid
