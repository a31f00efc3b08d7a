// The tutorial's twelve one-second jobs on an MPI job: rank 0 drives an ipckit::mpi::Pool,
// every other rank runs tasks. Under `mpirun -np 4` three ranks each take four jobs (about four
// seconds); started without mpirun the same program runs them on a local pool of this
// machine's CPUs.
//
//   mpirun -np 4 mpi_pool [--seconds 1.0] [--count 12]
//   mpi_pool [--seconds 1.0] [--count 12]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ipckit/pool/mpi_pool.hpp>
#include <ipckit/spmd/mpi_comm.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

// The job: a fixed time, then the square. It says where it ran.
struct Job {
  double seconds = 1.0;  // crosses to the ranks with the callable (trivially copyable)
  std::string operator()(int x) const {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    char host[256] = "?";
    (void)gethostname(host, sizeof host);
    return std::to_string(x * x) + " (pid " + std::to_string(getpid()) + " on " + host + ")";
  }
};

}  // namespace

int main(int argc, char** argv) {
  ipckit::mpi::Environment env(argc, argv);
  CLI::App app{"ipckit mpi_pool: Pool::map across the ranks of an MPI job"};
  double seconds = 1.0;
  int count = 12;
  app.add_option("-s,--seconds", seconds, "seconds each job takes")->check(CLI::Range(0.0, 60.0));
  app.add_option("-n,--count", count, "jobs: range(count)")->check(CLI::Range(0, 100000));
  CLI11_PARSE(app, argc, argv);

  ipckit::mpi::Pool pool;  // ranks 1..N-1 run tasks in here until rank 0's pool is done
  if (!pool.is_driver()) return 0;

  std::vector<int> inputs(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) inputs[static_cast<std::size_t>(i)] = i;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> out = pool.map(Job{seconds}, inputs, 1);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 0; i < count; ++i) {
    std::printf("job %2d -> %s\n", i, out[static_cast<std::size_t>(i)].c_str());
  }
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  std::printf("map of %d jobs of %.2f s took %.3f s on %zu workers (%s)\n", count, seconds, took,
              pool.size(), ranks > 1 ? "MPI ranks" : "local processes: started without mpirun");
  pool.close();
  pool.join();
  return 0;
}
