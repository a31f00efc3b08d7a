// PoolCore on the driver thread, when workers end or must be ended: deaths (what a dead
// worker's chunks become), cancels and timeouts (the kills the pool orders), respawns.
// (The driver's life: driver.cpp; chunks and results: traffic.cpp; the design: driver.hpp.)
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>

#include "driver.hpp"

namespace ipckit::detail {

// ---- deaths ----
bool PoolCore::check_deaths(int timeout_ms) {
  pollfd fds[64];
  bool any = false;
  for (std::size_t base = 0; base < workers_.size(); base += 64) {
    nfds_t k = 0;
    std::size_t idx[64];
    for (std::size_t i = base; i < std::min(base + 64, workers_.size()); ++i) {
      Worker& w = workers_[i];
      if (!w.alive) continue;
      if (w.proc.pidfd() < 0) {  // no pidfd (old kernel): ask waitpid
        if (w.proc.try_wait()) {
          on_exit(w);
          any = true;
        }
        continue;
      }
      fds[k] = {w.proc.pidfd(), POLLIN, 0};
      idx[k++] = i;
    }
    if (k == 0) continue;
    if (::poll(fds, k, timeout_ms) <= 0) continue;
    for (nfds_t i = 0; i < k; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP)) != 0) {  // exited (POLLNVAL: not ours)
        on_exit(workers_[idx[i]]);
        any = true;
      }
    }
  }
  return any;
}

void PoolCore::on_exit(Worker& w) {
  const ExitStatus st = w.proc.wait();
  w.alive = false;
  collect(w);  // what it published before it died still counts
  const std::uint64_t started = slots_[w.slot].started.load(std::memory_order_acquire);
  std::deque<Chunk> lost = std::move(w.inflight);
  w.inflight.clear();
  std::deque<Chunk> again;
  for (Chunk& c : lost) {
    if (c.id != 0 && c.id == w.timed_out) {  // killed for running past its timeout
      fail_chunk(c, std::make_exception_ptr(TaskTimeout(w.pid, *c.job->timeout)));
    } else if (c.id != 0 && c.id <= started && c.job->abandoned()) {
      resolve_chunk(c);  // cancelled (or failed): nothing to report, no attempt counted
    } else if (c.id != 0 && c.id <= started && !w.killed_by_pool) {
      // It began this one and died: its result is lost.
      ++c.attempts;
      if (c.attempts <= options.task_retries) {
        again.push_back(std::move(c));
      } else {
        fail_chunk(c, std::make_exception_ptr(WorkerLost(w.pid, st, c.attempts)));
      }
    } else {
      // Never began, or the pool killed the worker for another chunk (a timeout, a cancel)
      // that finished just before: not at fault. Run it elsewhere, no attempt used.
      again.push_back(std::move(c));
    }
  }
  for (auto it = again.rbegin(); it != again.rend(); ++it) retry_.push_front(std::move(*it));
  const bool pool_killed = w.killed_by_pool;
  w.timed_out = 0;
  w.killed_by_pool = false;
  w.clock_id = 0;
  w.tasks.reset();
  w.results.reset();
  w.out.reset();
  w.in.reset();
  if (w.init_failed) return;  // broken_ is set: the loop stops everything
  // Workers that keep dying before their initializer returns (it crashes, or calls exit)
  // would be replaced forever: after three in a row the pool is broken. (Not those the pool
  // killed itself.)
  if (!pool_killed && slots_[w.slot].ready.load(std::memory_order_acquire) == 0) {
    if (++init_deaths_ >= 3) {
      std::lock_guard lk(mu_);
      broken_ =
          std::make_exception_ptr(Error(errc::child_failed,
                                        "pool workers die before their initializer returns (the "
                                        "last one " +
                                            st.describe() + ")"));
      return;
    }
  } else {
    init_deaths_ = 0;
  }
  {
    std::lock_guard lk(stats_mu_);
    stats_[w.slot].pid = -1;
  }
  w.respawn_at = std::chrono::steady_clock::now();  // respawn_pending() replaces it
}

// ---- cancel, timeouts ----
// Aborts the jobs whose cancel() the driver has not seen yet (their outcome already says
// cancelled) and kills the workers running chunks of those cancelled with {.running = true}.
// `force`: a job that came in through intake() was cancelled before the driver took it.
bool PoolCore::apply_cancels(bool force) {
  const std::uint64_t now = link->cancels.load(std::memory_order_acquire);
  if (now == cancels_seen_ && !force) return false;
  cancels_seen_ = now;
  const auto cancelled = std::make_exception_ptr(Error(errc::cancelled, "the call was cancelled"));
  const auto settle = [&](JobBase& j) { settle_if_cancelled(j, cancelled); };
  for (auto& j : jobs_) settle(*j);
  for (auto& c : retry_) settle(*c.job);
  for (Worker& w : workers_) {
    for (auto& c : w.inflight) settle(*c.job);
    if (!w.alive || w.inflight.empty() || w.killed_by_pool) continue;
    const Chunk& c = w.inflight.front();
    // Only a chunk it has begun: a worker still in its initializer is not running it.
    if (c.job->cancel_running.load(std::memory_order_relaxed) &&
        slots_[w.slot].started.load(std::memory_order_acquire) >= c.id) {
      w.killed_by_pool = true;
      w.proc.kill(SIGKILL);  // on_exit drops its chunk and runs the others elsewhere
    }
  }
  return true;
}

// A chunk's clock starts when the driver sees the worker begin it (WorkerShared::started):
// neither the initializer nor the wait behind the chunk before it counts.
bool PoolCore::check_timeouts(std::chrono::steady_clock::time_point now) {
  bool any = false;
  for (Worker& w : workers_) {
    if (!w.alive || w.inflight.empty() || w.killed_by_pool) continue;
    const Chunk& c = w.inflight.front();
    if (!c.job->timeout) continue;
    if (w.clock_id != c.id) {
      if (slots_[w.slot].started.load(std::memory_order_acquire) >= c.id) {
        w.clock_id = c.id;
        w.head_since = now;
      }
      continue;
    }
    if (now - w.head_since <= *c.job->timeout) continue;
    w.timed_out = c.id;
    w.killed_by_pool = true;
    w.proc.kill(SIGKILL);  // on_exit fails the chunk with TaskTimeout
    any = true;
  }
  return any;
}

// Milliseconds until the driver should look at the chunks' clocks again (rounded up), -1 for
// never: the next timeout, or 5 ms while a timed chunk has not been seen to begin (a worker
// does not ring the doorbell when it begins one).
int PoolCore::ms_to_next_timeout() const {
  using namespace std::chrono;
  const auto now = steady_clock::now();
  int best = -1;
  for (const Worker& w : workers_) {
    if (!w.alive || w.inflight.empty() || w.killed_by_pool) continue;
    const Chunk& c = w.inflight.front();
    if (!c.job->timeout) continue;
    std::int64_t ms = 5;
    if (w.clock_id == c.id) {
      const auto left = *c.job->timeout - (now - w.head_since);  // no overflow: both positive
      ms = std::max<std::int64_t>(0, ceil<milliseconds>(left).count() + 1);
    }
    const int m = static_cast<int>(std::min<std::int64_t>(ms, 1 << 30));
    best = best < 0 ? m : std::min(best, m);
  }
  return best;
}

// Replaces dead workers while there is a reason to (the pool runs, or closed work remains).
// A fork that fails (EAGAIN: a process limit) is tried again 100 ms later; the pool goes on
// with the workers it has.
bool PoolCore::respawn_pending() {
  bool any = false;
  State st;
  {
    std::lock_guard lk(mu_);
    st = state_;
  }
  const bool wanted = st == State::running || (st == State::closed && !idle());
  const auto now = std::chrono::steady_clock::now();
  for (Worker& w : workers_) {
    if (w.alive || !w.respawn_at || now < *w.respawn_at) continue;
    if (!wanted) {
      w.respawn_at.reset();
      continue;
    }
    try {
      spawn(w, true);
      w.respawn_at.reset();
      any = true;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ipckit::Pool: cannot replace worker %zu yet: %s\n", w.slot, e.what());
      w.respawn_at = now + std::chrono::milliseconds(100);
    }
  }
  return any;
}

}  // namespace ipckit::detail
