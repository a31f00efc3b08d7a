// spmd_bench: the SPMD communicator's figures, the same code on either backend:
//   spmd_bench --comm shm --procs N --out FILE            (forks N ranks: ShmComm)
//   mpirun -np N spmd_bench --comm mpi --out FILE         (MpiComm; Open MPI's vader)
// Measures, each as the median of 5 repetitions:
//   pingpong  rank 0 <-> 1 round trip for 8 B, 1 KiB, 64 KiB, 1 MiB (latency, and for
//             1 MiB the bandwidth size / (rtt / 2));
//   barrier   one barrier over all ranks;
//   allreduce one double, sum, over all ranks;
//   halo      a 2-D periodic CartComm halo exchange: 8 KiB faces, 8 B corners;
//   split     Comm::split into two halves and dropping them (make and free);
//   dup_allreduce  allreduce of one double on a dup of the communicator;
//   coll_*    every collective at 8 B, 1 KiB, 64 KiB, 1 MiB (spmd_osu.hpp), also through raw
//             Open MPI calls: mpirun -np N spmd_bench --comm raw --out FILE.
// Rank 0 appends one JSON object per figure, one per line, to FILE:
//   {"comm":"shm","procs":2,"name":"pingpong","bytes":8,"median_ns":...,"gb_per_s":...}
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/run.hpp"
#include "spmd_osu.hpp"
#ifdef IPCKIT_SPMD_BENCH_MPI
#include "ipckit/spmd/mpi_comm.hpp"
#endif

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int kReps = 5;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Out {
  std::string comm;
  int procs;
  std::FILE* f;
  void row(const char* name, std::size_t bytes, double ns, double gbs = 0) const {
    std::fprintf(f,
                 "{\"comm\":\"%s\",\"procs\":%d,\"name\":\"%s\",\"bytes\":%zu,"
                 "\"median_ns\":%.1f,\"gb_per_s\":%.3f}\n",
                 comm.c_str(), procs, name, bytes, ns, gbs);
    std::fflush(f);
  }
};

// Times `iters` calls of fn, kReps times, after a warm-up; the median ns per call. Every
// rank runs it (collectives need them all); a barrier lines the ranks up first.
double time_ns(ipckit::Comm& c, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < iters / 10 + 1; ++i) fn();
  std::vector<double> per;
  for (int rep = 0; rep < kReps; ++rep) {
    c.barrier();
    const auto t0 = clock_type::now();
    for (int i = 0; i < iters; ++i) fn();
    per.push_back(std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / iters);
  }
  // Every rank reports rank 0's figure.
  return c.broadcast(median(per), 0);
}

void body(ipckit::Comm& c, const Out* out) {
  const int r = c.rank();
  const auto row = [&](const char* name, std::size_t bytes, double ns, double gbs = 0) {
    if (r == 0) out->row(name, bytes, ns, gbs);
  };
  // Ping-pong between ranks 0 and 1 (the others wait at the barrier inside time_ns).
  for (std::size_t bytes :
       {std::size_t{8}, std::size_t{1} << 10, std::size_t{64} << 10, std::size_t{1} << 20}) {
    std::vector<std::byte> buf(bytes);
    const int iters = bytes >= (std::size_t{1} << 20) ? 200 : bytes >= 65536 ? 2000 : 20000;
    const double ns = time_ns(c, iters, [&] {
      if (r == 0) {
        c.send(1, std::span<const std::byte>(buf));
        c.recv(1, std::span<std::byte>(buf));
      } else if (r == 1) {
        c.recv(0, std::span<std::byte>(buf));
        c.send(0, std::span<const std::byte>(buf));
      }
    });
    row("pingpong", bytes, ns, static_cast<double>(bytes) / (ns / 2));
  }
  row("barrier", 0, time_ns(c, 20000, [&] { c.barrier(); }));
  double v = r;
  row("allreduce", 8, time_ns(c, 20000, [&] { v = c.allreduce(v, ipckit::ReduceOp::sum) * 0.5; }));
  // Halo exchange on a periodic 2-D grid: faces of 1024 doubles, corners of one.
  ipckit::CartComm grid(c, 2, {}, {true, true});
  const auto dirs = ipckit::CartComm::directions(2);
  std::vector<std::vector<double>> sb(dirs.size());
  std::vector<std::vector<double>> rb(dirs.size());
  std::vector<std::span<const std::byte>> ss;
  std::vector<std::span<std::byte>> rs;
  for (std::size_t d = 0; d < dirs.size(); ++d) {
    const bool face = dirs[d][0] == 0 || dirs[d][1] == 0;
    sb[d].assign(face ? 1024 : 1, 1.0);
    rb[d].assign(face ? 1024 : 1, 0.0);
    ss.push_back(std::as_bytes(std::span(sb[d])));
    rs.push_back(std::as_writable_bytes(std::span(rb[d])));
  }
  row("halo", 4 * 8192 + 4 * 8, time_ns(c, 2000, [&] { grid.halo_exchange(ss, rs); }));
  // Communicators: making and freeing a split, and a collective on a dup.
  row("split", 0, time_ns(c, 200, [&] { (void)c.split(r % 2, r); }));
  const std::unique_ptr<ipckit::Comm> dup = c.dup();
  row("dup_allreduce", 8,
      time_ns(c, 20000, [&] { v = dup->allreduce(v, ipckit::ReduceOp::sum) * 0.5; }));
}

// The OSU-style table: every collective, every size, through `c` or (raw) Open MPI itself.
void collectives(ipckit::Comm& c, const Out* out, bool raw) {
  (void)raw;
  for (const std::string& kind : osu::kinds()) {
    for (const std::size_t bytes : osu::sizes()) {
      if (kind == "barrier" && bytes != 8) continue;
      osu::Buffers b(c.size(), bytes);
#ifdef IPCKIT_SPMD_BENCH_MPI
      std::function<void()> op;
      if (raw) {
        op = osu::raw_op(static_cast<ipckit::MpiComm&>(c).native(), kind, b);
      } else {
        op = osu::comm_op(c, kind, b);
      }
#else
      const std::function<void()> op = osu::comm_op(c, kind, b);
#endif
      const double ns = time_ns(c, osu::iterations(bytes, c.size()), op);
      if (c.rank() == 0) out->row(("coll_" + kind).c_str(), kind == "barrier" ? 0 : bytes, ns);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --probe: exit 0 when this build has the MPI backend (run.sh asks before mpirun).
  if (argc >= 2 && std::strcmp(argv[argc - 1], "--probe") == 0) {
#ifdef IPCKIT_SPMD_BENCH_MPI
    return 0;
#else
    return 1;
#endif
  }
  std::string comm = "shm";
  int procs = 2;
  std::string path = "spmd.jsonl";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--comm")
      comm = argv[i + 1];
    else if (k == "--procs")
      procs = std::atoi(argv[i + 1]);
    else if (k == "--out")
      path = argv[i + 1];
  }
  if (comm == "shm") {
    std::FILE* f = std::fopen(path.c_str(), "a");
    if (f == nullptr) return 2;
    const Out out{comm, procs, f};
    ipckit::spmd::run(procs, [&](ipckit::Comm& c) {
      body(c, &out);
      collectives(c, &out, false);
    });
    std::fclose(f);
    return 0;
  }
#ifdef IPCKIT_SPMD_BENCH_MPI
  if (comm == "mpi" || comm == "raw") {
    ipckit::mpi::Environment env(argc, argv);
    ipckit::MpiComm c;
    std::FILE* f = c.rank() == 0 ? std::fopen(path.c_str(), "a") : nullptr;
    const Out out{comm, c.size(), f};
    if (comm == "mpi") body(c, &out);
    collectives(c, &out, comm == "raw");
    if (f != nullptr) std::fclose(f);
    return 0;
  }
#endif
  std::fprintf(stderr, "spmd_bench: --comm shm|mpi|raw (mpi and raw only when built with MPI)\n");
  return 2;
}
