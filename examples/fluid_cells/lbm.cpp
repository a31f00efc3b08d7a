#include "lbm.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <stdexcept>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

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
// any decomposition): the same cell gets the same bits wherever it is computed. fx: Guo
// body force along x (0: none).
template <class Real>
inline void collide(const Real* f, Real* out, Real om, Real fx) noexcept {
  const Real rho = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7] + f[8];
  const Real inv = Real(1) / rho;
  const Real ux = (f[1] - f[3] + f[5] - f[6] - f[7] + f[8] + Real(0.5) * fx) * inv;
  const Real uy = (f[2] - f[4] + f[5] + f[6] - f[7] - f[8]) * inv;
  const Real usq = Real(1.5) * (ux * ux + uy * uy);
  const Real r0 = rho * Real(4.0 / 9), r1 = rho * Real(1.0 / 9), r2 = rho * Real(1.0 / 36);
  const Real a = ux + uy, b = uy - ux;
  out[0] = f[0] - om * (f[0] - r0 * (Real(1) - usq));
  out[1] = f[1] - om * (f[1] - r1 * (Real(1) + Real(3) * ux + Real(4.5) * ux * ux - usq));
  out[2] = f[2] - om * (f[2] - r1 * (Real(1) + Real(3) * uy + Real(4.5) * uy * uy - usq));
  out[3] = f[3] - om * (f[3] - r1 * (Real(1) - Real(3) * ux + Real(4.5) * ux * ux - usq));
  out[4] = f[4] - om * (f[4] - r1 * (Real(1) - Real(3) * uy + Real(4.5) * uy * uy - usq));
  out[5] = f[5] - om * (f[5] - r2 * (Real(1) + Real(3) * a + Real(4.5) * a * a - usq));
  out[6] = f[6] - om * (f[6] - r2 * (Real(1) + Real(3) * b + Real(4.5) * b * b - usq));
  out[7] = f[7] - om * (f[7] - r2 * (Real(1) - Real(3) * a + Real(4.5) * a * a - usq));
  out[8] = f[8] - om * (f[8] - r2 * (Real(1) - Real(3) * b + Real(4.5) * b * b - usq));
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

// Writes the 64-byte line at `src` to `dst` (both line aligned) with streaming stores,
// which do not read the line first.
template <class Real>
inline void stream_line(Real* dst, const Real* src) noexcept {
#if defined(__AVX__)
  if constexpr (sizeof(Real) == 8) {
    _mm256_stream_pd(dst, _mm256_load_pd(src));
    _mm256_stream_pd(dst + 4, _mm256_load_pd(src + 4));
  } else {
    _mm256_stream_ps(dst, _mm256_load_ps(src));
    _mm256_stream_ps(dst + 8, _mm256_load_ps(src + 8));
  }
#elif defined(__SSE2__)
  constexpr int kStep = 16 / sizeof(Real);
  for (int j = 0; j < 64 / static_cast<int>(sizeof(Real)); j += kStep) {
    if constexpr (sizeof(Real) == 8) {
      _mm_stream_pd(dst + j, _mm_load_pd(src + j));
    } else {
      _mm_stream_ps(dst + j, _mm_load_ps(src + j));
    }
  }
#else
  std::memcpy(dst, src, 64);
#endif
}

inline void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();  // streaming stores are weakly ordered: done before anyone reads them
#endif
}

}  // namespace

std::size_t last_level_cache() noexcept {
  long bytes = -1;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  bytes = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return bytes > 0 ? static_cast<std::size_t>(bytes) : std::size_t{32} << 20;
}

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
  g_.assign(kQ * cells_, 0.0);
  const std::size_t both = 2 * kQ * cells_ * sizeof(Real);
  streaming_ = p.stores == Params::Stores::streaming ||
               (p.stores == Params::Stores::automatic && both > last_level_cache());
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
        f_[i * cells_ + at(x, y)] =
            feq<Real>(i, static_cast<Real>(rho), static_cast<Real>(ux), static_cast<Real>(uy));
      }
    }
  }
}

template <class Real>
void BlockT<Real>::wrap_x() {
  for (int y = 0; y < ny_; ++y) {
    for (int i = 0; i < kQ; ++i) {
      f_[i * cells_ + at(-1, y)] = f_[i * cells_ + at(nx_ - 1, y)];
      f_[i * cells_ + at(nx_, y)] = f_[i * cells_ + at(0, y)];
    }
  }
}

template <class Real>
void BlockT<Real>::wrap_y() {
  for (int x = -1; x <= nx_; ++x) {
    for (int i = 0; i < kQ; ++i) {
      f_[i * cells_ + at(x, -1)] = f_[i * cells_ + at(x, ny_ - 1)];
      f_[i * cells_ + at(x, ny_)] = f_[i * cells_ + at(x, 0)];
    }
  }
}

// Cells whose eight neighbours are all fluid (every cell not on the block's outer ring:
// solids live only in the halo) take the straight-line path: no mask, unit stride along x
// over the nine population arrays, which the compiler vectorises.
// With Stream, the cells are updated a cache line at a time into a small buffer, and each
// population's line goes to memory with streaming stores; the cells before the first whole
// line and after the last are written normally. Same arithmetic, same bits.
template <class Real>
template <bool Trt, bool Stream>
void BlockT<Real>::step_bulk_row(int y, int xa, int xb) noexcept {
  const Real* __restrict src[kQ];
  Real* __restrict dst[kQ];
  for (int i = 0; i < kQ; ++i) {
    src[i] = &f_[i * cells_ + at(xa - kCx[i], y - kCy[i])];
    dst[i] = &g_[i * cells_ + at(xa, y)];
  }
  const Real om = omega_, omm = omega_minus_;
  // Cell k of the arrays `in` to cell k of `out` (pointer arrays: the row, or a line buffer).
  const auto cell = [om, omm](const auto& in, const auto& out, int k) {
    Real f[kQ];
    Real o[kQ];
    for (int i = 0; i < kQ; ++i) f[i] = in[i][k];
    if constexpr (Trt) {
      collide_trt(f, o, om, omm, Real(0));
    } else {
      collide(f, o, om, Real(0));
    }
    for (int i = 0; i < kQ; ++i) out[i][k] = o[i];
  };
  const int n = xb - xa + 1;
  int k = 0;
  if constexpr (Stream) {
    constexpr int kLine = 64 / sizeof(Real);
    // Every array has the same offset within its line (cells_ is whole lines).
    const auto misalign =
        static_cast<int>((reinterpret_cast<std::uintptr_t>(dst[0]) % 64) / sizeof(Real));
    const int head = std::min(n, misalign == 0 ? 0 : kLine - misalign);
    for (; k < head; ++k) cell(src, dst, k);
    alignas(64) Real line[kQ][kLine];
    for (; k + kLine <= n; k += kLine) {
      Real* const out[kQ] = {line[0], line[1], line[2], line[3], line[4],
                             line[5], line[6], line[7], line[8]};
      const Real* in[kQ];
      for (int i = 0; i < kQ; ++i) in[i] = src[i] + k;
#pragma GCC ivdep
      for (int j = 0; j < kLine; ++j) cell(in, out, j);
      for (int i = 0; i < kQ; ++i) stream_line(dst[i] + k, line[i]);
    }
  }
#pragma GCC ivdep
  for (; k < n; ++k) cell(src, dst, k);
}

template <class Real>
void BlockT<Real>::step_cell(int x, int y) noexcept {
  const Real fx = static_cast<Real>(p_.flow == Case::channel ? p_.force : 0.0);
  const Real lid = static_cast<Real>(p_.u_lid);
  const std::size_t c = at(x, y);
  Real fi[kQ];
  for (int i = 0; i < kQ; ++i) {
    const std::size_t src = at(x - kCx[i], y - kCy[i]);
    const std::uint8_t s = solid_[src];
    if (s == kFluid) {
      fi[i] = f_[i * cells_ + src];
    } else {
      // Half-way bounce-back: what left this cell towards the wall comes back.
      fi[i] = f_[kOpp[i] * cells_ + c];
      if (s == kLid) fi[i] += Real(6) * Real(kW[i]) * (Real(kCx[i]) * lid);
    }
  }
  Real out[kQ];
  if (p_.trt) {
    collide_trt(fi, out, omega_, omega_minus_, fx);
  } else {
    collide(fi, out, omega_, fx);
  }
  for (int i = 0; i < kQ; ++i) g_[i * cells_ + c] = out[i];
}

template <class Real>
void BlockT<Real>::step() {
  step_interior();
  step_rim();
  finish_step();
}

// Cells 1 .. n-2 on both axes: their neighbours are block cells, never halo.
template <class Real>
void BlockT<Real>::wrap_row_x(int y) noexcept {
  // The populations that cross x's sides (what a neighbouring block would send).
  for (const int i : {1, 5, 8}) f_[i * cells_ + at(-1, y)] = f_[i * cells_ + at(nx_ - 1, y)];
  for (const int i : {3, 6, 7}) f_[i * cells_ + at(nx_, y)] = f_[i * cells_ + at(0, y)];
}

template <class Real>
void BlockT<Real>::step_interior(bool wrap_x) {
  if (wrap_x) {
    wrap_row_x(0);
    if (ny_ > 1) wrap_row_x(ny_ - 1);
  }
  if (nx_ < 3 || ny_ < 3) {
    for (int y = 1; wrap_x && y < ny_ - 1; ++y) wrap_row_x(y);
    return;
  }
  // The body force needs the general path everywhere (the bulk path has none).
  const bool bulk = p_.flow != Case::channel || p_.force == 0.0;
  for (int y = 1; y < ny_ - 1; ++y) {
    if (wrap_x) wrap_row_x(y);  // the sweep reads this row's ends now: they are in cache
    if (!bulk) {
      for (int x = 1; x < nx_ - 1; ++x) step_cell(x, y);
    } else if (p_.trt) {
      streaming_ ? step_bulk_row<true, true>(y, 1, nx_ - 2)
                 : step_bulk_row<true, false>(y, 1, nx_ - 2);
    } else {
      streaming_ ? step_bulk_row<false, true>(y, 1, nx_ - 2)
                 : step_bulk_row<false, false>(y, 1, nx_ - 2);
    }
  }
  if (streaming_) stream_fence();
}

// The outer ring of the block: rows 0 and ny-1, columns 0 and nx-1.
template <class Real>
void BlockT<Real>::step_rim() {
  for (int y = 0; y < ny_; ++y) {
    if (y == 0 || y == ny_ - 1) {
      for (int x = 0; x < nx_; ++x) step_cell(x, y);
    } else {
      step_cell(0, y);
      if (nx_ > 1) step_cell(nx_ - 1, y);
    }
  }
}

template <class Real>
void BlockT<Real>::finish_step() noexcept {
  f_.swap(g_);
}

template <class Real>
double BlockT<Real>::rho(int x, int y) const {
  double r = 0;
  for (int i = 0; i < kQ; ++i) r += f_[i * cells_ + at(x, y)];
  return r;
}

template <class Real>
std::array<double, 2> BlockT<Real>::velocity(int x, int y) const {
  double r = 0, mx = 0, my = 0;
  for (int i = 0; i < kQ; ++i) {
    const double v = f_[i * cells_ + at(x, y)];
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

// A message towards (dx, dy) carries the populations that cross into that neighbour; the
// halo cells on side (dx, dy) receive the ones the neighbour there sends towards us,
// (-dx, -dy). The halo's other populations are never read.
template <class Real>
void BlockT<Real>::pack(int dx, int dy, std::vector<Real>& out) const {
  out.clear();
  const int xa = dx == 0 ? 0 : (dx > 0 ? nx_ - 1 : 0), xb = dx == 0 ? nx_ - 1 : xa;
  const int ya = dy == 0 ? 0 : (dy > 0 ? ny_ - 1 : 0), yb = dy == 0 ? ny_ - 1 : ya;
  for (int i = 0; i < kQ; ++i) {
    if (!crosses(i, dx, dy)) continue;
    for (int y = ya; y <= yb; ++y) {
      for (int x = xa; x <= xb; ++x) out.push_back(f_[i * cells_ + at(x, y)]);
    }
  }
}

template <class Real>
void BlockT<Real>::unpack(int dx, int dy, const std::vector<Real>& in) {
  if (in.size() != halo_values(dx, dy)) throw std::invalid_argument("halo message of a wrong size");
  const int xa = dx == 0 ? 0 : (dx > 0 ? nx_ : -1), xb = dx == 0 ? nx_ - 1 : xa;
  const int ya = dy == 0 ? 0 : (dy > 0 ? ny_ : -1), yb = dy == 0 ? ny_ - 1 : ya;
  std::size_t k = 0;
  for (int i = 0; i < kQ; ++i) {
    if (!crosses(i, -dx, -dy)) continue;
    for (int y = ya; y <= yb; ++y) {
      for (int x = xa; x <= xb; ++x) f_[i * cells_ + at(x, y)] = in[k++];
    }
  }
}

template class BlockT<double>;
template class BlockT<float>;

}  // namespace fluid
