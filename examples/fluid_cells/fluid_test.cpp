// Correctness of the fluid-cell example (issue 6): the D2Q9 kernel against analytic flows
// (Taylor-Green decay, Poiseuille channel) and published data (Ghia et al. 1982 cavity),
// mass conservation, bit-identical fields for any number of cells, bad input rejected with
// exit code 2 by the CLI before anything runs, and the CLI's other exit codes (1 a run failed,
// 3 --tol not reached) with what summary.json says about convergence.
#include <gtest/gtest.h>
#include <png.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ipckit/shm/shared_array.hpp"
#include "ipckit/spmd/run.hpp"
#include "lbm.hpp"
#include "leak_check.hpp"
#include "output.hpp"
#include "solver.hpp"

namespace {

using FluidCells = ipckit::testing::LeakCheckedTest;
using FluidCavity = ipckit::testing::LeakCheckedTest;
using FluidInput = ipckit::testing::LeakCheckedTest;

double nu_of(double tau) { return (tau - 0.5) / 3.0; }

// Steps a single block that is periodic along x (and y when wrap_y).
void advance(fluid::Block& b, int steps, bool wrap_y) {
  for (int s = 0; s < steps; ++s) {
    b.wrap(true, wrap_y);
    b.step();
  }
}

fluid::Params taylor_green(int n, double tau) {
  fluid::Params p;
  p.flow = fluid::Case::taylor_green;
  p.nx = n;
  p.ny = n;
  p.tau = tau;
  p.tg_u0 = 0.02;
  return p;
}

// Largest relative error of E(t)/E(0) against exp(-2 nu (kx^2 + ky^2) t), sampled at ten
// points of a run of `steps` steps on an n x n periodic grid.
double taylor_green_error(int n, double tau, int steps) {
  const fluid::Params p = taylor_green(n, tau);
  fluid::Block b(p, 0, 0, n, n);
  const double e0 = b.diagnostics().kinetic;
  const double k = 2 * std::numbers::pi / n;
  double worst = 0;
  for (int part = 1; part <= 10; ++part) {
    advance(b, steps / 10, true);
    const double t = static_cast<double>(steps) * part / 10;
    const double exact = std::exp(-2 * nu_of(tau) * 2 * k * k * t);
    worst = std::max(worst, std::abs(b.diagnostics().kinetic / e0 / exact - 1));
  }
  return worst;
}

TEST(FluidTaylorGreen, KineticEnergyDecayMatchesAnalyticWithin1Percent) {
  // 64 x 64, tau = 0.8: the energy falls to about 5 % of its start over the run.
  EXPECT_LT(taylor_green_error(64, 0.8, 800), 0.01);
}

TEST(FluidTaylorGreen, ErrorFallsAtSecondOrderUnderDiffusiveScaling) {
  // Same tau (so the same viscosity in lattice units), four times the steps for twice the
  // cells: the same physical time. Second order gives a ratio of 4.
  const double coarse = taylor_green_error(32, 0.8, 200);
  const double fine = taylor_green_error(64, 0.8, 800);
  RecordProperty("error_32", std::to_string(coarse));
  RecordProperty("error_64", std::to_string(fine));
  EXPECT_GE(coarse / fine, 3.0) << "error 32x32 " << coarse << ", 64x64 " << fine;
}

TEST(FluidMass, ConservedToRoundOffOnPeriodicTaylorGreen) {
  fluid::Block b(taylor_green(48, 0.7), 0, 0, 48, 48);
  const double m0 = b.diagnostics().mass;
  advance(b, 1000, true);
  EXPECT_LE(std::abs(b.diagnostics().mass - m0) / m0, 1e-12);
}

TEST(FluidMass, ConservedToRoundOffInClosedCavity) {
  fluid::Params p;
  p.flow = fluid::Case::cavity;
  p.nx = 40;
  p.ny = 30;
  p.tau = 0.6;
  p.u_lid = 0.1;
  fluid::Block b(p, 0, 0, p.nx, p.ny);
  const double m0 = b.diagnostics().mass;
  for (int s = 0; s < 1000; ++s) b.step();  // walls all round: no halo to fill
  const auto d = b.diagnostics();
  EXPECT_GT(d.max_speed, 0.01);  // the lid did drive a flow
  EXPECT_LE(std::abs(d.mass - m0) / m0, 1e-12);
}

TEST(FluidChannel, SteadyProfileMatchesPoiseuilleWithin1PercentOfPeak) {
  // Periodic along x, half-way bounce-back walls below row 0 and above row ny - 1: the walls
  // sit at y = -0.5 and y = ny - 0.5, so with s = y + 0.5 the channel is s in (0, H), H = ny,
  // and the steady solution of nu u'' = -F is u(s) = F / (2 nu) s (H - s), u_max = F H^2 / (8 nu).
  fluid::Params p;
  p.flow = fluid::Case::channel;
  p.nx = 4;
  p.ny = 32;
  p.tau = 0.8;
  const double nu = nu_of(p.tau);
  const double h = p.ny;
  const double u_max = 0.05;
  p.force = 8 * nu * u_max / (h * h);
  fluid::Block b(p, 0, 0, p.nx, p.ny);
  // The slowest mode decays as exp(-nu pi^2 t / H^2): about 1000 steps per e-fold here.
  advance(b, 20000, false);
  double worst = 0;
  for (int y = 0; y < p.ny; ++y) {
    const double s = y + 0.5;
    const double exact = p.force / (2 * nu) * s * (h - s);
    for (int x = 0; x < p.nx; ++x) {
      const auto u = b.velocity(x, y);
      worst = std::max(worst, std::abs(u[0] - exact));
      EXPECT_LT(std::abs(u[1]), 1e-12 * u_max);
    }
  }
  EXPECT_LE(worst, 0.01 * u_max) << "worst deviation " << worst / u_max << " of u_max";
}

// The field (ux, uy, rho interleaved per cell) that fluid::solve gathers on rank 0 when the
// run is split over `cells` ranks.
std::vector<double> field_on(int cells, const fluid::Params& p, int steps) {
  const std::size_t n = static_cast<std::size_t>(p.nx) * static_cast<std::size_t>(p.ny);
  ipckit::SharedArray<double> out(3 * n);
  ipckit::spmd::run(cells, [&](ipckit::Comm& comm) {
    fluid::SolveOptions o;
    o.steps = steps;
    o.check_every = 50;
    const auto r = fluid::solve(comm, p, o);
    if (comm.rank() != 0) return;
    for (std::size_t i = 0; i < n; ++i) {
      out[3 * i] = r.field.ux[i];
      out[3 * i + 1] = r.field.uy[i];
      out[3 * i + 2] = r.field.rho[i];
    }
  });
  return {out.data(), out.data() + 3 * n};
}

// One cell is the reference (the halo exchange overlapped with the interior in every run).
// Callers step odd numbers of times (the in-place (AA) update then leaves the populations in
// the streamed layout, where a field is read through the halo) or even ones.
void expect_same_field_for_any_cells(fluid::Params p, int steps) {
  fluid::validate(p, 6);
  const auto one = field_on(1, p, steps);
  double speed = 0;
  for (std::size_t i = 0; i < one.size(); i += 3) speed = std::max(speed, std::abs(one[i]));
  ASSERT_GT(speed, 1e-4) << "the reference run did not move";
  for (int cells : {2, 3, 4, 6}) {
    const auto many = field_on(cells, p, steps);
    ASSERT_EQ(many.size(), one.size());
    if (std::memcmp(many.data(), one.data(), one.size() * sizeof(double)) == 0) continue;
    std::size_t first = 0, count = 0;
    double worst = 0;
    for (std::size_t i = 0; i < one.size(); ++i) {
      if (std::memcmp(&many[i], &one[i], sizeof(double)) == 0) continue;
      if (count++ == 0) first = i;
      worst = std::max(worst, std::abs(many[i] - one[i]));
    }
    const std::size_t cell = first / 3;
    ADD_FAILURE() << cells << " cells differ from one cell in " << count << " of " << one.size()
                  << " values, by up to " << worst << "; the first at (x, y) = ("
                  << cell % static_cast<std::size_t>(p.nx) << ", "
                  << cell / static_cast<std::size_t>(p.nx) << ")";
  }
}

TEST_F(FluidCells, CavityFieldIsBitIdenticalFor1To6Cells) {
  fluid::Params p;
  p.flow = fluid::Case::cavity;
  p.nx = 40;
  p.ny = 30;
  p.tau = 0.6;
  p.u_lid = 0.1;
  expect_same_field_for_any_cells(p, 201);
}

TEST_F(FluidCells, TaylorGreenFieldIsBitIdenticalFor1To6Cells) {
  fluid::Params p = taylor_green(36, 0.7);
  p.ny = 30;
  expect_same_field_for_any_cells(p, 201);
}

// Blocks one or two cells thin (no interior: the rim is the whole step; corner messages from
// a block one or two cells wide), along either axis: 3 cells split in 2 give 2 and 1.
TEST_F(FluidCells, ThinBlocksGiveTheSameBitsFor1To6Cells) {
  fluid::Params p;
  p.flow = fluid::Case::cavity;
  p.nx = 30;
  p.ny = 3;
  p.tau = 0.6;
  expect_same_field_for_any_cells(p, 151);
  fluid::Params q;
  q.flow = fluid::Case::channel;
  q.nx = 3;
  q.ny = 30;
  q.tau = 0.8;
  q.force = 1e-5;
  expect_same_field_for_any_cells(q, 151);
}

TEST_F(FluidCells, ChannelFieldIsBitIdenticalFor1To6Cells) {
  fluid::Params p;
  p.flow = fluid::Case::channel;
  p.nx = 24;
  p.ny = 30;
  p.tau = 0.8;
  p.force = 1e-5;
  expect_same_field_for_any_cells(p, 199);
}

// The TRT collision and float populations through every path (bulk rows that start on the
// self-filled x-halo, the general path with a body force, messages of floats).
TEST_F(FluidCells, TrtAndFloatFieldsAreBitIdenticalFor1To6Cells) {
  fluid::Params p;
  p.flow = fluid::Case::cavity;
  p.nx = 26;
  p.ny = 20;
  p.tau = 0.55;
  p.trt = true;
  p.single = true;
  expect_same_field_for_any_cells(p, 151);
  fluid::Params q = taylor_green(24, 0.6);
  q.ny = 18;
  q.trt = true;
  expect_same_field_for_any_cells(q, 100);
  fluid::Params c;
  c.flow = fluid::Case::channel;
  c.nx = 12;
  c.ny = 18;
  c.tau = 0.7;
  c.force = 1e-5;
  c.trt = true;
  c.single = true;
  expect_same_field_for_any_cells(c, 99);
}

// Pixels of a PNG that are a streamline drawn over the map: whitish (a white blend over the
// map's colour), not the pure white of the background.
int streamline_pixels(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_file(&img, path.c_str()) == 0) return -1;
  img.format = PNG_FORMAT_RGB;
  std::vector<std::uint8_t> px(PNG_IMAGE_SIZE(img));
  if (png_image_finish_read(&img, nullptr, px.data(), 0, nullptr) == 0) return -1;
  int n = 0;
  for (std::size_t i = 0; i + 2 < px.size(); i += 3) {
    const bool whitish = px[i] >= 190 && px[i + 1] >= 190 && px[i + 2] >= 190;
    const bool background = px[i] == 255 && px[i + 1] == 255 && px[i + 2] == 255;
    n += whitish && !background ? 1 : 0;
  }
  return n;
}

// The speed map carries the stream function's contours: a uniform flow along y has vertical
// streamlines (psi varies along x only, which the integration along the bottom row gives), a
// solid-body rotation circles, and a fluid at rest none.
TEST(FluidPictures, SpeedMapCarriesTheStreamlines) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fluid_pic_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  fluid::Field f;
  f.nx = f.ny = 48;
  const std::size_t n = 48 * 48;
  f.rho.assign(n, 1.0);
  const auto lines = [&](const char* name) {
    const std::string path = (dir / name).string();
    fluid::write_speed_png(path, f, 0.1);
    return streamline_pixels(path);
  };
  f.ux.assign(n, 0.0);
  f.uy.assign(n, 0.02);
  EXPECT_GT(lines("along_y.png"), 48 * 8);  // several vertical lines, each a column of pixels
  for (int y = 0; y < 48; ++y) {
    for (int x = 0; x < 48; ++x) {
      f.ux[f.index(x, y)] = -1e-3 * (y - 23.5);
      f.uy[f.index(x, y)] = 1e-3 * (x - 23.5);
    }
  }
  EXPECT_GT(lines("rotation.png"), 48 * 4);
  f.ux.assign(n, 0.0);
  f.uy.assign(n, 0.0);
  EXPECT_EQ(lines("rest.png"), 0);
  std::filesystem::remove_all(dir);
}

// Ghia, Ghia & Shin (1982) Table I, Re = 100: (y, u/U) along the vertical centreline.
std::vector<std::pair<double, double>> ghia_u_re100() {
  std::ifstream in(std::string(FLUID_DATA_DIR) + "/ghia1982_u_vertical_centreline.csv");
  if (!in) throw std::runtime_error("cannot open the Ghia data in " FLUID_DATA_DIR);
  std::string line;
  std::getline(in, line);  // y,re100,re400,re1000
  std::vector<std::pair<double, double>> rows;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    double y = 0, u = 0;
    char comma = 0;
    if (s >> y >> comma >> u) rows.emplace_back(y, u);
  }
  return rows;
}

// Runs the Re = 100 cavity (lid speed 0.1) on 2 ranks to steady state and returns the
// largest |u/U - Ghia| along the vertical centreline, the solver's profile (cell centres
// at (j + 0.5) / n, walls at 0 and 1) interpolated linearly to Ghia's points.
double ghia_deviation(int n) {
  fluid::Params p;
  p.flow = fluid::Case::cavity;
  p.nx = n;
  p.ny = n;
  p.u_lid = 0.1;
  p.tau = 3 * (p.u_lid * n / 100.0) + 0.5;
  fluid::validate(p, 2);
  ipckit::SharedArray<double> centre(static_cast<std::size_t>(n) + 1);  // last: steps run
  ipckit::spmd::run(2, [&](ipckit::Comm& comm) {
    fluid::SolveOptions o;
    o.steps = 200000;
    o.tol = 1e-7;
    o.check_every = 500;
    const auto r = fluid::solve(comm, p, o);
    if (comm.rank() != 0) return;
    // An odd n has a column of cells centred on x = 0.5; an even n the mean of two.
    const int a = (n - 1) / 2, b = n / 2;
    for (int j = 0; j < n; ++j) {
      centre[j] =
          0.5 * (r.field.ux[r.field.index(a, j)] + r.field.ux[r.field.index(b, j)]) / p.u_lid;
    }
    centre[n] = r.steps;
  });
  EXPECT_LT(centre[n], 200000) << "no steady state";
  ::testing::Test::RecordProperty("steps", std::to_string(static_cast<int>(centre[n])));
  std::vector<double> ys{0.0}, us{0.0};
  for (int j = 0; j < n; ++j) {
    ys.push_back((j + 0.5) / n);
    us.push_back(centre[j]);
  }
  ys.push_back(1.0);
  us.push_back(1.0);
  double worst = 0;
  for (const auto& [y, u] : ghia_u_re100()) {
    const auto it = std::lower_bound(ys.begin(), ys.end(), y);
    const auto i = static_cast<std::size_t>(std::max<std::ptrdiff_t>(1, it - ys.begin()));
    const double w = (y - ys[i - 1]) / (ys[i] - ys[i - 1]);
    const double mine = us[i - 1] + w * (us[i] - us[i - 1]);
    worst = std::max(worst, std::abs(mine - u));
  }
  return worst;
}

TEST_F(FluidCavity, Re100On129x129MatchesGhiaWithin002) {
  // 40000 steps to tol 1e-7 per 500 steps: about 25 s on 2 cells in the dev (Debug) build.
  const double worst = ghia_deviation(129);
  RecordProperty("max_deviation", std::to_string(worst));
  EXPECT_LE(worst, 0.02);
}

TEST(FluidValidate, RejectsRelaxationTimeAtOrBelowHalf) {
  fluid::Params p;
  p.tau = 0.5;
  EXPECT_THROW(fluid::validate(p, 1), std::invalid_argument);
  p.tau = 0.4;
  EXPECT_THROW(fluid::validate(p, 1), std::invalid_argument);
}

TEST(FluidValidate, RejectsGridSmallerThanProcessGrid) {
  fluid::Params p;
  p.nx = 2;
  p.ny = 2;
  EXPECT_THROW(fluid::validate(p, 16), std::invalid_argument);  // a 4 x 4 process grid
  p.nx = 3;
  p.ny = 100;
  EXPECT_NO_THROW(fluid::validate(p, 2));
  // The larger factor goes along the longer axis: a wide channel splits along x.
  p.nx = 512;
  p.ny = 2;
  EXPECT_NO_THROW(fluid::validate(p, 3));
  EXPECT_EQ(fluid::process_dims(3, 512, 2), (std::vector<int>{3, 1}));
  EXPECT_EQ(fluid::process_dims(2, 64, 64), (std::vector<int>{1, 2}));
}

struct Exit {
  int code = -1;
  std::string output;
};

// Runs the built fluid_cells with `args` through the shell; `prefix` goes before it
// ("VAR=value" for its environment, "ulimit ...;").
Exit run_cli(const std::string& args, const std::string& prefix = "") {
  const std::string cmd = prefix + " '" + FLUID_CELLS_EXE + "' " + args + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) throw std::runtime_error("popen failed: " + cmd);
  Exit e;
  char buf[512];
  std::size_t got = 0;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) e.output.append(buf, got);
  const int status = ::pclose(f);
  e.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return e;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A fresh (absent) path under the temporary folder, removed again when the test ends.
class TempPath {
 public:
  explicit TempPath(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("fluid_test_" + std::to_string(::getpid()) + "_" + name)) {
    std::filesystem::remove_all(path_);
  }
  ~TempPath() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  [[nodiscard]] std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_F(FluidInput, CliRejectsUnknownCase) {
  const auto e = run_cli("--case nope --procs 1 --steps 10");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find("nope"), std::string::npos) << e.output;
}

TEST_F(FluidInput, CliRejectsReynoldsNumberTooHighForGrid) {
  // nu = 0.1 * 16 / 1e9 puts tau within 1e-8 of 0.5: unstable, must be refused.
  // --procs 1 so that only the Reynolds number can be the reason; --steps 10 so that a
  // run that is not refused ends quickly.
  const auto e = run_cli("--re 1e9 --nx 16 --ny 16 --procs 1 --steps 10");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find("fluid_cells: "), std::string::npos) << e.output;
}

TEST_F(FluidInput, CliRejectsGridSmallerThanProcessGrid) {
  const auto e = run_cli("--nx 2 --ny 2 --procs 16 --steps 10");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find("process grid"), std::string::npos) << e.output;
}

TEST_F(FluidInput, CliHelpListsExitCodesAndEveryDefault) {
  const auto e = run_cli("--help");
  EXPECT_EQ(e.code, 0) << e.output;
  for (const char* part : {"Exit codes", "3 --tol", "=20000", "=129", "=cavity", "=0.1", "=bgk",
                           "--procs: at most 8 x"}) {
    EXPECT_TRUE(has(e.output, part)) << part << " missing from\n" << e.output;
  }
}

TEST_F(FluidInput, CliExitsThreeAndWritesConvergedFalseWhenTolNotReached) {
  const TempPath out("not_converged");
  const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 1 --tol 1e-12 --out " + out.str());
  EXPECT_EQ(e.code, 3) << e.output;
  EXPECT_TRUE(has(e.output, "did not converge: residual")) << e.output;
  EXPECT_TRUE(has(e.output, "after 50 steps, tolerance 1e-12")) << e.output;
  const std::string summary = read_file(out.str() + "/summary.json");
  EXPECT_TRUE(has(summary, "\"converged\": false")) << summary;
}

TEST_F(FluidInput, CliExitsZeroAndWritesConvergedTrueWhenTolReached) {
  // Re 10 on 16 x 16 is steady to 1e-4 per 100 steps in about 700 steps.
  const TempPath out("converged");
  const auto e =
      run_cli("--nx 16 --ny 16 --re 10 --steps 20000 --procs 2 --tol 1e-4 --out " + out.str());
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_FALSE(has(e.output, "did not converge")) << e.output;
  const std::string summary = read_file(out.str() + "/summary.json");
  EXPECT_TRUE(has(summary, "\"converged\": true")) << summary;
  EXPECT_FALSE(has(summary, "\"steps\": 20000")) << summary;
}

TEST_F(FluidInput, CliWritesNoConvergedKeyWithoutTol) {
  const TempPath out("no_tol");
  const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 1 --out " + out.str());
  EXPECT_EQ(e.code, 0) << e.output;
  const std::string summary = read_file(out.str() + "/summary.json");
  EXPECT_TRUE(has(summary, "\"residual\"")) << summary;
  EXPECT_FALSE(has(summary, "converged")) << summary;
}

TEST_F(FluidInput, CliRejectsOutThatCannotBeMadeBeforeAnyRun) {
  // Root may write anywhere, so the folder is made impossible instead: its parent is a file.
  const TempPath file("regular_file");
  std::ofstream(file.str()) << "not a folder\n";
  const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 2 --out " + file.str() + "/out");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(has(e.output, "--out " + file.str() + "/out")) << e.output;
  EXPECT_FALSE(has(e.output, "MLUPS")) << "it ran before refusing:\n" << e.output;
}

TEST_F(FluidInput, CliRejectsEmptyOut) {
  const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 1 --out ''");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(has(e.output, "--out needs a folder")) << e.output;
  EXPECT_FALSE(has(e.output, "MLUPS")) << e.output;
}

TEST_F(FluidInput, CliRejectsNonFiniteAndOutOfRangeNumbersReadably) {
  const std::regex long_number("[0-9]{25}");
  for (const char* bad :
       {"--re nan", "--re inf", "--re -inf", "--re 0", "--u nan", "--u inf", "--u 1", "--tol nan",
        "--tol inf", "--tol -1", "--sweep nan", "--sweep 100,-1", "--sweep 0", "--sweep 100,inf"}) {
    const auto e = run_cli(std::string(bad) + " --nx 16 --ny 16 --steps 50 --procs 1");
    EXPECT_EQ(e.code, 2) << bad << ":\n" << e.output;
    EXPECT_TRUE(has(e.output, "is not a finite number")) << bad << ":\n" << e.output;
    EXPECT_FALSE(std::regex_search(e.output, long_number)) << bad << ":\n" << e.output;
    EXPECT_FALSE(has(e.output, "MLUPS")) << bad << ":\n" << e.output;
  }
}

TEST_F(FluidInput, CliRejectsProcsFarAboveTheCpuCount) {
  const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 100000");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(has(e.output, "--procs 100000 is above the limit of")) << e.output;
}

TEST_F(FluidInput, CliRefusesAnMpirunLaunchWithoutCommMpi) {
  for (const char* env : {"OMPI_COMM_WORLD_SIZE=4", "PMI_SIZE=2"}) {
    const auto e = run_cli("--nx 16 --ny 16 --steps 50 --procs 1", env);
    EXPECT_EQ(e.code, 2) << env << ":\n" << e.output;
    EXPECT_TRUE(has(e.output, "add --comm mpi")) << env << ":\n" << e.output;
    EXPECT_FALSE(has(e.output, "MLUPS")) << env << ":\n" << e.output;
  }
  // One process under mpirun is one job: it runs.
  const auto one = run_cli("--nx 16 --ny 16 --steps 50 --procs 1", "OMPI_COMM_WORLD_SIZE=1");
  EXPECT_EQ(one.code, 0) << one.output;
}

TEST_F(FluidInput, CliSweepExitsThreeWhenARunDoesNotConverge) {
  const auto e = run_cli("--sweep 10,20 --nx 16 --ny 16 --steps 50 --tol 1e-12");
  EXPECT_EQ(e.code, 3) << e.output;
  EXPECT_TRUE(has(e.output, "Re=10 did not converge")) << e.output;
  EXPECT_TRUE(has(e.output, "Re=20 did not converge")) << e.output;
}

TEST_F(FluidInput, CliSweepRejectsAReynoldsNumberTooHighForTheGridBeforeRunning) {
  const auto e = run_cli("--sweep 10,1e9 --nx 16 --ny 16 --steps 50");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(has(e.output, "--sweep Re=1e+09")) << e.output;
  EXPECT_FALSE(has(e.output, "MLUPS")) << e.output;
}

// A rank that runs out of memory (address space capped, so the allocation fails at once) is
// reported, and the exit code is 1: no abort (134) from an uncaught exception.
TEST_F(FluidInput, CliReportsARankOutOfMemoryWithExitOne) {
  const std::string huge = "--re 1e6 --nx 65536 --ny 65536 --steps 1";
  const auto one = run_cli(huge + " --procs 1", "ulimit -v 8000000;");
  EXPECT_EQ(one.code, 1) << one.output;
  EXPECT_TRUE(has(one.output, "rank 0 failed")) << one.output;
  const auto sweep =
      run_cli("--sweep 1e6,2e6 --nx 65536 --ny 65536 --steps 1", "ulimit -v 8000000;");
  EXPECT_EQ(sweep.code, 1) << sweep.output;
  EXPECT_TRUE(has(sweep.output, "Re=1e+06 failed")) << sweep.output;
  EXPECT_TRUE(has(sweep.output, "2 of 2 runs failed")) << sweep.output;
}

}  // namespace
