/// @class ipckit::Process
/// Process: a forked child running a callable, owned by the parent. The child gets a
/// parent-death signal (SIGKILL by default) so it never outlives the parent, never returns into
/// the caller's stack (it _exits), and turns an escaping exception into exit code 70 with the
/// message on stderr. The parent waits, polls or kills through a pidfd where the kernel has one.
///
///     ipckit::Process p = ipckit::Process::spawn([] { return work(); });
///     ipckit::ExitStatus st = p.wait();
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/unique_fd.hpp"

namespace ipckit {

/// How a child ended.
struct ExitStatus {
  /// Whether the child exited (with a code) or was killed by a signal.
  enum class Kind { exited, signaled };
  Kind kind = Kind::exited;  ///< how it ended
  int value = 0;             ///< exit code for `exited`, signal number for `signaled`

  /// True for exit code 0.
  [[nodiscard]] bool success() const noexcept { return kind == Kind::exited && value == 0; }
  /// True when the child exited (any code).
  [[nodiscard]] bool exited() const noexcept { return kind == Kind::exited; }
  /// True when a signal killed the child.
  [[nodiscard]] bool signaled() const noexcept { return kind == Kind::signaled; }
  /// "exited with code 3", "killed by signal 9 (Killed)".
  [[nodiscard]] std::string describe() const;
  /// Decodes a waitpid() status word.
  static ExitStatus from_wait_status(int status) noexcept;
  friend bool operator==(const ExitStatus&, const ExitStatus&) = default;
};

/// Options of Process::spawn().
struct ProcessOptions {
  /// Delivered to the child when the parent thread that forked it exits; 0 disables it.
  int death_signal = SIGKILL;
};

class Process {
 public:
  /// Exit code of a child whose callable threw.
  static constexpr int kExitException = 70;

  /// Forks a child that runs `fn()` and _exits with its int result (or 0 for void). Standard
  /// streams are flushed before the fork and in the child before it exits, so buffered output
  /// is neither lost nor printed twice. Throws Error if fork fails.
  template <class F>
  static Process spawn(F&& fn, const ProcessOptions& options = {});

  /// No child (valid() is false).
  Process() noexcept = default;
  /// Takes over the other handle's child; the other is left without one.
  Process(Process&&) noexcept;
  /// Kills and reaps this handle's running child (as the destructor does), then takes over
  /// the other's.
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  /// A child still running is killed with SIGKILL and reaped (bounded: SIGKILL cannot be
  /// caught). Does nothing in a process other than the one that spawned it.
  ~Process();

  /// The child's pid, -1 for none.
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// The child's pidfd; -1 when the kernel has no pidfd_open (Linux < 5.3).
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
  /// True when this handle has a child (running or not).
  [[nodiscard]] bool valid() const noexcept { return pid_ > 0; }
  /// True until the child has exited (does not reap it).
  [[nodiscard]] bool running() const noexcept;

  /// Blocks until the child exits and reaps it. Calling it again returns the same status.
  ExitStatus wait();
  /// Like wait(), but gives up at the deadline and returns nullopt (the child keeps running).
  std::optional<ExitStatus> wait_until(const Deadline& deadline);
  /// wait_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  std::optional<ExitStatus> wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(Deadline::after(timeout));
  }
  /// The status if the child has exited (reaping it), nullopt otherwise; never blocks.
  std::optional<ExitStatus> try_wait() {
    return wait_until(Deadline::after(std::chrono::seconds(0)));
  }

  /// Sends `sig` to the child; a no-op once the child has been reaped. Throws Error on failure.
  void kill(int sig = SIGTERM);

 private:
  static pid_t fork_child(const ProcessOptions& options);  // returns 0 in the child
  [[noreturn]] static void exit_child(int code) noexcept;
  [[noreturn]] static void exit_child_exception(const char* what) noexcept;
  void adopt(pid_t pid);
  void reap_or_kill() noexcept;

  pid_t pid_ = -1;
  pid_t owner_ = -1;  // the process that spawned the child
  UniqueFd pidfd_;
  std::optional<ExitStatus> status_;
};

/// True while process `pid` exists and has not exited (a zombie counts as exited).
[[nodiscard]] bool process_alive(pid_t pid) noexcept;

/// A process as the kernel knows it: its pid in the low 32 bits and the low 32 bits of its
/// start time (clock ticks since boot, from `/proc/<pid>/stat`) in the high ones, so that shared
/// tables hold it in one atomic word and a pid the kernel recycled for an unrelated process
/// does not pass for the process that had it. A high half of 0 means "start time unknown"
/// (no /proc): only the pid is compared then. 0 is no process.
using ProcessIdentity = std::uint64_t;
/// The identity of running process `pid`, 0 when there is none.
[[nodiscard]] ProcessIdentity process_identity(pid_t pid) noexcept;
/// The caller's identity (cached; recomputed in a forked child).
[[nodiscard]] ProcessIdentity current_identity() noexcept;
/// The pid part of an identity.
[[nodiscard]] constexpr pid_t identity_pid(ProcessIdentity id) noexcept {
  return static_cast<pid_t>(id & 0xffffffffu);
}
/// True while the process `id` names is running: its pid is alive and started when it did.
[[nodiscard]] bool identity_alive(ProcessIdentity id) noexcept;

namespace detail {
// 0 until first use; refreshed in children by a pthread_atfork handler (glibc fork() only:
// not after vfork, _Fork or a raw clone).
extern std::atomic<pid_t> cached_pid;
pid_t init_cached_pid() noexcept;
}  // namespace detail

/// The caller's pid without a system call: cached, and refreshed in a child after fork() (by a
/// pthread_atfork handler). Hot paths use it to notice that they now run in a forked child.
[[nodiscard]] inline pid_t current_pid() noexcept {
  const pid_t p = detail::cached_pid.load(std::memory_order_relaxed);
  return p != 0 ? p : detail::init_cached_pid();
}

template <class F>
Process Process::spawn(F&& fn, const ProcessOptions& options) {
  const pid_t pid = fork_child(options);
  if (pid == 0) {
    try {
      if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
        fn();
        exit_child(0);
      } else {
        exit_child(static_cast<int>(fn()));
      }
    } catch (const std::exception& e) {
      exit_child_exception(e.what());
    } catch (...) {
      exit_child_exception("unknown exception");
    }
  }
  Process p;
  p.adopt(pid);
  return p;
}

}  // namespace ipckit
