// What Pool's calls drive: a backend that takes jobs and runs their chunks somewhere. PoolCore
// (driver.hpp) runs them in worker processes forked on this machine; MpiCore (mpi_driver.cpp,
// in ipckit::mpi) on the other ranks of an MPI job. Pool's templates build the jobs
// (pool.hpp); a backend only sees JobBase. The job bookkeeping every driver thread does the
// same way is here too.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include "ipckit/core/deadline.hpp"
#include "ipckit/pool/detail/job.hpp"
#include "ipckit/pool/options.hpp"

namespace ipckit::detail {

class PoolBackend {
 public:
  PoolBackend(std::size_t workers, std::shared_ptr<PoolLink> pool_link)
      : n(workers), link(std::move(pool_link)) {}
  virtual ~PoolBackend() = default;
  PoolBackend(const PoolBackend&) = delete;
  PoolBackend& operator=(const PoolBackend&) = delete;

  // Hands a job to the driver. Throws Error(errc::closed) after close()/terminate(),
  // Error(errc::child_failed) when the initializer failed, Error(errc::invalid_argument) in
  // a forked copy.
  virtual void submit(std::shared_ptr<JobBase> job, const char* what) = 0;
  virtual void close() = 0;
  virtual bool join(const Deadline& deadline) = 0;
  virtual void terminate() noexcept = 0;
  [[nodiscard]] virtual std::vector<WorkerStats> stats() const = 0;

  const std::size_t n;  // workers
  const std::shared_ptr<PoolLink> link;
};

// The jobs a stopping driver must fail, each once: add() every job it can reach, then
// abort_all(e) fails those not finished.
class JobSweep {
 public:
  void add(const std::shared_ptr<JobBase>& j) {
    if (j && seen_.insert(j.get()).second) all_.push_back(j);
  }
  void abort_all(const std::exception_ptr& e) {
    for (auto& j : all_) {
      if (!j->finished) {
        j->finished = true;
        j->abort(e);
      }
    }
  }

 private:
  std::unordered_set<JobBase*> seen_;
  std::vector<std::shared_ptr<JobBase>> all_;
};

// A backend run by one driver thread (PoolCore, MpiCore): the pool's state, the jobs handed
// over and the calls that change them, alike for both. The derived class starts driver_,
// wakes it (wake_driver), and calls terminate() in its own destructor (it is virtual there).
class DriverBackend : public PoolBackend {
 public:
  DriverBackend(std::size_t workers, std::shared_ptr<PoolLink> pool_link,
                std::optional<std::chrono::nanoseconds> task_timeout)
      : PoolBackend(workers, std::move(pool_link)), task_timeout_(task_timeout) {}
  ~DriverBackend() override;

  // Fills in the job's timeout (the pool's default) and queues it; throws as PoolBackend says.
  void submit(std::shared_ptr<JobBase> job, const char* what) override;
  void close() override;
  // Throws Error(errc::interrupted) when SIGINT stopped the pool.
  bool join(const Deadline& deadline) override;
  // Stops the driver (it fails what is pending) and joins it; from a callback, only asks.
  void terminate() noexcept override;

 protected:
  enum class State { running, closed, stopping, done };

  // Wakes the driver thread if it sleeps (poke_ is set already).
  virtual void wake_driver() noexcept = 0;
  void poke() noexcept {
    poke_.store(true, std::memory_order_seq_cst);
    wake_driver();
  }
  void set_state(State s);
  // Driver thread: moves the jobs handed over into `jobs` and says the pool's state; true
  // when it took any. `took_cancelled`: one of them was cancelled before.
  bool intake(State& st, std::deque<std::shared_ptr<JobBase>>& jobs, bool& took_cancelled);
  // Stopping: the state becomes stopping (submit refuses from here on) and the jobs handed
  // over but not taken go to `sweep`.
  void sweep_submitted(JobSweep& sweep);

  const std::optional<std::chrono::nanoseconds> task_timeout_;
  mutable std::mutex mu_;
  std::condition_variable state_cv_;
  State state_ = State::running;
  std::deque<std::shared_ptr<JobBase>> submitted_;
  std::exception_ptr broken_;  // set by the driver thread: the initializer failed
  bool interrupted_ = false;   // SIGINT stopped the pool
  std::atomic<bool> poke_{false};
  std::mutex join_mu_;
  std::thread driver_;
};

// ---- job bookkeeping on a driver thread --------------------------------------------------

// The chunk is resolved (a result or an error delivered): the job finishes once drained and
// nothing of it is outstanding.
inline void resolve_chunk(Chunk& c) {
  JobBase& j = *c.job;
  if (--j.outstanding == 0 && j.drained() && !j.finished) {
    j.finished = true;
    j.finish();
  }
}
inline void fail_chunk(Chunk& c, std::exception_ptr e) {
  c.job->on_error(c, std::move(e));
  resolve_chunk(c);
}
// The next chunk of the first job in `jobs` that has one now; finished jobs leave the list.
inline bool take_chunk(std::deque<std::shared_ptr<JobBase>>& jobs, Chunk& c) {
  for (auto it = jobs.begin(); it != jobs.end();) {
    JobBase& j = **it;
    Chunk fresh;
    if (j.next_chunk(fresh)) {
      fresh.job = *it;
      ++j.outstanding;
      c = std::move(fresh);
      return true;
    }
    if (j.drained()) {
      if (j.outstanding == 0 && !j.finished) {
        j.finished = true;
        j.finish();
      }
      it = jobs.erase(it);
    } else {
      ++it;  // waiting for its consumer (imap): try the next job
    }
  }
  return false;
}
// A job whose cancel() the driver has not applied yet: aborted with `cancelled`.
inline void settle_if_cancelled(JobBase& j, const std::exception_ptr& cancelled) {
  if (j.cancel_requested.load(std::memory_order_acquire) && !j.finished) {
    j.finished = true;
    j.abort(cancelled);
  }
}
// Chunks a worker should have queued, from its running average of chunk times: enough to
// cover ~100 us of driver latency, one when chunks are long (a chunk queued behind a long one
// cannot move to an idle worker). Updates `avg_ns` with `busy_ns`.
inline std::size_t queue_window(double& avg_ns, double busy_ns) {
  avg_ns = avg_ns < 0 ? busy_ns : 0.8 * avg_ns + 0.2 * busy_ns;
  if (avg_ns >= 10e6) return 1;
  return static_cast<std::size_t>(std::clamp(100e3 / std::max(avg_ns, 1.0), 2.0, 128.0));
}

}  // namespace ipckit::detail
