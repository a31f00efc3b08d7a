// fluid_bench: the fluid solver beside the machine's memory-bandwidth roofline, measured in
// the same run (issue 6):
//   BM_triad/procs:P        STREAM-like triad a = b + s*c over 3 x 128 MiB, P processes at
//                           once; counter gb_per_s (all processes together)
//   BM_lbm/n:N/procs:P/float:F  Taylor-Green on N x N lattice, P ranks (ShmComm), double (F=0)
//                           or float (F=1), 50 steps per iteration; counters mlups,
//                           imbalance (the ranks' compute time, slowest / fastest),
//                           comm_share (rank 0's share of the step spent in halo exchange and
//                           reductions beyond what the interior update hides), and gb_per_s =
//                           mlups x 144 bytes (72 for float: 9 populations read and written per
//                           update)
//   BM_pattern/procs:P      the kernel's memory pattern without arithmetic (9 arrays read and
//                           written in place, all at once), P processes; counter gb_per_s
//   BM_lbm_weak/block:B/procs:P  (--scaling) a B x B block per rank, P ranks: weak scaling
//   BM_pattern_two_copies/procs:P  the two-copy pattern (9 arrays in, 9 out with streaming
//                           stores), for comparison
// bench/fluid_report.py sets them side by side: roofline fractions (1 process at 2048^2 and
// 4096^2 against the 1-process triad), 1 -> 2 processes against the 2-process triad, and
// adds the MpiComm run that bench/run.sh makes with fluid_cells under mpirun.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "ipckit/core/process.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/run.hpp"
#include "pattern.hpp"
#include "solver.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr double kBytesPerUpdate = 144.0;

double triad_seconds(std::size_t n, int reps) {
  std::vector<double> a(n, 0.0), b(n, 1.0), c(n, 2.0);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + 3.0 * c[i];
    benchmark::DoNotOptimize(a.data());
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return best;
}

// Runs kernel(n, 5) in `procs` processes at once, each timing its best of 5 passes over n
// doubles per array; sets the counter gb_per_s to the bytes all of them moved per second
// (`arrays` arrays of n doubles each pass).
template <class Kernel>
void bandwidth(benchmark::State& state, std::size_t n, double arrays, Kernel kernel) {
  const int procs = static_cast<int>(state.range(0));
  double gbs = 0;
  for (auto _ : state) {
    ipckit::SharedArray<double> secs(static_cast<std::size_t>(procs));
    std::vector<ipckit::Process> kids;
    for (int p = 0; p < procs; ++p) {
      kids.push_back(ipckit::Process::spawn([&, p] {
        secs[static_cast<std::size_t>(p)] = kernel(n, 5);
        return 0;
      }));
    }
    for (auto& k : kids) (void)k.wait();
    double total = 0;
    for (int p = 0; p < procs; ++p)
      total += arrays * n * 8 / secs[static_cast<std::size_t>(p)] / 1e9;
    gbs = total;
  }
  state.counters["gb_per_s"] = gbs;
}

void BM_triad(benchmark::State& state) {
  bandwidth(state, std::size_t{16} << 20, 3.0, triad_seconds);  // 128 MiB per array
}

void BM_pattern(benchmark::State& state) {
  const auto procs = static_cast<std::size_t>(state.range(0));
  bandwidth(state, std::size_t{2050} * 2050 / procs, 18.0,
            [](std::size_t n, int reps) { return fluid::pattern_seconds(n, reps, true); });
}

void BM_pattern_two_copies(benchmark::State& state) {
  const auto procs = static_cast<std::size_t>(state.range(0));
  bandwidth(state, std::size_t{2050} * 2050 / procs, 18.0,
            [](std::size_t n, int reps) { return fluid::pattern_seconds(n, reps, false); });
}

// Taylor-Green on nx x ny over `procs` ranks, 50 steps per iteration.
void run_lbm(benchmark::State& state, int nx, int ny, int procs, bool single) {
  fluid::Params p;
  p.single = single;
  p.flow = fluid::Case::taylor_green;
  p.nx = nx;
  p.ny = ny;
  p.tau = 0.55;
  p.tg_u0 = 0.05;
  fluid::SolveOptions o;
  o.steps = 50;
  o.check_every = 50;
  double mlups = 0, share = 0, imbalance = 1;
  for (auto _ : state) {
    ipckit::SharedArray<double> out(3);
    ipckit::spmd::run(procs, [&](ipckit::Comm& comm) {
      const auto r = fluid::solve(comm, p, o);
      if (comm.rank() == 0) {
        out[0] = r.mlups;
        out[1] = r.comm_seconds / r.seconds;
        out[2] = r.imbalance;
      }
    });
    mlups = out[0];
    share = out[1];
    imbalance = out[2];
  }
  state.counters["mlups"] = mlups;
  state.counters["comm_share"] = share;
  state.counters["imbalance"] = imbalance;
  state.counters["gb_per_s"] = mlups * kBytesPerUpdate / (single ? 2 : 1) / 1e3;
}

void BM_lbm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  run_lbm(state, n, n, static_cast<int>(state.range(1)), state.range(2) != 0);
}

// Weak scaling: every rank gets a block x block block of its own (the lattice grows with the
// process grid that fluid::solve picks: the larger factor along the longer axis).
void BM_lbm_weak(benchmark::State& state) {
  const int block = static_cast<int>(state.range(0));
  const int procs = static_cast<int>(state.range(1));
  const auto d = ipckit::CartComm::dims_for(procs, 2);  // d[0] >= d[1]
  run_lbm(state, block * d[1], block * d[0], procs, false);
}

// The default set, for the 2-CPU figures of bench/run.sh; `--scaling` runs instead the
// triad and the solver at 4096^2 on 1, 2, 4, ... processes up to every CPU (strong scaling
// past two cores, on a machine that has them), and the solver with a 1024^2 and a 256^2
// block per process on as many (weak scaling, and the communication share of small blocks).
std::vector<int> process_counts() {
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> counts;
  for (int p = 1; p < cpus; p *= 2) counts.push_back(p);
  counts.push_back(cpus);
  return counts;
}

}  // namespace

int main(int argc, char** argv) {
  bool scaling = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--scaling") {
      scaling = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (scaling) {
    for (int p : process_counts()) {
      benchmark::RegisterBenchmark("BM_triad", BM_triad)
          ->ArgName("procs")
          ->Arg(p)
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
    for (int p : process_counts()) {
      benchmark::RegisterBenchmark("BM_lbm", BM_lbm)
          ->ArgNames({"n", "procs", "float"})
          ->Args({4096, p, 0})
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
    for (const int block : {1024, 256}) {
      for (int p : process_counts()) {
        benchmark::RegisterBenchmark("BM_lbm_weak", BM_lbm_weak)
            ->ArgNames({"block", "procs"})
            ->Args({block, p})
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond);
      }
    }
  } else {
    benchmark::RegisterBenchmark("BM_triad", BM_triad)
        ->ArgName("procs")
        ->Arg(1)
        ->Arg(2)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    using Bench = std::pair<const char*, void (*)(benchmark::State&)>;
    for (const auto& [name, fn] :
         {Bench{"BM_pattern", BM_pattern}, Bench{"BM_pattern_two_copies", BM_pattern_two_copies}}) {
      benchmark::RegisterBenchmark(name, fn)->ArgName("procs")->Arg(1)->Arg(2)->Iterations(1)->Unit(
          benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark("BM_lbm", BM_lbm)
        ->ArgNames({"n", "procs", "float"})
        ->Args({1024, 1, 0})
        ->Args({2048, 1, 0})
        ->Args({4096, 1, 0})
        ->Args({2048, 1, 1})
        ->Args({4096, 1, 1})
        ->Args({2048, 2, 0})
        ->Args({4096, 2, 0})
        ->Args({1024, 2, 0})
        ->Args({1024, 4, 0})
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  // The library revision, for the reports (bench/run.sh and bench/scaling.sh export it).
  if (const char* rev = std::getenv("IPCKIT_BENCH_REVISION"); rev != nullptr) {
    benchmark::AddCustomContext("ipckit_revision", rev);
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
