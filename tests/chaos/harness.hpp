// The chaos program's common parts: one row of results per scenario, the per-iteration
// context (a seeded generator, the row, the limits), what a child records in shared memory
// about how its calls ended, self-checking messages, and the kill / wait / leak helpers every
// scenario uses.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit::chaos {

// The signals a victim dies of, chosen at random.
inline constexpr std::array<int, 3> kSignals = {SIGKILL, SIGSEGV, SIGABRT};
int signal_index(int sig) noexcept;  // 0, 1, 2 in kSignals order

// How long a survivor may take, after its peer died, to return or raise the documented error.
inline constexpr std::chrono::milliseconds kSurvivorBound{2000};

// One scenario's numbers (a row of the table).
struct Row {
  std::string name;
  std::uint64_t iterations = 0;
  std::array<std::uint64_t, 3> kills{};  // by SIGKILL, SIGSEGV, SIGABRT
  std::uint64_t no_kill = 0;             // the victim had finished before the signal came
  std::uint64_t acked = 0;               // messages whose send returned
  std::uint64_t received = 0;            // received, in order, with the right bytes
  std::uint64_t reported_lost = 0;       // acked, not received, and the loss was reported
  std::uint64_t lost = 0;                // acked, not received, nothing reported: a failure
  std::uint64_t tasks = 0;               // pool tasks / SPMD rounds / lock holds checked
  std::uint64_t hangs = 0;
  std::uint64_t leaks = 0;
  std::uint64_t failures = 0;  // duplicates, corruption, phantoms, wrong errors
  double max_latency_ms = 0;   // survivor's error after the kill, worst case
  double max_extra_ms = 0;     // scenario-specific (pool parent: workers gone after)
  std::vector<std::string> notes;

  void latency(std::int64_t ns) {
    if (ns > 0) max_latency_ms = std::max(max_latency_ms, static_cast<double>(ns) / 1e6);
  }
  void count_kill(int sig) { ++kills[static_cast<std::size_t>(signal_index(sig))]; }
  // Records a failure of `kind` (hang, leak, failure) with a note for the report.
  void fail(std::uint64_t& counter, std::string note);
};

// What one iteration of a scenario gets.
struct Ctx {
  std::uint64_t iteration = 0;
  std::uint64_t seed = 0;  // this iteration's seed (from the run's seed and the iteration)
  std::mt19937_64 rng;
  Row* row = nullptr;
  bool verbose = false;
  // A fresh name for a named segment, under this run's prefix (checked for leaks).
  std::string segment_name() const;

  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng); }
  int random_signal() { return kSignals[uniform(0, kSignals.size() - 1)]; }
  // A delay for an external kill: mostly short, sometimes up to `max_us`.
  std::chrono::microseconds kill_delay(std::uint64_t max_us = 20'000);
  // "iteration 12 (seed ...)": for failure notes.
  std::string where() const;
};

// A fault planted on purpose (--plant) to show that the checks catch it: "" (none), "fd",
// "child", "shm" (leaks in the chaos process), "lose" (consumers drop message 3 unrecorded),
// "hang" (the consumer of the SPSC scenario ignores peer_dead and waits on).
extern std::string planted;

// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
std::int64_t now_ns() noexcept;

// How a child's calls ended, written by the child in shared memory.
enum Outcome : std::int32_t {
  kRunning = 0,
  kReturned = 1,    // finished its work normally
  kPeerDead = 2,    // errc::peer_dead
  kClosed = 3,      // errc::closed
  kBadFrame = 4,    // errc::bad_frame
  kBroken = 5,      // errc::barrier_broken
  kWorkerLost = 6,  // WorkerLost
  kOtherError = 7,
};
const char* outcome_name(std::int32_t o) noexcept;
std::int32_t outcome_of(const Error& e) noexcept;

// One child's report (in shared memory): its pid, how it ended and when.
struct Party {
  std::atomic<pid_t> pid{0};
  std::atomic<std::int32_t> outcome{kRunning};
  std::atomic<std::int64_t> end_ns{0};
  char error[160] = {};

  void finish(std::int32_t o, const char* what = nullptr) noexcept;
};

// The victim's plan when it raises its own signal at a chosen point (shared memory).
struct SelfRaise {
  std::atomic<std::int32_t> role{-1};  // which party raises; -1: nobody (external kill)
  std::atomic<std::int32_t> sig{0};
  std::atomic<std::int32_t> point{0};  // scenario-specific
  std::atomic<std::uint64_t> at{0};    // message / round / task index
  std::atomic<std::int64_t> raised_ns{0};

  // In the victim: when role, index and point match, records the time and dies of `sig`.
  void maybe(std::int32_t my_role, std::uint64_t index, std::int32_t here) noexcept;
  [[noreturn]] void now() noexcept;
};

// ---- self-checking messages --------------------------------------------------------------
// A message is a 24-byte header {seq, size, checksum} and a body that follows from the seed
// and seq; the consumer checks the size, the checksum over the bytes it got, and the sequence.
inline constexpr std::size_t kMsgHeader = 24;
std::uint64_t mix64(std::uint64_t x) noexcept;
// The size of message `seq` in [kMsgHeader, max]: many small, some large (kills land in the
// middle of their copies).
std::size_t message_size(std::uint64_t seed, std::uint64_t seq, std::size_t max) noexcept;
// What sizes a channel's messages have: fixed (queues of one message type), or
// message_size() up to `max`, rounded up to whole 8-byte words when `words` is set.
struct SizeRule {
  std::size_t max = 0;
  bool fixed = false;
  bool words = false;
  [[nodiscard]] std::size_t of(std::uint64_t seed, std::uint64_t seq) const noexcept {
    if (fixed) return max;
    const std::size_t n = message_size(seed, seq, max);
    return words ? (n + 7) / 8 * 8 : n;
  }
};
// Writes message `seq` into `out` (out.size() bytes). When `partial` is set, writes only
// that many leading bytes (for a victim killed in the middle of a copy).
void fill_message(std::span<std::byte> out, std::uint64_t seed, std::uint64_t seq,
                  std::optional<std::size_t> partial = {}) noexcept;

// The consumer's record of what it got (shared memory).
struct Ledger {
  std::atomic<std::uint64_t> attempted{0};  // producer: messages begun
  std::atomic<std::uint64_t> acked{0};      // producer: messages whose send returned
  std::atomic<std::uint64_t> received{0};   // consumer: next expected seq
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> gaps{0};  // messages skipped over: lost
  std::atomic<std::uint64_t> corrupt{0};
  std::atomic<std::uint64_t> phantoms{0};  // a seq the producer never began

  // Consumer: checks one message against the seed and the channel's size rule.
  void check(std::span<const std::byte> msg, std::uint64_t seed, const SizeRule& sizes) noexcept;
  [[nodiscard]] std::uint64_t bad() const noexcept {
    return duplicates.load() + gaps.load() + corrupt.load() + phantoms.load();
  }
  [[nodiscard]] std::string describe() const;
};

// ---- state a lock guards ----------------------------------------------------------------
// A counter `a` with a copy `b` and a 2 KiB block that follows from it: an update moves a,
// rewrites the block, then sets b, so an update cut short is seen (consistent() false) and
// rolled back to b by whoever repairs it.
struct Guarded {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::uint64_t block[256] = {};
};
inline void rewrite(Guarded& g, std::uint64_t v) noexcept {
  for (std::size_t i = 0; i < 256; ++i) g.block[i] = mix64(v * 256 + i);
}
inline bool consistent(const Guarded& g) noexcept {
  if (g.a != g.b) return false;
  for (std::size_t i = 0; i < 256; ++i) {
    if (g.block[i] != mix64(g.a * 256 + i)) return false;
  }
  return true;
}
// Rolls a cut-short update back; true when there was one.
inline bool repair(Guarded& g) noexcept {
  if (consistent(g)) return false;
  g.a = g.b;
  rewrite(g, g.b);
  return true;
}

// ---- processes ------------------------------------------------------------------------------
// Waits for `p` until `deadline_ns` (now_ns() clock). On time: its status. Too late: kills
// it with SIGKILL, reaps it and returns nullopt (a hang).
std::optional<ExitStatus> wait_or_kill(Process& p, std::int64_t deadline_ns);
// What the last process wait_or_kill() killed was doing ("state S, syscall 202 ...").
const std::string& last_hang_info();
// Polls `ready` every 50 µs for up to `limit`; true once it holds.
template <class Pred>
bool poll_until(Pred&& ready, std::chrono::milliseconds limit = std::chrono::milliseconds(5000));
// Children spin on `go` (shared memory) until the parent releases them.
void wait_for_go(const std::atomic<std::uint32_t>& go) noexcept;
// Sleeps `d` in the parent (precise enough for kill delays).
void sleep_for(std::chrono::microseconds d) noexcept;
// True once `pid` is gone or a zombie.
bool process_gone(pid_t pid) noexcept;
// Resets SIGSEGV/SIGABRT/SIGBUS to their default action (a sanitizer's handler would turn a
// victim's death into an exit code) and turns off core dumps; inherited by every child.
void make_signals_fatal() noexcept;

// ---- leaks ----------------------------------------------------------------------------------
// What the chaos process had before an iteration: open fds and its /dev/shm entries (every
// name made by ipckit's default prefix or this run's, not the unit tests' "ipckit-test-").
class LeakGuard {
 public:
  LeakGuard();
  // Children (and grandchildren re-parented here: the chaos process is a subreaper) still
  // alive after a grace period, new fds and new /dev/shm entries each count as one leak;
  // they are cleaned up so that the next iteration starts clean. Zombies are reaped.
  void check(Row& row, const Ctx& ctx);

 private:
  std::set<int> fds_;
  std::set<std::string> shm_;
};
// The /dev/shm names the leak check watches.
std::set<std::string> watched_shm_entries();
// This run's prefix for named segments: "ipckit-chaos-<pid>".
const std::string& run_prefix();

template <class Pred>
bool poll_until(Pred&& ready, std::chrono::milliseconds limit) {
  const std::int64_t end = now_ns() + std::chrono::nanoseconds(limit).count();
  while (!ready()) {
    if (now_ns() > end) return false;
    sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

}  // namespace ipckit::chaos
