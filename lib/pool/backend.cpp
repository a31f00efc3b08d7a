// DriverBackend: the pool's state and the calls that change it, shared by the local driver
// (PoolCore) and the MPI one (MpiCore). (backend.hpp)
#include "backend.hpp"

#include "internal.hpp"

#include <string>

namespace ipckit::detail {

DriverBackend::~DriverBackend() {
  // The last reference may be the driver's own (a callback destroyed the Pool): the thread
  // is ending and cannot join itself.
  if (driver_.joinable()) driver_.detach();
}

void DriverBackend::set_state(State s) {
  {
    std::lock_guard lk(mu_);
    state_ = s;
  }
  state_cv_.notify_all();
}

void DriverBackend::submit(std::shared_ptr<JobBase> job, const char* what) {
  link->require_owner(what);
  if (!job->timeout) job->timeout = task_timeout_;
  if (job->timeout && job->timeout->count() <= 0) {
    throw Error(errc::invalid_argument, std::string(what) + ": a timeout must be positive");
  }
  {
    std::lock_guard lk(mu_);
    if (broken_) {
      try {
        std::rethrow_exception(broken_);
      } catch (const Error& e) {
        throw Error(errc::child_failed, std::string(what) + ": " + e.what());
      }
    }
    if (state_ != State::running) {
      throw Error(errc::closed,
                  std::string(what) + ": the pool is " +
                      (interrupted_ ? "stopped (interrupted by SIGINT)" : "closed or terminated"));
    }
    submitted_.push_back(std::move(job));
  }
  poke();
}

void DriverBackend::close() {
  link->require_owner("Pool::close");
  {
    std::lock_guard lk(mu_);
    if (state_ == State::running) state_ = State::closed;
  }
  poke();
}

bool DriverBackend::join(const Deadline& deadline) {
  BlockingScope scope(link.get());  // throws in a forked copy and on the driver thread
  {
    std::unique_lock lk(mu_);
    if (state_ == State::running) {
      throw Error(errc::invalid_argument, "Pool::join: call close() or terminate() first");
    }
    const auto done = [&] { return state_ == State::done; };
    if (deadline.is_never()) {
      state_cv_.wait(lk, done);
    } else if (!state_cv_.wait_until(lk, deadline.when(), done)) {
      return false;
    }
  }
  {
    std::lock_guard lk(join_mu_);
    if (driver_.joinable()) driver_.join();  // it has finished its work: returns at once
  }
  std::lock_guard lk(mu_);
  if (interrupted_) throw Error(errc::interrupted, "Pool::join: interrupted by SIGINT");
  return true;
}

void DriverBackend::terminate() noexcept {
  if (!link->owned_here()) {
    // A forked copy: the driver thread and the workers belong to the parent. Leave them be.
    if (driver_.joinable()) driver_.detach();
    return;
  }
  {
    std::lock_guard lk(mu_);
    if (state_ != State::done) state_ = State::stopping;
  }
  poke();
  // From a callback (this pool's or another's): the loop stops after it. (Not driver_'s id:
  // another thread may be joining driver_.)
  if (on_driver_thread()) return;
  std::lock_guard lk(join_mu_);
  if (driver_.joinable()) driver_.join();
}

void DriverBackend::sweep_submitted(JobSweep& sweep) {
  std::lock_guard lk(mu_);
  if (state_ != State::done) state_ = State::stopping;
  for (auto& j : submitted_) sweep.add(j);
  submitted_.clear();
}

bool DriverBackend::intake(State& st, std::deque<std::shared_ptr<JobBase>>& jobs,
                           bool& took_cancelled) {
  poke_.store(false, std::memory_order_relaxed);
  std::lock_guard lk(mu_);
  st = state_;
  if (submitted_.empty()) return false;
  for (auto& j : submitted_) {
    // Cancelled before the driver took it (its cancel may have been counted already).
    if (j->cancel_requested.load(std::memory_order_acquire)) took_cancelled = true;
    jobs.push_back(std::move(j));
  }
  submitted_.clear();
  return true;
}

}  // namespace ipckit::detail
