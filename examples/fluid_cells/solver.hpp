// The distributed solver: the lattice split into one block per rank on a CartComm grid,
// halos exchanged every step (CartComm::ihalo_exchange, overlapped with the update of each
// block's interior) and diagnostics reduced every check_every steps. The same code runs on ShmComm
// (spmd::run) and MpiComm (mpirun). The flow field is bitwise identical for any number of
// ranks (every cell sees the same numbers); reduced diagnostics may differ in the last bits.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ipckit/spmd/comm.hpp"
#include "lbm.hpp"
#include "output.hpp"

namespace fluid {

struct SolveOptions {
  int steps = 1000;       // at most this many steps
  double tol = 0.0;       // stop when the relative velocity change per check falls below
  int check_every = 100;  // steps between diagnostics/residual checks
  // Called on rank 0 after each check: step, diagnostics, relative residual.
  std::function<void(int, const Diagnostics&, double)> progress;
};

struct SolveResult {
  int steps = 0;
  Diagnostics last;
  double residual = 0;      // relative velocity change at the last check
  double seconds = 0;       // wall time of the time loop
  double comm_seconds = 0;  // of which halo exchange and reductions not hidden (rank 0)
  double mlups = 0;         // million lattice updates per second, whole domain
  double imbalance = 1;     // the ranks' time outside communication, slowest / fastest
  std::vector<int> dims;    // the process grid
  Field field;              // on rank 0 only: the whole domain at the end
};

// The extent and offset of block `i` of `n` blocks over `len` cells (the first len % n
// blocks get one more).
void split(int len, int n, int i, int& offset, int& extent);

// The process grid for `procs` ranks on an nx x ny lattice: {x extent, y extent}, the larger
// along the longer axis (along y when square).
std::vector<int> process_dims(int procs, int nx, int ny);

// Checks the parameters and the process grid before anything runs; throws
// std::invalid_argument with a clear message.
void validate(const Params& p, int procs);

SolveResult solve(ipckit::Comm& comm, const Params& p, const SolveOptions& o);

}  // namespace fluid
