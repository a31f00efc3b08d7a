// The pool's jobs, as its driver thread sees them: a source of chunks (inputs already
// encoded) and a sink for each chunk's results or error. MapJob serves map/starmap/apply and
// their _async forms (inputs encoded up front, results in order into one vector); ImapJob
// serves imap/imap_unordered (inputs pulled lazily, results handed out one at a time).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/pool/detail/task.hpp"
#include "ipckit/sync/wait_source.hpp"

namespace ipckit::detail {

using ProgressFn = std::function<void(std::size_t done, std::size_t total)>;

// What jobs and results share with their pool: the driver's doorbell (an eventfd), the
// count of threads blocked in a pool call (SIGINT interrupts a pool only while someone waits)
// and the count of cancel requests (the driver looks for cancelled jobs when it moves).
struct PoolLink {
  UniqueFd doorbell;
  std::atomic<int> blocking{0};
  std::atomic<std::uint64_t> cancels{0};
  bool handle_sigint = true;
  pid_t owner = 0;  // the process the pool belongs to (its driver thread runs there)
  // Wakes the driver thread (write to the eventfd).
  void wake() const noexcept;
  // Whether this process is the pool's owner (not a forked copy of it).
  [[nodiscard]] bool owned_here() const noexcept { return current_pid() == owner; }
  // Throws Error(errc::invalid_argument), naming `what`, in a forked copy.
  void require_owner(const char* what) const;
};

// For the duration of a blocking pool call: counts the caller as blocked (arming SIGINT
// handling while anyone is), and refuses calls that would wait forever: from the driver
// thread (a callback would wait for itself) and from a forked copy of the process (it has no
// driver). Throws Error(errc::invalid_argument) there.
class BlockingScope {
 public:
  explicit BlockingScope(PoolLink* link);
  ~BlockingScope();
  BlockingScope(const BlockingScope&) = delete;
  BlockingScope& operator=(const BlockingScope&) = delete;

 private:
  PoolLink* link_;
};

// Throws Error(errc::invalid_argument) on the driver thread or in a forked copy, naming
// `what`: blocking calls check before they submit anything.
void check_may_block(const PoolLink* link, const char* what);

// Calls a user callback from the driver thread; what it throws is reported on stderr and
// dropped (the driver must go on).
void run_callback(const char* what, const std::function<void()>& fn) noexcept;

class JobBase;

// One task message: the unit of dispatch, of retry and of failure.
struct Chunk {
  Chunk() = default;
  Chunk(Chunk&&) noexcept = default;
  Chunk& operator=(Chunk&&) noexcept = default;
  Chunk(const Chunk&) = delete;  // `args` may point into `owned`
  Chunk& operator=(const Chunk&) = delete;

  std::shared_ptr<JobBase> job;
  std::uint64_t index = 0;          // chunk number within the job
  std::uint64_t first = 0;          // index of its first input
  std::uint32_t count = 0;          // inputs
  std::span<const std::byte> args;  // encoded inputs: into the job's storage or `owned`
  std::vector<std::byte> owned;
  int attempts = 0;      // times a worker began it and died
  std::uint64_t id = 0;  // the driver's id for the current dispatch
};

class JobBase {
 public:
  JobBase(Invoker inv, std::vector<std::byte> callable)
      : invoker(code_address_of(inv)), fn(std::move(callable)) {}
  virtual ~JobBase() = default;
  JobBase(const JobBase&) = delete;
  JobBase& operator=(const JobBase&) = delete;

  const CodeAddress invoker;  // the trampoline, as the worker finds it
  const std::vector<std::byte> fn;
  ProgressFn progress;
  std::size_t total_items = 0;  // 0 when unknown (imap)
  // Per chunk: a chunk that runs longer has its worker killed and fails with TaskTimeout.
  // Unset: the pool's task_timeout (filled in by submit).
  std::optional<std::chrono::nanoseconds> timeout;
  // Any thread: cancel() asks, then bumps PoolLink::cancels and wakes the driver, which
  // aborts the job (and, with cancel_running, kills the workers running its chunks).
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> cancel_running{false};
  void request_cancel(PoolLink& link, bool running) {
    if (running) cancel_running.store(true, std::memory_order_relaxed);
    cancel_requested.store(true, std::memory_order_release);
    link.cancels.fetch_add(1, std::memory_order_acq_rel);
    link.wake();
  }
  // Driver thread only.
  std::size_t items_done = 0;
  std::size_t outstanding = 0;  // chunks taken by next_chunk() and not yet resolved
  bool finished = false;        // finish() or abort() was called
  bool pool_closing = false;    // close() was called: read ahead without limit (imap)

  // All of these run on the driver thread.
  // The next chunk to run now (fills index/first/count/args), or false when none now.
  virtual bool next_chunk(Chunk& c) = 0;
  // True when next_chunk() will never give another chunk.
  virtual bool drained() = 0;
  // True when the job's chunks need not run any more (it failed, or its consumer left): a
  // chunk of it waiting to be run again is dropped instead.
  virtual bool abandoned() = 0;
  // A chunk's results (may throw Error(bad_frame); the driver then calls on_error).
  virtual void on_result(const Chunk& c, std::span<const std::byte> results) = 0;
  virtual void on_error(const Chunk& c, std::exception_ptr e) = 0;
  // Drained, and every chunk resolved.
  virtual void finish() = 0;
  // The pool stopped (terminate, SIGINT, destructor): fail whatever is not done.
  virtual void abort(std::exception_ptr e) = 0;

  void report_progress(std::size_t items) {
    items_done += items;
    if (progress) run_callback("progress callback", [&] { progress(items_done, total_items); });
  }
};

// Told when an outcome becomes ready: as_completed / wait_any wait on one for many outcomes.
class ReadyWatch {
 public:
  ReadyWatch() = default;
  // A watch that also wakes a WaitSet (through its waker) when an outcome becomes ready.
  explicit ReadyWatch(std::shared_ptr<LocalWaker> waker) : waker_(std::move(waker)) {}
  void notify(std::size_t index) {
    {
      std::lock_guard lk(mu_);
      ready_.push_back(index);
    }
    cv_.notify_all();
    if (waker_) waker_->wake();
  }
  // The index of the next outcome to become ready; nullopt at the deadline.
  std::optional<std::size_t> next(const Deadline& d) {
    std::unique_lock lk(mu_);
    const auto any = [&] { return !ready_.empty(); };
    if (d.is_never()) {
      cv_.wait(lk, any);
    } else if (!cv_.wait_until(lk, d.when(), any)) {
      return std::nullopt;
    }
    const std::size_t i = ready_.front();
    ready_.pop_front();
    return i;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::size_t> ready_;
  std::shared_ptr<LocalWaker> waker_;
};

// A single outcome that threads wait for: ready or not, and failed with an exception or not.
// Outcome<S> adds the value. The driver claims it before it runs a callback (kSettling), so
// that cancel() either wins before (no callback runs) or finds it settling (too late).
class OutcomeBase {
 public:
  // The driver: true when the outcome is still pending; it is then the driver's to settle.
  bool claim() {
    std::lock_guard lk(mu_);
    if (state_ != kPending) return false;
    state_ = kSettling;
    return true;
  }
  void set_error(std::exception_ptr e) {
    std::vector<Watcher> ws;
    {
      std::lock_guard lk(mu_);
      if (state_ != kPending && state_ != kSettling) return;
      error_ = std::move(e);
      state_ = kFailed;
      ws.swap(watchers_);
    }
    cv_.notify_all();
    notify(ws);
  }
  // Any thread: fails a pending outcome with `e`; false when it is settling or ready.
  bool cancel(std::exception_ptr e) {
    std::vector<Watcher> ws;
    {
      std::lock_guard lk(mu_);
      if (state_ != kPending) return false;
      error_ = std::move(e);
      state_ = kFailed;
      ws.swap(watchers_);
    }
    cv_.notify_all();
    notify(ws);
    return true;
  }
  // True once ready; false when the deadline passed first.
  bool wait_until(const Deadline& d) {
    std::unique_lock lk(mu_);
    const auto done = [&] { return state_ == kOk || state_ == kFailed; };
    if (d.is_never()) {
      cv_.wait(lk, done);
      return true;
    }
    return cv_.wait_until(lk, d.when(), done);
  }
  [[nodiscard]] bool ready() const {
    std::lock_guard lk(mu_);
    return state_ == kOk || state_ == kFailed;
  }
  [[nodiscard]] bool ok() const {
    std::lock_guard lk(mu_);
    return state_ == kOk;
  }
  // Once ready: rethrows the error, if any.
  void check() const {
    std::lock_guard lk(mu_);
    if (state_ == kFailed) std::rethrow_exception(error_);
  }
  // Tells `w` (with `index`) when the outcome is ready: at once if it is.
  void watch(const std::shared_ptr<ReadyWatch>& w, std::size_t index) {
    {
      std::lock_guard lk(mu_);
      if (state_ != kOk && state_ != kFailed) {
        std::erase_if(watchers_, [](const Watcher& x) { return x.watch.expired(); });
        watchers_.push_back({w, index});
        return;
      }
    }
    w->notify(index);
  }

 protected:
  enum State { kPending, kSettling, kOk, kFailed };
  struct Watcher {
    std::weak_ptr<ReadyWatch> watch;
    std::size_t index;
  };
  static void notify(const std::vector<Watcher>& ws) {
    for (const Watcher& x : ws) {
      if (auto w = x.watch.lock()) w->notify(x.index);
    }
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  State state_ = kPending;
  std::exception_ptr error_;
  std::vector<Watcher> watchers_;
};

template <class S>
class Outcome final : public OutcomeBase {
 public:
  void set_value(S v) {
    std::vector<Watcher> ws;
    {
      std::lock_guard lk(mu_);
      if (state_ != kPending && state_ != kSettling) return;
      value_.emplace(std::move(v));
      state_ = kOk;
      ws.swap(watchers_);
    }
    cv_.notify_all();
    notify(ws);
  }
  // Once ready: the value, or the error rethrown.
  S& value() {
    check();
    return *value_;
  }

 private:
  std::optional<S> value_;
};

// map, starmap, apply: inputs encoded up front (the caller's range may go away), results in
// input order. S is what the caller gets: std::vector<R> (map) or R (apply).
template <class R, class S>
class MapJob final : public JobBase {
 public:
  struct Slice {
    std::size_t offset;
    std::size_t size;
    std::uint64_t first;
    std::uint32_t count;
  };
  using Callback = std::function<void(const S&)>;
  using ErrorCallback = std::function<void(const Error&)>;

  MapJob(Invoker inv, std::vector<std::byte> callable, std::vector<std::byte> blob,
         std::vector<Slice> slices, std::size_t n, std::shared_ptr<Outcome<S>> out)
      : JobBase(inv, std::move(callable)),
        blob_(std::move(blob)),
        slices_(std::move(slices)),
        results_(n),
        out_(std::move(out)) {
    total_items = n;
  }

  Callback callback;
  ErrorCallback error_callback;

  bool next_chunk(Chunk& c) override {
    if (failed_ || next_ == slices_.size()) return false;
    const Slice& p = slices_[next_];
    c.index = next_++;
    c.first = p.first;
    c.count = p.count;
    c.args = std::span<const std::byte>(blob_).subspan(p.offset, p.size);
    return true;
  }
  bool drained() override { return failed_ || next_ == slices_.size(); }
  bool abandoned() override { return failed_; }
  void on_result(const Chunk& c, std::span<const std::byte> bytes) override {
    // Cancelled (maybe not applied by the driver yet): no progress callback either.
    if (failed_ || cancel_requested.load(std::memory_order_acquire)) return;
    decode_results<R>(bytes, c.count, results_.begin() + static_cast<std::ptrdiff_t>(c.first));
    report_progress(c.count);
  }
  void on_error(const Chunk&, std::exception_ptr e) override { fail(std::move(e)); }
  void finish() override {
    if (failed_ || finished_) return;
    finished_ = true;
    if (!out_->claim()) return;  // cancelled: no callback
    S value = take();
    if (callback) run_callback("callback", [&] { callback(value); });
    out_->set_value(std::move(value));
  }
  void abort(std::exception_ptr e) override { fail(std::move(e)); }

 private:
  S take() {
    if constexpr (std::is_same_v<S, std::vector<R>>) {
      return std::move(results_);
    } else {
      return std::move(results_.front());
    }
  }
  void fail(std::exception_ptr e) {
    if (failed_ || finished_) return;
    failed_ = true;              // the inputs stay: chunks of this job may still be in flight
    if (!out_->claim()) return;  // cancelled: no callback
    if (error_callback) {
      run_callback("error_callback", [&] {
        try {
          std::rethrow_exception(e);
        } catch (const Error& err) {
          error_callback(err);
        } catch (const std::bad_alloc&) {
          error_callback(Error(errc::out_of_memory, "Pool: out of memory for a result"));
        } catch (const std::exception& other) {
          // A type given to register_exception (the codec's own failures are Errors).
          error_callback(Error(errc::remote_error, other.what()));
        } catch (...) {
          error_callback(Error(errc::remote_error, "a registered exception type"));
        }
      });
    }
    out_->set_error(std::move(e));
  }

  std::vector<std::byte> blob_;
  std::vector<Slice> slices_;
  std::size_t next_ = 0;
  std::vector<R> results_;
  bool failed_ = false;
  bool finished_ = false;
  std::shared_ptr<Outcome<S>> out_;
};

// Encodes the next chunk of a lazily read input range; false when the range is exhausted.
struct ChunkSource {
  virtual ~ChunkSource() = default;
  virtual bool next(std::vector<std::byte>& args, std::uint32_t& count) = 0;
};

// imap, imap_unordered: inputs pulled from the caller's range as workers need them (at most
// `ahead` chunks beyond what the consumer has taken), results handed out one by one.
template <class R>
class ImapJob final : public JobBase {
 public:
  ImapJob(Invoker inv, std::vector<std::byte> callable, std::unique_ptr<ChunkSource> src,
          bool ordered, std::size_t ahead, std::shared_ptr<PoolLink> link)
      : JobBase(inv, std::move(callable)),
        src_(std::move(src)),
        ordered_(ordered),
        ahead_(ahead),
        link_(std::move(link)) {}

  // ---- driver thread ----
  bool next_chunk(Chunk& c) override {
    std::lock_guard lk(mu_);
    if (!src_) return false;
    if (pulled_ - taken_ >= ahead_ && !pool_closing) {
      throttled_ = true;
      return false;
    }
    try {
      if (!src_->next(c.owned, c.count)) {
        src_.reset();
        return false;
      }
    } catch (...) {
      // The caller's range threw: everything before this point is still delivered.
      input_error_ = std::current_exception();
      error_at_ = pulled_;
      src_.reset();
      version_.fetch_add(1, std::memory_order_release);
      cv_.notify_all();
      return false;
    }
    c.index = pulled_++;
    c.args = c.owned;
    return true;
  }
  bool drained() override {
    std::lock_guard lk(mu_);
    return !src_;
  }
  bool abandoned() override {
    std::lock_guard lk(mu_);
    return cancelled_ || aborted_;
  }
  void on_result(const Chunk& c, std::span<const std::byte> bytes) override {
    Entry e;
    e.values.reserve(c.count);
    decode_results<R>(bytes, c.count, std::back_inserter(e.values));
    store(c, std::move(e));
    if (!cancel_requested.load(std::memory_order_acquire)) report_progress(c.count);
  }
  void on_error(const Chunk& c, std::exception_ptr err) override {
    Entry e;
    e.error = std::move(err);
    store(c, std::move(e));
  }
  void finish() override {
    {
      std::lock_guard lk(mu_);
      finished_ = true;
    }
    version_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
  }
  void abort(std::exception_ptr e) override {
    {
      std::lock_guard lk(mu_);
      if (finished_ || aborted_) return;  // a cancel's error stays
      aborted_ = std::move(e);
      src_.reset();
    }
    version_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
  }

  // ---- consumer ----
  // The next result, nullopt at the end; rethrows a chunk's error at its place (iteration
  // may go on after it), the input range's exception after the inputs before it, and the
  // pool's stop error. Throws Error(errc::timeout) at the deadline.
  std::optional<R> next(const Deadline& d) {
    for (;;) {
      if (pos_ < cur_.size()) return std::move(cur_[pos_++]);
      if (!local_.empty()) {
        Entry e = std::move(local_.front());
        local_.pop_front();
        cur_ = std::move(e.values);
        pos_ = 0;
        if (e.error) std::rethrow_exception(e.error);
        continue;
      }
      std::unique_lock lk(mu_);
      const auto have = [&] {
        return (!ready_.empty() && ready_.begin()->first == next_key_) ||
               (input_error_ && next_key_ == error_at_) || aborted_ ||
               (finished_ && next_key_ >= pulled_);
      };
      if (!have()) {
        // Spin a little before sleeping: results of small chunks come microseconds apart,
        // and a sleep costs a kernel wake-up per result.
        const std::uint64_t v = version_.load(std::memory_order_acquire);
        lk.unlock();
        for (int i = 0; i < 100 && version_.load(std::memory_order_acquire) == v; ++i) {
          cpu_relax();
        }
        lk.lock();
      }
      if (d.is_never()) {
        cv_.wait(lk, have);
      } else if (!cv_.wait_until(lk, d.when(), have)) {
        throw Error(errc::timeout, "Pool::imap: no result within the timeout");
      }
      if (ready_.empty() || ready_.begin()->first != next_key_) {
        if (input_error_ && next_key_ == error_at_) {
          ++next_key_;  // reported once; the job ends after it
          std::exception_ptr err = std::exchange(input_error_, nullptr);
          std::rethrow_exception(err);
        }
        if (aborted_) std::rethrow_exception(aborted_);
        return std::nullopt;
      }
      // Take every result that is ready in order, with one lock.
      while (!ready_.empty() && ready_.begin()->first == next_key_) {
        local_.push_back(std::move(ready_.begin()->second));
        ready_.erase(ready_.begin());
        ++next_key_;
        ++taken_;
      }
      // Wake the driver once half the backlog is gone, not on every result taken.
      if (throttled_ && pulled_ - taken_ <= ahead_ / 2) {
        throttled_ = false;
        link_->wake();
      }
    }
  }
  // True when next() can answer from results already taken (consumer only): no wait.
  [[nodiscard]] bool has_taken() const noexcept { return pos_ < cur_.size() || !local_.empty(); }
  // The consumer is gone or cancels: pull no more inputs (the range may be dead), drop
  // results, and (running) have the driver kill the workers running its chunks. next()
  // throws errc::cancelled after it.
  // The consumer's call, like next(): results it had taken but not handed out go too.
  void cancel(bool running = false) {
    if (!link_->owned_here()) return;  // a forked copy: the job is the parent's
    local_.clear();
    cur_.clear();
    pos_ = 0;
    {
      std::lock_guard lk(mu_);
      src_.reset();
      cancelled_ = true;
      ready_.clear();
      if (!finished_ && !aborted_) {
        aborted_ = std::make_exception_ptr(Error(errc::cancelled, "Pool::imap: cancelled"));
      }
    }
    version_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
    request_cancel(*link_, running);  // the driver may be waiting for nothing but this job
  }

 private:
  struct Entry {
    std::vector<R> values;
    std::exception_ptr error;
  };
  void store(const Chunk& c, Entry e) {
    {
      std::lock_guard lk(mu_);
      if (cancelled_) return;
      ready_.emplace(ordered_ ? c.index : arrivals_, std::move(e));
      ++arrivals_;
    }
    version_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<std::uint64_t> version_{0};  // bumped on every change next() waits for
  std::unique_ptr<ChunkSource> src_;
  const bool ordered_;
  const std::size_t ahead_;
  std::shared_ptr<PoolLink> link_;
  std::uint64_t pulled_ = 0;    // chunks taken from the source
  std::uint64_t taken_ = 0;     // chunks handed to the consumer
  std::uint64_t arrivals_ = 0;  // chunks resolved
  bool throttled_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  std::exception_ptr input_error_;
  std::uint64_t error_at_ = 0;
  std::exception_ptr aborted_;
  std::map<std::uint64_t, Entry> ready_;
  // Consumer-only: the chunks taken and the one being handed out.
  std::deque<Entry> local_;
  std::uint64_t next_key_ = 0;
  std::vector<R> cur_;
  std::size_t pos_ = 0;
};

}  // namespace ipckit::detail
