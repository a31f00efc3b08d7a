// The in-place (AA) block against a plain two-copy pull solver written here from the textbook
// formulas, after odd and even numbers of steps (fluid_test.cpp holds the solver-level tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <vector>

#include "lbm.hpp"

namespace {

// A plain two-copy, pull-scheme D2Q9 solver on one periodic-or-walled block, written for the
// test from the textbook formulas: the in-place (AA) block must give the same fields, to
// round-off, after odd and even numbers of steps (a layout, wall or wrap mistake is O(1)).
class PullReference {
 public:
  explicit PullReference(const fluid::Params& p)
      : p_(p), n_(static_cast<std::size_t>(p.nx) * static_cast<std::size_t>(p.ny)) {
    f_.assign(fluid::kQ * n_, 0.0);
    const double kx = 2 * std::numbers::pi / p.nx, ky = 2 * std::numbers::pi / p.ny;
    for (int y = 0; y < p.ny; ++y) {
      for (int x = 0; x < p.nx; ++x) {
        double rho = 1, ux = 0, uy = 0;
        if (p.flow == fluid::Case::taylor_green) {
          ux = -p.tg_u0 * std::cos(kx * x) * std::sin(ky * y);
          uy = p.tg_u0 * std::sin(kx * x) * std::cos(ky * y);
          rho = 1 - 3 * p.tg_u0 * p.tg_u0 / 4 * (std::cos(2 * kx * x) + std::cos(2 * ky * y));
        }
        for (int i = 0; i < fluid::kQ; ++i) at(f_, i, x, y) = eq(i, rho, ux, uy);
      }
    }
  }
  void step() {
    std::vector<double> g(f_.size());
    const double om = 1 / p_.tau, omm = 1 / (p_.magic / (p_.tau - 0.5) + 0.5);
    const double fx = p_.flow == fluid::Case::channel ? p_.force : 0.0;
    const bool px = p_.flow != fluid::Case::cavity, py = p_.flow == fluid::Case::taylor_green;
    for (int y = 0; y < p_.ny; ++y) {
      for (int x = 0; x < p_.nx; ++x) {
        double fi[fluid::kQ];
        for (int i = 0; i < fluid::kQ; ++i) {
          int sx = x - fluid::kCx[i], sy = y - fluid::kCy[i];
          if (px) sx = (sx + p_.nx) % p_.nx;
          if (py) sy = (sy + p_.ny) % p_.ny;
          if (sx >= 0 && sx < p_.nx && sy >= 0 && sy < p_.ny) {
            fi[i] = at(f_, i, sx, sy);
            continue;
          }
          fi[i] = at(f_, fluid::kOpp[i], x, y);  // half-way bounce-back
          const bool lid = p_.flow == fluid::Case::cavity && sy == p_.ny && sx >= 0 && sx < p_.nx;
          if (lid) fi[i] += 6 * fluid::kW[i] * fluid::kCx[i] * p_.u_lid;
        }
        double rho = 0, mx = 0, my = 0;
        for (int i = 0; i < fluid::kQ; ++i) {
          rho += fi[i];
          mx += fluid::kCx[i] * fi[i];
          my += fluid::kCy[i] * fi[i];
        }
        const double ux = (mx + 0.5 * fx) / rho, uy = my / rho;
        for (int i = 0; i < fluid::kQ; ++i) {
          const int o = fluid::kOpp[i];
          const double e = eq(i, rho, ux, uy), eo = eq(o, rho, ux, uy);
          double out = p_.trt ? fi[i] - om * ((fi[i] + fi[o]) - (e + eo)) / 2 -
                                    omm * ((fi[i] - fi[o]) - (e - eo)) / 2
                              : fi[i] - om * (fi[i] - e);
          const double cu = fluid::kCx[i] * ux + fluid::kCy[i] * uy;
          out += (1 - om / 2) * fluid::kW[i] *
                 (3 * (fluid::kCx[i] - ux) * fx + 9 * cu * fluid::kCx[i] * fx);
          at(g, i, x, y) = out;
        }
      }
    }
    f_.swap(g);
  }
  // rho, ux, uy of the post-collision populations of cell (x, y), as Block reports them.
  [[nodiscard]] std::array<double, 3> moments(int x, int y) const {
    double rho = 0, mx = 0, my = 0;
    for (int i = 0; i < fluid::kQ; ++i) {
      rho += at(f_, i, x, y);
      mx += fluid::kCx[i] * at(f_, i, x, y);
      my += fluid::kCy[i] * at(f_, i, x, y);
    }
    const double fx = p_.flow == fluid::Case::channel ? p_.force : 0.0;
    return {rho, (mx + 0.5 * fx) / rho, my / rho};
  }

 private:
  static double eq(int i, double rho, double ux, double uy) {
    const double cu = fluid::kCx[i] * ux + fluid::kCy[i] * uy;
    return fluid::kW[i] * rho * (1 + 3 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy));
  }
  double& at(std::vector<double>& v, int i, int x, int y) const {
    return v[static_cast<std::size_t>(i) * n_ + static_cast<std::size_t>(y * p_.nx + x)];
  }
  double at(const std::vector<double>& v, int i, int x, int y) const {
    return v[static_cast<std::size_t>(i) * n_ + static_cast<std::size_t>(y * p_.nx + x)];
  }
  fluid::Params p_;
  std::size_t n_;
  std::vector<double> f_;
};

template <class Real>
void expect_block_matches_reference(const fluid::Params& p, double tol, const char* what) {
  fluid::BlockT<Real> b(p, 0, 0, p.nx, p.ny);
  PullReference ref(p);
  const bool px = p.flow != fluid::Case::cavity, py = p.flow == fluid::Case::taylor_green;
  double scale = 0;
  for (int s = 1; s <= 60; ++s) {
    if (px && s % 2 == 0) {
      // Every other step sweeps whole rows and fills the x-sides row by row as it goes (over
      // what wrap() put there: the same values; wrap() still gives the corners).
      b.wrap(px, py);
      b.step_interior(true);
      b.step_rim();
      b.finish_step();
    } else {
      b.wrap(px, py);
      b.step();
    }
    ref.step();
    if (s != 1 && s != 2 && s != 31 && s != 60) continue;
    double worst = 0;
    for (int y = 0; y < p.ny; ++y) {
      for (int x = 0; x < p.nx; ++x) {
        const auto m = ref.moments(x, y);
        const auto u = b.velocity(x, y);
        scale = std::max(scale, std::hypot(m[1], m[2]));
        worst = std::max(
            {worst, std::abs(b.rho(x, y) - m[0]), std::abs(u[0] - m[1]), std::abs(u[1] - m[2])});
      }
    }
    EXPECT_LE(worst, tol) << what << " after " << s << " steps (largest speed " << scale << ")";
  }
  EXPECT_GT(scale, 1e-4) << what << ": the flow did not move";
}

TEST(FluidInPlace, MatchesATwoCopyPullSchemeAfterOddAndEvenSteps) {
  fluid::Params cavity;
  cavity.flow = fluid::Case::cavity;
  cavity.nx = 21;
  cavity.ny = 17;
  cavity.tau = 0.56;
  expect_block_matches_reference<double>(cavity, 1e-12, "cavity BGK");
  cavity.trt = true;
  expect_block_matches_reference<double>(cavity, 1e-12, "cavity TRT");
  expect_block_matches_reference<float>(cavity, 2e-5, "cavity TRT float");
  fluid::Params channel;
  channel.flow = fluid::Case::channel;
  channel.nx = 9;
  channel.ny = 13;
  channel.tau = 0.7;
  channel.force = 1e-4;
  expect_block_matches_reference<double>(channel, 1e-12, "channel with force");
  channel.trt = true;
  expect_block_matches_reference<double>(channel, 1e-12, "channel with force, TRT");

  fluid::Params tg;
  tg.flow = fluid::Case::taylor_green;
  tg.nx = 19;
  tg.ny = 11;
  tg.tau = 0.6;
  tg.tg_u0 = 0.05;
  expect_block_matches_reference<double>(tg, 1e-12, "Taylor-Green");
  tg.trt = true;
  expect_block_matches_reference<double>(tg, 1e-12, "Taylor-Green TRT");
  expect_block_matches_reference<float>(tg, 2e-5, "Taylor-Green TRT float");
  tg.trt = false;
  tg.nx = 2;  // thinner than the interior: the rim is the whole step
  expect_block_matches_reference<double>(tg, 1e-12, "Taylor-Green 2 wide");
  expect_block_matches_reference<float>(tg, 2e-5, "Taylor-Green 2 wide float");
}

}  // namespace
