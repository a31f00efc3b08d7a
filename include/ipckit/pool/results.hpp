/// @file
/// What the pool's asynchronous calls return: AsyncResult (apply_async, submit, map_async,
/// starmap_async) and ImapResult (imap, imap_unordered); and waiting on several AsyncResults:
/// as_completed(), wait_any(), wait_all(). ipckit/pool/pool.hpp includes this header.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/pool/detail/job.hpp"
#include "ipckit/pool/detail/task.hpp"
#include "ipckit/pool/options.hpp"

namespace ipckit {

/// The result of an _async call, like Python's AsyncResult. Copies share the result.
template <class V>
class AsyncResult {
 public:
  /// An empty handle with no call behind it: only assign to it or destroy it.
  AsyncResult() = default;

  /// Waits, then returns the value (or rethrows the task's RemoteError/WorkerLost, or the
  /// pool's closed/interrupted error). May be called again. Returns a reference to the value
  /// the copies of this result share (nothing when V is void).
  decltype(auto) get() & {
    wait();
    return value();
  }
  /// Like get(); throws Error(errc::timeout) when the result is not ready within `timeout`.
  template <class Rep, class Period>
  decltype(auto) get(std::chrono::duration<Rep, Period> timeout) & {
    if (!wait_for(timeout)) throw Error(errc::timeout, "AsyncResult::get: not ready in time");
    return value();
  }
  /// get() on an rvalue (`std::move(ar).get()`): returns the value itself, moved out when no
  /// other copy of this result shares it.
  V get() && {
    wait();
    return take();
  }
  /// Like get() &&; throws Error(errc::timeout) when the result is not ready within `timeout`.
  template <class Rep, class Period>
  V get(std::chrono::duration<Rep, Period> timeout) && {
    if (!wait_for(timeout)) throw Error(errc::timeout, "AsyncResult::get: not ready in time");
    return take();
  }
  /// Waits until the result is ready, a value or an error (which get() throws; wait() does
  /// not).
  void wait() const { (void)wait_until(Deadline::never()); }
  /// Like wait(); false when the result is not ready within `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(Deadline::after(timeout));
  }
  /// Whether the result is ready (never blocks).
  [[nodiscard]] bool ready() const { return out_->ready(); }
  /// For a WaitSet (ipckit/sync/wait_set.hpp): ready once the result is (a value or an
  /// error); the pool's driver wakes the set when it settles.
  friend WaitSource wait_source(const AsyncResult& r) {
    WaitSource s;
    s.ready = [out = r.out_](bool) { return out->ready(); };
    s.subscribe = [out = r.out_](const std::shared_ptr<detail::LocalWaker>& waker) {
      auto watch = std::make_shared<detail::ReadyWatch>(waker);
      out->watch(watch, 0);
      return std::shared_ptr<void>(watch);
    };
    return s;
  }
  /// Whether the call succeeded; Error(errc::invalid_argument) when not ready yet.
  [[nodiscard]] bool successful() const {
    if (!ready())
      throw Error(errc::invalid_argument, "AsyncResult::successful: the result is not ready");
    return out_->ok();
  }

  /// Cancels the call if it has not finished: get() then throws Error(errc::cancelled) and
  /// neither callback runs. Chunks not yet begun are dropped; running ones run to their end
  /// (results dropped) or, with `{.running = true}`, have their workers killed and replaced.
  /// Returns false, changing nothing, when the result was ready (or being delivered)
  /// already. Any thread; never blocks.
  bool cancel(CancelOptions options = {}) {
    if (!out_) return false;
    if (!out_->cancel(std::make_exception_ptr(Error(errc::cancelled, "the call was cancelled")))) {
      return false;
    }
    if (auto job = job_.lock(); job && link_->owned_here()) {
      job->request_cancel(*link_, options.running);
    }
    return true;
  }

  /// @cond internal
  [[nodiscard]] const std::shared_ptr<detail::OutcomeBase>& outcome() const noexcept {
    return out_;
  }
  [[nodiscard]] const std::shared_ptr<detail::PoolLink>& pool_link() const noexcept {
    return link_;
  }
  /// @endcond

 private:
  friend class Pool;
  AsyncResult(std::shared_ptr<detail::OutcomeBase> out, std::shared_ptr<detail::PoolLink> link,
              const std::shared_ptr<detail::JobBase>& job = nullptr)
      : out_(std::move(out)), link_(std::move(link)), job_(job) {}

  bool wait_until(const Deadline& d) const {
    if (out_->ready()) return true;
    detail::BlockingScope scope(link_.get());
    return out_->wait_until(d);
  }
  decltype(auto) value() const {
    if constexpr (std::is_void_v<V>) {
      out_->check();
    } else {
      return static_cast<const V&>(static_cast<detail::Outcome<V>&>(*out_).value());
    }
  }
  V take() {
    if constexpr (std::is_void_v<V>) {
      out_->check();
    } else {
      V& v = static_cast<detail::Outcome<V>&>(*out_).value();
      if (out_.use_count() == 1) return std::move(v);  // nobody else can see it
      return v;
    }
  }
  // For map() and apply(), whose AsyncResult never leaves the call: moves the value out
  // (the driver does not touch a value once it is set).
  V wait_and_take_own() {
    wait();
    if constexpr (std::is_void_v<V>) {
      out_->check();
    } else {
      return std::move(static_cast<detail::Outcome<V>&>(*out_).value());
    }
  }

  std::shared_ptr<detail::OutcomeBase> out_;
  std::shared_ptr<detail::PoolLink> link_;
  std::weak_ptr<detail::JobBase> job_;  // weak: the inputs need not outlive the call
};

/// The lazy result of imap / imap_unordered: an input range of R, or next() by hand.
/// Destroying it early stops the job (no more inputs are read; results are dropped).
template <class R>
class ImapResult {
 public:
  /// Moves the handle (an ImapResult is move-only).
  ImapResult(ImapResult&&) noexcept = default;
  /// Moves the handle. The job this ImapResult held before is stopped, as by destruction
  /// (its input range may be gone with it).
  ImapResult& operator=(ImapResult&& o) noexcept {
    if (this != &o) {
      if (job_) job_->cancel();
      job_ = std::move(o.job_);
      link_ = std::move(o.link_);
      cur_ = std::move(o.cur_);
    }
    return *this;
  }
  /// Stops the job if it is still running (see the class description).
  ~ImapResult() {
    if (job_) job_->cancel();
  }
  /// Stops the job as destruction does: no more inputs are read, results not yet handed out
  /// are dropped, and next() throws Error(errc::cancelled); with `{.running = true}` the
  /// workers running its chunks are killed and replaced. Call it from the thread that calls
  /// next().
  void cancel(CancelOptions options = {}) {
    if (job_) job_->cancel(options.running);
  }

  /// The next result, or nullopt after the last. A chunk's error is thrown at its place, and
  /// next() may be called again after it to go on. An exception from the input range is
  /// thrown after the results of the inputs before it (the job ends there); the pool's
  /// closed/interrupted error when it stopped.
  std::optional<R> next() { return next_until(Deadline::never()); }
  /// Like next(); Error(errc::timeout) when nothing comes within `timeout`.
  template <class Rep, class Period>
  std::optional<R> next_for(std::chrono::duration<Rep, Period> timeout) {
    return next_until(Deadline::after(timeout));
  }

  /// The input iterator begin() returns: ++ calls next(), so it throws what next() throws.
  class iterator {
   public:
    using value_type = R;                              ///< a result
    using difference_type = std::ptrdiff_t;            ///< as input iterators need
    using iterator_concept = std::input_iterator_tag;  ///< a single-pass input iterator
    /// An iterator of no result (not dereferenceable).
    iterator() = default;
    /// The current result (it may be moved from).
    R& operator*() const { return *owner_->cur_; }
    /// The current result's members.
    R* operator->() const { return &*owner_->cur_; }
    /// Waits for the next result (next()).
    iterator& operator++() {
      owner_->cur_ = owner_->next();
      return *this;
    }
    /// Waits for the next result (next()).
    void operator++(int) { ++*this; }
    /// True after the last result.
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class ImapResult;
    explicit iterator(ImapResult* owner) : owner_(owner) {}
    [[nodiscard]] bool at_end() const { return !owner_->cur_; }
    ImapResult* owner_ = nullptr;
  };
  /// Waits for the first result (next()). Call it once: each call takes a result.
  iterator begin() {
    cur_ = next();
    return iterator(this);
  }
  /// The end of the results.
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  friend class Pool;
  ImapResult(std::shared_ptr<detail::ImapJob<R>> job, std::shared_ptr<detail::PoolLink> link)
      : job_(std::move(job)), link_(std::move(link)) {}
  std::optional<R> next_until(const Deadline& d) {
    if (job_->has_taken()) return job_->next(d);  // no wait: no SIGINT handling to arm
    detail::BlockingScope scope(link_.get());
    return job_->next(d);
  }

  std::shared_ptr<detail::ImapJob<R>> job_;
  std::shared_ptr<detail::PoolLink> link_;
  std::optional<R> cur_;
};

namespace detail {
// Counts the caller as blocked in each pool behind `results` (SIGINT handling), refusing on a
// driver thread or in a forked copy, as every blocking pool call does.
template <class Results>
class MultiScope {
 public:
  explicit MultiScope(const Results& results) {
    std::vector<PoolLink*> seen;
    for (const auto& r : results) {
      PoolLink* l = r.pool_link().get();
      if (l == nullptr || std::find(seen.begin(), seen.end(), l) != seen.end()) continue;
      seen.push_back(l);
      scopes_.push_back(std::make_unique<BlockingScope>(l));
    }
  }

 private:
  std::vector<std::unique_ptr<BlockingScope>> scopes_;
};
}  // namespace detail

/// The results of `results` (a range of AsyncResult, e.g. a std::vector, which must outlive
/// the iteration) in the order they become ready, like concurrent.futures.as_completed: an
/// input range of AsyncResult<V>& (a result that failed or was cancelled comes too; its get()
/// throws). next() by hand, or a range-for.
template <class V>
class AsCompleted {
 public:
  /// Waits for `results` with the deadline `deadline` for all of them.
  AsCompleted(std::span<AsyncResult<V>> results, Deadline deadline)
      : results_(results), deadline_(deadline), watch_(std::make_shared<detail::ReadyWatch>()) {
    for (std::size_t i = 0; i < results_.size(); ++i) {
      if (results_[i].outcome()) {
        results_[i].outcome()->watch(watch_, i);
        ++left_;
      }
    }
  }
  /// The next result to become ready, nullptr after the last. Throws Error(errc::timeout) at
  /// the deadline (the results not yet ready stay pending), what a blocking pool call throws
  /// on a driver thread or in a forked copy.
  AsyncResult<V>* next() {
    if (left_ == 0) return nullptr;
    std::optional<std::size_t> i = watch_->next(Deadline::after(std::chrono::seconds(0)));
    if (!i) {
      const detail::MultiScope<std::span<AsyncResult<V>>> scope(results_);
      i = watch_->next(deadline_);
    }
    if (!i) throw Error(errc::timeout, "as_completed: not every result was ready in time");
    --left_;
    return &results_[*i];
  }
  /// The input iterator of a range-for.
  class iterator {
   public:
    using value_type = AsyncResult<V>;                   ///< a result
    using difference_type = std::ptrdiff_t;              ///< as input iterators need
    iterator() = default;                                ///< no result
    AsyncResult<V>& operator*() const { return *cur_; }  ///< the result
    iterator& operator++() {                             ///< waits for the next one
      cur_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }  ///< waits for the next one
    /// True after the last result.
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.cur_ == nullptr;
    }

   private:
    friend class AsCompleted;
    iterator(AsCompleted* owner, AsyncResult<V>* cur) : owner_(owner), cur_(cur) {}
    AsCompleted* owner_ = nullptr;
    AsyncResult<V>* cur_ = nullptr;
  };
  /// Waits for the first result. Call it once.
  iterator begin() { return iterator(this, next()); }
  /// The end.
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  std::span<AsyncResult<V>> results_;
  Deadline deadline_;
  std::shared_ptr<detail::ReadyWatch> watch_;
  std::size_t left_ = 0;
};

/// as_completed over every result of `results`, without a deadline.
template <class V>
AsCompleted<V> as_completed(std::span<AsyncResult<V>> results) {
  return AsCompleted<V>(results, Deadline::never());
}
/// as_completed for a std::vector.
template <class V>
AsCompleted<V> as_completed(std::vector<AsyncResult<V>>& results) {
  return AsCompleted<V>(std::span<AsyncResult<V>>(results), Deadline::never());
}
/// as_completed with a deadline `timeout` from now for all of them: next() throws
/// Error(errc::timeout) once it passes.
template <class V, class Rep, class Period>
AsCompleted<V> as_completed(std::vector<AsyncResult<V>>& results,
                            std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<V>(std::span<AsyncResult<V>>(results), Deadline::after(timeout));
}

/// The index of a result of `results` that is ready (a value, an error or a cancel), waiting
/// up to `timeout` for one; nullopt when none is ready in time (or `results` is empty).
template <class V, class Rep, class Period>
std::optional<std::size_t> wait_any(std::vector<AsyncResult<V>>& results,
                                    std::chrono::duration<Rep, Period> timeout) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].outcome() && results[i].ready()) return i;
  }
  if (results.empty()) return std::nullopt;
  AsCompleted<V> c(std::span<AsyncResult<V>>(results), Deadline::after(timeout));
  try {
    AsyncResult<V>* r = c.next();
    if (r == nullptr) return std::nullopt;
    return static_cast<std::size_t>(r - results.data());
  } catch (const Error& e) {
    if (e.is(errc::timeout)) return std::nullopt;
    throw;
  }
}
/// wait_any() without a timeout: waits until one is ready.
template <class V>
std::optional<std::size_t> wait_any(std::vector<AsyncResult<V>>& results) {
  return wait_any(results, std::chrono::hours(24 * 365 * 100));
}

/// Waits until every result of `results` is ready (values, errors or cancels), at most
/// `timeout`; false when some are not ready in time.
template <class V, class Rep, class Period>
bool wait_all(std::vector<AsyncResult<V>>& results, std::chrono::duration<Rep, Period> timeout) {
  const Deadline d = Deadline::after(timeout);
  AsCompleted<V> c(std::span<AsyncResult<V>>(results), d);
  try {
    while (c.next() != nullptr) {
    }
  } catch (const Error& e) {
    if (e.is(errc::timeout)) return false;
    throw;
  }
  return true;
}
/// wait_all() without a timeout.
template <class V>
void wait_all(std::vector<AsyncResult<V>>& results) {
  for (auto& r : results) r.wait();
}

}  // namespace ipckit
