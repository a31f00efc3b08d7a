// Links ipckit::mpi: the consumer test builds it when the package has the MPI backend (it
// does not run it: that needs mpirun).
#include <cstdio>
#include <ipckit/spmd/mpi_comm.hpp>

int main(int argc, char** argv) {
  ipckit::mpi::Environment env(argc, argv);
  ipckit::MpiComm comm;
  const int ranks = comm.allreduce(1, ipckit::ReduceOp::sum);
  if (comm.rank() == 0) std::printf("consumer_mpi: %d ranks\n", ranks);
  return 0;
}
