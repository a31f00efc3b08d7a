/// @file
/// What the pool's asynchronous calls return: AsyncResult (apply_async, map_async,
/// starmap_async) and ImapResult (imap, imap_unordered). ipckit/pool/pool.hpp includes this
/// header.
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/pool/detail/job.hpp"
#include "ipckit/pool/detail/task.hpp"

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
  /// Whether the call succeeded; Error(errc::invalid_argument) when not ready yet.
  [[nodiscard]] bool successful() const {
    if (!ready())
      throw Error(errc::invalid_argument, "AsyncResult::successful: the result is not ready");
    return out_->ok();
  }

 private:
  friend class Pool;
  AsyncResult(std::shared_ptr<detail::OutcomeBase> out, std::shared_ptr<detail::PoolLink> link)
      : out_(std::move(out)), link_(std::move(link)) {}

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

}  // namespace ipckit
