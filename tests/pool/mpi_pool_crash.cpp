// A task that crashes its worker rank under mpirun: MPI ends the whole job, and the dying
// rank says which rank, pid and host it was and that it was running a task (ctest checks
// the output). `--exit` makes the task call exit(3) instead.
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ipckit/pool/mpi_pool.hpp"
#include "ipckit/spmd/mpi_comm.hpp"

namespace {
bool g_exit = false;  // set on every rank from argv: the same on all
int crash_on_3(int x) {
  if (x == 3) {
    if (g_exit) std::exit(3);
    std::raise(SIGSEGV);
  }
  return x;
}
}  // namespace

int main(int argc, char** argv) {
  ipckit::mpi::Environment env(argc, argv);
  g_exit = argc > 1 && std::strcmp(argv[1], "--exit") == 0;
  ipckit::mpi::Pool pool;
  if (!pool.is_driver()) return 0;
  std::vector<int> in{0, 1, 2, 3, 4, 5};
  (void)pool.map(crash_on_3, in, 1);
  return 0;  // not reached: the job ends
}
