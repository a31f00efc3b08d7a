// spmd_bench's OSU-style table: the latency of every collective at 8 B, 1 KiB, 64 KiB and
// 1 MiB (per rank: each rank's contribution, or each block for the all-to-alls; the vector
// of doubles for the reductions), through ipckit::Comm (ShmComm or MpiComm) or through raw
// Open MPI calls (`--comm raw`: MPI_Bcast, MPI_Allreduce, ... on MPI_COMM_WORLD, the anchor).
#pragma once

#include <cstddef>
#include <functional>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "ipckit/spmd/comm.hpp"
#ifdef IPCKIT_SPMD_BENCH_MPI
#include <mpi.h>
#endif

namespace osu {

inline const std::vector<std::string>& kinds() {
  static const std::vector<std::string> k = {
      "barrier",  "broadcast", "reduce",         "allreduce", "gather",
      "gatherv",  "scatter",   "scatterv",       "allgather", "allgatherv",
      "alltoall", "alltoallv", "reduce_scatter", "scan",      "exscan"};
  return k;
}

inline std::vector<std::size_t> sizes() { return {8, 1024, 65536, std::size_t{1} << 20}; }

// Buffers for one size: `out` and `in` of size() blocks, equal counts and packed displs.
struct Buffers {
  Buffers(int p, std::size_t bytes)
      : block(bytes),
        out(bytes * static_cast<std::size_t>(p), std::byte{1}),
        in(bytes * static_cast<std::size_t>(p)),
        counts(static_cast<std::size_t>(p), bytes),
        displs(static_cast<std::size_t>(p)),
        elems(static_cast<std::size_t>(p), bytes / 8),
        icounts(static_cast<std::size_t>(p), static_cast<int>(bytes)),
        idispls(static_cast<std::size_t>(p)),
        ielems(static_cast<std::size_t>(p), static_cast<int>(bytes / 8)) {
    for (std::size_t r = 0; r < counts.size(); ++r) {
      displs[r] = r * bytes;
      idispls[r] = static_cast<int>(r * bytes);
    }
  }
  std::size_t block;
  std::vector<std::byte> out, in;
  std::vector<std::size_t> counts, displs, elems;
  std::vector<int> icounts, idispls, ielems;
  std::span<const std::byte> mine() const { return {out.data(), block}; }
  std::span<std::byte> mine_in() { return {in.data(), block}; }
  double* doubles() { return reinterpret_cast<double*>(in.data()); }  // NOLINT: bench buffer
  const double* doubles_out() const {
    return reinterpret_cast<const double*>(out.data());  // NOLINT: bench buffer
  }
};

// One call of `kind` through ipckit::Comm.
inline std::function<void()> comm_op(ipckit::Comm& c, const std::string& kind, Buffers& b) {
  const ipckit::Reduction sum(ipckit::DataType::f64, ipckit::ReduceOp::sum);
  const std::size_t n = b.block / 8;
  const std::span<std::byte> whole(b.in);
  if (kind == "barrier") return [&c] { c.barrier(); };
  if (kind == "broadcast") return [&c, &b] { c.broadcast(b.mine_in(), 0); };
  if (kind == "reduce") return [&c, &b, n, sum] { c.reduce(b.doubles(), n, sum, 0); };
  if (kind == "allreduce") return [&c, &b, n, sum] { c.allreduce(b.doubles(), n, sum); };
  if (kind == "gather") return [&c, &b, whole] { c.gather(b.mine(), whole, 0); };
  if (kind == "gatherv") {
    return [&c, &b, whole] { c.gatherv(b.mine(), whole, b.counts, b.displs, 0); };
  }
  if (kind == "scatter") return [&c, &b] { c.scatter(b.out, b.mine_in(), 0); };
  if (kind == "scatterv") {
    return [&c, &b] { c.scatterv(b.out, b.counts, b.displs, b.mine_in(), 0); };
  }
  if (kind == "allgather") return [&c, &b, whole] { c.allgather(b.mine(), whole); };
  if (kind == "allgatherv") {
    return [&c, &b, whole] { c.allgatherv(b.mine(), whole, b.counts, b.displs); };
  }
  if (kind == "alltoall") return [&c, &b, whole] { c.alltoall(b.out, whole); };
  if (kind == "alltoallv") {
    return [&c, &b, whole] { c.alltoallv(b.out, b.counts, b.displs, whole, b.counts, b.displs); };
  }
  if (kind == "reduce_scatter") {
    return [&c, &b, sum] {
      c.reduce_scatter(b.out, std::span<std::byte>(b.in.data(), b.block), b.elems, sum);
    };
  }
  if (kind == "scan") return [&c, &b, n, sum] { c.scan(b.doubles(), n, sum); };
  return [&c, &b, n, sum] { c.exscan(b.doubles(), n, sum); };
}

#ifdef IPCKIT_SPMD_BENCH_MPI
// One call of `kind` through Open MPI directly (blocking forms, MPI_COMM_WORLD).
inline std::function<void()> raw_op(MPI_Comm w, const std::string& kind, Buffers& b) {
  const int n = static_cast<int>(b.block);
  const int d = n / 8;
  void* in = b.in.data();
  const void* out = b.out.data();
  if (kind == "barrier") return [w] { MPI_Barrier(w); };
  if (kind == "broadcast") return [w, in, n] { MPI_Bcast(in, n, MPI_BYTE, 0, w); };
  if (kind == "reduce") {
    return [w, in, out, d] { MPI_Reduce(out, in, d, MPI_DOUBLE, MPI_SUM, 0, w); };
  }
  if (kind == "allreduce") {
    return [w, in, d] { MPI_Allreduce(MPI_IN_PLACE, in, d, MPI_DOUBLE, MPI_SUM, w); };
  }
  if (kind == "gather") {
    return [w, in, out, n] { MPI_Gather(out, n, MPI_BYTE, in, n, MPI_BYTE, 0, w); };
  }
  if (kind == "gatherv") {
    return [w, in, out, n, &b] {
      MPI_Gatherv(out, n, MPI_BYTE, in, b.icounts.data(), b.idispls.data(), MPI_BYTE, 0, w);
    };
  }
  if (kind == "scatter") {
    return [w, in, out, n] { MPI_Scatter(out, n, MPI_BYTE, in, n, MPI_BYTE, 0, w); };
  }
  if (kind == "scatterv") {
    return [w, in, out, n, &b] {
      MPI_Scatterv(out, b.icounts.data(), b.idispls.data(), MPI_BYTE, in, n, MPI_BYTE, 0, w);
    };
  }
  if (kind == "allgather") {
    return [w, in, out, n] { MPI_Allgather(out, n, MPI_BYTE, in, n, MPI_BYTE, w); };
  }
  if (kind == "allgatherv") {
    return [w, in, out, n, &b] {
      MPI_Allgatherv(out, n, MPI_BYTE, in, b.icounts.data(), b.idispls.data(), MPI_BYTE, w);
    };
  }
  if (kind == "alltoall") {
    return [w, in, out, n] { MPI_Alltoall(out, n, MPI_BYTE, in, n, MPI_BYTE, w); };
  }
  if (kind == "alltoallv") {
    return [w, in, out, &b] {
      MPI_Alltoallv(out, b.icounts.data(), b.idispls.data(), MPI_BYTE, in, b.icounts.data(),
                    b.idispls.data(), MPI_BYTE, w);
    };
  }
  if (kind == "reduce_scatter") {
    return
        [w, in, out, &b] { MPI_Reduce_scatter(out, in, b.ielems.data(), MPI_DOUBLE, MPI_SUM, w); };
  }
  if (kind == "scan") {
    return [w, in, d] { MPI_Scan(MPI_IN_PLACE, in, d, MPI_DOUBLE, MPI_SUM, w); };
  }
  return [w, in, d] { MPI_Exscan(MPI_IN_PLACE, in, d, MPI_DOUBLE, MPI_SUM, w); };
}
#endif

// Calls per repetition: enough to time small sizes, few at 1 MiB.
inline int iterations(std::size_t bytes, int procs) {
  const int base = bytes >= (std::size_t{1} << 20) ? 10 : bytes >= 65536 ? 100 : 1000;
  return procs > 2 ? base / 2 : base;
}

}  // namespace osu
