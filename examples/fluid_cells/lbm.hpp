// D2Q9 lattice Boltzmann (BGK or TRT) on one rank's block of the domain, with a one-cell halo.
// Populations are stored structure-of-arrays in ONE copy, updated in place with the AA
// pattern (Bailey et al. 2009): steps alternate between
//  - a neighbour step: each cell reads the post-collision populations its neighbours left
//    in their opposite slots, collides, and writes each new population into the slot of the
//    neighbour it moves to (the very slots it read: no two cells touch the same word);
//  - a local step: each cell reads its own slots (what arrived), collides, and writes each
//    new population into its own opposite slot.
// Between them the copy is "streamed" (slot i of x holds what moves into x along i); after a
// local step (and at the start) it is "swapped" (slot opp(i) of x holds x's post-collision
// population i). One copy, each word read and written once per step: 9 read-modify-write
// streams instead of two grids' 9 reads and 9 writes (18 streams, reaching about a third
// less bandwidth here: fluid_bench's pattern rows), and no write-allocate traffic. The arithmetic
// per cell is a two-grid pull scheme's (the in-place kernel gave the previous two-copy kernel's
// bits exactly). A step is split into the interior (cells whose words no message carries) and the
// rim, so that the halo exchange can run while the interior is updated. Before a neighbour step the
// halo receives the neighbours' edge populations that cross; before a local step the edge
// cells receive what the neighbours' neighbour step wrote into their halo. Walls are half-way
// bounce-back (a population moving into a solid halo cell comes back into the cell's own
// opposite slot, plus the moving-wall term for the lid). The halo is filled from the
// neighbouring blocks (CartComm::halo_exchange) or, for a periodic axis of one block, from
// the block itself. The decomposition and the time loop are in solver.hpp, the command line
// in main.cpp, the outputs in output.hpp.
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

// A cache-line aligned allocator: every population array starts on a line (cells_ is a
// whole number of lines).
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

  // One step (a neighbour step or a local step, alternately). The halo for it must be filled
  // (pack/unpack, or wrap() for a periodic block alone along an axis).
  void step();
  // The same step in three parts: step_interior() needs nothing from the neighbours (run it
  // while the halo exchange is in flight), step_rim() needs it, finish_step() ends the step.
  // wrap_x: the block is its own neighbour along x (periodic, one block): it fills its own
  // x-sides during the sweep, row by row while the row is in cache, instead of by messages
  // (a column of a row-major block costs a cache miss per cell to pack and to unpack), and
  // the sweep then takes whole rows.
  void step_interior(bool wrap_x = false);
  void step_rim();
  void finish_step() noexcept;
  // Fills, for the next step, what a periodic axis of a single block needs from the block
  // itself (x: the left and right sides, y: bottom and top, both: the corners too).
  void wrap(bool along_x, bool along_y);

  // Cell (x, y) of the block, 0-based interior coordinates.
  [[nodiscard]] double rho(int x, int y) const;
  [[nodiscard]] std::array<double, 2> velocity(int x, int y) const;
  // Sums over the interior; the residual is against the velocities of the previous call.
  [[nodiscard]] Diagnostics diagnostics();

  // Halo messages, for the next step: the populations that cross a side or corner of the
  // block, 3 per side cell and 1 for a corner. Before a neighbour step, a block sends the
  // post-collision populations of its edge cells that move towards dir, and the receiver
  // keeps them in its halo; before a local step, it sends what its neighbour step wrote into
  // its halo on side dir, and the receiver stores them in its edge cells (of a side's values,
  // the two that began outside the sender's run are skipped: the corner block's message
  // brings such a value, or, beside a wall, the receiver's own bounce-back made it).
  // dir = (dx, dy), each in {-1, 0, 1}.
  [[nodiscard]] std::size_t edge_cells(int dx, int dy) const noexcept;
  // Values in a halo message towards or from dir: edge_cells() x crossing populations.
  [[nodiscard]] std::size_t halo_values(int dx, int dy) const noexcept;
  void pack(int dx, int dy, std::vector<Real>& out) const;   // towards dir
  void unpack(int dx, int dy, const std::vector<Real>& in);  // from the neighbour at dir

  // Marks the halo on a side as a wall (no neighbour): bounce-back there.
  void set_wall(int dx, int dy, bool wall) noexcept;

 private:
  [[nodiscard]] std::size_t at(int x, int y) const noexcept {  // x, y from -1 (halo)
    return static_cast<std::size_t>(x + 1) + static_cast<std::size_t>(y + 1) * stride_;
  }
  // Slot i of cell (x, y).
  [[nodiscard]] Real& f(int i, int x, int y) noexcept { return f_[i * cells_ + at(x, y)]; }
  [[nodiscard]] Real f(int i, int x, int y) const noexcept { return f_[i * cells_ + at(x, y)]; }
  // Post-collision population i of cell (x, y) after the last step, in either layout.
  [[nodiscard]] Real post(int i, int x, int y) const noexcept;
  void init();
  void neighbour_cell(int x, int y) noexcept;
  void local_cell(int x, int y) noexcept;
  void cell(int x, int y) noexcept { streamed_ ? local_cell(x, y) : neighbour_cell(x, y); }
  void wrap_row_x(int y) noexcept;
  [[nodiscard]] bool clear_around_row(int y) const noexcept;
  template <class Visit>
  void side(int dx, int dy, int out, int pdx, int pdy, Visit&& visit) const;
  template <bool Trt>
  void neighbour_row(int y, int xa, int xb) noexcept;
  template <bool Trt>
  void local_row(int y, int xa, int xb) noexcept;
  template <bool Trt>
  void sweep(const Real* const* src, Real* const* dst, int n) noexcept;
  void collide_cell(const Real* fi, Real* out) const noexcept;

  Params p_;
  int x0_, y0_, nx_, ny_;
  std::size_t stride_;
  std::size_t cells_;
  Real omega_;
  Real omega_minus_;                    // TRT: the antisymmetric rate
  bool streamed_ = false;               // the layout (see the top of this file); false after init()
  bool rows_whole_ = false;             // the last step_interior() took whole rows (wrap_x)
  std::vector<Real, Aligned<Real>> f_;  // kQ arrays of cells_ values
  std::vector<std::uint8_t> solid_;     // per halo/interior cell: 1 = wall, 2 = moving lid
  std::vector<double> u_prev_;
};

using Block = BlockT<double>;
extern template class BlockT<double>;
extern template class BlockT<float>;

}  // namespace fluid
