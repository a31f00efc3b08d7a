// A tour of ipckit's foundation: forked workers share a segment, count under a robust mutex,
// step together through barrier phases, report through a semaphore — and then one worker is
// killed with SIGKILL to show that nobody hangs: the mutex is recovered and the barrier breaks.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <vector>

namespace {

struct Shared {
  ipckit::Mutex mutex;
  ipckit::Barrier barrier;
  ipckit::Semaphore done{0};
  long counter = 0;  // guarded by mutex
  explicit Shared(unsigned workers) : barrier(workers) {}
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipckit primitives demo: mutex, barrier, semaphore and shared arrays across fork"};
  unsigned workers = 4;
  unsigned phases = 1000;
  app.add_option("-w,--workers", workers, "worker processes")->check(CLI::Range(2u, 64u));
  app.add_option("-p,--phases", phases, "barrier phases per worker")
      ->check(CLI::Range(1u, 1000000u));
  CLI11_PARSE(app, argc, argv);

  auto seg = ipckit::Segment::anonymous(1 << 20);
  auto& sh = seg.make<Shared>(workers);
  ipckit::SharedArray<unsigned> progress(workers);

  std::printf(
      "1. %u workers x %u phases: increment a shared counter under a robust mutex,\n"
      "   then meet at a barrier; nobody may start phase k+1 before all finish phase k\n",
      workers, phases);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ipckit::Process> kids;
  for (unsigned w = 0; w < workers; ++w) {
    kids.push_back(ipckit::Process::spawn([&, w] {
      for (unsigned ph = 0; ph < phases; ++ph) {
        {
          ipckit::ScopedLock lock(sh.mutex);
          ++sh.counter;
        }
        progress[w] = ph + 1;
        sh.barrier.arrive_and_wait();
        for (unsigned v : progress.span()) {
          if (v < ph + 1) return 1;  // someone is behind: the barrier failed
        }
      }
      sh.done.post();
      return 0;
    }));
  }
  for (unsigned w = 0; w < workers; ++w) sh.done.wait();
  bool ok = true;
  for (auto& k : kids) ok = k.wait().success() && ok;
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("   counter = %ld (expected %ld), phase order %s, %.1f ms (%.2f us per phase)\n\n",
              sh.counter, static_cast<long>(workers) * phases, ok ? "held" : "BROKEN", ms,
              1000.0 * ms / phases);

  std::printf("2. a worker takes the mutex and is killed with SIGKILL while holding it\n");
  auto& sh2 = seg.make<Shared>(2u);
  auto victim = ipckit::Process::spawn([&] {
    sh2.mutex.lock();
    sh2.counter = -1;  // half-way through an update
    sh2.done.post();
    for (;;) ::pause();
  });
  sh2.done.wait();
  victim.kill(SIGKILL);
  std::printf("   victim %s\n", victim.wait().describe().c_str());
  const std::error_code ec = sh2.mutex.lock();
  std::printf("   next lock(): %s; repairing the counter and going on\n",
              ec ? ec.message().c_str() : "no error (unexpected)");
  sh2.counter = 0;
  sh2.mutex.unlock();

  std::printf("\n3. two parties at a barrier; one is killed before it arrives\n");
  auto sleeper = ipckit::Process::spawn([&] {
    sh2.barrier.attach();
    sh2.done.post();
    for (;;) ::pause();
  });
  sh2.done.wait();
  sleeper.kill(SIGKILL);
  const auto t1 = std::chrono::steady_clock::now();
  try {
    sh2.barrier.arrive_and_wait();
    std::printf("   barrier passed (unexpected)\n");
  } catch (const ipckit::Error& e) {
    const double waited =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    std::printf("   arrive_and_wait() threw after %.0f ms: %s\n", waited, e.what());
  }
  sleeper.wait();
  const bool all_ok = ok && sh.counter == static_cast<long>(workers) * phases && ec;
  std::printf("\n%s\n", all_ok ? "demo finished: every guarantee held" : "demo FAILED");
  return all_ok ? 0 : 1;
}
