// Figures for the foundation layer: what a notify, a lock, a post+wait and a barrier round
// cost, beside the physical floors measured in the same binary: a raw cache-line spin
// ping-pong and a raw futex ping-pong between two processes pinned to different cores.
#include <benchmark/benchmark.h>
#include <sched.h>

#include <atomic>
#include <cstdint>

#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/condition.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/event_count.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/semaphore.hpp"

namespace {

using ipckit::Barrier;
using ipckit::Process;
using ipckit::Segment;
using ipckit::WaitPolicy;

// Pins the caller to `cpu` when the machine has that many CPUs.
void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (cpu < CPU_SETSIZE) (void)sched_setaffinity(0, sizeof set, &set);
}

void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

WaitPolicy policy_for(int mode) {
  switch (mode) {
    case 0: return WaitPolicy::spin_only();
    case 1: return WaitPolicy::hybrid();
    default: return WaitPolicy::block();
  }
}
const char* mode_name(int mode) { return mode == 0 ? "spin" : mode == 1 ? "hybrid" : "block"; }

// ---- single-process costs --------------------------------------------------------------

void BM_EventCountNotifyNoWaiter(benchmark::State& state) {
  ipckit::EventCount ec;
  for (auto _ : state) ec.notify_all();
  state.SetLabel("notify with nobody sleeping");
}
BENCHMARK(BM_EventCountNotifyNoWaiter);

void BM_MutexLockUnlock(benchmark::State& state) {
  auto seg = Segment::anonymous(1 << 16);
  auto& m = seg.make<ipckit::Mutex>();
  for (auto _ : state) {
    m.lock();
    m.unlock();
  }
  state.SetLabel("uncontended, robust, process-shared");
}
BENCHMARK(BM_MutexLockUnlock);

void BM_SemaphorePostWait(benchmark::State& state) {
  auto seg = Segment::anonymous(1 << 16);
  auto& s = seg.make<ipckit::Semaphore>(0u);
  for (auto _ : state) {
    s.post();
    s.wait();
  }
  state.SetLabel("one process");
}
BENCHMARK(BM_SemaphorePostWait);

// ---- two-process round trips -----------------------------------------------------------
// Each benchmark forks one partner pinned to CPU 1 (the parent is on CPU 0) which performs
// exactly state.max_iterations rounds, so neither side waits for a round that never comes.
// The spin floor polls with PAUSE, like every ipckit spin loop (without it, leaving the loop
// costs a pipeline flush and the figure swings 100-500 ns on this VM).

struct Shared {
  alignas(64) std::atomic<std::uint32_t> ping{0};
  alignas(64) std::atomic<std::uint32_t> pong{0};
};

void BM_Floor_SpinPingPong(benchmark::State& state) {
  // One cache line moves back and forth: the parent writes odd values, the child even ones.
  auto seg = Segment::anonymous(1 << 16);
  auto& line = seg.make<Shared>().ping;
  const auto n = static_cast<std::uint32_t>(state.max_iterations);
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    for (std::uint32_t i = 1; i <= n; ++i) {
      while (line.load(std::memory_order_acquire) != 2 * i - 1) ipckit::cpu_relax();
      line.store(2 * i, std::memory_order_release);
    }
  });
  std::uint32_t i = 0;
  for (auto _ : state) {
    ++i;
    line.store(2 * i - 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * i) ipckit::cpu_relax();
  }
  child.wait();
  unpin();
  state.SetLabel("floor: one cache line round trip, spin");
}
BENCHMARK(BM_Floor_SpinPingPong)->UseRealTime();

void BM_Floor_FutexPingPong(benchmark::State& state) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sh = seg.make<Shared>();
  const auto n = static_cast<std::uint32_t>(state.max_iterations);
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    for (std::uint32_t i = 1; i <= n; ++i) {
      while (sh.ping.load(std::memory_order_acquire) != i) ipckit::futex_wait(sh.ping, i - 1);
      sh.pong.store(i, std::memory_order_release);
      ipckit::futex_wake(sh.pong, 1);
    }
  });
  std::uint32_t i = 0;
  for (auto _ : state) {
    sh.ping.store(++i, std::memory_order_release);
    ipckit::futex_wake(sh.ping, 1);
    while (sh.pong.load(std::memory_order_acquire) != i) ipckit::futex_wait(sh.pong, i - 1);
  }
  child.wait();
  unpin();
  state.SetLabel("floor: raw futex round trip, both sides sleep");
}
BENCHMARK(BM_Floor_FutexPingPong)->UseRealTime();

void BM_SemaphorePingPong(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  auto seg = Segment::anonymous(1 << 16);
  auto& a = seg.make<ipckit::Semaphore>(0u, policy_for(mode));
  auto& b = seg.make<ipckit::Semaphore>(0u, policy_for(mode));
  const auto n = state.max_iterations;
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    for (benchmark::IterationCount i = 0; i < n; ++i) {
      a.wait();
      b.post();
    }
  });
  for (auto _ : state) {
    a.post();
    b.wait();
  }
  child.wait();
  unpin();
  state.SetLabel(std::string("round trip, ") + mode_name(mode));
}
BENCHMARK(BM_SemaphorePingPong)->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

// Event: each side waits for its own event, clears it, and sets the other's: two set -> wake
// hand-offs a round, as the futex floor has two wakes.
void BM_EventPingPong(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  auto seg = Segment::anonymous(1 << 16);
  auto& a = seg.make<ipckit::Event>(policy_for(mode));
  auto& b = seg.make<ipckit::Event>(policy_for(mode));
  const auto n = state.max_iterations;
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    for (benchmark::IterationCount i = 0; i < n; ++i) {
      a.wait();
      a.clear();
      b.set();
    }
  });
  for (auto _ : state) {
    a.set();
    b.wait();
    b.clear();
  }
  child.wait();
  unpin();
  state.SetLabel(std::string("set -> wake round trip, ") + mode_name(mode));
}
BENCHMARK(BM_EventPingPong)->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

// Condition over the robust Mutex: a turn variable handed back and forth, each hand-off a
// notify_one -> wake and a relock: two a round.
struct Turns {
  ipckit::Mutex m;
  ipckit::Condition cv;
  std::uint64_t turn = 0;  // guarded by m: odd, the child's; even, the parent's
  explicit Turns(WaitPolicy p) : cv(p) {}
};
void BM_ConditionPingPong(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  auto seg = Segment::anonymous(1 << 16);
  auto& t = seg.make<Turns>(policy_for(mode));
  const auto n = state.max_iterations;
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    ipckit::ScopedLock lk(t.m);
    for (benchmark::IterationCount i = 0; i < n; ++i) {
      t.cv.wait(t.m, [&] { return t.turn % 2 == 1; });
      ++t.turn;
      t.cv.notify_one();
    }
  });
  {
    ipckit::ScopedLock lk(t.m);
    for (auto _ : state) {
      ++t.turn;
      t.cv.notify_one();
      t.cv.wait(t.m, [&] { return t.turn % 2 == 0; });
    }
  }
  child.wait();
  unpin();
  state.SetLabel(std::string("notify -> wake round trip, ") + mode_name(mode));
}
BENCHMARK(BM_ConditionPingPong)->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

void BM_BarrierRound2Proc(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  auto seg = Segment::anonymous(1 << 16);
  auto& bar = seg.make<Barrier>(2u, policy_for(mode));
  const auto n = state.max_iterations;
  pin(0);
  auto child = Process::spawn([&] {
    pin(1);
    for (benchmark::IterationCount i = 0; i < n; ++i) bar.arrive_and_wait();
  });
  for (auto _ : state) bar.arrive_and_wait();
  child.wait();
  unpin();
  state.SetLabel(std::string("2 processes, ") + mode_name(mode));
}
BENCHMARK(BM_BarrierRound2Proc)->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
