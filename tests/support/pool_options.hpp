// Pool options for tests whose tasks write to SharedArrays (or other anonymous shared memory)
// made before the pool: only workers forked from the test process share that memory; under
// the default forkserver a captured pointer means nothing in the worker.
#pragma once

#include <cstddef>

#include "ipckit/pool/pool.hpp"

namespace ipckit::testing {

inline PoolOptions forked(std::size_t n, PoolOptions o = {}) {
  o.processes = n;
  o.start = StartMethod::fork;
  return o;
}

}  // namespace ipckit::testing
