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
#include <vector>

#include "ipckit/core/error.hpp"

namespace ipckit {

/// How a Pool is made: Pool(PoolOptions).
struct PoolOptions {
  /// Worker processes; 0: one per hardware thread (at most 4096).
  std::size_t processes = 0;
  /// Runs once in each worker (new and replacement ones) before its first task. If it throws,
  /// the pool is broken: pending and later calls fail with errc::child_failed and its message.
  /// The pool is broken the same way when three workers in a row die before their
  /// initializer returns.
  std::function<void()> initializer{};
  /// A worker exits and is replaced after this many chunks; 0: never.
  std::size_t maxtasksperchild = 0;
  /// When not empty, worker i runs on CPU cpu_affinity[i % size()] only.
  std::vector<int> cpu_affinity{};
  /// Times a chunk whose worker died under it is run again before it fails with WorkerLost.
  int task_retries = 0;
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
};

}  // namespace ipckit
