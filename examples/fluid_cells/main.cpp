// fluid_cells: a D2Q9 lattice-Boltzmann solver, one process per cell (block) of the domain,
// halos exchanged and diagnostics reduced every step through ipckit's Comm — forked ranks
// over shared memory (--comm shm) or MPI under mpirun (--comm mpi).
//
//   fluid_cells --case cavity --re 100 --nx 129 --ny 129 --procs 4 --tol 1e-7 --out out/
//   mpirun -np 4 fluid_cells --comm mpi --case taylor-green --nx 256 --ny 256 --steps 2000
//   fluid_cells --sweep 100,400,1000 --case cavity --nx 65 --ny 65   (independent runs on a Pool)
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ipckit/ipckit.hpp>
#include <map>
#include <string>
#include <vector>

#include "output.hpp"
#include "solver.hpp"
#ifdef FLUID_WITH_MPI
#include <ipckit/spmd/mpi_comm.hpp>
#endif

namespace {

struct Cli {
  std::string flow = "cavity";
  double re = 100;
  int nx = 129, ny = 129;
  int procs = 0;
  std::string comm = "shm";
  int steps = 20000;
  double tol = 0;
  std::string out;
  double u = 0.1;
  std::string collision = "bgk";
  std::string precision = "double";
  std::vector<double> sweep;
};

fluid::Params params_of(const Cli& c) {
  fluid::Params p;
  p.flow = c.flow == "cavity"         ? fluid::Case::cavity
           : c.flow == "taylor-green" ? fluid::Case::taylor_green
                                      : fluid::Case::channel;
  p.nx = c.nx;
  p.ny = c.ny;
  // Re = U L / nu, with L the lattice size across the flow and U the characteristic speed.
  const double len = p.flow == fluid::Case::channel ? c.ny : c.nx;
  p.u_lid = c.u;
  p.tg_u0 = c.u;
  p.trt = c.collision == "trt";
  p.single = c.precision == "float";
  const double nu = c.u * len / c.re;
  p.tau = 3.0 * nu + 0.5;
  if (p.flow == fluid::Case::channel) {
    // Poiseuille: u_max = F H^2 / (8 nu): the force that gives u_max = c.u.
    p.force = 8.0 * nu * c.u / (len * len);
  }
  return p;
}

void write_outputs(const Cli& c, const fluid::Params& p, const fluid::SolveResult& r, int procs) {
  if (c.out.empty()) return;
  std::filesystem::create_directories(c.out);
  const std::string dir = c.out + "/";
  fluid::write_speed_png(dir + "speed.png", r.field, c.u);
  fluid::write_vorticity_png(dir + "vorticity.png", r.field);
  fluid::write_vti(dir + "flow.vti", r.field);
  fluid::write_centrelines(c.out, r.field, c.u);
  fluid::Json j;
  j.add("case", c.flow);
  j.add("re", c.re);
  j.add("nx", p.nx);
  j.add("ny", p.ny);
  j.add("tau", p.tau);
  j.add("cells", procs);
  j.add("comm", c.comm);
  j.add("steps", r.steps);
  j.add("seconds", r.seconds);
  j.add("comm_seconds", r.comm_seconds);
  j.add("mlups", r.mlups);
  j.add("mass", r.last.mass);
  j.add("kinetic_energy", r.last.kinetic);
  j.add("max_speed", r.last.max_speed);
  j.add("residual", r.residual);
  fluid::write_json(dir + "summary.json", j);
}

fluid::SolveOptions options_of(const Cli& c, bool tty) {
  fluid::SolveOptions o;
  o.steps = c.steps;
  o.tol = c.tol;
  const auto t0 = std::chrono::steady_clock::now();
  if (tty) {
    o.progress = [t0, c](int step, const fluid::Diagnostics& d, double res) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double mlups = static_cast<double>(c.nx) * c.ny * step / s / 1e6;
      const double eta = s / step * (c.steps - step);
      std::fprintf(stderr, "\rstep %6d  residual %.3e  max|u| %.4f  %7.1f MLUPS  ETA %5.1f s ", step,
                   res, d.max_speed, mlups, eta);
    };
  }
  return o;
}

int run_one(const Cli& c) {
  const fluid::Params p = params_of(c);
  const int procs = c.procs > 0 ? c.procs : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  fluid::validate(p, c.comm == "shm" ? procs : 1);
  const bool tty = ::isatty(2) == 1;
  if (c.comm == "mpi") {
#ifdef FLUID_WITH_MPI
    int argc = 0;
    char** argv = nullptr;
    ipckit::mpi::Environment env(argc, argv);
    ipckit::MpiComm comm;
    fluid::validate(p, comm.size());
    const auto r = fluid::solve(comm, p, options_of(c, tty && comm.rank() == 0));
    if (comm.rank() == 0) {
      if (tty) std::fputc('\n', stderr);
      write_outputs(c, p, r, comm.size());
      std::printf("%s Re=%g %dx%d on %d MPI ranks: %d steps, %.2f s, %.1f MLUPS, residual %.2e\n",
                  c.flow.c_str(), c.re, p.nx, p.ny, comm.size(), r.steps, r.seconds, r.mlups, r.residual);
    }
    return 0;
#else
    std::fprintf(stderr, "fluid_cells: built without MPI\n");
    return 2;
#endif
  }
  ipckit::spmd::run(procs, [&](ipckit::Comm& comm) {
    const auto r = fluid::solve(comm, p, options_of(c, tty));
    if (comm.rank() != 0) return;
    if (tty) std::fputc('\n', stderr);
    write_outputs(c, p, r, procs);
    std::printf("%s Re=%g %dx%d on %d cells (%d x %d): %d steps, %.2f s, %.1f MLUPS, comm %.0f%%, "
                "residual %.2e\n",
                c.flow.c_str(), c.re, p.nx, p.ny, procs, r.dims[0], r.dims[1], r.steps, r.seconds,
                r.mlups, 100.0 * r.comm_seconds / r.seconds, r.residual);
    if (!c.out.empty()) std::printf("picture: %s/speed.png\n", c.out.c_str());
  });
  return 0;
}

// --sweep: independent serial runs, one per Reynolds number, as Pool tasks.
struct SweepResult {
  double re, seconds, mlups, residual;
  int steps;
};
SweepResult sweep_one(double re, int nx, int ny, int steps, double tol, double u, int flow) {
  Cli c;
  c.re = re;
  c.nx = nx;
  c.ny = ny;
  c.steps = steps;
  c.tol = tol;
  c.u = u;
  c.flow = flow == 0 ? "cavity" : flow == 1 ? "taylor-green" : "channel";
  const fluid::Params p = params_of(c);
  fluid::validate(p, 1);
  SweepResult out{re, 0, 0, 0, 0};
  // Several sweep tasks run at once, one per pool worker: none may pin its rank to CPU 0.
  ipckit::spmd::RunOptions ro;
  ro.pin = false;
  ipckit::spmd::run(1, [&](ipckit::Comm& comm) {
    const auto r = fluid::solve(comm, p, options_of(c, false));
    std::printf("  Re=%g: %d steps, %.2f s, %.1f MLUPS, residual %.2e\n", re, r.steps, r.seconds,
                r.mlups, r.residual);
    std::fflush(stdout);
  }, ro);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fluid_cells: D2Q9 lattice Boltzmann, one process per cell of the domain"};
  Cli c;
  app.add_option("--case", c.flow, "flow")->check(CLI::IsMember({"cavity", "taylor-green", "channel"}));
  app.add_option("--re", c.re, "Reynolds number")->check(CLI::PositiveNumber);
  app.add_option("--nx", c.nx, "lattice cells along x")->check(CLI::Range(2, 1 << 16));
  app.add_option("--ny", c.ny, "lattice cells along y")->check(CLI::Range(2, 1 << 16));
  app.add_option("--procs", c.procs, "cells (processes), --comm shm; 0: one per CPU")->check(CLI::Range(0, 1024));
  app.add_option("--comm", c.comm, "shm: forked processes; mpi: run under mpirun")
      ->check(CLI::IsMember({"shm", "mpi"}));
  app.add_option("--steps", c.steps, "at most this many steps")->check(CLI::Range(1, 100000000));
  app.add_option("--tol", c.tol, "stop when the relative velocity change per 100 steps is below");
  app.add_option("--out", c.out, "output folder: PNG, VTI, centreline CSV, summary JSON");
  app.add_option("--u", c.u, "characteristic speed in lattice units (lid, amplitude, centre)")
      ->check(CLI::Range(1e-4, 0.3));
  app.add_option("--collision", c.collision, "bgk, or trt (two relaxation times: stabler at high Re)")
      ->check(CLI::IsMember({"bgk", "trt"}));
  app.add_option("--precision", c.precision, "double (default) or float")
      ->check(CLI::IsMember({"double", "float"}));
  app.add_option("--sweep", c.sweep, "Reynolds numbers to run as independent Pool tasks")->delimiter(',');
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return 2;
  }
  try {
    if (!c.sweep.empty()) {
      ipckit::Pool pool;
      const int flow = c.flow == "cavity" ? 0 : c.flow == "taylor-green" ? 1 : 2;
      std::vector<std::tuple<double, int, int, int, double, double, int>> jobs;
      for (double re : c.sweep) jobs.emplace_back(re, c.nx, c.ny, c.steps, c.tol, c.u, flow);
      std::printf("sweep of %zu runs on a Pool of %zu workers\n", jobs.size(), pool.size());
      std::fflush(stdout);  // before the workers print
      (void)pool.starmap(sweep_one, jobs, ipckit::MapOptions{.chunksize = 1, .progress = {}});
      return 0;
    }
    return run_one(c);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "fluid_cells: %s\n", e.what());
    return 2;
  }
}
