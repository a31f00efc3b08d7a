// Regression test (ctest chaos.mutex_lost_wakeup) for a hang the chaos test found: four
// processes take turns on an ipckit::Mutex; one is killed (SIGKILL) at a random moment. Now
// and then a survivor slept in futex() forever although the mutex was free or held by a live
// process: the victim died inside pthread_mutex_unlock() between releasing the word and
// futex_wake() (or after being woken, before taking the lock), and a third process took the
// lock before the kernel's robust-list cleanup looked at the word, so the cleanup saw a live
// owner and woke nobody. Mutex::lock() now sleeps in bounded steps; this fails (exit 1) if
// any survivor is still blocked 2 s after the kill.
//
//   mutex_lost_wakeup [rounds] [--bounded]
// --bounded takes the lock with a lock_for(20 ms) loop instead of lock() (the workaround
// before the fix).
#include <signal.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/mutex.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 2000;
  const bool bounded = argc > 2 && std::strcmp(argv[2], "--bounded") == 0;
  std::mt19937_64 rng(42);
  int hangs = 0;
  for (int round = 0; round < rounds; ++round) {
    auto seg = ipckit::Segment::anonymous(1 << 16);
    auto& m = seg.make<ipckit::Mutex>();
    auto& block = seg.make<std::array<std::uint64_t, 256>>();
    std::vector<ipckit::Process> kids;
    for (int i = 0; i < 4; ++i) {
      kids.push_back(ipckit::Process::spawn([&] {
        for (int op = 0; op < 2000; ++op) {
          if (bounded) {
            while (m.lock_for(20ms) == make_error_code(ipckit::errc::timeout)) {
            }
          } else {
            (void)m.lock();  // owner_dead: the counter needs no repair
          }
          for (auto& w : block) w = w * 31 + static_cast<std::uint64_t>(op);  // a while inside
          m.unlock();
        }
      }));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    kids[0].kill(SIGKILL);
    kids[0].wait();
    for (int i = 1; i < 4; ++i) {
      if (!kids[static_cast<std::size_t>(i)].wait_for(2s)) {
        std::uint32_t word;
        std::memcpy(&word, reinterpret_cast<const std::byte*>(&m) + 8, sizeof word);
        std::printf("round %d: process %d still blocked 2 s after the kill (mutex word 0x%x)\n",
                    round, kids[static_cast<std::size_t>(i)].pid(), word);
        ++hangs;
      }
    }
    // ~Process kills and reaps a hung survivor.
  }
  std::printf("%d rounds, %d hangs (%s)\n", rounds, hangs, bounded ? "lock_for loop" : "lock()");
  return hangs == 0 ? 0 : 1;
}
