// Pool's own members (the driver behind it: driver.hpp), the pool's error types, and the
// checks every blocking pool call makes.
#include "ipckit/pool/pool.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "driver.hpp"
#include "internal.hpp"

namespace ipckit {

namespace {
std::string remote_what(const std::string& type, const std::string& message, pid_t pid,
                        const std::string& where) {
  std::string s = "task raised " + type;
  if (!message.empty()) s += ": " + message;
  return s + " (in worker " + std::to_string(pid) + (where.empty() ? "" : ", " + where) + ")";
}
std::string ms_text(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration<double, std::milli>(d).count()) + " ms";
}
std::string lost_what(pid_t pid, const ExitStatus& st, int attempts) {
  std::string s = "worker " + std::to_string(pid) + " " + st.describe() + " while running the task";
  if (attempts > 1) s += " (" + std::to_string(attempts) + " attempts)";
  return s;
}

}  // namespace

RemoteError::RemoteError(std::string type_name, std::string message, pid_t worker,
                         std::string where)
    : Error(errc::remote_error, remote_what(type_name, message, worker, where)),
      type_(std::move(type_name)),
      message_(std::move(message)),
      worker_(worker),
      where_(std::move(where)) {}

WorkerLost::WorkerLost(pid_t worker, ExitStatus status, int attempts)
    : Error(errc::worker_lost, lost_what(worker, status, attempts)),
      worker_(worker),
      status_(status),
      attempts_(attempts) {}
TaskTimeout::TaskTimeout(pid_t worker, std::chrono::nanoseconds limit)
    : Error(errc::timeout, "the task ran past its timeout of " + ms_text(limit) + "; worker " +
                               std::to_string(worker) + " was killed"),
      worker_(worker),
      limit_(limit) {}
TaskTimeout::TaskTimeout(pid_t worker, std::chrono::nanoseconds limit, const std::string& where)
    : Error(errc::timeout, "the task ran past its timeout of " + ms_text(limit) + " on worker " +
                               std::to_string(worker) + ", " + where +
                               ", which cannot be stopped: its result will be dropped"),
      worker_(worker),
      limit_(limit) {}

// ---- Pool ------------------------------------------------------------------------------------
Pool::Pool(PoolOptions options) {
  auto core = std::make_shared<detail::PoolCore>(std::move(options));
  core->start();
  core_ = std::move(core);
}
Pool::Pool(std::shared_ptr<detail::PoolBackend> backend) noexcept : core_(std::move(backend)) {}
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&& o) noexcept {
  if (this != &o) {
    if (core_) core_->terminate();
    core_ = std::move(o.core_);
  }
  return *this;
}
Pool::~Pool() {
  if (core_) core_->terminate();
}
std::size_t Pool::size() const noexcept { return core_->n; }
void Pool::close() { core_->close(); }
void Pool::join() { (void)core_->join(Deadline::never()); }
bool Pool::join_until(const Deadline& deadline) { return core_->join(deadline); }
void Pool::terminate() noexcept { core_->terminate(); }
std::vector<WorkerStats> Pool::stats() const { return core_->stats(); }
void Pool::enqueue(std::shared_ptr<detail::JobBase> job, const char* what) {
  core_->submit(std::move(job), what);
}
const std::shared_ptr<detail::PoolLink>& Pool::link() const noexcept { return core_->link; }

namespace detail {

void PoolLink::wake() const noexcept { write_doorbell(doorbell.get()); }

void check_may_block(const PoolLink* link, const char* what) {
  if (on_driver_thread()) {
    throw Error(errc::invalid_argument,
                std::string(what) +
                    ": a blocking pool call from a pool callback would wait for the thread "
                    "that runs it (callbacks run on the pool's driver thread)");
  }
  if (link != nullptr) link->require_owner(what);
}

void PoolLink::require_owner(const char* what) const {
  if (owned_here()) return;
  throw Error(errc::invalid_argument,
              std::string(what) + ": this pool belongs to process " + std::to_string(owner) +
                  " (a forked copy of a pool has no driver and no workers)");
}

void run_callback(const char* what, const std::function<void()>& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipckit::Pool: a %s threw (ignored): %s\n", what, e.what());
  } catch (...) {
    std::fprintf(stderr, "ipckit::Pool: a %s threw a non-standard exception (ignored)\n", what);
  }
}

std::size_t check_chunksize(std::optional<std::size_t> chunksize, std::size_t n,
                            std::size_t workers, const char* what) {
  if (chunksize) {
    if (*chunksize == 0) {
      throw Error(errc::invalid_argument, std::string(what) + ": chunksize must be at least 1");
    }
    if (*chunksize > UINT32_MAX) {
      throw Error(errc::invalid_argument, std::string(what) + ": chunksize " +
                                              std::to_string(*chunksize) + " exceeds 2^32 - 1");
    }
    return *chunksize;
  }
  // Python's rule: about four chunks per worker.
  const std::size_t per = 4 * std::max<std::size_t>(workers, 1);
  const std::size_t c = n / per + (n % per != 0 ? 1 : 0);
  return std::clamp<std::size_t>(c, 1, UINT32_MAX);
}
}  // namespace detail
}  // namespace ipckit
