/// @file
/// The ways a pool task fails that a local call cannot: the task threw in its worker
/// (RemoteError: the original exception's type name and message), the worker died while
/// running it (WorkerLost: which worker, and how it ended), or it ran past its timeout
/// (TaskTimeout: its worker was killed). All are ipckit::Error, with errc::remote_error,
/// errc::worker_lost and errc::timeout.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit {

/// A pool task threw in its worker; the code is errc::remote_error, and what() reads
/// `task raised std::runtime_error: bad input (in worker 4242)`.
class RemoteError : public Error {
 public:
  /// The error for an exception of type `type_name` with what() `message`, raised in the
  /// worker process `worker` (the pool makes it from what the worker reported); `where`, when
  /// not empty, says more of where it ran (mpi::Pool: "rank 2 on node7"), and what() reads
  /// `... (in worker 4242, rank 2 on node7)`.
  RemoteError(std::string type_name, std::string message, pid_t worker, std::string where = {});

  /// The exception's type as the worker saw it, demangled ("std::runtime_error").
  [[nodiscard]] const std::string& type_name() const noexcept { return type_; }
  /// Its what() (empty for exceptions that are not std::exception).
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  /// The worker process the task ran in.
  [[nodiscard]] pid_t worker_pid() const noexcept { return worker_; }
  /// Where it ran beyond the pid (mpi::Pool: "rank 2 on node7"); empty for a local Pool.
  [[nodiscard]] const std::string& where() const noexcept { return where_; }

 private:
  std::string type_;
  std::string message_;
  pid_t worker_;
  std::string where_;
};

/// A pool worker died while running the task, and the task had no retry left
/// (PoolOptions::task_retries): what() names the worker and how it ended, the code
/// errc::worker_lost.
class WorkerLost : public Error {
 public:
  /// The error for a task run `attempts` times, the last time by `worker`, which ended as
  /// `status`.
  WorkerLost(pid_t worker, ExitStatus status, int attempts);

  /// The worker process that died (the last one to run the task).
  [[nodiscard]] pid_t worker_pid() const noexcept { return worker_; }
  /// How the worker ended (killed by signal 9, exited with code 1, ...).
  [[nodiscard]] const ExitStatus& status() const noexcept { return status_; }
  /// How many times the task was run (1 + the retries it used).
  [[nodiscard]] int attempts() const noexcept { return attempts_; }

 private:
  pid_t worker_;
  ExitStatus status_;
  int attempts_;
};

/// A chunk ran past its timeout (MapOptions::timeout, AsyncOptions::timeout or
/// PoolOptions::task_timeout): its worker was killed and replaced, the code is errc::timeout.
class TaskTimeout : public Error {
 public:
  /// The error for a chunk that `worker` ran for longer than `limit`.
  TaskTimeout(pid_t worker, std::chrono::nanoseconds limit);
  /// The error for a chunk that ran past `limit` on a worker that could not be killed
  /// (mpi::Pool: a rank that died would end the MPI job): `where` names it ("rank 2 on
  /// node7"), and the chunk's result is dropped when it comes.
  TaskTimeout(pid_t worker, std::chrono::nanoseconds limit, const std::string& where);

  /// The worker process that was killed (or, with `where`, that runs on).
  [[nodiscard]] pid_t worker_pid() const noexcept { return worker_; }
  /// The limit it ran past.
  [[nodiscard]] std::chrono::nanoseconds limit() const noexcept { return limit_; }

 private:
  pid_t worker_;
  std::chrono::nanoseconds limit_;
};

}  // namespace ipckit
