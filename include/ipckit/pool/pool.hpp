/// @class ipckit::Pool
/// Pool: Python's multiprocessing.Pool for C++ — forked worker processes that run a callable
/// on many inputs, with far less overhead per task and no hang when a worker dies.
///
///     ipckit::Pool pool{4};
///     std::vector<int> sq = pool.map(square, inputs);               // ordered, blocking
///     auto ar = pool.map_async(square, inputs, {.callback = on_done});
///     for (int r : pool.imap(square, inputs)) use(r);                // lazy, ordered
///     int v = pool.apply(add, 1, 2);
///     auto f = pool.apply_async(add, std::tuple{1, 2}, {.callback = on_sum});
///     pool.close(); pool.join();
///
/// Callables cross to the workers as addresses (workers are forks of this program): function
/// pointers, captureless lambdas, lambdas or functors whose captures are trivially copyable
/// (copied as bytes), and functors cereal can serialise. Anything else fails to compile.
/// Captured pointers and references keep their address, which in a worker names the worker's
/// own copy of the memory as it was when the worker was forked.
///
/// Inputs and results go through ipckit::codec: trivially copyable values as bytes; strings,
/// vectors, maps, tuples and user types with a cereal serialize() through cereal.
///
/// Work is cut into chunks (chunksize inputs each; map's default is Python's rule, n / (4 *
/// workers) rounded up; imap's is 1). A chunk is the unit that fails: a task that throws
/// fails its chunk with RemoteError; a worker that dies fails the chunk it was running with
/// WorkerLost (or runs it again, up to task_retries times), is replaced, and every other
/// chunk completes. Chunks it had queued but not begun go to other workers.
///
/// Each worker has its own queue, filled ahead by the pool's driver thread: one chunk while
/// task times are unknown or long (10 ms and more), up to 128 when tasks take microseconds.
/// So a chunk can wait behind a long one on a busy worker while another worker idles (Python
/// workers share one queue); give very uneven tasks chunksize 1.
///
/// Callbacks (callback, error_callback, progress) run on the pool's driver thread, as
/// Python's run on its result-handler thread: keep them short, and do not wait for pool
/// results inside them (that throws errc::invalid_argument). What a callback throws is
/// printed on stderr and otherwise ignored.
///
/// SIGINT: while a thread waits in a pool call (map, get, wait, join, imap's next), Ctrl-C
/// stops the pool (workers are killed, every pending result fails with errc::interrupted) and
/// the waiting call throws Error(errc::interrupted) (wait() and wait_for() return: the result
/// has failed); at other times SIGINT keeps its own disposition. Workers ignore SIGINT, so a
/// terminal's Ctrl-C reaches only the parent.
///
/// The destructor terminates (as Python's `with Pool() as p:` does): call close() and join()
/// first to let queued work finish. It never hangs and leaves no process behind.
///
/// A Pool belongs to the process that made it: in a child forked later, its calls and waits
/// (and those of its results) throw Error(errc::invalid_argument), and its destructor leaves
/// the parent's workers alone. The workers are forked from the pool's driver thread while the
/// program's other threads run (as Python's fork start method does): a task should not rely
/// on a lock another thread of the parent may have held at that moment.
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
#include "ipckit/pool/options.hpp"
#include "ipckit/pool/results.hpp"

namespace ipckit {

namespace detail {
class PoolBackend;
std::size_t check_chunksize(std::optional<std::size_t> chunksize, std::size_t n,
                            std::size_t workers, const char* what);

template <class F, class In, bool Unpack>
using raw_result_t = result_t<std::decay_t<F>, In, Unpack>;
template <class F, class In, bool Unpack>
using map_value_t = std::conditional_t<std::is_same_v<raw_result_t<F, In, Unpack>, Unit>, void,
                                       std::vector<raw_result_t<F, In, Unpack>>>;
template <class F, class... Args>
using apply_value_t = std::conditional_t<
    std::is_same_v<raw_result_t<F, std::tuple<std::decay_t<Args>...>, true>, Unit>, void,
    raw_result_t<F, std::tuple<std::decay_t<Args>...>, true>>;

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
  /// `processes` workers (0: cpu_count()). Throws as Pool(PoolOptions) does.
  explicit Pool(std::size_t processes = 0) : Pool(with_processes(processes)) {}
  /// A pool as `options` say, its workers forked when it returns. Throws
  /// Error(errc::invalid_argument) for a CPU in cpu_affinity that does not exist or is not allowed
  /// to this process, a negative task_retries, more than 4096 processes. When a worker or the
  /// pool's driver thread cannot be started, the workers already started are stopped and reaped and
  /// it throws Error with the errno (EAGAIN at a process limit such as RLIMIT_NPROC): "Pool: could
  /// not start worker 3 of 4 (...): fork() failed (...): Resource temporarily unavailable".
  explicit Pool(PoolOptions options);
  /// Takes over the pool; the moved-from Pool may only be assigned to or destroyed.
  Pool(Pool&&) noexcept;
  /// Terminates the pool it replaces.
  Pool& operator=(Pool&& o) noexcept;
  /// terminate(): see the class description.
  ~Pool();

  /// The number of worker processes.
  [[nodiscard]] std::size_t size() const noexcept;

  // ---- map ---------------------------------------------------------------------------------
  ///@{
  /// f applied to every input, results in input order (a std::vector; nothing when f returns
  /// void). Blocks. The first failed chunk's error is thrown (chunks already handed to workers
  /// still run; the rest are dropped). Every input is encoded before the work starts.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, MapOptions options = {}) {
    using In = std::ranges::range_value_t<Range>;
    detail::check_may_block(link().get(), "Pool::map");
    auto ar = start_map<false, false, In>(
        "Pool::map", std::forward<F>(f), std::forward<Range>(inputs), options.chunksize,
        std::move(options.progress), nullptr, {}, options.timeout);
    return ar.wait_and_take_own();
  }
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::size_t chunksize) {
    return map(std::forward<F>(f), std::forward<Range>(inputs), MapOptions{.chunksize = chunksize});
  }
  ///@}
  /// Like map, without blocking: the AsyncResult's value is map's result. Every input is
  /// encoded before it returns, so `inputs` need not outlive the call.
  template <class F, std::ranges::input_range Range,
            class V = detail::map_value_t<F, std::ranges::range_value_t<Range>, false>>
  AsyncResult<V> map_async(F&& f, Range&& inputs, AsyncOptions<V> options = {}) {
    using In = std::ranges::range_value_t<Range>;
    return start_map<false, false, In>("Pool::map_async", std::forward<F>(f),
                                       std::forward<Range>(inputs), options.chunksize,
                                       std::move(options.progress), std::move(options.callback),
                                       std::move(options.error_callback), options.timeout);
  }

  // ---- starmap: each input is a tuple (or pair) of arguments -------------------------------
  /// Like map, each input a tuple (or pair) of f's arguments, unpacked.
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& inputs, MapOptions options = {}) {
    using In = std::ranges::range_value_t<Range>;
    detail::check_may_block(link().get(), "Pool::starmap");
    auto ar = start_map<true, false, In>("Pool::starmap", std::forward<F>(f),
                                         std::forward<Range>(inputs), options.chunksize,
                                         std::move(options.progress), nullptr, {}, options.timeout);
    return ar.wait_and_take_own();
  }
  /// Like map_async, each input a tuple (or pair) of f's arguments, unpacked.
  template <class F, std::ranges::input_range Range,
            class V = detail::map_value_t<F, std::ranges::range_value_t<Range>, true>>
  AsyncResult<V> starmap_async(F&& f, Range&& inputs, AsyncOptions<V> options = {}) {
    using In = std::ranges::range_value_t<Range>;
    return start_map<true, false, In>("Pool::starmap_async", std::forward<F>(f),
                                      std::forward<Range>(inputs), options.chunksize,
                                      std::move(options.progress), std::move(options.callback),
                                      std::move(options.error_callback), options.timeout);
  }

  // ---- apply: one call ---------------------------------------------------------------------
  /// f(args...) in a worker: blocks, then returns its result or throws its error.
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    detail::check_may_block(link().get(), "Pool::apply");
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).wait_and_take_own();
  }
  /// Like apply, without blocking: an AsyncResult of f's result. The arguments are encoded
  /// before it returns.
  template <class F, class... Args>
  requires std::invocable < std::decay_t<F>
  &, std::decay_t<Args>&... > auto apply_async(F&& f, Args&&... args) {
    using V = detail::apply_value_t<F, Args...>;
    return start_apply(std::forward<F>(f), AsyncOptions<V>{},
                       static_cast<const std::decay_t<Args>&>(args)...);
  }
  /// With options, in Python's order (func, args, callbacks); chunksize and progress do not
  /// apply to a single call:
  ///
  ///     pool.apply_async(add, std::tuple{1, 2}, {.callback = [](const int& v) { ... }});
  template <class F, class... Args, class V = detail::apply_value_t<F, Args...>>
  requires std::invocable < std::decay_t<F>
  &, Args&... > AsyncResult<V> apply_async(F&& f, const std::tuple<Args...>& args,
                                           AsyncOptions<std::type_identity_t<V>> options) {
    return std::apply(
        [&](const Args&... a) { return start_apply(std::forward<F>(f), std::move(options), a...); },
        args);
  }

  /// The executor spelling of apply_async(f, args...) (as std::async or
  /// concurrent.futures' submit): an AsyncResult, which cancel(), as_completed(), wait_any()
  /// and wait_all() take.
  template <class F, class... Args>
  requires std::invocable < std::decay_t<F>
  &, std::decay_t<Args>&... > auto submit(F&& f, Args&&... args) {
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...);
  }

  // ---- imap --------------------------------------------------------------------------------
  ///@{
  /// Lazy and ordered: inputs are read as workers need them (chunks of about 64 Ki inputs in
  /// all, at least 4 and at most 512 per worker, past the results the consumer has taken; it
  /// takes every ready result at once, so up to twice that past the results it has used;
  /// without limit once the pool is closed, so that join() cannot wait for a consumer),
  /// results come in input order. An lvalue range is referenced (it must outlive the
  /// ImapResult); an rvalue range is moved in. The range is read on the pool's driver thread:
  /// an input that blocks holds up the whole pool. f must return a value.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, MapOptions options = {}) {
    return start_imap(true, std::forward<F>(f), std::forward<Range>(inputs), std::move(options));
  }
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, std::size_t chunksize) {
    return imap(std::forward<F>(f), std::forward<Range>(inputs),
                MapOptions{.chunksize = chunksize});
  }
  ///@}
  ///@{
  /// Like imap, results in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, MapOptions options = {}) {
    return start_imap(false, std::forward<F>(f), std::forward<Range>(inputs), std::move(options));
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize) {
    return imap_unordered(std::forward<F>(f), std::forward<Range>(inputs),
                          MapOptions{.chunksize = chunksize});
  }
  ///@}

  // ---- lifetime ----------------------------------------------------------------------------
  /// No more work may be submitted (Error(errc::closed)); queued work finishes, then the
  /// workers exit.
  void close();
  /// Waits for the workers to exit; only after close() or terminate()
  /// (Error(errc::invalid_argument) otherwise). Throws Error(errc::interrupted) when SIGINT
  /// stopped the pool.
  void join();
  /// Like join(); false when the workers have not all exited within `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] bool join_for(std::chrono::duration<Rep, Period> timeout) {
    return join_until(Deadline::after(timeout));
  }
  /// Kills the workers now; every pending result fails with Error(errc::closed). Returns once
  /// the workers are reaped (from a callback: at once, and the pool stops after it). In a
  /// forked copy of the pool, does nothing.
  void terminate() noexcept;

  /// Per-slot counters, a snapshot (a copy, also in a forked child).
  [[nodiscard]] std::vector<WorkerStats> stats() const;

 protected:
  /// @cond internal
  // A pool over another backend (mpi::Pool).
  explicit Pool(std::shared_ptr<detail::PoolBackend> backend) noexcept;
  /// @endcond

 private:
  bool join_until(const Deadline& deadline);
  // Hands a job to the driver: Error(errc::closed) after close()/terminate(),
  // Error(errc::child_failed) when the initializer failed, Error(errc::invalid_argument) in a
  // forked copy.
  void enqueue(std::shared_ptr<detail::JobBase> job, const char* what);
  [[nodiscard]] const std::shared_ptr<detail::PoolLink>& link() const noexcept;

  // Encodes every input up front (the caller's range may be gone before the work is done)
  // into chunks and submits them. (The callbacks are taken by value and moved into the job;
  // clang-tidy 14 misses those moves.)
  template <bool Unpack, bool Single, class In, class F, class Range, class Cb>
  auto start_map(const char* what, F&& f, Range&& inputs, std::optional<std::size_t> chunksize,
                 detail::ProgressFn progress,  // NOLINT(performance-unnecessary-value-param)
                 Cb callback,
                 std::function<void(const Error&)> error_callback,  // NOLINT(performance-*)
                 std::optional<std::chrono::nanoseconds> timeout) {
    using Fn = std::decay_t<F>;
    detail::check_callable<Fn>();
    detail::check_input<In>();
    using R = detail::result_t<Fn, In, Unpack>;
    detail::check_result<R>();
    using S = std::conditional_t<Single, R, std::vector<R>>;
    using Job = detail::MapJob<R, S>;

    std::vector<std::byte> blob;
    std::vector<typename Job::Slice> slices;
    std::size_t n = 0;
    auto encode = [&](auto&& range, std::size_t total) {
      const std::size_t cs = detail::check_chunksize(chunksize, total, size(), what);
      if constexpr (codec::is_trivial_v<In>) blob.reserve(total * sizeof(In));
      auto it = std::ranges::begin(range);
      const auto end = std::ranges::end(range);
      while (it != end) {
        typename Job::Slice p{blob.size(), 0, n, 0};
        codec::SeqWriter<In> w(blob);
        for (; it != end && p.count < cs; ++it) {
          const In& v = *it;
          w.add(v);
          ++p.count;
        }
        p.size = blob.size() - p.offset;
        n += p.count;
        slices.push_back(p);
      }
    };
    if constexpr (std::ranges::sized_range<Range> && std::ranges::forward_range<Range>) {
      encode(inputs, static_cast<std::size_t>(std::ranges::size(inputs)));
    } else {
      std::vector<In> all;
      for (auto&& v : inputs) all.push_back(static_cast<In>(v));
      encode(all, all.size());
    }
    return submit_job<Unpack, Single, In>(what, f, std::move(blob), std::move(slices), n,
                                          std::move(progress), std::move(callback),
                                          std::move(error_callback), timeout);
  }

  // apply_async: the one call's arguments are encoded from the caller's own objects (as the
  // tuple In they decode to), never copied into a tuple first: a 100 MB argument is copied
  // once, into the task message.
  template <class F, class V, class... Args>
  AsyncResult<V> start_apply(F&& f, AsyncOptions<V> options, const Args&... args) {
    using In = std::tuple<Args...>;
    using Fn = std::decay_t<F>;
    detail::check_callable<Fn>();
    detail::check_input<In>();
    detail::check_result<detail::result_t<Fn, In, true>>();
    using Job = detail::MapJob<detail::result_t<Fn, In, true>, detail::result_t<Fn, In, true>>;
    std::vector<std::byte> blob;
    if constexpr (codec::is_trivial_v<In>) {
      codec::SeqWriter<In> w(blob);
      w.add(In(args...));
    } else {
      std::tuple<const Args&...> refs(args...);  // encodes exactly as In does
      detail::CodecOutputArchive ar(blob);
      ar(refs);
    }
    std::vector<typename Job::Slice> slices{typename Job::Slice{0, blob.size(), 0, 1}};
    return submit_job<true, true, In>("Pool::apply_async", f, std::move(blob), std::move(slices), 1,
                                      {}, std::move(options.callback),
                                      std::move(options.error_callback), options.timeout);
  }

  // Makes the job over encoded inputs and hands it to the driver.
  template <bool Unpack, bool Single, class In, class F, class Slices, class Cb>
  auto submit_job(const char* what, const F& f, std::vector<std::byte> blob, Slices slices,
                  std::size_t n,
                  detail::ProgressFn progress,  // NOLINT(performance-unnecessary-value-param)
                  Cb callback,
                  std::function<void(const Error&)> error_callback,  // NOLINT(performance-*)
                  std::optional<std::chrono::nanoseconds> timeout) {
    using Fn = std::decay_t<F>;
    using R = detail::result_t<Fn, In, Unpack>;
    using S = std::conditional_t<Single, R, std::vector<R>>;
    using V = std::conditional_t<std::is_same_v<R, detail::Unit>, void, S>;
    using Job = detail::MapJob<R, S>;
    std::vector<std::byte> fn_bytes;
    detail::encode_callable<Fn>(f, fn_bytes);
    auto out = std::make_shared<detail::Outcome<S>>();
    auto job = std::make_shared<Job>(&detail::invoke_chunk<Fn, In, R, Unpack>, std::move(fn_bytes),
                                     std::move(blob), std::move(slices), n, out);
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
    job->timeout = timeout;
    enqueue(job, what);
    return AsyncResult<V>(std::move(out), link(), job);
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
    const std::size_t cs =
        detail::check_chunksize(options.chunksize ? options.chunksize : 1, 0, size(), what);
    using View = std::views::all_t<Range>;
    auto src = std::make_unique<detail::RangeSource<In, View>>(
        std::views::all(std::forward<Range>(inputs)), cs);
    std::vector<std::byte> fn_bytes;
    detail::encode_callable<Fn>(f, fn_bytes);
    auto job = std::make_shared<detail::ImapJob<R>>(
        &detail::invoke_chunk<Fn, In, R, false>, std::move(fn_bytes), std::move(src), ordered,
        std::clamp<std::size_t>(65536 / cs, 4 * size(), 512 * size()), link());
    job->progress = std::move(options.progress);
    job->timeout = options.timeout;
    enqueue(job, what);
    return ImapResult<R>(std::move(job), link());
  }

  static PoolOptions with_processes(std::size_t n) {
    PoolOptions o;
    o.processes = n;
    return o;
  }

  std::shared_ptr<detail::PoolBackend> core_;
};

}  // namespace ipckit
