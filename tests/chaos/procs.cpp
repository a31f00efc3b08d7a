// Scenarios whose victim is a process of a group rather than one side of a channel: a pool
// worker, the process that owns a pool, a barrier party, a mutex owner, an SPMD rank.
// Over 600 lines: one scenario per victim kind, registered from one table.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <ranges>
#include <vector>

#include "ipckit/pool/pool.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/spmd/run.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/mutex.hpp"
#include "proc_scan.hpp"
#include "scenarios.hpp"

namespace ipckit::chaos {
namespace {

constexpr std::int64_t kMs = 1'000'000;

// Pids reported by processes the chaos program did not fork itself (pool workers).
struct PidList {
  static constexpr std::uint32_t kMax = 64;
  std::atomic<std::uint32_t> n{0};
  std::atomic<pid_t> pids[kMax] = {};

  void add(pid_t p) noexcept {
    const std::uint32_t have = std::min(n.load(std::memory_order_acquire), kMax);
    for (std::uint32_t i = 0; i < have; ++i) {
      if (pids[i].load(std::memory_order_relaxed) == p) return;
    }
    const std::uint32_t at = n.fetch_add(1, std::memory_order_acq_rel);
    if (at < kMax) pids[at].store(p, std::memory_order_release);
  }
  [[nodiscard]] std::vector<pid_t> all() const {
    std::vector<pid_t> out;
    const std::uint32_t have = std::min(n.load(std::memory_order_acquire), kMax);
    for (std::uint32_t i = 0; i < have; ++i) {
      if (const pid_t p = pids[i].load(std::memory_order_acquire); p > 0) out.push_back(p);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
};

// Waits until every pid in `pids` is gone (or a zombie, reaped if it is ours); returns the
// time it took, or -1 when some are still alive after `limit_ns`.
std::int64_t wait_all_gone(const std::vector<pid_t>& pids, std::int64_t from_ns,
                           std::int64_t limit_ns) {
  for (;;) {
    bool all = true;
    for (pid_t p : pids) all = all && process_gone(p);
    if (all) return now_ns() - from_ns;
    if (now_ns() - from_ns > limit_ns) return -1;
    sleep_for(std::chrono::microseconds(100));
  }
}

void spin_for(std::chrono::microseconds d) {
  const std::int64_t end = now_ns() + std::chrono::nanoseconds(d).count();
  while (now_ns() < end) {
  }
}

// ---- a pool worker --------------------------------------------------------------------------

struct PoolBoard {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint32_t> kill_done{0};
  std::atomic<std::uint32_t> claimed{0};  // the self-raise fires once (a retry must succeed)
  PidList workers;
  Party owner;
  SelfRaise raise;
  std::uint64_t salt = 0;
  std::uint64_t tasks = 0;
  std::uint64_t chunksize = 1;
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> wrong{0};
  std::atomic<std::uint64_t> worker_lost{0};
  std::atomic<std::uint64_t> missing{0};
  std::atomic<std::uint64_t> uncovered{0};  // missing inputs no WorkerLost accounts for
  std::atomic<std::uint64_t> after_ok{0};   // the pool goes on: a map after the kill
  std::atomic<std::int64_t> first_lost_ns{0};
};

struct TaskResult {
  std::uint64_t x;
  std::uint64_t h;
};

int pool_owner_main(PoolBoard& b, std::size_t processes, int retries) {
  try {
    PoolOptions opts;
    opts.processes = processes;
    opts.task_retries = retries;
    opts.handle_sigint = false;
    opts.start = StartMethod::fork;  // the tasks write to the board, inherited through fork
    Pool pool{opts};
    for (const auto& s : pool.stats()) b.workers.add(s.pid);
    b.ready.store(1, std::memory_order_release);
    wait_for_go(b.go);
    PoolBoard* board = &b;
    auto task = [board](std::uint64_t x) {
      board->workers.add(::getpid());
      spin_for(std::chrono::microseconds(20 + x % 7 * 15));
      if (board->raise.role.load(std::memory_order_relaxed) == 0 &&
          board->raise.at.load(std::memory_order_relaxed) == x && board->claimed.exchange(1) == 0) {
        board->raise.now();
      }
      return TaskResult{x, mix64(x ^ board->salt)};
    };
    std::vector<bool> got(b.tasks, false);
    auto it = pool.imap(task, std::views::iota(std::uint64_t{0}, b.tasks), b.chunksize);
    std::uint64_t last = 0;
    bool any = false;
    for (;;) {
      try {
        const auto r = it.next();
        if (!r) break;
        if (r->x >= b.tasks || r->h != mix64(r->x ^ b.salt) || (any && r->x <= last)) {
          b.wrong.fetch_add(1);
        } else {
          got[r->x] = true;
          b.ok.fetch_add(1);
        }
        last = r->x;
        any = true;
      } catch (const WorkerLost&) {
        if (b.worker_lost.fetch_add(1) == 0) b.first_lost_ns.store(now_ns());
      }
    }
    // Missing inputs must make up whole chunks, one per WorkerLost.
    std::uint64_t missing_chunks = 0;
    for (std::uint64_t c0 = 0; c0 < b.tasks; c0 += b.chunksize) {
      const std::uint64_t c1 = std::min(b.tasks, c0 + b.chunksize);
      const auto n =
          static_cast<std::uint64_t>(std::count(got.begin() + c0, got.begin() + c1, false));
      b.missing.fetch_add(n);
      if (n == c1 - c0) {
        ++missing_chunks;
      } else {
        b.uncovered.fetch_add(n);  // part of a chunk: no error accounts for it
      }
    }
    if (missing_chunks > b.worker_lost.load()) {
      b.uncovered.fetch_add((missing_chunks - b.worker_lost.load()) * b.chunksize);
    }
    // The pool goes on once the kill is over.
    poll_until([&] { return b.kill_done.load() != 0; });
    const auto again = pool.map([](std::uint64_t x) { return x * 3; },
                                std::views::iota(std::uint64_t{0}, std::uint64_t{64}));
    for (std::uint64_t i = 0; i < again.size(); ++i) b.after_ok.fetch_add(again[i] == 3 * i);
    for (const auto& s : pool.stats()) b.workers.add(s.pid);
    pool.close();
    pool.join();
    b.owner.finish(kReturned);
  } catch (const Error& e) {
    b.owner.finish(outcome_of(e), e.what());
  }
  return 0;
}

// The chaos process itself stays single-threaded (it forks every iteration), so the pool
// lives in a child: the killed worker is a grandchild, reported through the board.
void pool_worker_iteration(Ctx& ctx) {
  Row& row = *ctx.row;
  auto mem = Segment::anonymous(1 << 16);
  PoolBoard& b = mem.make<PoolBoard>();
  b.salt = ctx.seed;
  b.tasks = ctx.uniform(50, 400);
  b.chunksize = ctx.uniform(1, 4);
  const std::size_t processes = ctx.uniform(2, 3);
  const int retries = ctx.chance(0.5) ? 1 : 0;
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.4);
  if (self) {
    b.raise.sig.store(sig);
    b.raise.at.store(ctx.uniform(0, b.tasks - 1));
    b.raise.role.store(0);
  }
  auto owner = Process::spawn([&] { return pool_owner_main(b, processes, retries); });
  if (!poll_until([&] { return b.ready.load() != 0 || b.owner.outcome.load() != kRunning; })) {
    owner.kill(SIGKILL);
    owner.wait();
    return row.fail(row.hangs, ctx.where() + ": the pool never started");
  }
  b.go.store(1, std::memory_order_release);
  std::int64_t kill_ns = 0;
  bool killed = false;
  if (!self) {
    sleep_for(ctx.kill_delay(8'000));
    const auto pids = b.workers.all();
    const pid_t victim = pids[ctx.uniform(0, pids.size() - 1)];
    kill_ns = now_ns();
    killed = ::kill(victim, sig) == 0;
  }
  b.kill_done.store(1, std::memory_order_release);
  const auto st = wait_or_kill(owner, now_ns() + 10'000 * kMs);
  if (self && b.claimed.load() != 0) {
    killed = true;
    kill_ns = b.raise.raised_ns.load();
  }
  if (killed) {
    row.count_kill(sig);
  } else {
    ++row.no_kill;
  }
  if (!st) return row.fail(row.hangs, ctx.where() + ": the pool's owner hung");
  if (!st->success() || b.owner.outcome.load() != kReturned) {
    row.fail(row.failures, ctx.where() + ": the pool's owner ended with " + st->describe() + ", " +
                               outcome_name(b.owner.outcome.load()) + " " + b.owner.error);
  }
  if (b.first_lost_ns.load() > kill_ns && killed) row.latency(b.first_lost_ns.load() - kill_ns);
  row.tasks += b.tasks;
  row.received += b.ok.load();
  row.reported_lost += b.missing.load() - std::min(b.missing.load(), b.uncovered.load());
  if (b.uncovered.load() != 0) {
    row.lost += b.uncovered.load();
    row.fail(row.failures, ctx.where() + ": " + std::to_string(b.uncovered.load()) +
                               " task results missing without WorkerLost");
  }
  if (b.wrong.load() != 0 || b.ok.load() + b.missing.load() != b.tasks) {
    row.fail(row.failures, ctx.where() + ": wrong results: " + std::to_string(b.wrong.load()) +
                               " wrong, " + std::to_string(b.ok.load()) + " ok of " +
                               std::to_string(b.tasks));
  }
  if (b.worker_lost.load() > 1 || (retries > 0 && b.worker_lost.load() != 0)) {
    row.fail(row.failures, ctx.where() + ": " + std::to_string(b.worker_lost.load()) +
                               " WorkerLost for one kill (retries " + std::to_string(retries) +
                               ")");
  }
  if (b.after_ok.load() != 64) {
    row.fail(row.failures, ctx.where() + ": the pool did not go on after the kill");
  }
  if (wait_all_gone(b.workers.all(), now_ns(), 1000 * kMs) < 0) {
    row.fail(row.leaks, ctx.where() + ": a pool worker outlived its pool");
  }
}

// ---- the process that owns a pool -----------------------------------------------------------

struct OwnerBoard {
  std::atomic<std::uint32_t> ready{0};
  PidList workers;
};

int spin_200us(int x) {
  spin_for(std::chrono::microseconds(200));
  return x;
}

void pool_parent_iteration(Ctx& ctx) {
  Row& row = *ctx.row;
  auto mem = Segment::anonymous(1 << 16);
  OwnerBoard& b = mem.make<OwnerBoard>();
  const std::size_t processes = ctx.uniform(2, 3);
  // The default start method: the owner's death must take the forkserver helper (its only
  // child) and the helper's workers.
  auto owner = Process::spawn([&] {
    PoolOptions opts;
    opts.processes = processes;
    opts.handle_sigint = false;
    Pool pool{opts};
    (void)pool.apply(spin_200us, 0);
    for (const auto& s : pool.stats()) b.workers.add(s.pid);
    for (const pid_t helper : testing::child_pids()) b.workers.add(helper);
    auto results =
        pool.map_async(spin_200us, std::views::iota(0, 100'000),
                       {.chunksize = 4, .callback = {}, .error_callback = {}, .progress = {}});
    b.ready.store(1, std::memory_order_release);
    results.wait();
    return 1;  // not reached: killed first
  });
  if (!poll_until([&] { return b.ready.load() != 0; }) || b.workers.all().size() < processes) {
    owner.kill(SIGKILL);
    owner.wait();
    return row.fail(row.hangs, ctx.where() + ": the pool never started");
  }
  sleep_for(ctx.kill_delay(10'000));
  const int sig = ctx.random_signal();
  const auto workers = b.workers.all();
  const std::int64_t kill_ns = now_ns();
  owner.kill(sig);
  const auto st = wait_or_kill(owner, kill_ns + 2000 * kMs);
  if (!st || !st->signaled() || st->value != sig) {
    row.fail(row.failures, ctx.where() + ": the pool's owner did not die of signal " +
                               std::to_string(sig) + ": " + (st ? st->describe() : "hung"));
  }
  row.count_kill(sig);
  row.tasks += workers.size();
  const std::int64_t gone = wait_all_gone(workers, kill_ns, 1000 * kMs);
  if (gone < 0) {
    row.fail(row.leaks, ctx.where() + ": a worker outlived its killed pool by 1 s");
  } else {
    row.max_extra_ms = std::max(row.max_extra_ms, static_cast<double>(gone) / 1e6);
    row.latency(gone);
  }
}

// ---- a barrier party ------------------------------------------------------------------------

struct BarrierBoard {
  static constexpr int kMax = 5;
  explicit BarrierBoard(std::uint32_t n, WaitPolicy p) : barrier(n, p) {}
  Barrier barrier;
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  Party party[kMax];
  std::atomic<std::uint64_t> rounds[kMax] = {};
  SelfRaise raise;
};

void barrier_iteration(Ctx& ctx) {
  Row& row = *ctx.row;
  const int n = static_cast<int>(ctx.uniform(2, 4));
  const WaitPolicy policy = ctx.chance(0.5) ? WaitPolicy::hybrid() : WaitPolicy::block();
  auto mem = Segment::anonymous(1 << 16);
  BarrierBoard& b = mem.make<BarrierBoard>(static_cast<std::uint32_t>(n), policy);
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.4);
  if (self) {
    b.raise.sig.store(sig);
    b.raise.at.store(ctx.uniform(0, 300));
    b.raise.point.store(static_cast<std::int32_t>(ctx.uniform(0, 1)));
    b.raise.role.store(victim);
  }
  std::vector<Process> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(Process::spawn([&b, i] {
      Party& me = b.party[i];
      me.pid.store(::getpid());
      try {
        b.barrier.attach();
        b.ready.fetch_add(1);
        wait_for_go(b.go);
        for (std::uint64_t r = 0; r < 1'000'000; ++r) {
          b.raise.maybe(i, r, 0);
          spin_for(std::chrono::microseconds(mix64(r * 8 + static_cast<unsigned>(i)) % 40));
          b.raise.maybe(i, r, 1);
          b.barrier.arrive_and_wait();
          b.rounds[i].store(r + 1);
        }
        me.finish(kReturned);
      } catch (const Error& e) {
        me.finish(outcome_of(e), e.what());
      }
      return 0;
    }));
  }
  if (!poll_until([&] { return b.ready.load() == static_cast<std::uint32_t>(n); })) {
    for (auto& k : kids) k.kill(SIGKILL);
    return row.fail(row.hangs, ctx.where() + ": the parties never got ready");
  }
  b.go.store(1, std::memory_order_release);
  std::int64_t kill_ns = 0;
  if (!self) {
    sleep_for(ctx.kill_delay(10'000));
    kill_ns = now_ns();
    kids[static_cast<std::size_t>(victim)].kill(sig);
  }
  const auto vst = wait_or_kill(kids[static_cast<std::size_t>(victim)], now_ns() + 5000 * kMs);
  if (!vst || !vst->signaled() || vst->value != sig) {
    for (auto& k : kids) k.kill(SIGKILL);
    return row.fail(row.hangs, ctx.where() + ": the victim party was not killed: " +
                                   (vst ? vst->describe() : "hung"));
  }
  row.count_kill(sig);
  if (self) kill_ns = b.raise.raised_ns.load();
  for (int i = 0; i < n; ++i) {
    if (i == victim) continue;
    const auto st =
        wait_or_kill(kids[static_cast<std::size_t>(i)], kill_ns + kSurvivorBound.count() * kMs);
    if (!st) {
      row.fail(row.hangs, ctx.where() + ": party " + std::to_string(i) + " still waiting " +
                              std::to_string(kSurvivorBound.count()) + " ms after the kill");
      continue;
    }
    const std::int32_t o = b.party[i].outcome.load();
    if (o != kBroken) {
      row.fail(row.failures, ctx.where() + ": party " + std::to_string(i) + " ended with " +
                                 outcome_name(o) + " " + b.party[i].error);
    }
    row.latency(b.party[i].end_ns.load() - kill_ns);
    row.tasks += b.rounds[i].load();
  }
}

// ---- a robust mutex owner -------------------------------------------------------------------

// Guarded by the mutex (see Guarded in harness.hpp): a Mutex, or in half the iterations a
// RecursiveMutex that every holder takes twice (a victim dies holding it at depth 2).
struct MutexBoard {
  static constexpr int kMax = 4;
  MutexBoard() { rewrite(g, 0); }
  Mutex mutex;
  RecursiveMutex rmutex;
  std::uint32_t recursive = 0;
  Guarded g;
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  Party party[kMax];
  std::atomic<std::uint32_t> holding[kMax] = {};
  std::atomic<std::uint64_t> done[kMax] = {};
  std::atomic<std::uint32_t> owner_dead{0};
  std::atomic<std::uint32_t> torn{0};       // repaired after owner_dead
  std::atomic<std::uint32_t> bad_state{0};  // inconsistent without owner_dead
  std::atomic<std::int64_t> owner_dead_ns{0};
  SelfRaise raise;
};

std::error_code lock_board(MutexBoard& b) {
  if (b.recursive == 0) return b.mutex.lock();
  const std::error_code ec = b.rmutex.lock();
  const std::error_code again = b.rmutex.lock();  // the owner's second hold never waits
  return ec ? ec : again;
}
void unlock_board(MutexBoard& b) {
  if (b.recursive == 0) return b.mutex.unlock();
  b.rmutex.unlock();
  b.rmutex.unlock();
}

// Takes the mutex; after a dead owner, repairs the guarded state (rolls a torn update back).
void lock_and_repair(MutexBoard& b, bool survivor) {
  if (lock_board(b)) {
    if (b.owner_dead.fetch_add(1) == 0 && survivor) b.owner_dead_ns.store(now_ns());
    if (repair(b.g)) b.torn.fetch_add(1);
  } else if (!consistent(b.g)) {
    b.bad_state.fetch_add(1);
  }
}

void mutex_iteration(Ctx& ctx) {
  Row& row = *ctx.row;
  const int n = static_cast<int>(ctx.uniform(2, 4));
  const std::uint64_t ops = ctx.uniform(200, 3000);
  auto mem = Segment::anonymous(1 << 16);
  MutexBoard& b = mem.make<MutexBoard>();
  b.recursive = ctx.chance(0.5) ? 1 : 0;
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.5);
  if (self) {
    b.raise.sig.store(sig);
    b.raise.at.store(ctx.uniform(0, ops - 1));
    b.raise.point.store(static_cast<std::int32_t>(ctx.uniform(0, 2)));
    b.raise.role.store(victim);
  }
  std::vector<Process> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(Process::spawn([&b, i, ops] {
      Party& me = b.party[i];
      me.pid.store(::getpid());
      b.ready.fetch_add(1);
      wait_for_go(b.go);
      for (std::uint64_t op = 0; op < ops; ++op) {
        lock_and_repair(b, true);
        b.holding[i].store(1);
        b.raise.maybe(i, op, 0);  // holding the lock, state consistent
        b.g.a = b.g.a + 1;
        b.raise.maybe(i, op, 1);  // holding the lock, state torn
        rewrite(b.g, b.g.a);
        b.g.b = b.g.a;
        b.raise.maybe(i, op, 2);  // holding the lock, state consistent again
        b.holding[i].store(0);
        unlock_board(b);
        b.done[i].store(op + 1);
      }
      me.finish(kReturned);
      return 0;
    }));
  }
  if (!poll_until([&] { return b.ready.load() == static_cast<std::uint32_t>(n); })) {
    for (auto& k : kids) k.kill(SIGKILL);
    return row.fail(row.hangs, ctx.where() + ": the lockers never got ready");
  }
  b.go.store(1, std::memory_order_release);
  std::int64_t kill_ns = 0;
  auto& vk = kids[static_cast<std::size_t>(victim)];
  if (!self) {
    sleep_for(ctx.kill_delay(3'000));
    kill_ns = now_ns();
    vk.kill(sig);
  }
  const auto vst = wait_or_kill(vk, now_ns() + 5000 * kMs);
  const bool killed = vst && vst->signaled() && vst->value == sig;
  if (killed) {
    row.count_kill(sig);
    if (self) kill_ns = b.raise.raised_ns.load();
  } else {
    ++row.no_kill;
  }
  const bool died_holding = killed && b.holding[victim].load() != 0;
  const std::int64_t from = killed ? kill_ns : now_ns();
  for (int i = 0; i < n; ++i) {
    if (i == victim) continue;
    const auto st =
        wait_or_kill(kids[static_cast<std::size_t>(i)], from + kSurvivorBound.count() * kMs);
    if (!st) {
      std::string flags;
      for (int j = 0; j < n; ++j) {
        flags += " " + std::to_string(b.holding[j].load()) + "/" + std::to_string(b.done[j].load());
      }
      std::uint32_t word[4];
      std::memcpy(
          word,
          reinterpret_cast<const std::byte*>(b.recursive != 0 ? static_cast<void*>(&b.rmutex)
                                                              : static_cast<void*>(&b.mutex)) +
              8,
          sizeof word);
      row.fail(row.hangs,
               ctx.where() + ": locker " + std::to_string(i) + " still blocked " +
                   std::to_string(kSurvivorBound.count()) + " ms after the kill (" +
                   last_hang_info() + "; victim " + std::to_string(victim) + " sig " +
                   std::to_string(sig) +
                   (self ? " self point " + std::to_string(b.raise.point.load()) : " external") +
                   (killed ? " killed" : " not killed") + ", holding/done" + flags +
                   ", owner_dead " + std::to_string(b.owner_dead.load()) + ", futex word " +
                   std::to_string(word[0]) + " owner " + std::to_string(word[2]) + ")");
    }
  }
  // The last word: take the lock once more (a dead owner nobody met is met here).
  lock_and_repair(b, false);
  const Guarded g = b.g;
  unlock_board(b);
  std::uint64_t done = 0;
  for (int i = 0; i < n; ++i) done += b.done[i].load();
  row.tasks += done;
  if (b.owner_dead_ns.load() > kill_ns && killed) row.latency(b.owner_dead_ns.load() - kill_ns);
  const std::string state = " (owner_dead " + std::to_string(b.owner_dead.load()) + ", torn " +
                            std::to_string(b.torn.load()) + ", a " + std::to_string(g.a) + ", b " +
                            std::to_string(g.b) + ", done " + std::to_string(done) + ")";
  if (!consistent(g) || g.a < done || g.a > done + 1 || b.bad_state.load() != 0) {
    row.fail(row.failures, ctx.where() + ": the guarded state is wrong" + state);
  }
  if (b.owner_dead.load() > 1 || (died_holding && b.owner_dead.load() != 1) ||
      (!killed && b.owner_dead.load() != 0)) {
    row.fail(row.failures, ctx.where() + ": owner_dead seen wrongly" + state);
  }
}

// ---- an SPMD rank ---------------------------------------------------------------------------

struct SpmdBoard {
  static constexpr int kMax = 4;
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  Party rank[kMax];
  Ledger link[kMax];  // link[r]: the messages rank r gets from its left neighbour
  std::atomic<std::uint64_t> rounds[kMax] = {};
  std::atomic<std::uint64_t> wrong_sum{0};
  SelfRaise raise;
  // What run() did (written by the process that called it).
  std::atomic<std::int32_t> run_threw{0};  // 1: RunError, 2: another error, 3: returned
  std::atomic<std::int32_t> failed_rank{-2};
  std::atomic<std::int32_t> peer_dead[kMax] = {};
  ExitStatus status[kMax];
  char what[200] = {};
};

void spmd_rank(Comm& comm, SpmdBoard& b, std::uint64_t seed, const SizeRule& sizes) {
  const int r = comm.rank();
  const int n = comm.size();
  const int right = (r + 1) % n;
  const int left = (r + n - 1) % n;
  b.rank[r].pid.store(::getpid());
  std::vector<std::byte> out, in;
  try {
    b.ready.fetch_add(1);
    wait_for_go(b.go);
    for (std::uint64_t round = 0; round < 10'000'000; ++round) {
      b.raise.maybe(r, round, 0);
      out.resize(sizes.of(seed ^ static_cast<std::uint64_t>(r), round));
      in.resize(sizes.of(seed ^ static_cast<std::uint64_t>(left), round));
      fill_message(out, seed ^ static_cast<std::uint64_t>(r), round);
      b.link[right].attempted.store(round + 1, std::memory_order_release);
      comm.sendrecv(right, out, left, in);
      b.link[right].acked.store(round + 1, std::memory_order_release);
      b.link[r].check(in, seed ^ static_cast<std::uint64_t>(left), sizes);
      b.raise.maybe(r, round, 1);
      if (round % 4 == 3) {
        const auto sum =
            comm.allreduce<std::int64_t>(static_cast<std::int64_t>(round) * (r + 1), ReduceOp::sum);
        if (sum != static_cast<std::int64_t>(round) * n * (n + 1) / 2) b.wrong_sum.fetch_add(1);
      }
      if (round % 8 == 7) comm.barrier();
      b.rounds[r].store(round + 1);
    }
    b.rank[r].finish(kReturned);
  } catch (const Error& e) {
    b.rank[r].finish(outcome_of(e), e.what());
    throw;
  }
}

void spmd_iteration(Ctx& ctx) {
  Row& row = *ctx.row;
  const int n = static_cast<int>(ctx.uniform(2, 4));
  auto mem = Segment::anonymous(1 << 16);
  SpmdBoard& b = mem.make<SpmdBoard>();
  const SizeRule sizes{std::size_t{1} << ctx.uniform(10, 18), false, false};
  const std::uint64_t seed = ctx.seed;
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.4);
  if (self) {
    b.raise.sig.store(sig);
    b.raise.at.store(ctx.uniform(0, 200));
    b.raise.point.store(static_cast<std::int32_t>(ctx.uniform(0, 1)));
    b.raise.role.store(victim);
  }
  auto runner = Process::spawn([&] {
    spmd::RunOptions opts;
    opts.ring_bytes = std::size_t{1} << 16;  // large messages go in pieces
    opts.pin = false;
    try {
      spmd::run(
          n, [&](Comm& comm) { spmd_rank(comm, b, seed, sizes); }, opts);
      b.run_threw.store(3);
    } catch (const spmd::RunError& e) {
      b.failed_rank.store(e.failed_rank());
      for (const auto& o : e.ranks()) {
        if (o.rank >= 0 && o.rank < SpmdBoard::kMax) {
          b.peer_dead[o.rank].store(o.peer_dead ? 1 : 0);
          b.status[o.rank] = o.status;
        }
      }
      std::strncpy(b.what, e.what(), sizeof b.what - 1);
      b.run_threw.store(1);
    } catch (const std::exception& e) {
      std::strncpy(b.what, e.what(), sizeof b.what - 1);
      b.run_threw.store(2);
    }
    return 0;
  });
  if (!poll_until([&] { return b.ready.load() == static_cast<std::uint32_t>(n); })) {
    runner.kill(SIGKILL);
    runner.wait();
    return row.fail(row.hangs, ctx.where() + ": the ranks never got ready");
  }
  b.go.store(1, std::memory_order_release);
  std::int64_t kill_ns = 0;
  if (!self) {
    sleep_for(ctx.kill_delay(10'000));
    kill_ns = now_ns();
    ::kill(b.rank[victim].pid.load(), sig);
  }
  std::vector<pid_t> ranks;
  for (int i = 0; i < n; ++i) ranks.push_back(b.rank[i].pid.load());
  // The victim first (its death is the kill's moment), then run() must end in the bound.
  if (wait_all_gone({ranks[static_cast<std::size_t>(victim)]}, now_ns(), 5000 * kMs) < 0) {
    runner.kill(SIGKILL);
    runner.wait();
    return row.fail(row.hangs, ctx.where() + ": the victim rank was never killed");
  }
  if (self) kill_ns = b.raise.raised_ns.load();
  row.count_kill(sig);
  const auto st = wait_or_kill(runner, kill_ns + kSurvivorBound.count() * kMs);
  if (!st) {
    return row.fail(row.hangs, ctx.where() + ": spmd::run still running " +
                                   std::to_string(kSurvivorBound.count()) + " ms after the kill");
  }
  for (int i = 0; i < n; ++i) {
    if (i == victim) continue;
    row.latency(b.rank[i].end_ns.load() - kill_ns);
    if (b.rank[i].outcome.load() != kPeerDead || !b.peer_dead[i].load()) {
      row.fail(row.failures, ctx.where() + ": rank " + std::to_string(i) + " ended with " +
                                 outcome_name(b.rank[i].outcome.load()) + " " + b.rank[i].error);
    }
  }
  const ExitStatus& vs = b.status[victim];
  if (b.run_threw.load() != 1 || b.failed_rank.load() != victim || !vs.signaled() ||
      vs.value != sig) {
    row.fail(row.failures, ctx.where() + ": run() did not name rank " + std::to_string(victim) +
                               " killed by " + std::to_string(sig) + ": threw " +
                               std::to_string(b.run_threw.load()) + ", failed rank " +
                               std::to_string(b.failed_rank.load()) + ", " + b.what);
  }
  for (int i = 0; i < n; ++i) {
    const Ledger& l = b.link[i];
    row.tasks += b.rounds[i].load();
    row.acked += l.acked.load();
    row.received += std::min(l.received.load(), l.acked.load());
    if (l.received.load() < l.acked.load()) row.reported_lost += l.acked.load() - l.received.load();
    row.lost += l.gaps.load();
    if (l.bad() != 0)
      row.fail(row.failures,
               ctx.where() + ": link into rank " + std::to_string(i) + ": " + l.describe());
  }
  if (b.wrong_sum.load() != 0) row.fail(row.failures, ctx.where() + ": allreduce gave a wrong sum");
  if (wait_all_gone(ranks, now_ns(), 1000 * kMs) < 0) {
    row.fail(row.leaks, ctx.where() + ": a rank outlived spmd::run");
  }
}

}  // namespace

void pool_worker_scenario(Ctx& ctx) { pool_worker_iteration(ctx); }
void pool_parent_scenario(Ctx& ctx) { pool_parent_iteration(ctx); }
void barrier_scenario(Ctx& ctx) { barrier_iteration(ctx); }
void mutex_scenario(Ctx& ctx) { mutex_iteration(ctx); }
void spmd_scenario(Ctx& ctx) { spmd_iteration(ctx); }

}  // namespace ipckit::chaos
