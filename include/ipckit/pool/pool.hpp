// Pool: Python's multiprocessing.Pool for C++ — forked worker processes that run a callable
// on many inputs, with far less overhead per task and no hang when a worker dies.
//
//   ipckit::Pool pool{4};
//   std::vector<int> sq = pool.map(square, inputs);               // ordered, blocking
//   auto ar = pool.map_async(square, inputs, {.callback = on_done});
//   for (int r : pool.imap(square, inputs)) use(r);                // lazy, ordered
//   int v = pool.apply(add, 1, 2);
//   pool.close(); pool.join();
//
// Callables cross to the workers as addresses (workers are forks of this program): function
// pointers, captureless lambdas, lambdas or functors whose captures are trivially copyable
// (copied as bytes), and functors cereal can serialise. Anything else fails to compile.
// Captured pointers and references keep their address, which in a worker names the worker's
// own copy of the memory as it was when the worker was forked.
//
// Inputs and results go through ipckit::codec: trivially copyable values as bytes; strings,
// vectors, maps, tuples and user types with a cereal serialize() through cereal.
//
// Work is cut into chunks (chunksize inputs each; map's default is Python's rule, n / (4 *
// workers) rounded up; imap's is 1). A chunk is the unit that fails: a task that throws
// fails its chunk with RemoteError; a worker that dies fails the chunk it was running with
// WorkerLost (or runs it again, up to task_retries times), is replaced, and every other
// chunk completes. Chunks it had queued but not begun go to other workers.
//
// Each worker has its own queue, filled ahead by the pool's driver thread: one chunk while
// task times are unknown or long (10 ms and more), up to 128 when tasks take microseconds.
// So a chunk can wait behind a long one on a busy worker while another worker idles (Python
// workers share one queue); give very uneven tasks chunksize 1.
//
// Callbacks (callback, error_callback, progress) run on the pool's driver thread, as
// Python's run on its result-handler thread: keep them short, and do not wait for pool
// results inside them (that throws errc::invalid_argument).
//
// SIGINT: while a thread waits in a pool call (map, get, wait, join, imap's next), Ctrl-C
// stops the pool (workers are killed, every pending result fails with errc::interrupted) and
// the waiting call throws Error(errc::interrupted); at other times SIGINT keeps its own
// disposition. Workers ignore SIGINT, so a terminal's Ctrl-C reaches only the parent.
//
// The destructor terminates (as Python's `with Pool() as p:` does): call close() and join()
// first to let queued work finish. It never hangs and leaves no process behind.
//
// A Pool belongs to the process that made it: in a child forked later, its calls and waits
// (and those of its results) throw Error(errc::invalid_argument), and its destructor leaves
// the parent's workers alone. The
// workers are forked from the pool's driver thread while the program's other threads run
// (as Python's fork start method does): a task should not rely on a lock another thread of
// the parent may have held at that moment.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/pool/detail/job.hpp"
#include "ipckit/pool/detail/task.hpp"
#include "ipckit/pool/errors.hpp"

namespace ipckit {

struct PoolOptions {
  // Worker processes; 0: one per hardware thread.
  std::size_t processes = 0;
  // Runs once in each worker (new and replacement ones) before its first task. If it throws,
  // the pool is broken: pending and later calls fail with errc::child_failed and its message.
  std::function<void()> initializer;
  // A worker exits and is replaced after this many chunks; 0: never.
  std::size_t maxtasksperchild = 0;
  // When not empty, worker i runs on CPU cpu_affinity[i % size()] only.
  std::vector<int> cpu_affinity;
  // Times a chunk whose worker died under it is run again before it fails with WorkerLost.
  int task_retries = 0;
  // Whether Ctrl-C interrupts blocking pool calls (see above); false leaves SIGINT alone.
  bool handle_sigint = true;
};

// One worker slot's counters (a slot keeps its counters across replacements).
struct WorkerStats {
  std::size_t slot = 0;
  pid_t pid = -1;                     // the current worker process (-1 between two)
  std::uint64_t tasks = 0;            // chunks completed
  std::uint64_t items = 0;            // inputs in those chunks
  std::chrono::nanoseconds busy{0};   // time spent running them
  std::uint64_t restarts = 0;         // replacements (death, maxtasksperchild)
};

// For map / imap / starmap.
struct MapOptions {
  std::optional<std::size_t> chunksize;  // inputs per task message; 0 is an error
  // progress(done, total) after each chunk (total is 0 when unknown: imap).
  std::function<void(std::size_t done, std::size_t total)> progress;
};

template <class V>
struct CallbackOf {
  using type = std::function<void(const V&)>;
};
template <>
struct CallbackOf<void> {
  using type = std::function<void()>;
};

// For the _async calls. V is the value get() returns.
template <class V>
struct AsyncOptions {
  std::optional<std::size_t> chunksize;
  typename CallbackOf<V>::type callback;                  // with the value, on success
  std::function<void(const Error&)> error_callback;       // with the error, on failure
  std::function<void(std::size_t done, std::size_t total)> progress;
};

// The result of an _async call, like Python's AsyncResult. Copies share the result.
template <class V>
class AsyncResult {
 public:
  AsyncResult() = default;

  // Waits, then returns the value (or rethrows the task's RemoteError/WorkerLost, or the
  // pool's closed/interrupted error). May be called again.
  decltype(auto) get() & {
    wait();
    return value();
  }
  // Throws Error(errc::timeout) when the result is not ready within `timeout`.
  template <class Rep, class Period>
  decltype(auto) get(std::chrono::duration<Rep, Period> timeout) & {
    if (!wait_for(timeout)) throw Error(errc::timeout, "AsyncResult::get: not ready in time");
    return value();
  }
  V get() && {
    wait();
    return take();
  }
  template <class Rep, class Period>
  V get(std::chrono::duration<Rep, Period> timeout) && {
    if (!wait_for(timeout)) throw Error(errc::timeout, "AsyncResult::get: not ready in time");
    return take();
  }
  void wait() const { (void)wait_until(Deadline::never()); }
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(Deadline::after(timeout));
  }
  [[nodiscard]] bool ready() const { return out_->ready(); }
  // Whether the call succeeded; Error(errc::invalid_argument) when not ready yet.
  [[nodiscard]] bool successful() const {
    if (!ready())
      throw Error(errc::invalid_argument, "AsyncResult::successful: the result is not ready");
    return out_->ok();
  }

 private:
  friend class Pool;
  using S = std::conditional_t<std::is_void_v<V>, detail::Unit, V>;
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

// The lazy result of imap / imap_unordered: an input range of R, or next() by hand.
// Destroying it early stops the job (no more inputs are read; results are dropped).
template <class R>
class ImapResult {
 public:
  ImapResult(ImapResult&&) noexcept = default;
  ImapResult& operator=(ImapResult&&) noexcept = default;
  ~ImapResult() {
    if (job_) job_->cancel();
  }

  // The next result, or nullopt after the last. A chunk's error is thrown at its place, and
  // next() may be called again after it to go on.
  std::optional<R> next() { return next_until(Deadline::never()); }
  // Like next(); Error(errc::timeout) when nothing comes within `timeout`.
  template <class Rep, class Period>
  std::optional<R> next_for(std::chrono::duration<Rep, Period> timeout) {
    return next_until(Deadline::after(timeout));
  }

  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;
    iterator() = default;
    R& operator*() const { return *owner_->cur_; }
    R* operator->() const { return &*owner_->cur_; }
    iterator& operator++() {
      owner_->cur_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class ImapResult;
    explicit iterator(ImapResult* owner) : owner_(owner) {}
    [[nodiscard]] bool at_end() const { return !owner_->cur_; }
    ImapResult* owner_ = nullptr;
  };
  // Waits for the first result.
  iterator begin() {
    cur_ = next();
    return iterator(this);
  }
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
class PoolCore;
std::shared_ptr<PoolCore> start_pool(PoolOptions options);
std::size_t pool_size(const PoolCore& core) noexcept;
const std::shared_ptr<PoolLink>& pool_link(const PoolCore& core) noexcept;
// Hands a job to the driver. Throws Error(errc::closed) after close()/terminate(),
// Error(errc::child_failed) when the initializer failed.
void pool_submit(PoolCore& core, std::shared_ptr<JobBase> job, const char* what);
void pool_close(PoolCore& core);
bool pool_join(PoolCore& core, const Deadline& deadline);
void pool_terminate(PoolCore& core) noexcept;
std::vector<WorkerStats> pool_stats(const PoolCore& core);
std::size_t check_chunksize(std::optional<std::size_t> chunksize, std::size_t n,
                            std::size_t workers, const char* what);

template <class F, class In, bool Unpack>
using raw_result_t = result_t<std::decay_t<F>, In, Unpack>;
template <class F, class In, bool Unpack>
using map_value_t =
    std::conditional_t<std::is_same_v<raw_result_t<F, In, Unpack>, Unit>, void,
                       std::vector<raw_result_t<F, In, Unpack>>>;
template <class F, class... Args>
using apply_value_t =
    std::conditional_t<std::is_same_v<raw_result_t<F, std::tuple<std::decay_t<Args>...>, true>,
                                      Unit>,
                       void, raw_result_t<F, std::tuple<std::decay_t<Args>...>, true>>;


template <class Fn>
void check_callable() {
  static_assert(is_portable_callable_v<Fn>,
                "ipckit::Pool: this callable cannot cross to a worker process. Use a function "
                "pointer, a captureless lambda, a lambda whose captures are trivially copyable, "
                "or a functor with a cereal serialize() member (std::function and lambdas "
                "capturing strings or containers cannot be copied as bytes).");
}
template <class In>
void check_input() {
  static_assert(codec::is_encodable_v<In>,
                "ipckit::Pool: an input type cannot cross to a worker: make it trivially "
                "copyable or give it a cereal serialize() member (pointers and views are "
                "rejected)");
}
template <class R>
void check_result() {
  static_assert(std::is_same_v<R, Unit> || codec::is_encodable_v<R>,
                "ipckit::Pool: the callable's result cannot come back from a worker: make it "
                "trivially copyable or give it a cereal serialize() member");
  static_assert(std::is_default_constructible_v<R>,
                "ipckit::Pool: results must be default-constructible");
}

template <class In, class View>
class RangeSource final : public ChunkSource {
 public:
  RangeSource(View v, std::size_t chunksize) : view_(std::move(v)), chunksize_(chunksize) {}
  bool next(std::vector<std::byte>& args, std::uint32_t& count) override {
    if (pending_) std::rethrow_exception(std::exchange(pending_, nullptr));
    if (!it_) it_.emplace(std::ranges::begin(view_));
    args.clear();
    count = 0;
    codec::SeqWriter<In> w(args);
    try {
      while (count < chunksize_ && *it_ != std::ranges::end(view_)) {
        const In& v = **it_;
        w.add(v);
        ++*it_;
        ++count;
      }
    } catch (...) {
      if (count == 0) throw;
      pending_ = std::current_exception();  // the inputs read before it still run
    }
    return count > 0;
  }

 private:
  std::exception_ptr pending_;
  View view_;
  std::size_t chunksize_;
  std::optional<std::ranges::iterator_t<View>> it_;
};
}  // namespace detail

class Pool {
 public:
  // `processes` workers (0: one per hardware thread).
  explicit Pool(std::size_t processes = 0) : Pool(with_processes(processes)) {}
  // Throws Error(errc::invalid_argument) for a CPU in cpu_affinity that does not exist or
  // is not allowed to this process, a negative task_retries. When a worker or the pool's
  // driver thread cannot be started, the workers already started are stopped and reaped
  // and it throws Error with the errno (EAGAIN at a process limit such as RLIMIT_NPROC):
  // "Pool: could not start worker 3 of 4 (...): fork() failed (...): Resource temporarily
  // unavailable".
  explicit Pool(PoolOptions options) : core_(detail::start_pool(std::move(options))) {}
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&& o) noexcept {
    if (this != &o) {
      if (core_) detail::pool_terminate(*core_);
      core_ = std::move(o.core_);
    }
    return *this;
  }
  // terminate(): see the header comment.
  ~Pool() {
    if (core_) detail::pool_terminate(*core_);
  }

  [[nodiscard]] std::size_t size() const noexcept { return detail::pool_size(*core_); }

  // ---- map ---------------------------------------------------------------------------------
  // f applied to every input, results in input order. Blocks. The first failed chunk's
  // error is thrown (chunks already handed to workers still run; the rest are dropped).
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, MapOptions options = {}) {
    using In = std::ranges::range_value_t<Range>;
    detail::check_may_block(detail::pool_link(*core_).get(), "Pool::map");
    auto ar = start_map<false, false, In>("Pool::map", std::forward<F>(f),
                                          std::forward<Range>(inputs), options.chunksize,
                                          std::move(options.progress), nullptr, {});
    return ar.wait_and_take_own();
  }
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::size_t chunksize) {
    return map(std::forward<F>(f), std::forward<Range>(inputs),
               MapOptions{.chunksize = chunksize, .progress = {}});
  }
  template <class F, std::ranges::input_range Range,
            class V = detail::map_value_t<F, std::ranges::range_value_t<Range>, false>>
  AsyncResult<V> map_async(F&& f, Range&& inputs, AsyncOptions<V> options = {}) {
    using In = std::ranges::range_value_t<Range>;
    return start_map<false, false, In>("Pool::map_async", std::forward<F>(f),
                                       std::forward<Range>(inputs), options.chunksize,
                                       std::move(options.progress), std::move(options.callback),
                                       std::move(options.error_callback));
  }

  // ---- starmap: each input is a tuple (or pair) of arguments -------------------------------
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& inputs, MapOptions options = {}) {
    using In = std::ranges::range_value_t<Range>;
    detail::check_may_block(detail::pool_link(*core_).get(), "Pool::starmap");
    auto ar = start_map<true, false, In>("Pool::starmap", std::forward<F>(f),
                                         std::forward<Range>(inputs), options.chunksize,
                                         std::move(options.progress), nullptr, {});
    return ar.wait_and_take_own();
  }
  template <class F, std::ranges::input_range Range,
            class V = detail::map_value_t<F, std::ranges::range_value_t<Range>, true>>
  AsyncResult<V> starmap_async(F&& f, Range&& inputs, AsyncOptions<V> options = {}) {
    using In = std::ranges::range_value_t<Range>;
    return start_map<true, false, In>("Pool::starmap_async", std::forward<F>(f),
                                      std::forward<Range>(inputs), options.chunksize,
                                      std::move(options.progress), std::move(options.callback),
                                      std::move(options.error_callback));
  }

  // ---- apply: one call ---------------------------------------------------------------------
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    detail::check_may_block(detail::pool_link(*core_).get(), "Pool::apply");
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).wait_and_take_own();
  }
  template <class F, class... Args>
    requires std::invocable<std::decay_t<F>&, std::decay_t<Args>&...>
  auto apply_async(F&& f, Args&&... args) {
    using V = detail::apply_value_t<F, Args...>;
    return apply_async(AsyncOptions<V>{}, std::forward<F>(f), std::forward<Args>(args)...);
  }
  // With callbacks: pool.apply_async({.callback = ...}, f, args...).
  template <class F, class... Args, class V = detail::apply_value_t<F, Args...>>
    requires std::invocable<std::decay_t<F>&, std::decay_t<Args>&...>
  AsyncResult<V> apply_async(AsyncOptions<std::type_identity_t<V>> options, F&& f,
                             Args&&... args) {
    using In = std::tuple<std::decay_t<Args>...>;
    In one{std::forward<Args>(args)...};
    return start_map<true, true, In>("Pool::apply_async", std::forward<F>(f),
                                     std::ranges::single_view<In>(std::move(one)),
                                     std::size_t{1}, {}, std::move(options.callback),
                                     std::move(options.error_callback));
  }

  // ---- imap --------------------------------------------------------------------------------
  // Lazy and ordered: inputs are read as workers need them (at most 512 chunks per worker,
  // and 64 Ki inputs, past the results the consumer has taken; it takes every ready result
  // at once, so up to twice that past the results it has used; without limit once the pool
  // is closed, so that join() cannot wait for a consumer), results come in input order. An lvalue range is
  // referenced (it must outlive the ImapResult); an rvalue range is moved in. The range is
  // read on the pool's driver thread: an input that blocks holds up the whole pool.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, MapOptions options = {}) {
    return start_imap(true, std::forward<F>(f), std::forward<Range>(inputs), std::move(options));
  }
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, std::size_t chunksize) {
    return imap(std::forward<F>(f), std::forward<Range>(inputs),
                MapOptions{.chunksize = chunksize, .progress = {}});
  }
  // Like imap, results in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, MapOptions options = {}) {
    return start_imap(false, std::forward<F>(f), std::forward<Range>(inputs),
                      std::move(options));
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize) {
    return imap_unordered(std::forward<F>(f), std::forward<Range>(inputs),
                          MapOptions{.chunksize = chunksize, .progress = {}});
  }

  // ---- lifetime ----------------------------------------------------------------------------
  // No more work may be submitted (Error(errc::closed)); queued work finishes, then the
  // workers exit.
  void close() { detail::pool_close(*core_); }
  // Waits for the workers to exit; only after close() or terminate()
  // (Error(errc::invalid_argument) otherwise).
  void join() { (void)detail::pool_join(*core_, Deadline::never()); }
  // Like join(); false when the workers have not all exited within `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] bool join_for(std::chrono::duration<Rep, Period> timeout) {
    return detail::pool_join(*core_, Deadline::after(timeout));
  }
  // Kills the workers now; every pending result fails with Error(errc::closed).
  void terminate() noexcept { detail::pool_terminate(*core_); }

  // Per-slot counters, a snapshot (a copy, also in a forked child).
  [[nodiscard]] std::vector<WorkerStats> stats() const { return detail::pool_stats(*core_); }

 private:
  // Encodes every input up front (the caller's range may be gone before the work is done)
  // into chunks and submits them. (The callbacks are taken by value and moved into the job;
  // clang-tidy 14 misses those moves.)
  template <bool Unpack, bool Single, class In, class F, class Range, class Cb>
  auto start_map(const char* what, F&& f, Range&& inputs, std::optional<std::size_t> chunksize,
                 detail::ProgressFn progress,  // NOLINT(performance-unnecessary-value-param)
                 Cb callback,
                 std::function<void(const Error&)> error_callback) {  // NOLINT(performance-*)
    using Fn = std::decay_t<F>;
    detail::check_callable<Fn>();
    detail::check_input<In>();
    using R = detail::result_t<Fn, In, Unpack>;
    detail::check_result<R>();
    using S = std::conditional_t<Single, R, std::vector<R>>;
    using V = std::conditional_t<std::is_same_v<R, detail::Unit>, void, S>;
    using Job = detail::MapJob<R, S>;

    std::vector<std::byte> fn_bytes;
    detail::encode_callable<Fn>(f, fn_bytes);
    std::vector<std::byte> blob;
    std::vector<typename Job::Piece> pieces;
    std::size_t n = 0;
    auto encode = [&](auto&& range, std::size_t total) {
      const std::size_t cs = detail::check_chunksize(chunksize, total, size(), what);
      if constexpr (codec::is_trivial_v<In>) blob.reserve(total * sizeof(In));
      auto it = std::ranges::begin(range);
      const auto end = std::ranges::end(range);
      while (it != end) {
        typename Job::Piece p{blob.size(), 0, n, 0};
        codec::SeqWriter<In> w(blob);
        for (; it != end && p.count < cs; ++it) {
          const In& v = *it;
          w.add(v);
          ++p.count;
        }
        p.size = blob.size() - p.offset;
        n += p.count;
        pieces.push_back(p);
      }
    };
    if constexpr (std::ranges::sized_range<Range> && std::ranges::forward_range<Range>) {
      encode(inputs, static_cast<std::size_t>(std::ranges::size(inputs)));
    } else {
      std::vector<In> all;
      for (auto&& v : inputs) all.push_back(static_cast<In>(v));
      encode(all, all.size());
    }

    auto out = std::make_shared<detail::Outcome<S>>();
    auto job = std::make_shared<Job>(&detail::invoke_chunk<Fn, In, R, Unpack>, std::move(fn_bytes),
                                     std::move(blob), std::move(pieces), n, out);
    job->progress = std::move(progress);
    if constexpr (!std::is_same_v<Cb, std::nullptr_t>) {
      if (callback) {
        if constexpr (std::is_void_v<V>) {
          job->callback = [cb = std::move(callback)](const S&) { cb(); };
        } else {
          job->callback = std::move(callback);
        }
      }
    }
    job->error_callback = std::move(error_callback);
    detail::pool_submit(*core_, job, what);
    return AsyncResult<V>(std::move(out), detail::pool_link(*core_));
  }

  template <class F, class Range>
  auto start_imap(bool ordered, F&& f, Range&& inputs,
                  MapOptions options) {  // NOLINT(performance-unnecessary-value-param): moved
    using Fn = std::decay_t<F>;
    using In = std::ranges::range_value_t<Range>;
    detail::check_callable<Fn>();
    detail::check_input<In>();
    using R = detail::result_t<Fn, In, false>;
    static_assert(!std::is_same_v<R, detail::Unit>,
                  "ipckit::Pool::imap: the callable returns void; use map or map_async");
    detail::check_result<R>();
    const char* what = ordered ? "Pool::imap" : "Pool::imap_unordered";
    const std::size_t cs = detail::check_chunksize(options.chunksize ? options.chunksize : 1, 0,
                                                   size(), what);
    using View = std::views::all_t<Range>;
    auto src = std::make_unique<detail::RangeSource<In, View>>(
        std::views::all(std::forward<Range>(inputs)), cs);
    std::vector<std::byte> fn_bytes;
    detail::encode_callable<Fn>(f, fn_bytes);
    auto job = std::make_shared<detail::ImapJob<R>>(
        &detail::invoke_chunk<Fn, In, R, false>, std::move(fn_bytes), std::move(src), ordered,
        std::clamp<std::size_t>(65536 / cs, 4 * size(), 512 * size()), detail::pool_link(*core_));
    job->progress = std::move(options.progress);
    detail::pool_submit(*core_, job, what);
    return ImapResult<R>(std::move(job), detail::pool_link(*core_));
  }

  static PoolOptions with_processes(std::size_t n) {
    PoolOptions o;
    o.processes = n;
    return o;
  }

  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace ipckit
