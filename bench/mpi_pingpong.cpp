// The MPI anchor for channel_bench: two ranks (run under `mpirun -np 2 --bind-to core`, Open
// MPI's vader shared-memory BTL, which polls: mode "spin"). Measures, like channel_bench,
//  - round trips of 8 B, 64 B, 1 KiB and 64 KiB: 5 repetitions of 10000 timed round trips
//    after 1000 warm-up rounds; each repetition's median, p99, p99.9 and max, and the
//    median of those over the repetitions. Before each repetition the two ranks also time
//    5000 raw cache-line round trips through an MPI shared-memory window (the spin floor of
//    that moment, as channel_bench measures it beside each of its figures);
//  - one-way throughput of 8 B ... 4 MiB messages: windows of MPI_Isend/MPI_Irecv, one
//    acknowledgement at the end; median over 5 repetitions of msgs/s and GB/s.
// Writes JSON to argv[1] (default mpi.json) for bench/channels_report.py.
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

constexpr int kReps = 5;
constexpr int kRounds = 10000;
constexpr int kWarmRounds = 1000;
constexpr std::size_t kMiB = 1024 * 1024;

constexpr int kFloorRounds = 5000;

struct RttRow {
  std::size_t bytes;
  bench::Percentiles p;
  double floor_spin = 0;    // median of the repetitions' floor medians
  double x_floor_spin = 0;  // median of the repetitions' median / floor
};

// One cache line in an MPI shared-memory window, bounced between the ranks with PAUSE.
class SpinFloor {
 public:
  SpinFloor() {
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node_);
    int rank = 0;
    MPI_Comm_rank(node_, &rank);
    void* base = nullptr;
    MPI_Win_allocate_shared(rank == 0 ? 128 : 0, 1, MPI_INFO_NULL, node_, &base, &win_);
    MPI_Aint bytes = 0;
    int unit = 0;
    MPI_Win_shared_query(win_, 0, &bytes, &unit, &base);
    line_ = static_cast<std::uint64_t*>(base);
    if (rank == 0) __atomic_store_n(line_, 0, __ATOMIC_RELEASE);
    MPI_Barrier(node_);
  }
  SpinFloor(const SpinFloor&) = delete;
  SpinFloor& operator=(const SpinFloor&) = delete;
  ~SpinFloor() {
    MPI_Win_free(&win_);
    MPI_Comm_free(&node_);
  }

  // Median round trip in ns on rank 0 (0 on rank 1).
  double measure(int rank) {
    std::vector<std::uint64_t> s;
    s.reserve(kFloorRounds);
    MPI_Barrier(MPI_COMM_WORLD);
    std::uint64_t prev = bench::ticks();
    for (int k = 0; k < kFloorRounds; ++k) {
      ++seq_;
      if (rank == 0) {
        __atomic_store_n(line_, 2 * seq_ - 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(line_, __ATOMIC_ACQUIRE) != 2 * seq_) relax();
        const std::uint64_t now = bench::ticks();
        s.push_back(now - prev);
        prev = now;
      } else {
        while (__atomic_load_n(line_, __ATOMIC_ACQUIRE) != 2 * seq_ - 1) relax();
        __atomic_store_n(line_, 2 * seq_, __ATOMIC_RELEASE);
      }
    }
    return rank == 0 ? bench::percentiles(s).median : 0.0;
  }

 private:
  static void relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  MPI_Comm node_ = MPI_COMM_NULL;
  MPI_Win win_ = MPI_WIN_NULL;
  std::uint64_t* line_ = nullptr;
  std::uint64_t seq_ = 0;
};
struct TputRow {
  std::size_t bytes;
  double msgs_per_s;
  double gb_per_s;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void ping(int rank, std::vector<char>& buf, int n) {
  if (rank == 0) {
    MPI_Send(buf.data(), n, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
    MPI_Recv(buf.data(), n, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(buf.data(), n, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Send(buf.data(), n, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
  }
}

RttRow rtt(int rank, std::size_t bytes, SpinFloor& floor) {
  std::vector<char> buf(bytes, 1);
  const int n = static_cast<int>(bytes);
  std::vector<double> med, p99, p999, mx, fl, xfl;
  std::vector<std::uint64_t> samples(kRounds);
  for (int rep = 0; rep < kReps; ++rep) {
    fl.push_back(floor.measure(rank));
    MPI_Barrier(MPI_COMM_WORLD);
    for (int i = 0; i < kWarmRounds; ++i) ping(rank, buf, n);
    std::uint64_t prev = bench::ticks();
    for (int i = 0; i < kRounds; ++i) {
      ping(rank, buf, n);
      const std::uint64_t now = bench::ticks();
      samples[static_cast<std::size_t>(i)] = now - prev;
      prev = now;
    }
    const bench::Percentiles p = bench::percentiles(samples);
    med.push_back(p.median);
    p99.push_back(p.p99);
    p999.push_back(p.p999);
    mx.push_back(p.max);
    xfl.push_back(fl.back() > 0 ? p.median / fl.back() : 0.0);
  }
  return {bytes, {median(med), median(p99), median(p999), median(mx)}, median(fl), median(xfl)};
}

// Rank 0 sends `msgs` messages in windows of non-blocking sends; rank 1 receives them into
// one buffer and acknowledges the last window. Returns seconds on rank 0.
double stream(int rank, std::vector<char>& buf, int n, long msgs, int window) {
  std::vector<MPI_Request> req(static_cast<std::size_t>(window));
  char ack = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  const std::uint64_t t0 = bench::monotonic_ns();
  for (long sent = 0; sent < msgs; sent += window) {
    const int w = static_cast<int>(std::min<long>(window, msgs - sent));
    for (int j = 0; j < w; ++j) {
      if (rank == 0) {
        MPI_Isend(buf.data(), n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, &req[static_cast<std::size_t>(j)]);
      } else {
        MPI_Irecv(buf.data(), n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, &req[static_cast<std::size_t>(j)]);
      }
    }
    MPI_Waitall(w, req.data(), MPI_STATUSES_IGNORE);
  }
  if (rank == 0) {
    MPI_Recv(&ack, 1, MPI_BYTE, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else {
    MPI_Send(&ack, 1, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
  }
  return static_cast<double>(bench::monotonic_ns() - t0) * 1e-9;
}

TputRow throughput(int rank, std::size_t bytes) {
  std::vector<char> buf(bytes, 1);
  const int n = static_cast<int>(bytes);
  const long msgs = std::clamp<long>(static_cast<long>(256 * kMiB / bytes), 64, 200000);
  const int window = static_cast<int>(std::clamp<std::size_t>(16 * kMiB / bytes, 4, 64));
  (void)stream(rank, buf, n, std::min<long>(msgs, 1000), window);
  std::vector<double> rate;
  for (int rep = 0; rep < kReps; ++rep) {
    rate.push_back(static_cast<double>(msgs) / stream(rank, buf, n, msgs, window));
  }
  const double m = median(rate);
  return {bytes, m, m * static_cast<double>(bytes) / 1e9};
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "mpi_pingpong: needs exactly 2 ranks, got %d\n", size);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  if (rank == 0) (void)bench::ns_per_tick();
  MPI_Barrier(MPI_COMM_WORLD);

  std::vector<RttRow> rtts;
  {
    SpinFloor floor;
    for (const std::size_t b :
         {std::size_t{8}, std::size_t{64}, std::size_t{1024}, 64 * std::size_t{1024}}) {
      rtts.push_back(rtt(rank, b, floor));
    }
  }
  std::vector<TputRow> tputs;
  for (const std::size_t b : {std::size_t{8}, std::size_t{64}, std::size_t{512},
                              4 * std::size_t{1024}, 64 * std::size_t{1024}, kMiB, 4 * kMiB}) {
    tputs.push_back(throughput(rank, b));
  }

  if (rank == 0) {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    std::string lib(version, static_cast<std::size_t>(len));
    lib = lib.substr(0, lib.find_first_of(",\n"));
    char date[64];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", std::localtime(&now));
    const char* path = argc > 1 ? argv[1] : "mpi.json";
    std::FILE* f = std::fopen(path, "w");
    if (f == nullptr) {
      std::perror(path);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    std::fprintf(
        f,
        "{\n  \"context\": {\"date\": \"%s\", \"library\": \"%s\", \"transport\": \"mpi\", "
        "\"mode\": \"spin\", \"repetitions\": %d, \"round_trips\": %d},\n  \"rtt\": [\n",
        date, lib.c_str(), kReps, kRounds);
    for (std::size_t i = 0; i < rtts.size(); ++i) {
      const auto& r = rtts[i];
      std::fprintf(
          f,
          "    {\"transport\": \"mpi\", \"mode\": \"spin\", \"bytes\": %zu, \"median_ns\": %.1f, "
          "\"p99_ns\": %.1f, \"p999_ns\": %.1f, \"max_ns\": %.1f, \"floor_spin_ns\": %.1f, "
          "\"x_floor_spin\": %.3f}%s\n",
          r.bytes, r.p.median, r.p.p99, r.p.p999, r.p.max, r.floor_spin, r.x_floor_spin,
          i + 1 < rtts.size() ? "," : "");
    }
    std::fprintf(f, "  ],\n  \"throughput\": [\n");
    for (std::size_t i = 0; i < tputs.size(); ++i) {
      const auto& t = tputs[i];
      std::fprintf(
          f,
          "    {\"transport\": \"mpi\", \"mode\": \"spin\", \"bytes\": %zu, \"msgs_per_s\": %.1f, "
          "\"gb_per_s\": %.4f}%s\n",
          t.bytes, t.msgs_per_s, t.gb_per_s, i + 1 < tputs.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
    for (const auto& r : rtts) {
      std::printf(
          "mpi rtt %7zu B: median %9.1f ns  p99 %9.1f  p99.9 %9.1f  max %9.1f  "
          "(spin floor %.1f ns)\n",
          r.bytes, r.p.median, r.p.p99, r.p.p999, r.p.max, r.floor_spin);
    }
    for (const auto& t : tputs) {
      std::printf("mpi one-way %7zu B: %12.0f msgs/s  %7.3f GB/s\n", t.bytes, t.msgs_per_s,
                  t.gb_per_s);
    }
  }
  MPI_Finalize();
  return 0;
}
