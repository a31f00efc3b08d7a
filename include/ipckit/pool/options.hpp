/// @file
/// The options of a Pool and of its calls, and a worker slot's counters (ipckit/pool/pool.hpp
/// includes this header).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "ipckit/core/code_address.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/pool/detail/task.hpp"

namespace ipckit {

/// How a Pool starts its workers (PoolOptions::start).
enum class StartMethod {
  /// Each worker is fork()ed from the pool's driver thread: the fastest start and respawn,
  /// and a worker sees the caller's memory as it was at that fork (globals, heap, pointers
  /// captured by the callable). Unsafe in a program whose other threads may hold a lock at
  /// that moment (a std::mutex, a logging lock): the worker inherits it held, and a task
  /// that takes it waits forever. Choose it for programs without threads (or whose locks
  /// tasks never take) that need the fork semantics.
  fork,
  /// Workers are forked from a helper process: a fresh exec of the program that stops during
  /// libipckit's static initialisation (so it never reaches main) and forks every worker of
  /// the pool; it is single-threaded when it forks, so no lock is inherited held, whatever
  /// the caller's threads do. A worker sees globals as they are after static initialisation
  /// (constructors of the program's objects linked before libipckit; with a shared
  /// libipckit, before the executable's own), never the caller's later changes; callables,
  /// initializer and arguments cross by value (their bytes or cereal), so a captured pointer
  /// or reference means nothing there. Opened files are not inherited (only stdin, stdout
  /// and stderr). Costs one exec when the pool starts. The default.
  forkserver,
};

/// PoolOptions::initializer: a callable run once in each worker. Any `void()` callable under
/// StartMethod::fork; under forkserver one that can cross by value (a function pointer, a
/// lambda capturing trivially copyable values or cereal-serialisable ones), else Pool's
/// constructor throws Error(errc::invalid_argument).
class Initializer {
 public:
  /// None.
  Initializer() = default;
  /// Wraps `f`, and keeps its portable form when it has one.
  // Implicit, for `.initializer = [] {...}`; the requires clause leaves copies and moves to
  // the copy and move constructors (clang-tidy's forwarding-reference check cannot see it).
  template <class F>
  requires(std::is_invocable_v<std::decay_t<F>&> && !std::is_same_v<std::decay_t<F>, Initializer>)
      Initializer(F&& f)  // NOLINT
      : local_(f) {
    using Fn = std::decay_t<F>;
    if constexpr (detail::is_portable_callable_v<Fn>) {
      invoker_ = detail::code_address_of(&run<Fn>);
      detail::encode_callable<Fn>(f, bytes_);
    }
  }
  /// True when there is one.
  explicit operator bool() const noexcept { return local_ || invoker_.module != 0; }
  /// True when it can cross by value (StartMethod::forkserver).
  [[nodiscard]] bool portable() const noexcept { return invoker_.module != 0; }
  /// Runs it: the callable itself, or its portable form in another process.
  void operator()() const {
    if (local_) {
      local_();
    } else if (portable()) {
      detail::function_at<void(std::span<const std::byte>)>(invoker_)(bytes_);
    }
  }

  /// @cond internal
  // The portable form, for the forkserver: a trampoline and the callable's bytes.
  [[nodiscard]] const detail::CodeAddress& invoker() const noexcept { return invoker_; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
  static Initializer from_portable(const detail::CodeAddress& invoker,
                                   std::span<const std::byte> bytes) {
    Initializer i;
    i.invoker_ = invoker;
    i.bytes_.assign(bytes.begin(), bytes.end());
    return i;
  }
  /// @endcond

 private:
  template <class Fn>
  static void run(std::span<const std::byte> bytes) {
    detail::with_callable<Fn>(bytes, [](Fn& f) { f(); });
  }

  std::function<void()> local_;
  detail::CodeAddress invoker_{};  // module 0: none
  std::vector<std::byte> bytes_;
};

/// How a Pool is made: Pool(PoolOptions).
struct PoolOptions {
  /// Worker processes; 0: cpu_count() (the CPUs this process may use: its affinity, a
  /// cgroup's CPU quota). At most 4096.
  std::size_t processes = 0;
  /// How workers are started; see StartMethod (the default, forkserver, is safe in a program
  /// that runs threads).
  StartMethod start = StartMethod::forkserver;
  /// Runs once in each worker (new and replacement ones) before its first task. If it throws,
  /// the pool is broken: pending and later calls fail with errc::child_failed and its message.
  /// The pool is broken the same way when three workers in a row die before their
  /// initializer returns.
  Initializer initializer{};
  /// A worker exits and is replaced after this many chunks; 0: never.
  std::size_t maxtasksperchild = 0;
  /// When not empty, worker i runs on CPU cpu_affinity[i % size()] only.
  std::vector<int> cpu_affinity{};
  /// Times a chunk whose worker died under it is run again before it fails with WorkerLost.
  int task_retries = 0;
  /// The default of the calls' `timeout` (unset: none): a chunk that runs longer has its
  /// worker killed and replaced, and fails with TaskTimeout. Must be positive.
  std::optional<std::chrono::nanoseconds> task_timeout{};
  /// A worker whose resident memory (VmRSS) exceeds this many bytes after a chunk exits once
  /// it has sent that chunk's result, and is replaced (a leaky task cannot grow a worker
  /// without bound); 0: no limit. Costs one read of /proc/self/statm per chunk when set.
  std::size_t max_worker_rss = 0;
  /// Whether Ctrl-C interrupts blocking pool calls (see Pool); false leaves SIGINT alone.
  /// Ctrl-C wakes at most 64 such pools at once; a further one notices it only when its
  /// driver next wakes (at the next result, say).
  bool handle_sigint = true;
};

/// One worker slot's counters (a slot keeps its counters across replacements).
struct WorkerStats {
  std::size_t slot = 0;              ///< the slot's index, 0 to Pool::size() - 1
  pid_t pid = -1;                    ///< the current worker process (-1 between two, and
                                     ///< once the pool has stopped)
  std::uint64_t tasks = 0;           ///< chunks completed (those whose task threw included)
  std::uint64_t items = 0;           ///< inputs in those chunks
  std::chrono::nanoseconds busy{0};  ///< time spent running them
  std::uint64_t restarts = 0;        ///< replacements (death, maxtasksperchild)
};

/// For map / imap / starmap.
struct MapOptions {
  /// Inputs per task message; unset: Python's rule for map and starmap, 1 for imap. 0 (or
  /// more than 2^32 - 1) is an error: Error(errc::invalid_argument).
  std::optional<std::size_t> chunksize{};
  /// progress(done, total) after each chunk (total is 0 when unknown: imap); `done` counts
  /// the inputs whose results have arrived.
  std::function<void(std::size_t done, std::size_t total)> progress{};
  /// Per chunk (a chunk of several inputs has the limit for all of them): a chunk that runs
  /// longer has its worker killed and replaced, and fails with TaskTimeout (errc::timeout);
  /// the pool goes on. Unset: PoolOptions::task_timeout. Counted from when the driver hands
  /// the chunk to an idle worker, or sees the result before it.
  std::optional<std::chrono::nanoseconds> timeout{};
};

/// The type of AsyncOptions<V>::callback: std::function<void(const V&)>.
template <class V>
struct CallbackOf {
  using type = std::function<void(const V&)>;  ///< the callback type
};
/// For V = void (a callable that returns nothing): std::function<void()>.
template <>
struct CallbackOf<void> {
  using type = std::function<void()>;  ///< the callback type
};

/// For the _async calls. V is the value get() returns.
template <class V>
struct AsyncOptions {
  /// As MapOptions::chunksize (apply_async ignores it).
  std::optional<std::size_t> chunksize{};
  typename CallbackOf<V>::type callback{};             ///< with the value, on success
  std::function<void(const Error&)> error_callback{};  ///< with the error, on failure
  /// As MapOptions::progress (apply_async ignores it).
  std::function<void(std::size_t done, std::size_t total)> progress{};
  /// As MapOptions::timeout.
  std::optional<std::chrono::nanoseconds> timeout{};
};

/// For AsyncResult::cancel and ImapResult::cancel.
struct CancelOptions {
  /// Also kill the workers running the call's chunks now (they are replaced); otherwise those
  /// chunks run to their end and their results are dropped.
  bool running = false;
};

}  // namespace ipckit
