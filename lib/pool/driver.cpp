// PoolCore's life on the driver thread: start, the loop, sleeping, stopping. (Deaths,
// cancels, timeouts and respawns: deaths.cpp. Chunks out and results in: traffic.cpp. The
// design: driver.hpp.)
#include "driver.hpp"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <system_error>
#include <unordered_set>

#include "ipckit/core/code_address.hpp"
#include "ipckit/core/cpu_count.hpp"

namespace ipckit::detail {
namespace {

// How an idle worker waits for its next task: spin briefly, then sleep. A long spin keeps a
// worker awake through a short gap in the stream but takes the CPU from the driver and the
// caller when the workers have every core.
WaitPolicy worker_wait() {
  WaitPolicy p = WaitPolicy::hybrid();
  p.spin = std::chrono::microseconds(20);  // measured: 5, 20, 50 us; 20 was best
  return p;
}

// Error(errno, "<context>: <attempted> failed (hint): <strerror>") for a worker or the driver
// thread that could not be started. EAGAIN from fork() or pthread_create() is a process
// limit: RLIMIT_NPROC (threads count), kernel.threads-max, kernel.pid_max or a cgroup's pids.max.
[[noreturn]] void throw_start_failure(const std::string& context, const std::system_error& e,
                                      const std::string& what) {
  const bool limit = e.code() == std::errc::resource_unavailable_try_again;
  throw Error(
      std::error_code(e.code().value(), std::system_category()),
      context + ": " + what + (limit ? " (a process limit such as RLIMIT_NPROC reached?)" : ""));
}

constexpr std::size_t page_round(std::size_t n) { return (n + 4095) & ~std::size_t{4095}; }

}  // namespace

PoolLayout PoolLayout::for_workers(std::size_t n) {
  PoolLayout l;
  l.n = n;
  l.header = page_round(sizeof(PoolShared) + n * sizeof(WorkerShared));
  l.ring_bytes = page_round(ByteRing::bytes_for(kRingBytes));
  return l;
}

PoolCore::PoolCore(PoolOptions opts)
    : DriverBackend(opts.processes != 0 ? opts.processes : cpu_count(),
                    std::make_shared<PoolLink>(), opts.task_timeout),
      options(std::move(opts)) {
  if (options.task_retries < 0) {
    throw Error(errc::invalid_argument, "Pool: task_retries must not be negative");
  }
  if (n > 4096) {
    throw Error(errc::invalid_argument,
                "Pool: " + std::to_string(n) + " processes is more than the 4096 supported");
  }
  if (!options.cpu_affinity.empty()) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) throw_errno("sched_getaffinity");
    for (int cpu : options.cpu_affinity) {
      if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
        throw Error(errc::invalid_argument, "Pool: cpu_affinity names CPU " + std::to_string(cpu) +
                                                ", which this process may not run on");
      }
    }
  }
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw_errno("eventfd");
  link->doorbell.reset(fd);
  link->handle_sigint = options.handle_sigint;
  link->owner = current_pid();
  layout_ = PoolLayout::for_workers(n);
  const int mfd = ::memfd_create("ipckit-pool", MFD_CLOEXEC);
  if (mfd < 0) throw_errno("Pool: memfd_create() for its shared memory");
  memfd_.reset(mfd);
  if (::ftruncate(mfd, static_cast<off_t>(layout_.total())) != 0) {
    throw_errno("Pool: ftruncate() of its shared memory to " + std::to_string(layout_.total()) +
                " bytes");
  }
  mem_ = Mapping::of_file(mfd, layout_.total(), "Pool: shared memory");
  sh_ = new (mem_.data()) PoolShared();
  slots_ = reinterpret_cast<WorkerShared*>(mem_.data() + sizeof(PoolShared));
  for (std::size_t i = 0; i < n; ++i) new (slots_ + i) WorkerShared();
  workers_.resize(n);
  stats_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    workers_[i].slot = i;
    stats_[i].slot = i;
  }
  if (options.handle_sigint) register_doorbell(fd);
  // Workers resolve code addresses from the snapshot they inherit: taking one there could
  // wait forever on a loader lock another thread held at the fork.
  prime_code_addresses();
}

PoolCore::~PoolCore() {
  terminate();
  // The last reference may be the driver's own (a callback destroyed the Pool): the thread
  // is ending and cannot join itself.
  if (driver_.joinable()) driver_.detach();
  if (options.handle_sigint) unregister_doorbell(link->doorbell.get());
}

void PoolCore::start() {
  auto started = std::make_shared<std::promise<void>>();
  auto ready = started->get_future();
  // The driver forks every worker (the first ones too): a child's parent-death signal
  // follows the thread that forked it, and the driver lives as long as the pool. It holds a
  // reference to the core, so that a callback that destroys the Pool does not pull the core
  // from under it.
  auto driver = [self = shared_from_this(), started] {
    mark_driver_thread();
    self->sigint_seen_ = sigint_count();
    std::size_t i = 0;
    try {
      if (self->options.start == StartMethod::forkserver) {
        self->server_.emplace(self->layout_, self->memfd_.get(), self->link->doorbell.get(),
                              self->options.maxtasksperchild, self->options.max_worker_rss,
                              self->options.initializer);
      }
      try {
        for (; i < self->n; ++i) self->spawn(self->workers_[i], false);
      } catch (const std::system_error& e) {
        const std::string before =
            i == 0   ? ""
            : i == 1 ? " (worker 1, already running, was stopped)"
                     : " (workers 1-" + std::to_string(i) + ", already running, were stopped)";
        throw_start_failure("Pool: could not start worker " + std::to_string(i + 1) + " of " +
                                std::to_string(self->n) + before,
                            e, attempted(e));
      }
    } catch (...) {
      self->stop_all(std::current_exception());
      self->server_.reset();
      self->set_state(State::done);
      started->set_exception(std::current_exception());
      return;
    }
    started->set_value();
    self->run();
  };
  try {
    driver_ = std::thread(std::move(driver));
  } catch (const std::system_error& e) {
    // Nothing has started: the caller's reference to the core is the last one.
    throw_start_failure("Pool: could not start its driver thread", e, "pthread_create() failed");
  }
  try {
    ready.get();
  } catch (...) {
    driver_.join();
    throw;
  }
}

std::vector<WorkerStats> PoolCore::stats() const {
  std::lock_guard lk(stats_mu_);
  return stats_;
}

void PoolCore::spawn(Worker& w, bool replacement) {
  w.tasks.reset();
  w.results.reset();
  std::byte* base = mem_.data();
  w.tasks.emplace(ByteRing::at({base + layout_.tasks_at(w.slot), layout_.ring_bytes}, kRingBytes,
                               worker_wait()));
  w.results.emplace(ByteRing::at({base + layout_.results_at(w.slot), layout_.ring_bytes},
                                 kRingBytes, worker_wait()));
  w.tasks->attach_producer();
  w.results->attach_consumer();
  slots_[w.slot].started.store(0, std::memory_order_relaxed);
  slots_[w.slot].ready.store(0, std::memory_order_relaxed);  // the new worker's, not the last one's
  w.inflight.clear();
  w.clock_id = 0;
  w.timed_out = 0;
  w.killed_by_pool = false;
  w.out.reset();
  w.staged = false;
  w.in.reset();
  w.avg_ns = -1;
  w.window = 1;  // until its first result says how long tasks take
  w.init_failed = false;
  w.budget = options.maxtasksperchild != 0 ? options.maxtasksperchild : UINT64_MAX;
  const int cpu = options.cpu_affinity.empty()
                      ? -1
                      : options.cpu_affinity[w.slot % options.cpu_affinity.size()];
  if (server_) {
    w.proc = WorkerProcess(server_->fork_worker(w.slot, cpu), &*server_);
  } else {
    const WorkerEnv env{base,
                        layout_,
                        w.slot,
                        link->doorbell.get(),
                        cpu,
                        options.maxtasksperchild,
                        &options.initializer,
                        options.max_worker_rss};
    w.proc = WorkerProcess(Process::spawn([env] { return worker_main(env); }));
  }
  w.pid = w.proc.pid();
  w.alive = true;
  std::lock_guard lk(stats_mu_);
  stats_[w.slot].pid = w.pid;
  if (replacement) ++stats_[w.slot].restarts;
}

void PoolCore::run() noexcept {
  try {
    loop();
  } catch (...) {
    // Not expected: a bug or resource exhaustion in the driver. Fail everything rather than
    // leave anyone waiting.
    std::string what = "unknown error";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "ipckit::Pool: driver failed: %s\n", what.c_str());
    stop_all(std::make_exception_ptr(Error(errc::closed, "Pool driver failed: " + what)));
  }
  server_.reset();  // every worker is reaped: the helper may go
  set_state(State::done);
}

void PoolCore::loop() {
  using clock = std::chrono::steady_clock;
  for (;;) {
    State st;
    bool progress = intake(st, jobs_, took_cancelled_);
    if (st == State::stopping) {
      stop_all(std::make_exception_ptr(Error(errc::closed, "the pool was terminated")));
      return;
    }
    const std::uint64_t sig = sigint_count();
    if (sig != sigint_seen_) {
      sigint_seen_ = sig;
      if (link->blocking.load() > 0) {
        {
          std::lock_guard lk(mu_);
          interrupted_ = true;
          state_ = State::stopping;
        }
        stop_all(std::make_exception_ptr(Error(errc::interrupted, "interrupted by SIGINT")));
        return;
      }
    }
    for (Worker& w : workers_) {
      if (w.alive) progress |= collect(w);
    }
    if (broken_) {
      stop_all(broken_);
      return;
    }
    progress |= apply_cancels(took_cancelled_);
    took_cancelled_ = false;
    const auto now = clock::now();
    progress |= check_timeouts(now);
    if (now >= next_death_check_) {
      progress |= check_deaths(0);
      next_death_check_ = now + std::chrono::milliseconds(1);
    }
    if (st == State::closed) {
      for (auto& j : jobs_) j->pool_closing = true;
    }
    progress |= respawn_pending();
    progress |= dispatch();
    if (st == State::closed && idle()) {
      shutdown_workers();
      return;
    }
    if (!progress) sleep();
  }
}

bool PoolCore::idle() const {
  if (!jobs_.empty() || !retry_.empty()) return false;
  for (const Worker& w : workers_) {
    if (!w.inflight.empty()) return false;
  }
  return true;
}

// ---- sleeping ----
bool PoolCore::anything_ready() {
  if (poke_.load(std::memory_order_acquire)) return true;
  for (Worker& w : workers_) {
    if (!w.alive) continue;
    try {
      if (w.results->try_peek()) return true;
    } catch (const Error&) {
      return true;  // collect() deals with it
    }
  }
  return false;
}

void PoolCore::sleep() {
  // A short spin first (about 5 us): a busy pool's next result is often that close. Longer
  // spins take the CPU from the workers when they have every core.
  for (int i = 0; i < 100; ++i) {
    if (anything_ready()) return;
    cpu_relax();
  }
  sh_->driver_sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with notify_driver()
  if (anything_ready()) {
    sh_->driver_sleeping.store(0, std::memory_order_relaxed);
    return;
  }
  std::vector<pollfd> fds;
  fds.reserve(workers_.size() + 1);
  fds.push_back({link->doorbell.get(), POLLIN, 0});
  bool polled_all = true;
  for (Worker& w : workers_) {
    if (!w.alive) continue;
    if (w.proc.pidfd() >= 0) {
      fds.push_back({w.proc.pidfd(), POLLIN, 0});
    } else {
      polled_all = false;
    }
  }
  // Without pidfds (old kernels), wake every 20 ms to look for deaths; with a replacement
  // worker to fork again, every 100 ms.
  int timeout = polled_all ? -1 : 20;
  for (const Worker& w : workers_) {
    if (w.respawn_at) timeout = timeout < 0 ? 100 : std::min(timeout, 100);
  }
  const int next_timeout = ms_to_next_timeout();
  if (next_timeout >= 0) timeout = timeout < 0 ? next_timeout : std::min(timeout, next_timeout);
  (void)::poll(fds.data(), fds.size(), timeout);
  sh_->driver_sleeping.store(0, std::memory_order_relaxed);
  std::uint64_t v;
  while (::read(link->doorbell.get(), &v, sizeof v) > 0) {
  }
  next_death_check_ = {};  // look at the pidfds on the next pass
}

// ---- stopping ----
void PoolCore::stop_all(const std::exception_ptr& e) noexcept {
  {
    // From here on submit() refuses: nothing can arrive after the sweep below.
    std::lock_guard lk(mu_);
    if (state_ != State::done) state_ = State::stopping;
  }
  for (Worker& w : workers_) {
    if (w.alive) {
      try {
        w.proc.kill(SIGKILL);
      } catch (const Error&) {  // already gone
      }
    }
  }
  JobSweep sweep;
  sweep_submitted(sweep);
  for (auto& j : jobs_) sweep.add(j);
  for (auto& c : retry_) sweep.add(c.job);
  for (Worker& w : workers_) {
    for (auto& c : w.inflight) sweep.add(c.job);
  }
  for (Worker& w : workers_) {
    if (w.alive) {
      try {
        (void)w.proc.wait();
      } catch (const Error&) {  // reaped elsewhere (SIGCHLD ignored, a waitpid(-1))
      }
      w.alive = false;
    }
    w.respawn_at.reset();
    w.out.reset();  // before the chunks its parts point into go
    w.inflight.clear();
    w.tasks.reset();
    w.results.reset();
  }
  jobs_.clear();
  retry_.clear();
  sweep.abort_all(e);
  std::lock_guard lk(stats_mu_);
  for (auto& s : stats_) s.pid = -1;
}

void PoolCore::shutdown_workers() {
  for (Worker& w : workers_) {
    if (w.alive) w.tasks->close();
  }
  for (Worker& w : workers_) {
    while (w.alive) {
      if (w.proc.wait_for(std::chrono::milliseconds(10))) {
        w.alive = false;
        break;
      }
      std::lock_guard lk(mu_);
      if (state_ == State::stopping) w.proc.kill(SIGKILL);
    }
    w.tasks.reset();
    w.results.reset();
  }
  std::lock_guard lk(stats_mu_);
  for (auto& s : stats_) s.pid = -1;
}

}  // namespace ipckit::detail
