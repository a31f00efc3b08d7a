// StartMethod::forkserver, the driver's side. The helper is a fresh exec of the program
// (/proc/self/exe --ipckit-forkserver 3:<pid>): a constructor in forkserver.cpp sees the mark,
// never returns to main, and serves one pool over a SOCK_SEQPACKET socket: it maps the pool's
// memfd, then forks a worker per request (from one thread, so no lock is inherited held) and
// reaps it when the driver asks. Workers are the helper's children: the driver watches them
// through pidfds the helper passes back, signals them through those pidfds (never a recycled
// pid), and gets their exit status from the helper (which reaps only when asked, and never
// blocks doing so). Deaths chain: the driver thread
// exits -> the helper gets SIGKILL -> its workers get SIGKILL (parent-death signals).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "internal.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"

namespace ipckit::detail {

class ForkServer {
 public:
  // Starts the helper and waits (up to kStartTimeout) for it to say it serves. Throws
  // Error(errc::child_failed) when it does not (the program could not be exec'd, or libipckit
  // is not part of its startup: loaded with dlopen, say), errno errors from the calls.
  ForkServer(const PoolLayout& layout, int memfd, int doorbell, std::size_t max_tasks,
             std::size_t max_rss, const Initializer& initializer);
  ~ForkServer();
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;

  struct Child {
    pid_t pid = -1;
    UniqueFd pidfd;
    std::uint64_t generation = 0;  // of the helper that forked it
  };
  // Forks worker `slot` in the helper (starting a new helper once if it died). Throws Error
  // with the helper's fork() errno (EAGAIN: a process limit), or child_failed.
  Child fork_worker(std::size_t slot, int cpu);
  // Reaps worker `pid` of helper `generation`, which has exited.
  struct Reaped {
    enum State { exited, running, unknown } state = unknown;
    ExitStatus status;
  };
  // running: the helper does not see it exited yet (ask again). unknown: its helper is gone
  // (the worker went with it, killed by its parent-death signal) or never knew it.
  Reaped reap(pid_t pid, std::uint64_t generation);

  static constexpr std::chrono::seconds kStartTimeout{10};

 private:
  void launch();
  void stop() noexcept;
  bool exchange(const void* req, std::size_t n, void* reply, std::size_t reply_n, UniqueFd* fd_out);

  PoolLayout layout_;
  int memfd_;
  int doorbell_;
  std::size_t max_tasks_;
  std::size_t max_rss_;
  CodeAddress init_invoker_{};
  std::vector<std::byte> init_bytes_;
  pid_t pid_ = -1;
  UniqueFd sock_;
  std::uint64_t generation_ = 0;  // helpers started so far
};

// A worker process: a child of the driver (StartMethod::fork, a Process) or of the helper.
class WorkerProcess {
 public:
  WorkerProcess() = default;
  explicit WorkerProcess(Process p) : proc_(std::move(p)), pid_(proc_.pid()) {}
  WorkerProcess(ForkServer::Child c, ForkServer* server)
      : pid_(c.pid), pidfd_(std::move(c.pidfd)), server_(server), generation_(c.generation) {}

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] int pidfd() const noexcept { return server_ ? pidfd_.get() : proc_.pidfd(); }
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout);
  std::optional<ExitStatus> try_wait() { return wait_for(std::chrono::milliseconds(0)); }
  ExitStatus wait();
  // Signals the worker (through its pidfd under the forkserver: never a recycled pid); a
  // worker already gone is no error. Throws Error for a fork worker as Process::kill does.
  void kill(int sig);

 private:
  Process proc_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  ForkServer* server_ = nullptr;
  std::uint64_t generation_ = 0;
  std::optional<ExitStatus> status_;
};

}  // namespace ipckit::detail
