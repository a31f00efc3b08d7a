#include "lbm.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

namespace fluid {
namespace {

constexpr std::uint8_t kFluid = 0;
constexpr std::uint8_t kWall = 1;
constexpr std::uint8_t kLid = 2;

template <class Real>
inline Real feq(int i, Real rho, Real ux, Real uy) {
  const Real cu = Real(kCx[i]) * ux + Real(kCy[i]) * uy;
  return Real(kW[i]) * rho *
         (Real(1) + Real(3) * cu + Real(4.5) * cu * cu - Real(1.5) * (ux * ux + uy * uy));
}

// The BGK collision of one cell, the one expression every path uses (bulk rows, edge cells,
// any decomposition): the same cell gets the same bits wherever it is computed. Written as
// (1 - om) f_i + om feq_i with each pair (i, opposite i) sharing its even part: 25 % fewer
// operations than f_i - om (f_i - feq_i) per population, which matters now that the in-place
// update leaves the kernel close to its arithmetic limit. fx: Guo body force along x (0: none).
template <class Real>
inline void collide(const Real* f, Real* out, Real om, Real fx) noexcept {
  const Real rho = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7] + f[8];
  const Real inv = Real(1) / rho;
  const Real ux = (f[1] - f[3] + f[5] - f[6] - f[7] + f[8] + Real(0.5) * fx) * inv;
  const Real uy = (f[2] - f[4] + f[5] + f[6] - f[7] - f[8]) * inv;
  const Real base = Real(1) - Real(1.5) * (ux * ux + uy * uy);
  const Real keep = Real(1) - om;
  const Real orho = om * rho;
  const Real r1 = orho * Real(1.0 / 9), r2 = orho * Real(1.0 / 36);
  const Real t1 = Real(3) * r1, t2 = Real(3) * r2;
  const Real a = ux + uy, b = uy - ux;
  out[0] = keep * f[0] + orho * Real(4.0 / 9) * base;
  const auto pair = [&](int i, int o, Real u, Real r, Real t) {
    const Real s = r * (Real(4.5) * u * u + base);
    const Real d = t * u;
    out[i] = keep * f[i] + (s + d);
    out[o] = keep * f[o] + (s - d);
  };
  pair(1, 3, ux, r1, t1);
  pair(2, 4, uy, r1, t1);
  pair(5, 7, a, r2, t2);
  pair(6, 8, b, r2, t2);
  if (fx != Real(0)) {
    for (int i = 0; i < kQ; ++i) {
      const Real cu = Real(kCx[i]) * ux + Real(kCy[i]) * uy;
      out[i] += (Real(1) - Real(0.5) * om) * Real(kW[i]) *
                (Real(3) * (Real(kCx[i]) - ux) * fx + Real(9) * cu * Real(kCx[i]) * fx);
    }
  }
}

// TRT: the symmetric part of each pair (i, opposite i) relaxes with om, the antisymmetric
// part with om_minus. The same expression for every path, like collide().
template <class Real>
inline void collide_trt(const Real* f, Real* out, Real om, Real om_minus, Real fx) noexcept {
  const Real rho = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7] + f[8];
  const Real inv = Real(1) / rho;
  const Real ux = (f[1] - f[3] + f[5] - f[6] - f[7] + f[8] + Real(0.5) * fx) * inv;
  const Real uy = (f[2] - f[4] + f[5] + f[6] - f[7] - f[8]) * inv;
  Real eq[kQ];
  for (int i = 0; i < kQ; ++i) eq[i] = feq(i, rho, ux, uy);
  out[0] = f[0] - om * (f[0] - eq[0]);
  for (int i = 1; i < kQ; ++i) {
    const int o = kOpp[i];
    const Real sp = Real(0.5) * (f[i] + f[o]) - Real(0.5) * (eq[i] + eq[o]);
    const Real sm = Real(0.5) * (f[i] - f[o]) - Real(0.5) * (eq[i] - eq[o]);
    out[i] = f[i] - om * sp - om_minus * sm;
  }
  if (fx != Real(0)) {
    for (int i = 0; i < kQ; ++i) {
      const Real cu = Real(kCx[i]) * ux + Real(kCy[i]) * uy;
      out[i] += (Real(1) - Real(0.5) * om) * Real(kW[i]) *
                (Real(3) * (Real(kCx[i]) - ux) * fx + Real(9) * cu * Real(kCx[i]) * fx);
    }
  }
}

}  // namespace

namespace {

// Whether population i crosses into the neighbour at (dx, dy): it moves that way on every
// axis the direction names (3 populations for a side, 1 for a corner).
constexpr bool crosses(int i, int dx, int dy) noexcept {
  return (dx == 0 || kCx[static_cast<std::size_t>(i)] == dx) &&
         (dy == 0 || kCy[static_cast<std::size_t>(i)] == dy);
}

}  // namespace

template <class Real>
BlockT<Real>::BlockT(const Params& p, int x0, int y0, int nx, int ny)
    : p_(p),
      x0_(x0),
      y0_(y0),
      nx_(nx),
      ny_(ny),
      stride_(static_cast<std::size_t>(nx) + 2),
      // A whole number of cache lines per population array.
      cells_(((static_cast<std::size_t>(nx) + 2) * (static_cast<std::size_t>(ny) + 2) +
              64 / sizeof(Real) - 1) /
             (64 / sizeof(Real)) * (64 / sizeof(Real))),
      omega_(static_cast<Real>(1.0 / p.tau)),
      omega_minus_(static_cast<Real>(1.0 / (p.magic / (p.tau - 0.5) + 0.5))) {
  if (p.tau <= 0.5) throw std::invalid_argument("tau must be above 0.5");
  if (nx < 1 || ny < 1) throw std::invalid_argument("a block needs at least one cell");
  f_.assign(kQ * cells_, 0.0);
  solid_.assign(cells_, kFluid);
  u_prev_.assign(2 * static_cast<std::size_t>(nx) * static_cast<std::size_t>(ny), 0.0);
  init();
}

template <class Real>
void BlockT<Real>::set_wall(int dx, int dy, bool wall) noexcept {
  const std::uint8_t v = wall ? (p_.flow == Case::cavity && dy == 1 ? kLid : kWall) : kFluid;
  for (int y = -1; y <= ny_; ++y) {
    for (int x = -1; x <= nx_; ++x) {
      const bool on = (dx == -1 && x == -1) || (dx == 1 && x == nx_) || (dy == -1 && y == -1) ||
                      (dy == 1 && y == ny_);
      if (!on) continue;
      // The lid spans the top of the cavity only: its two corner cells stay side walls (init()
      // lays the side walls first). A moving corner would drive the fluid beside the side
      // walls: a first-order error, 3.8 % in the Re = 1000 extrema on 129², against 0.5 %
      // with still corners.
      if (v == kLid && solid_[at(x, y)] == kWall) continue;
      solid_[at(x, y)] = v;
    }
  }
}

// The initial populations are the equilibrium, stored as post-collision populations in the
// swapped layout: the first step is a neighbour step.
template <class Real>
void BlockT<Real>::init() {
  // Walls on the global boundary of non-periodic axes.
  const bool last_x = x0_ + nx_ == p_.nx;
  const bool last_y = y0_ + ny_ == p_.ny;
  if (p_.flow == Case::cavity) {
    if (x0_ == 0) set_wall(-1, 0, true);
    if (last_x) set_wall(1, 0, true);
    if (y0_ == 0) set_wall(0, -1, true);
    if (last_y) set_wall(0, 1, true);
  } else if (p_.flow == Case::channel) {
    if (y0_ == 0) set_wall(0, -1, true);
    if (last_y) set_wall(0, 1, true);
  }
  const double kx = 2 * std::numbers::pi / p_.nx;
  const double ky = 2 * std::numbers::pi / p_.ny;
  for (int y = 0; y < ny_; ++y) {
    for (int x = 0; x < nx_; ++x) {
      double rho = 1.0, ux = 0.0, uy = 0.0;
      if (p_.flow == Case::taylor_green) {
        const double gx = x0_ + x, gy = y0_ + y;
        ux = -p_.tg_u0 * std::cos(kx * gx) * std::sin(ky * gy);
        uy = p_.tg_u0 * std::sin(kx * gx) * std::cos(ky * gy);
        const double pr =
            -p_.tg_u0 * p_.tg_u0 / 4 * (std::cos(2 * kx * gx) + std::cos(2 * ky * gy));
        rho = 1.0 + 3.0 * pr;
      }
      for (int i = 0; i < kQ; ++i) {
        f(kOpp[i], x, y) =
            feq<Real>(i, static_cast<Real>(rho), static_cast<Real>(ux), static_cast<Real>(uy));
      }
    }
  }
  streamed_ = false;
}

template <class Real>
Real BlockT<Real>::post(int i, int x, int y) const noexcept {
  // Streamed: the population moved on into the neighbour's slot i (or, beside a wall, into
  // the wall cell's slot, which the neighbour step keeps for this).
  return streamed_ ? f(i, x + kCx[i], y + kCy[i]) : f(kOpp[i], x, y);
}

// The straight-line paths: cells whose neighbours are all fluid and whose words no message
// carries take unit stride along x over the nine population arrays, which the compiler
// vectorises. A cell reads and writes one set of words, disjoint from every other cell's:
// the iterations are independent (ivdep), in place.
template <class Real>
template <bool Trt>
void BlockT<Real>::neighbour_row(int y, int xa, int xb) noexcept {
  const Real* src[kQ];
  Real* dst[kQ];
  for (int i = 0; i < kQ; ++i) {
    src[i] = &f_[kOpp[i] * cells_ + at(xa - kCx[i], y - kCy[i])];
    dst[i] = &f_[i * cells_ + at(xa + kCx[i], y + kCy[i])];
  }
  sweep<Trt>(src, dst, xb - xa + 1);
}

template <class Real>
template <bool Trt>
void BlockT<Real>::local_row(int y, int xa, int xb) noexcept {
  const Real* src[kQ];
  Real* dst[kQ];
  for (int i = 0; i < kQ; ++i) {
    src[i] = &f_[i * cells_ + at(xa, y)];
    dst[i] = &f_[kOpp[i] * cells_ + at(xa, y)];
  }
  sweep<Trt>(src, dst, xb - xa + 1);
}

// Cell k: the populations at src[i][k] in, the new ones to dst[i][k]. The words one cell
// reads are the words it writes, and no other cell's (both row kinds): the iterations are
// independent, in place.
template <class Real>
template <bool Trt>
void BlockT<Real>::sweep(const Real* const* src, Real* const* dst, int n) noexcept {
  const Real om = omega_, omm = omega_minus_;
#pragma GCC ivdep
  for (int k = 0; k < n; ++k) {
    Real fi[kQ];
    Real o[kQ];
    for (int i = 0; i < kQ; ++i) fi[i] = src[i][k];
    if constexpr (Trt) {
      collide_trt(fi, o, om, omm, Real(0));
    } else {
      collide(fi, o, om, Real(0));
    }
    for (int i = 0; i < kQ; ++i) dst[i][k] = o[i];
  }
}

// One cell's collision on the general path (either model, the body force).
template <class Real>
void BlockT<Real>::collide_cell(const Real* fi, Real* out) const noexcept {
  const Real fx = static_cast<Real>(p_.flow == Case::channel ? p_.force : 0.0);
  if (p_.trt) {
    collide_trt(fi, out, omega_, omega_minus_, fx);
  } else {
    collide(fi, out, omega_, fx);
  }
}

// The general neighbour step of one cell: walls, the lid, the body force.
template <class Real>
void BlockT<Real>::neighbour_cell(int x, int y) noexcept {
  const Real lid = static_cast<Real>(p_.u_lid);
  Real fi[kQ];
  for (int i = 0; i < kQ; ++i) {
    const int sx = x - kCx[i], sy = y - kCy[i];
    const std::uint8_t s = solid_[at(sx, sy)];
    if (s == kFluid) {
      fi[i] = f(kOpp[i], sx, sy);
    } else {
      // Half-way bounce-back: what left this cell towards the wall comes back (the
      // previous step left it in this cell's slot i, the swapped layout).
      fi[i] = f(i, x, y);
      if (s == kLid) fi[i] += Real(6) * Real(kW[i]) * (Real(kCx[i]) * lid);
    }
  }
  Real out[kQ];
  collide_cell(fi, out);
  for (int i = 0; i < kQ; ++i) {
    const int dx = x + kCx[i], dy = y + kCy[i];
    const std::uint8_t s = solid_[at(dx, dy)];
    // Into the wall cell's slot i too: post() reads it there (nothing else does).
    f(i, dx, dy) = out[i];
    if (s != kFluid) {
      // Bounced back: it arrives here as the opposite population (the same sum a pull
      // from the wall would make, so the same bits).
      const int o = kOpp[i];
      Real back = out[i];
      if (s == kLid) back += Real(6) * Real(kW[o]) * (Real(kCx[o]) * lid);
      f(o, x, y) = back;
    }
  }
}

template <class Real>
void BlockT<Real>::local_cell(int x, int y) noexcept {
  Real fi[kQ];
  for (int i = 0; i < kQ; ++i) fi[i] = f(i, x, y);
  Real out[kQ];
  collide_cell(fi, out);
  for (int i = 0; i < kQ; ++i) f(kOpp[i], x, y) = out[i];
}

template <class Real>
void BlockT<Real>::step() {
  step_interior();
  step_rim();
  finish_step();
}

// Row y's x-sides of a block that is its own x-neighbour. Before a neighbour step: the
// edge cells' post-collision populations that cross (opposite slots) into the halo on the
// other side. Before a local step: what the neighbour step wrote into the halo on one side
// into the edge cell on the other, of the populations that began in this block's row range
// (the others came from a y-neighbour through a corner, or bounced off a wall already).
template <class Real>
void BlockT<Real>::wrap_row_x(int y) noexcept {
  if (!streamed_) {
    for (const int i : {1, 5, 8}) f(kOpp[i], -1, y) = f(kOpp[i], nx_ - 1, y);
    for (const int i : {3, 6, 7}) f(kOpp[i], nx_, y) = f(kOpp[i], 0, y);
    return;
  }
  for (const int i : {1, 5, 8}) {
    const int from = y - kCy[i];
    if (from >= 0 && from < ny_) f(i, 0, y) = f(i, nx_, y);
  }
  for (const int i : {3, 6, 7}) {
    const int from = y - kCy[i];
    if (from >= 0 && from < ny_) f(i, nx_ - 1, y) = f(i, -1, y);
  }
}

template <class Real>
void BlockT<Real>::wrap(bool along_x, bool along_y) {
  if (along_x) {
    for (int y = 0; y < ny_; ++y) wrap_row_x(y);
  }
  if (along_y) {
    if (!streamed_) {
      for (int x = 0; x < nx_; ++x) {
        for (const int i : {2, 5, 6}) f(kOpp[i], x, -1) = f(kOpp[i], x, ny_ - 1);
        for (const int i : {4, 7, 8}) f(kOpp[i], x, ny_) = f(kOpp[i], x, 0);
      }
    } else {
      for (int x = 0; x < nx_; ++x) {
        for (const int i : {2, 5, 6}) {
          const int from = x - kCx[i];
          if (from >= 0 && from < nx_) f(i, x, 0) = f(i, x, ny_);
        }
        for (const int i : {4, 7, 8}) {
          const int from = x - kCx[i];
          if (from >= 0 && from < nx_) f(i, x, ny_ - 1) = f(i, x, -1);
        }
      }
    }
  }
  if (along_x && along_y) {
    // The corners: the diagonal neighbour is the block itself.
    const int l = 0, r = nx_ - 1, b = 0, t = ny_ - 1;
    if (!streamed_) {
      f(kOpp[5], -1, -1) = f(kOpp[5], r, t);
      f(kOpp[6], nx_, -1) = f(kOpp[6], l, t);
      f(kOpp[7], nx_, ny_) = f(kOpp[7], l, b);
      f(kOpp[8], -1, ny_) = f(kOpp[8], r, b);
    } else {
      f(5, l, b) = f(5, nx_, ny_);
      f(6, r, b) = f(6, -1, ny_);
      f(7, r, t) = f(7, -1, -1);
      f(8, l, t) = f(8, nx_, -1);
    }
  }
}

template <class Real>
void BlockT<Real>::step_interior(bool wrap_x) {
  rows_whole_ = false;
  if (nx_ < 3 || ny_ < 3) {
    if (wrap_x) {
      for (int y = 0; y < ny_; ++y) wrap_row_x(y);
    }
    return;
  }
  // The x-sides of rows 0 and ny-1 (rim rows; a neighbour step of row 1 reads row 0's).
  if (wrap_x) {
    wrap_row_x(0);
    wrap_row_x(ny_ - 1);
    if (!streamed_ && ny_ > 2) wrap_row_x(1);
  }
  rows_whole_ = wrap_x;
  // The body force needs the general path everywhere (the bulk path has none).
  const bool bulk = p_.flow != Case::channel || p_.force == 0.0;
  const int xa = wrap_x ? 0 : 1, xb = wrap_x ? nx_ - 1 : nx_ - 2;
  for (int y = 1; y < ny_ - 1; ++y) {
    // While the rows are in cache: a neighbour step of row y reads rows y-1 .. y+1 of the
    // halo; a local step of row y reads row y's edge cells.
    if (wrap_x) {
      if (!streamed_) {
        if (y + 1 < ny_ - 1) wrap_row_x(y + 1);
      } else {
        wrap_row_x(y);
      }
    }
    if (!bulk) {
      for (int x = xa; x <= xb; ++x) cell(x, y);
    } else if (!streamed_) {
      p_.trt ? neighbour_row<true>(y, xa, xb) : neighbour_row<false>(y, xa, xb);
    } else {
      p_.trt ? local_row<true>(y, xa, xb) : local_row<false>(y, xa, xb);
    }
  }
}

// The rest of the block: rows 0 and ny-1, and columns 0 and nx-1 unless the interior took
// whole rows.
template <class Real>
void BlockT<Real>::step_rim() {
  // Whole rim rows take the straight-line path too when they can: a local step always (it
  // touches no neighbour), a neighbour step when no wall is within reach of the row. Same
  // arithmetic as cell(), so the same bits; on a 256² block the general path for the two
  // rows cost ~5 % of a step.
  const bool bulk = p_.flow != Case::channel || p_.force == 0.0;
  const auto row = [&](int y) {
    if (bulk && streamed_) {
      p_.trt ? local_row<true>(y, 0, nx_ - 1) : local_row<false>(y, 0, nx_ - 1);
    } else if (bulk && clear_around_row(y)) {
      p_.trt ? neighbour_row<true>(y, 0, nx_ - 1) : neighbour_row<false>(y, 0, nx_ - 1);
    } else {
      for (int x = 0; x < nx_; ++x) cell(x, y);
    }
  };
  for (int y = 0; y < ny_; ++y) {
    if (y == 0 || y == ny_ - 1 || nx_ < 3 || ny_ < 3) {
      row(y);
    } else if (!rows_whole_) {
      cell(0, y);
      if (nx_ > 1) cell(nx_ - 1, y);
    }
  }
}

// No wall in rows y-1 .. y+1 from x = -1 to nx: what a neighbour step of row y touches.
template <class Real>
bool BlockT<Real>::clear_around_row(int y) const noexcept {
  for (int r = y - 1; r <= y + 1; ++r) {
    for (int x = -1; x <= nx_; ++x) {
      if (solid_[at(x, r)] != kFluid) return false;
    }
  }
  return true;
}

template <class Real>
void BlockT<Real>::finish_step() noexcept {
  streamed_ = !streamed_;
  rows_whole_ = false;
}

template <class Real>
double BlockT<Real>::rho(int x, int y) const {
  double r = 0;
  for (int i = 0; i < kQ; ++i) r += post(i, x, y);
  return r;
}

template <class Real>
std::array<double, 2> BlockT<Real>::velocity(int x, int y) const {
  double r = 0, mx = 0, my = 0;
  for (int i = 0; i < kQ; ++i) {
    const double v = post(i, x, y);
    r += v;
    mx += kCx[i] * v;
    my += kCy[i] * v;
  }
  const double fx = p_.flow == Case::channel ? p_.force : 0.0;
  return {(mx + 0.5 * fx) / r, my / r};
}

template <class Real>
Diagnostics BlockT<Real>::diagnostics() {
  Diagnostics d;
  std::size_t k = 0;
  for (int y = 0; y < ny_; ++y) {
    for (int x = 0; x < nx_; ++x, k += 2) {
      const double r = rho(x, y);
      const auto u = velocity(x, y);
      const double s2 = u[0] * u[0] + u[1] * u[1];
      d.mass += r;
      d.kinetic += 0.5 * r * s2;
      d.max_speed = std::max(d.max_speed, std::sqrt(s2));
      const double du = u[0] - u_prev_[k], dv = u[1] - u_prev_[k + 1];
      d.residual += du * du + dv * dv;
      u_prev_[k] = u[0];
      u_prev_[k + 1] = u[1];
    }
  }
  return d;
}

template <class Real>
std::size_t BlockT<Real>::edge_cells(int dx, int dy) const noexcept {
  if (dx != 0 && dy != 0) return 1;
  return static_cast<std::size_t>(dx != 0 ? ny_ : nx_);
}

template <class Real>
std::size_t BlockT<Real>::halo_values(int dx, int dy) const noexcept {
  return edge_cells(dx, dy) * (dx != 0 && dy != 0 ? 1 : 3);
}

// Visits (i, x, y) for the cells of side (dx, dy) at depth `out` (0: the block's edge
// cells, 1: the halo beyond them; a side's run along it, a corner's one cell) and the
// populations i that cross (pdx, pdy). Sender and receiver visit in the same order.
template <class Real>
template <class Visit>
void BlockT<Real>::side(int dx, int dy, int out, int pdx, int pdy, Visit&& visit) const {
  const int cx = dx < 0 ? -out : nx_ - 1 + out, cy = dy < 0 ? -out : ny_ - 1 + out;
  const int xa = dx == 0 ? 0 : cx, xb = dx == 0 ? nx_ - 1 : cx;
  const int ya = dy == 0 ? 0 : cy, yb = dy == 0 ? ny_ - 1 : cy;
  for (int i = 0; i < kQ; ++i) {
    if (!crosses(i, pdx, pdy)) continue;
    for (int y = ya; y <= yb; ++y) {
      for (int x = xa; x <= xb; ++x) visit(i, x, y);
    }
  }
}

// Before a neighbour step, a message towards (dx, dy) carries the post-collision populations
// of the edge cells that move that way (opposite slots), and the receiver keeps them in its
// halo on the side they come from. Before a local step, it carries what this block's
// neighbour step wrote into its halo on side (dx, dy), and the receiver stores them in its
// edge cells on that side; a value that began outside the sender (in a corner block, whose
// corner message brings it, or in a wall, which bounced it already) is sent but not stored.
template <class Real>
void BlockT<Real>::pack(int dx, int dy, std::vector<Real>& out) const {
  out.clear();
  if (!streamed_) {
    side(dx, dy, 0, dx, dy, [&](int i, int x, int y) { out.push_back(f(kOpp[i], x, y)); });
  } else {
    side(dx, dy, 1, dx, dy, [&](int i, int x, int y) { out.push_back(f(i, x, y)); });
  }
}

template <class Real>
void BlockT<Real>::unpack(int dx, int dy, const std::vector<Real>& in) {
  if (in.size() != halo_values(dx, dy)) throw std::invalid_argument("halo message of a wrong size");
  std::size_t k = 0;
  if (!streamed_) {
    side(dx, dy, 1, -dx, -dy, [&](int i, int x, int y) { f(kOpp[i], x, y) = in[k++]; });
    return;
  }
  const bool corner = dx != 0 && dy != 0;
  side(dx, dy, 0, -dx, -dy, [&](int i, int x, int y) {
    const Real v = in[k++];
    // Where the value began, along the side: inside the sender's run, or not its to send.
    const int from = dx == 0 ? x - kCx[i] : y - kCy[i];
    const int len = dx == 0 ? nx_ : ny_;
    if (corner || (from >= 0 && from < len)) f(i, x, y) = v;
  });
}

template class BlockT<double>;
template class BlockT<float>;

}  // namespace fluid
