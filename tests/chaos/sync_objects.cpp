// Scenarios for the multiprocessing synchronisation objects: SharedMutex (readers and
// writers), Condition (turn-taking over a robust Mutex) and Event (a driver's rounds that
// every waiter acknowledges). A party is killed at a random moment (or raises its own signal
// at a chosen point: inside a read, in a torn write, between a wake-up and its
// acknowledgement); the survivors must finish within kSurvivorBound of the death, the guarded
// state must be whole (a torn update repaired exactly once) and every count must add up.
#include <algorithm>
#include <string>
#include <vector>

#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/condition.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/shared_mutex.hpp"
#include "scenarios.hpp"

namespace ipckit::chaos {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr int kMaxParties = 4;

// What every scenario here shares: the parties, their progress, the plan of a self-raise.
struct Board {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  Party party[kMaxParties];
  std::atomic<std::uint64_t> done[kMaxParties] = {};  // completed updates (or rounds)
  std::atomic<std::uint32_t> holding[kMaxParties] = {};
  std::atomic<std::uint32_t> owner_dead{0};
  std::atomic<std::uint32_t> torn{0};       // repairs made
  std::atomic<std::uint32_t> bad_state{0};  // an inconsistent state nobody was told about
  SelfRaise raise;
};

// Forks `n` parties running body(i), releases them together, kills the victim (externally
// after a random delay unless it raises its own signal) and waits for everyone. Returns
// false (after recording a hang) when a survivor did not finish within the bound.
template <class Body>
bool run_parties(Ctx& ctx, Board& b, int n, int victim, int sig, bool self, Body&& body,
                 bool* killed_out, std::int64_t* kill_ns_out) {
  Row& row = *ctx.row;
  std::vector<Process> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(Process::spawn([&b, &body, i] {
      b.party[i].pid.store(::getpid());
      b.ready.fetch_add(1);
      wait_for_go(b.go);
      body(i);
      b.party[i].finish(kReturned);
      return 0;
    }));
  }
  if (!poll_until([&] { return b.ready.load() == static_cast<std::uint32_t>(n); })) {
    for (auto& k : kids) k.kill(SIGKILL);
    row.fail(row.hangs, ctx.where() + ": the parties never got ready");
    return false;
  }
  b.go.store(1, std::memory_order_release);
  std::int64_t kill_ns = 0;
  auto& vk = kids[static_cast<std::size_t>(victim)];
  if (!self) {
    sleep_for(ctx.kill_delay(3'000));
    kill_ns = now_ns();
    vk.kill(sig);
  }
  const auto vst = wait_or_kill(vk, now_ns() + 10'000 * kMs);
  const bool killed = vst && vst->signaled() && vst->value == sig;
  if (killed) {
    row.count_kill(sig);
    if (self) kill_ns = b.raise.raised_ns.load();
  } else {
    ++row.no_kill;
  }
  *killed_out = killed;
  *kill_ns_out = kill_ns;
  bool ok = true;
  const std::int64_t from = killed ? kill_ns : now_ns();
  for (int i = 0; i < n; ++i) {
    if (i == victim) continue;
    auto& k = kids[static_cast<std::size_t>(i)];
    if (!wait_or_kill(k, from + (kSurvivorBound.count() + 8'000) * kMs)) {
      row.fail(row.hangs, ctx.where() + ": party " + std::to_string(i) +
                              " still blocked after the kill (" + last_hang_info() +
                              (killed ? ", victim killed" : ", victim not killed") + ")");
      ok = false;
    }
  }
  return ok;
}

// Checks the guarded state at the end: whole, and `a` counts the completed updates (one
// more when the victim died after its increment was whole but before it counted it).
void check_state(Ctx& ctx, Board& b, const Guarded& g, int n, bool killed) {
  Row& row = *ctx.row;
  std::uint64_t done = 0;
  for (int i = 0; i < n; ++i) done += b.done[i].load();
  row.tasks += done;
  const std::string state = " (owner_dead " + std::to_string(b.owner_dead.load()) + ", torn " +
                            std::to_string(b.torn.load()) + ", a " + std::to_string(g.a) +
                            ", done " + std::to_string(done) + ")";
  if (!consistent(g) || g.a < done || g.a > done + 1 || b.bad_state.load() != 0) {
    row.fail(row.failures, ctx.where() + ": the guarded state is wrong" + state);
  }
  if (b.torn.load() > 1 || (!killed && (b.owner_dead.load() != 0 || b.torn.load() != 0))) {
    row.fail(row.failures, ctx.where() + ": a repair or owner_dead without a death" + state);
  }
}

void plan_self_raise(Ctx& ctx, Board& b, int victim, int sig, std::uint64_t ops, int points) {
  b.raise.sig.store(sig);
  b.raise.at.store(ctx.uniform(0, ops - 1));
  b.raise.point.store(static_cast<std::int32_t>(ctx.uniform(0, points - 1)));
  b.raise.role.store(victim);
}

// One guarded update with raise points: 0 before, 1 torn, 2 whole but not yet counted.
void update(Board& b, Guarded& g, int i, std::uint64_t op) {
  b.raise.maybe(i, op, 0);
  g.a = g.a + 1;
  b.raise.maybe(i, op, 1);
  rewrite(g, g.a);
  g.b = g.a;
  b.raise.maybe(i, op, 2);
}

// ---- SharedMutex: readers and writers ------------------------------------------------------

struct RwBoard : Board {
  RwBoard() { rewrite(g, 0); }
  SharedMutex rw;
  Guarded g;
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> torn_reads{0};  // reads of a state a dead writer left torn
};

void shared_mutex_iteration(Ctx& ctx) {
  const int n = static_cast<int>(ctx.uniform(2, 4));
  const std::uint64_t ops = ctx.uniform(200, 2000);
  auto mem = Segment::anonymous(1 << 16);
  RwBoard& b = mem.make<RwBoard>();
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.5);
  if (self) plan_self_raise(ctx, b, victim, sig, ops, 4);
  const std::uint64_t salt = ctx.seed;
  auto body = [&b, ops, salt](int i) {
    for (std::uint64_t op = 0; op < ops; ++op) {
      if (mix64(salt ^ (op * 8 + static_cast<std::uint64_t>(i))) % 3 == 0) {
        if (b.rw.lock()) {
          b.owner_dead.fetch_add(1);
          if (repair(b.g)) b.torn.fetch_add(1);
        } else if (!consistent(b.g)) {
          b.bad_state.fetch_add(1);
        }
        b.holding[i].store(2);
        update(b, b.g, i, op);
        b.holding[i].store(0);
        b.done[i].fetch_add(1);
        b.rw.unlock();
      } else {
        if (b.rw.lock_shared()) b.owner_dead.fetch_add(1);
        b.holding[i].store(1);
        b.raise.maybe(i, op, 3);  // killed holding it shared
        // Torn only after a writer died mid-update, until a writer repairs it (checked below).
        if (!consistent(b.g)) b.torn_reads.fetch_add(1);
        b.reads.fetch_add(1);
        b.holding[i].store(0);
        b.rw.unlock_shared();
      }
    }
  };
  bool killed = false;
  std::int64_t kill_ns = 0;
  if (!run_parties(ctx, b, n, victim, sig, self, body, &killed, &kill_ns)) return;
  // The last word: take it once more (a dead writer nobody met is met here).
  if (b.rw.lock()) {
    b.owner_dead.fetch_add(1);
    if (repair(b.g)) b.torn.fetch_add(1);
  }
  const Guarded g = b.g;
  b.rw.unlock();
  ctx.row->tasks += b.reads.load();
  check_state(ctx, b, g, n, killed);
  if (b.torn_reads.load() != 0 && b.torn.load() != 1) {
    ctx.row->fail(ctx.row->failures, ctx.where() + ": " + std::to_string(b.torn_reads.load()) +
                                         " reads saw a torn state no dead writer left");
  }
}

// ---- Condition: turn-taking over a robust Mutex --------------------------------------------

struct CondBoard : Board {
  CondBoard() { rewrite(g, 0); }
  Mutex m;
  Condition cv;
  Guarded g;
  std::int32_t turn = 0;                     // under m
  std::uint32_t finished[kMaxParties] = {};  // under m: gone from the ring
};

// Whether party j can take a turn: not finished, not dead.
bool in_ring(CondBoard& b, int j) {
  if (b.finished[j] != 0) return false;
  const pid_t p = b.party[j].pid.load();
  return p == 0 || !process_gone(p);
}

void condition_iteration(Ctx& ctx) {
  const int n = static_cast<int>(ctx.uniform(2, 4));
  const std::uint64_t ops = ctx.uniform(50, 400);
  auto mem = Segment::anonymous(1 << 16);
  CondBoard& b = mem.make<CondBoard>();
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.5);
  if (self) plan_self_raise(ctx, b, victim, sig, ops, 3);
  const auto locked = [&b](std::error_code ec) {
    if (ec == errc::owner_dead) {
      b.owner_dead.fetch_add(1);
      if (repair(b.g)) b.torn.fetch_add(1);
    } else if (!consistent(b.g)) {
      b.bad_state.fetch_add(1);
    }
  };
  auto body = [&b, &locked, n, ops](int i) {
    for (std::uint64_t op = 0; op < ops; ++op) {
      locked(b.m.lock());
      while (b.turn != i) {
        if (!in_ring(b, b.turn)) {  // its holder died or left: pass the turn on
          b.turn = (b.turn + 1) % n;
          continue;
        }
        locked(b.cv.wait_for(b.m, std::chrono::milliseconds(20)));
      }
      b.holding[i].store(1);
      update(b, b.g, i, op);
      b.holding[i].store(0);
      b.done[i].fetch_add(1);
      b.turn = (i + 1) % n;
      if (op + 1 == ops) b.finished[i] = 1;
      b.cv.notify_all();
      b.m.unlock();
    }
  };
  bool killed = false;
  std::int64_t kill_ns = 0;
  if (!run_parties(ctx, b, n, victim, sig, self, body, &killed, &kill_ns)) return;
  locked(b.m.lock());
  const Guarded g = b.g;
  b.m.unlock();
  check_state(ctx, b, g, n, killed);
}

// ---- Event: rounds a driver sets and every waiter acknowledges -----------------------------

struct EventBoard : Board {
  Event ev;
  std::atomic<std::uint64_t> round{0};  // the round the driver set the event for
  std::atomic<std::uint64_t> acked[kMaxParties] = {};
  std::atomic<std::uint32_t> driver_gone{0};
  std::atomic<std::uint32_t> missed{0};  // a waiter that saw a round skip past it
};

void event_iteration(Ctx& ctx) {
  const int n = static_cast<int>(ctx.uniform(3, 4));  // party 0 drives, the rest wait
  const std::uint64_t rounds = ctx.uniform(20, 200);
  auto mem = Segment::anonymous(1 << 16);
  EventBoard& b = mem.make<EventBoard>();
  const int victim = static_cast<int>(ctx.uniform(0, static_cast<std::uint64_t>(n) - 1));
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.5);
  if (self) plan_self_raise(ctx, b, victim, sig, rounds, 2);
  auto body = [&b, n, rounds](int i) {
    if (i == 0) {  // the driver
      for (std::uint64_t r = 1; r <= rounds; ++r) {
        b.round.store(r);
        b.ev.set();
        b.raise.maybe(0, r - 1, 0);    // killed with the event set
        for (int j = 1; j < n; ++j) {  // every live waiter acknowledges
          while (b.acked[j].load() < r && !process_gone(b.party[j].pid.load())) {
            sleep_for(std::chrono::microseconds(20));
          }
        }
        b.ev.clear();
        b.raise.maybe(0, r - 1, 1);  // killed with the event clear
        b.done[0].store(r);
      }
      return;
    }
    for (std::uint64_t seen = 0; seen < rounds;) {
      if (!b.ev.wait_for(std::chrono::milliseconds(50))) {
        if (process_gone(b.party[0].pid.load())) {
          b.driver_gone.store(1);
          return;
        }
        continue;
      }
      const std::uint64_t r = b.round.load();
      if (r == seen) {  // still set for the round already acknowledged
        if (process_gone(b.party[0].pid.load())) {
          b.driver_gone.store(1);
          return;
        }
        sleep_for(std::chrono::microseconds(20));
        continue;
      }
      if (r != seen + 1) b.missed.fetch_add(1);
      b.raise.maybe(i, r - 1, 0);  // between the wake-up and the acknowledgement
      b.acked[i].store(r);
      b.raise.maybe(i, r - 1, 1);  // acknowledged
      seen = r;
      b.done[i].store(r);
    }
  };
  bool killed = false;
  std::int64_t kill_ns = 0;
  if (!run_parties(ctx, b, n, victim, sig, self, body, &killed, &kill_ns)) return;
  Row& row = *ctx.row;
  const std::uint64_t driven = b.done[0].load();
  row.tasks += driven;
  if (b.missed.load() != 0) {
    row.fail(row.failures,
             ctx.where() + ": a waiter missed a round (" + std::to_string(b.missed.load()) + ")");
  }
  for (int j = 1; j < n; ++j) {
    if (j == victim && killed) continue;
    // A survivor acknowledged every round the driver finished (and at most one more).
    const std::uint64_t a = b.acked[j].load();
    if (a < driven || a > driven + 1) {
      row.fail(row.failures, ctx.where() + ": waiter " + std::to_string(j) + " acknowledged " +
                                 std::to_string(a) + " rounds of " + std::to_string(driven));
    }
  }
  if (!killed && driven != rounds) {
    row.fail(row.failures, ctx.where() + ": the driver stopped at round " + std::to_string(driven) +
                               " with nobody killed");
  }
}

}  // namespace

void shared_mutex_scenario(Ctx& ctx) { shared_mutex_iteration(ctx); }
void condition_scenario(Ctx& ctx) { condition_iteration(ctx); }
void event_scenario(Ctx& ctx) { event_iteration(ctx); }

}  // namespace ipckit::chaos
