// pool_bench: ipckit::Pool on the workloads bench/pool_python.py runs on Python's
// multiprocessing.Pool(2), with the same names; bench/pool_report.py sets them side by side.
// Every benchmark reports its figure as a user counter: `us_per_task` (per-task overhead of a
// trivial task) or `ms` (start+stop, CPU-bound batches, recovery after kill -9).
#include <benchmark/benchmark.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "ipckit/core/process.hpp"
#include "ipckit/pool/pool.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::size_t kWorkers = 2;
constexpr int kSmallN = 20'000;
constexpr int kLargeN = 1'000'000;
constexpr int kCpuTasks = 100;

int trivial(int x) { return x * x; }

// About 1 ms of arithmetic for `loops` (calibrated below).
std::uint64_t burn(std::uint64_t loops) {
  std::uint64_t h = 1469598103934665603u;
  for (std::uint64_t i = 0; i < loops; ++i) {
    h ^= i;
    h *= 1099511628211u;
    benchmark::DoNotOptimize(h);
  }
  return h;
}

std::uint64_t loops_per_ms() {
  static const std::uint64_t k = [] {
    std::uint64_t loops = 100'000;
    for (;;) {
      const auto t0 = clock_type::now();
      burn(loops);
      const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
      if (ms > 20) return static_cast<std::uint64_t>(static_cast<double>(loops) / ms);
      loops *= 2;
    }
  }();
  return k;
}

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

double us(clock_type::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

ipckit::Pool warm_pool() {
  ipckit::Pool pool{kWorkers};
  (void)pool.map(trivial, iota(1000), 1);
  return pool;
}

// Times `run(pool)` (which runs n trivial tasks and returns something to keep) on a warm
// pool, and reports microseconds per task.
template <class Run>
void per_task(benchmark::State& state, std::size_t n, Run&& run) {
  ipckit::Pool pool = warm_pool();
  double total = 0;
  std::size_t tasks = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    auto kept = run(pool);
    total += us(clock_type::now() - t0);
    tasks += n;
    benchmark::DoNotOptimize(kept);
  }
  state.counters["us_per_task"] = total / static_cast<double>(tasks);
}

void BM_map_chunk1(benchmark::State& state) {
  const auto in = iota(kSmallN);
  per_task(state, in.size(), [&](ipckit::Pool& pool) { return pool.map(trivial, in, 1); });
}

void BM_imap_chunk1(benchmark::State& state) {
  const auto in = iota(kSmallN);
  per_task(state, in.size(), [&](ipckit::Pool& pool) {
    std::int64_t sum = 0;
    for (int r : pool.imap(trivial, in, 1)) sum += r;
    return sum;
  });
}

void BM_apply_async(benchmark::State& state) {
  std::vector<ipckit::AsyncResult<int>> rs;
  rs.reserve(kSmallN);
  per_task(state, kSmallN, [&](ipckit::Pool& pool) {
    rs.clear();
    for (int i = 0; i < kSmallN; ++i) rs.push_back(pool.apply_async(trivial, i));
    std::int64_t sum = 0;
    for (auto& r : rs) sum += r.get();
    return sum;
  });
}

void BM_map_auto_1M(benchmark::State& state) {
  const auto in = iota(kLargeN);
  per_task(state, in.size(), [&](ipckit::Pool& pool) { return pool.map(trivial, in); });
}

// Pool(2) made, closed and joined, with the given start method (forkserver: one exec of this
// program per pool, then two forks in the helper).
void start_stop(benchmark::State& state, ipckit::StartMethod method) {
  ipckit::PoolOptions o;
  o.processes = kWorkers;
  o.start = method;
  double total = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    ipckit::Pool pool{o};
    pool.close();
    pool.join();
    total += us(clock_type::now() - t0);
  }
  state.counters["ms"] = total / 1e3 / static_cast<double>(state.iterations());
}
void BM_start_stop(benchmark::State& state) { start_stop(state, ipckit::StartMethod::fork); }
void BM_start_stop_forkserver(benchmark::State& state) {
  start_stop(state, ipckit::StartMethod::forkserver);
}

void BM_cpu_seq(benchmark::State& state) {
  const std::uint64_t loops = loops_per_ms();
  double total = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::uint64_t h = 0;
    for (int i = 0; i < kCpuTasks; ++i) h ^= burn(loops);
    total += us(clock_type::now() - t0);
    benchmark::DoNotOptimize(h);
  }
  state.counters["ms"] = total / 1e3 / static_cast<double>(state.iterations());
}

void BM_cpu_pool(benchmark::State& state) {
  const std::uint64_t loops = loops_per_ms();
  ipckit::Pool pool = warm_pool();
  const std::vector<std::uint64_t> in(kCpuTasks, loops);
  double total = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    auto out = pool.map(burn, in, 1);
    total += us(clock_type::now() - t0);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["ms"] = total / 1e3 / static_cast<double>(state.iterations());
}

// The machine's own ceiling for the pool's CPU-bound figure: two forked processes (no pool)
// that each run half of the same tasks, started and reaped like the pool's workers.
void BM_cpu_ideal(benchmark::State& state) {
  const std::uint64_t loops = loops_per_ms();
  double total = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::vector<ipckit::Process> kids;
    for (std::size_t k = 0; k < kWorkers; ++k) {
      kids.push_back(ipckit::Process::spawn([loops] {
        std::uint64_t h = 0;
        for (std::size_t i = 0; i < kCpuTasks / kWorkers; ++i) h ^= burn(loops);
        return static_cast<int>(h & 1);
      }));
    }
    for (auto& k : kids) (void)k.wait();
    total += us(clock_type::now() - t0);
  }
  state.counters["ms"] = total / 1e3 / static_cast<double>(state.iterations());
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// A worker is killed with SIGKILL while it runs a task; measured: from the kill until a
// replacement worker has run a task (the pool is back at full strength).
void BM_recovery(benchmark::State& state) {
  ipckit::Pool pool = warm_pool();
  double total = 0;
  for (auto _ : state) {
    state.PauseTiming();
    // One 50 ms task per worker, so that the victim is mid-task.
    auto busy = pool.map_async(sleep_ms, std::vector<int>(kWorkers, 50), {.chunksize = 1});
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const pid_t victim = pool.stats()[0].pid;
    state.ResumeTiming();
    const auto t0 = clock_type::now();
    ::kill(victim, SIGKILL);
    // Full strength: every slot has a live worker other than the victim, and it runs tasks.
    for (;;) {
      bool ok = true;
      for (const auto& s : pool.stats()) ok &= s.pid > 0 && s.pid != victim;
      if (ok) break;
      std::this_thread::yield();
    }
    // The least-loaded worker takes it: the replacement (the other one still sleeps).
    benchmark::DoNotOptimize(pool.apply(trivial, 3));
    total += us(clock_type::now() - t0);
    state.PauseTiming();
    try {
      busy.get();
    } catch (const ipckit::WorkerLost&) {  // the victim's task
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(60));  // the other task ends too
    state.ResumeTiming();
  }
  state.counters["ms"] = total / 1e3 / static_cast<double>(state.iterations());
}

// ---- 100 MB through the pool, beside the memory's own speed ----------------------------------
// `gbps`: bytes moved / median time of the call. memcpy_100MB copies between two buffers
// already touched (the memory's speed); copy_100MB copy-constructs a vector (what any new
// 100 MB result costs: the copy plus the first-touch page faults of fresh memory).
constexpr std::size_t kBig = 100'000'000;

// Made by each benchmark and freed at its end: a process holding 100 MB makes every later
// fork() (Pool start, worker respawn) pay for copying its page tables.
std::vector<char> big_input() { return std::vector<char>(kBig, 'x'); }
std::size_t size_of(const std::vector<char>& v) { return v.size(); }
std::vector<char> make_big(std::size_t n) { return std::vector<char>(n, 'x'); }

void report_gbps(benchmark::State& state, double seconds) {
  state.counters["gbps"] =
      static_cast<double>(kBig) * static_cast<double>(state.iterations()) / seconds / 1e9;
}

void BM_memcpy_100MB(benchmark::State& state) {
  const std::vector<char> src = big_input();
  std::vector<char> dst(kBig, 'y');
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::memcpy(dst.data(), src.data(), kBig);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  report_gbps(state, seconds);
}

void BM_copy_100MB(benchmark::State& state) {
  const std::vector<char> src = big_input();
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::vector<char> dst(src);
    benchmark::DoNotOptimize(dst.data());
    seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  report_gbps(state, seconds);
}

// The task of large_result run here, without the pool: what making the result costs.
void BM_make_100MB(benchmark::State& state) {
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::vector<char> v = make_big(kBig);
    benchmark::DoNotOptimize(v.data());
    seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  report_gbps(state, seconds);
}

void BM_large_arg(benchmark::State& state) {
  ipckit::Pool pool = warm_pool();
  const std::vector<char> big = big_input();
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    const std::size_t n = pool.apply(size_of, big);
    seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
    if (n != kBig) state.SkipWithError("the worker saw another size");
  }
  report_gbps(state, seconds);
}

void BM_large_result(benchmark::State& state) {
  ipckit::Pool pool = warm_pool();
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::vector<char> v = pool.apply(make_big, kBig);
    seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
    if (v.size() != kBig || v[kBig / 2] != 'x') state.SkipWithError("a wrong result");
  }
  report_gbps(state, seconds);
}

}  // namespace

// Start and stop first, in a process that has not grown yet: fork's cost grows with the
// caller's memory (after the per-task workloads' 20 000 results it is about twice as slow).
BENCHMARK(BM_start_stop)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_start_stop_forkserver)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_map_chunk1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_imap_chunk1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_apply_async)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_map_auto_1M)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cpu_seq)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cpu_pool)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cpu_ideal)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_recovery)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(20);

// Last: whatever the 100 MB runs leave behind cannot slow the figures above.
BENCHMARK(BM_memcpy_100MB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);
BENCHMARK(BM_copy_100MB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);
BENCHMARK(BM_make_100MB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);
BENCHMARK(BM_large_arg)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);
BENCHMARK(BM_large_result)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);

BENCHMARK_MAIN();
