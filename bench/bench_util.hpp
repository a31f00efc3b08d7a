// Helpers shared by the channel benchmarks and the MPI ping-pong (which does not link
// ipckit): CPU pinning, a cheap cycle clock calibrated against CLOCK_MONOTONIC, and the
// percentiles of a sample of round trips. Header-only, no dependencies beyond libc.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace bench {

// Pins the caller to `cpu`; a no-op on a machine with fewer CPUs.
inline void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

inline void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

inline std::uint64_t monotonic_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Ticks of the cheapest monotonic counter: the TSC on x86 (constant and shared by all cores
// on every machine this runs on; a few ns to read against ~20 ns for a vDSO clock_gettime),
// nanoseconds elsewhere.
inline std::uint64_t ticks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return monotonic_ns();
#endif
}

// Nanoseconds per tick, measured once over ~50 ms against CLOCK_MONOTONIC.
inline double ns_per_tick() {
  static const double k = [] {
#if defined(__x86_64__) || defined(__i386__)
    const std::uint64_t n0 = monotonic_ns();
    const std::uint64_t t0 = ticks();
    timespec pause{0, 50'000'000};
    while (nanosleep(&pause, &pause) != 0) {
    }
    const std::uint64_t n1 = monotonic_ns();
    const std::uint64_t t1 = ticks();
    return static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0);
#else
    return 1.0;
#endif
  }();
  return k;
}

// Order statistics of a set of round trips, in nanoseconds.
struct Percentiles {
  double median = 0, p99 = 0, p999 = 0, max = 0;
};

// Sorts `samples` (ticks) in place. Quantile q is the smallest sample with at least q of
// the samples at or below it.
inline Percentiles percentiles(std::vector<std::uint64_t>& samples) {
  Percentiles p;
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  const double k = ns_per_tick();
  const auto at = [&](double q) {
    const auto n = samples.size();
    auto i = static_cast<std::size_t>(q * static_cast<double>(n) + 0.999999);
    i = std::clamp<std::size_t>(i, 1, n) - 1;
    return static_cast<double>(samples[i]) * k;
  };
  p.median = at(0.5);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.max = static_cast<double>(samples.back()) * k;
  return p;
}

}  // namespace bench
