// fluid_cells: a D2Q9 lattice-Boltzmann solver, one process per cell (block) of the domain,
// halos exchanged and diagnostics reduced every step through ipckit's Comm — forked ranks
// over shared memory (--comm shm) or MPI under mpirun (--comm mpi).
//
//   fluid_cells --case cavity --re 100 --nx 129 --ny 129 --procs 4 --tol 1e-7 --out out/
//   mpirun -np 4 fluid_cells --comm mpi --case taylor-green --nx 256 --ny 256 --steps 2000
//   fluid_cells --sweep 100,400,1000 --case cavity --nx 65 --ny 65   (independent runs on a Pool)
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage, 3 --tol not reached. Every input
// is checked, and --out made and proved writable, before any process is forked.
#include <sched.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <ipckit/ipckit.hpp>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "output.hpp"
#include "solver.hpp"
#ifdef FLUID_WITH_MPI
#include <ipckit/spmd/mpi_comm.hpp>
#endif

namespace {

enum ExitCode : int { kOk = 0, kFailed = 1, kBadInput = 2, kNotConverged = 3 };
constexpr int kProcsPerCpu = 8;   // --procs above this many per CPU is refused
constexpr int kMaxProcs = 1024;   // spmd::run's limit
constexpr int kCheckEvery = 100;  // steps between residual checks

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
  bool procs_given = false, out_given = false;

  // Crosses to --sweep's Pool workers by value (cereal).
  template <class Archive>
  void serialize(Archive& ar) {
    ar(flow, re, nx, ny, procs, comm, steps, tol, out, u, collision, precision, sweep, procs_given,
       out_given);
  }
};

int cpu_count() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}
int max_procs() { return std::min(kMaxProcs, kProcsPerCpu * cpu_count()); }

std::string fmt(const char* format, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

// A CLI11 check: a finite number in [lo, hi], or above lo when open_lo (%g in the messages).
CLI::Validator finite_number(double lo, double hi, bool open_lo = false) {
  const bool bounded = hi < std::numeric_limits<double>::max();
  const std::string range =
      bounded ? fmt("in [%g, %g]", lo, hi) : fmt(open_lo ? "> %g" : ">= %g", lo);
  const auto check = [=](std::string& s) -> std::string {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    const bool ok =
        !s.empty() && *end == '\0' && std::isfinite(v) && v <= hi && (open_lo ? v > lo : v >= lo);
    return ok ? "" : "'" + s + "' is not a finite number " + range;
  };
  return {check, bounded ? range : open_lo ? "POSITIVE" : "NONNEGATIVE"};
}

void add_options(CLI::App& app, Cli& c) {
  app.option_defaults()->always_capture_default();
  const double any = std::numeric_limits<double>::max();
  app.add_option("--case", c.flow, "flow")
      ->check(CLI::IsMember({"cavity", "taylor-green", "channel"}));
  app.add_option("--re", c.re, "Reynolds number")->check(finite_number(0, any, true));
  app.add_option("--nx", c.nx, "lattice cells along x")->check(CLI::Range(2, 1 << 16));
  app.add_option("--ny", c.ny, "lattice cells along y")->check(CLI::Range(2, 1 << 16));
  app.add_option("--procs", c.procs, "cells (processes), --comm shm; 0: one per CPU; limit below")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--comm", c.comm, "shm: forked processes; mpi: run under mpirun (-np: the cells)")
      ->check(CLI::IsMember({"shm", "mpi"}));
  app.add_option("--steps", c.steps, "at most this many steps")->check(CLI::Range(1, 100000000));
  app.add_option("--tol", c.tol,
                 "stop when the relative velocity change per 100 steps is below; "
                 "0: run all --steps")
      ->check(finite_number(0, any));
  app.add_option("--out", c.out,
                 "output folder (made if absent): PNG, VTI, CSV, summary JSON; none: no files");
  app.add_option("--u", c.u, "characteristic speed in lattice units (lid, amplitude, centre)")
      ->check(finite_number(1e-4, 0.3));
  app.add_option("--collision", c.collision,
                 "bgk, or trt (two relaxation times: stabler at high Re)")
      ->check(CLI::IsMember({"bgk", "trt"}));
  app.add_option("--precision", c.precision, "double or float")
      ->check(CLI::IsMember({"double", "float"}));
  app.add_option("--sweep", c.sweep, "Reynolds numbers to run as independent Pool tasks")
      ->delimiter(',')
      ->check(finite_number(0, any, true));
  app.footer(
      fmt("Exit codes: 0 ok; 1 runtime failure (a rank or a sweep run failed); 2 bad input or "
          "usage; 3 --tol given and not reached within --steps (by any sweep run).\n--procs: "
          "at most %d x the CPUs this process may use (here %d), and %d.",
          kProcsPerCpu, cpu_count(), kMaxProcs));
}

// ---- checks made before anything is forked: each throws std::invalid_argument (exit 2) ----

void warn_if(bool cond, const char* what) {
  if (cond) std::fprintf(stderr, "fluid_cells: warning: %s\n", what);
}

void check_usage(const Cli& c) {
  // Under mpirun without --comm mpi each process would run the whole problem, to the same --out.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(name);
    if (c.comm != "mpi" && v != nullptr && std::atoi(v) > 1) {
      throw std::invalid_argument(std::string("launched by mpirun (") + name + "=" + v +
                                  ") without --comm mpi: each process would run the whole problem "
                                  "and write the same --out; add --comm mpi");
    }
  }
  if (c.out_given && c.out.empty()) throw std::invalid_argument("--out needs a folder");
  if (!c.sweep.empty() && c.comm == "mpi") {
    throw std::invalid_argument("--sweep runs on a Pool of forked workers, not with --comm mpi");
  }
  if (c.procs > max_procs()) {
    throw std::invalid_argument(
        fmt("--procs %d is above the limit of %d (%d per CPU, %d CPUs, at most %d)", c.procs,
            max_procs(), kProcsPerCpu, cpu_count(), kMaxProcs));
  }
  const bool sweep = !c.sweep.empty();
  warn_if(c.procs_given && sweep, "--procs is ignored with --sweep (one process per run)");
  warn_if(c.out_given && sweep, "--out is ignored with --sweep (nothing is written)");
}

// Makes the --out folder and proves it writable with a probe file.
void prepare_out_folder(const std::string& out) {
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out)) {
    throw std::invalid_argument(
        "--out " + out + ": cannot make the folder: " + (ec ? ec.message() : "not a folder"));
  }
  const std::string probe = out + "/.fluid_cells_probe." + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (f == nullptr) {
    throw std::invalid_argument("--out " + out + ": cannot write there: " + std::strerror(errno));
  }
  std::fclose(f);
  std::remove(probe.c_str());
}

// ---- the run ----

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

fluid::SolveOptions options_of(const Cli& c, bool tty) {
  fluid::SolveOptions o;
  o.steps = c.steps;
  o.tol = c.tol;
  o.check_every = kCheckEvery;
  const auto t0 = std::chrono::steady_clock::now();
  if (tty) {
    o.progress = [t0, c](int step, const fluid::Diagnostics& d, double res) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double mlups = static_cast<double>(c.nx) * c.ny * step / s / 1e6;
      const double eta = s / step * (c.steps - step);
      std::fprintf(stderr, "\rstep %6d  residual %.3e  max|u| %.4f  %7.1f MLUPS  ETA %5.1f s ",
                   step, res, d.max_speed, mlups, eta);
    };
  }
  return o;
}

// What a run leaves for the exit code and the report (crosses processes as bytes).
struct Outcome {
  double residual = 0, seconds = 0, mlups = 0;
  int steps = 0;
};
Outcome outcome_of(const fluid::SolveResult& r) {
  return {r.residual, r.seconds, r.mlups, r.steps};
}

// As the solver stops: below --tol at a check after the first (which compares with rest).
bool converged(const Cli& c, const Outcome& o) {
  return c.tol > 0 && o.steps > kCheckEvery && o.residual < c.tol;
}

// 0, or 3 with a line on stderr (when `report`) if --tol was given and not reached.
int convergence_exit(const Cli& c, const Outcome& o, bool report = true,
                     const std::string& run = "") {
  if (c.tol <= 0 || converged(c, o)) return kOk;
  if (report) {
    std::fprintf(stderr,
                 "fluid_cells: %sdid not converge: residual %.3g after %d steps, tolerance %g\n",
                 run.c_str(), o.residual, o.steps, c.tol);
  }
  return kNotConverged;
}

void write_outputs(const Cli& c, const fluid::Params& p, const fluid::SolveResult& r, int procs) {
  if (c.out.empty()) return;
  const std::string dir = c.out + "/";
  fluid::write_speed_png(dir + "speed.png", r.field, c.u);
  fluid::write_vorticity_png(dir + "vorticity.png", r.field);
  fluid::write_vti(dir + "flow.vti", r.field);
  fluid::write_centrelines(c.out, r.field, c.u);
  fluid::Json j;
  j.add("case", c.flow).add("re", c.re).add("nx", p.nx).add("ny", p.ny).add("tau", p.tau);
  j.add("cells", procs).add("comm", c.comm).add("steps", r.steps).add("seconds", r.seconds);
  j.add("comm_seconds", r.comm_seconds).add("mlups", r.mlups).add("mass", r.last.mass);
  j.add("kinetic_energy", r.last.kinetic).add("max_speed", r.last.max_speed);
  j.add("residual", r.residual);
  if (c.tol > 0) j.add("tolerance", c.tol).add("converged", converged(c, outcome_of(r)));
  fluid::write_json(dir + "summary.json", j);
}

int run_mpi([[maybe_unused]] const Cli& c) {
#ifdef FLUID_WITH_MPI
  const fluid::Params p = params_of(c);
  ipckit::mpi::Environment env;
  ipckit::MpiComm comm;
  const bool root = comm.rank() == 0, tty = ::isatty(2) == 1;
  warn_if(root && c.procs_given, "--procs is ignored with --comm mpi (mpirun -np sets the ranks)");
  try {
    fluid::validate(p, comm.size());
  } catch (const std::invalid_argument& e) {  // the same on every rank: all return, no abort
    if (root) std::fprintf(stderr, "fluid_cells: %s\n", e.what());
    return kBadInput;
  }
  try {
    const auto r = fluid::solve(comm, p, options_of(c, tty && root));
    if (root) {
      if (tty) std::fputc('\n', stderr);
      write_outputs(c, p, r, comm.size());
      std::printf("%s Re=%g %dx%d on %d MPI ranks: %d steps, %.2f s, %.1f MLUPS, residual %.2e\n",
                  c.flow.c_str(), c.re, p.nx, p.ny, comm.size(), r.steps, r.seconds, r.mlups,
                  r.residual);
    }
    return convergence_exit(c, outcome_of(r), root);  // on every rank: the residual is reduced
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fluid_cells: rank %d: %s\n", comm.rank(), e.what());
    throw;  // the Environment then aborts the job (exit 1): other ranks may wait for this one
  }
#else
  throw std::invalid_argument("--comm mpi: this fluid_cells was built without MPI");
#endif
}

int run_shm(const Cli& c) {
  const int procs = c.procs > 0 ? c.procs : cpu_count();
  const fluid::Params p = params_of(c);
  fluid::validate(p, procs);
  const bool tty = ::isatty(2) == 1;
  ipckit::SharedArray<Outcome> outcome(1);  // rank 0's, back to this process
  ipckit::spmd::run(procs, [&](ipckit::Comm& comm) {
    const auto r = fluid::solve(comm, p, options_of(c, tty));
    if (comm.rank() != 0) return;
    if (tty) std::fputc('\n', stderr);
    write_outputs(c, p, r, procs);
    std::printf(
        "%s Re=%g %dx%d on %d cells (%d x %d): %d steps, %.2f s, %.1f MLUPS, comm %.0f%%, "
        "residual %.2e\n",
        c.flow.c_str(), c.re, p.nx, p.ny, procs, r.dims[0], r.dims[1], r.steps, r.seconds, r.mlups,
        100.0 * r.comm_seconds / r.seconds, r.residual);
    if (!c.out.empty()) std::printf("picture: %s/speed.png\n", c.out.c_str());
    std::fflush(stdout);
    outcome[0] = outcome_of(r);
  });
  return convergence_exit(c, outcome[0]);
}

// ---- --sweep: independent serial runs, one per Reynolds number, as Pool tasks ----

// In a Pool worker: one serial run of `c`, its one rank forked by spmd::run.
Outcome run_serial(const Cli& c) {
  const fluid::Params p = params_of(c);
  ipckit::SharedArray<Outcome> out(1);
  ipckit::spmd::RunOptions ro;
  ro.pin = false;  // several runs share the machine: none may pin its rank to CPU 0
  ipckit::spmd::run(
      1,
      [&](ipckit::Comm& comm) { out[0] = outcome_of(fluid::solve(comm, p, options_of(c, false))); },
      ro);
  return out[0];
}

Cli at_re(Cli c, double re) {
  c.re = re;
  return c;
}

int run_sweep(const Cli& c) {
  for (double re : c.sweep) {
    try {
      fluid::validate(params_of(at_re(c, re)), 1);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt("--sweep Re=%g: ", re) + e.what());
    }
  }
  ipckit::Pool pool;
  std::printf("sweep of %zu runs on a Pool of %zu workers\n", c.sweep.size(), pool.size());
  std::fflush(stdout);
  std::vector<ipckit::AsyncResult<Outcome>> runs;
  for (double re : c.sweep) {
    // The run's options cross to the worker by value (Cli::serialize).
    runs.push_back(pool.apply_async([](const Cli& cli) { return run_serial(cli); }, at_re(c, re)));
  }
  int failed = 0, not_converged = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const double re = c.sweep[i];
    try {
      const Outcome o = runs[i].get();
      std::printf("  Re=%g: %d steps, %.2f s, %.1f MLUPS, residual %.2e\n", re, o.steps, o.seconds,
                  o.mlups, o.residual);
      std::fflush(stdout);
      if (convergence_exit(c, o, true, fmt("Re=%g ", re)) != kOk) ++not_converged;
    } catch (const std::exception& e) {  // RemoteError (the run threw), WorkerLost (it died)
      std::fprintf(stderr, "fluid_cells: Re=%g failed: %s\n", re, e.what());
      ++failed;
    }
  }
  if (failed + not_converged > 0) {
    std::fprintf(stderr, "fluid_cells: sweep: %d of %zu runs failed, %d did not converge\n", failed,
                 c.sweep.size(), not_converged);
  }
  return failed > 0 ? kFailed : not_converged > 0 ? kNotConverged : kOk;
}

int run(const Cli& c) {
  check_usage(c);
  if (!c.sweep.empty()) return run_sweep(c);
  if (!c.out.empty()) prepare_out_folder(c.out);
  return c.comm == "mpi" ? run_mpi(c) : run_shm(c);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fluid_cells: D2Q9 lattice Boltzmann, one process per cell of the domain"};
  Cli c;
  add_options(app, c);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return kBadInput;
  }
  c.procs_given = app.count("--procs") > 0;
  c.out_given = app.count("--out") > 0;
  const auto fail = [](int code, const char* what) {
    std::fprintf(stderr, "fluid_cells: %s\n", what);
    return code;
  };
  try {
    return run(c);
  } catch (const std::invalid_argument& e) {
    return fail(kBadInput, e.what());
  } catch (const ipckit::Error& e) {  // spmd::RunError (a rank failed), a Pool or system error
    return fail(kFailed, e.what());
  } catch (const std::exception& e) {
    return fail(kFailed, e.what());
  }
}
