// mpi::Pool's figures, on the workloads bench/mpi_pool_python.py runs on mpi4py.futures'
// MPIPoolExecutor under the same mpirun settings (bench/run.sh runs both, one after the
// other). Run under mpirun: rank 0 drives, the other ranks serve. Writes JSON
//   {"context": {...}, "benchmarks": [{"name", "median", "unit", "values"}]}
// as the Python side does. Usage (under mpirun):
//   mpi_pool_bench out.json [--reps 5] [--n-small 20000]
// Workloads (the Python side uses the same names):
//   map_chunk1   pool.map(trivial, range(N), chunksize 1)                       us/task
//   submit       N pool.submit(trivial, i), then every result                   us/task
//   map_auto_1M  pool.map(trivial, range(1 000 000)), chunksize n / (4 workers)  us/task
// The pool is made once, warmed with one small map, outside the timed regions.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "bench_json.hpp"
#include "ipckit/pool/mpi_pool.hpp"
#include "ipckit/spmd/mpi_comm.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t trivial(std::int64_t x) { return x * x; }

using ipckit::bench::Result;

// Microseconds per task of `run` over n tasks, once per repetition.
template <class F>
Result per_task(const char* name, int reps, std::size_t n, F&& run) {
  Result r{name, {}, "us/task"};
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    run();
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    r.values.push_back(us / static_cast<double>(n));
    std::printf("  %-12s rep %d: %.3f us/task\n", name, i + 1, r.values.back());
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  ipckit::mpi::Environment env(argc, argv);
  std::string out;
  int reps = 5;
  std::size_t n_small = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--n-small") == 0 && i + 1 < argc) {
      n_small = static_cast<std::size_t>(std::atol(argv[++i]));
    } else {
      out = argv[i];
    }
  }
  ipckit::mpi::Pool pool;
  if (!pool.is_driver()) return 0;
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  std::vector<std::int64_t> small(n_small);
  std::iota(small.begin(), small.end(), 0);
  std::vector<std::int64_t> large(1'000'000);
  std::iota(large.begin(), large.end(), 0);
  (void)pool.map(trivial, small, 100);  // warm up every rank

  std::vector<Result> results;
  std::int64_t sink = 0;
  results.push_back(
      per_task("map_chunk1", reps, n_small, [&] { sink += pool.map(trivial, small, 1).back(); }));
  results.push_back(per_task("submit", reps, n_small, [&] {
    std::vector<ipckit::AsyncResult<std::int64_t>> futures;
    futures.reserve(n_small);
    for (std::int64_t x : small) futures.push_back(pool.submit(trivial, x));
    for (auto& f : futures) sink += f.get();
  }));
  results.push_back(per_task("map_auto_1M", reps, large.size(),
                             [&] { sink += pool.map(trivial, large).back(); }));
  pool.close();
  pool.join();

  const std::string json = ipckit::bench::to_json(
      "\"library\": \"ipckit::mpi::Pool\", \"ranks\": " + std::to_string(ranks) +
          ", \"workers\": " + std::to_string(pool.size()) +
          ", \"n_small\": " + std::to_string(n_small) + ", \"reps\": " + std::to_string(reps),
      results);
  ipckit::bench::write_json(out, json);
  std::printf("%s(checksum %lld)\n", json.c_str(), static_cast<long long>(sink));
  return 0;
}
