// StartMethod::forkserver, the driver's side. The helper is a fresh exec of the program
// (/proc/self/exe): a constructor in forkserver.cpp sees IPCKIT_FORKSERVER in its environment,
// never returns to main, and serves one pool over a SOCK_SEQPACKET socket: it maps the pool's
// memfd, then forks a worker per request (from one thread, so no lock is inherited held) and
// reaps it when the driver asks. Workers are the helper's children: the driver watches them
// through pidfds the helper passes back, signals them by pid (stable: the helper reaps only
// when asked) and gets their exit status from the helper. Deaths chain: the driver thread
// exits -> the helper gets SIGKILL -> its workers get SIGKILL (parent-death signals).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
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
  };
  // Forks worker `slot` in the helper (starting a new helper once if it died). Throws Error
  // with the helper's fork() errno (EAGAIN: a process limit), or child_failed.
  Child fork_worker(std::size_t slot, int cpu);
  // Reaps worker `pid` (which has exited). nullopt when the helper is gone (its workers went
  // with it, killed by their parent-death signal).
  std::optional<ExitStatus> reap(pid_t pid);

  static constexpr std::chrono::seconds kStartTimeout{10};

 private:
  void launch();
  void stop() noexcept;
  bool exchange(const void* req, std::size_t n, void* reply, std::size_t reply_n,
                UniqueFd* fd_out);

  PoolLayout layout_;
  int memfd_;
  int doorbell_;
  std::size_t max_tasks_;
  std::size_t max_rss_;
  CodeAddress init_invoker_{};
  std::vector<std::byte> init_bytes_;
  pid_t pid_ = -1;
  UniqueFd sock_;
};

// A worker process: a child of the driver (StartMethod::fork, a Process) or of the helper.
class WorkerProcess {
 public:
  WorkerProcess() = default;
  explicit WorkerProcess(Process p) : proc_(std::move(p)), pid_(proc_.pid()) {}
  WorkerProcess(ForkServer::Child c, ForkServer* server)
      : pid_(c.pid), pidfd_(std::move(c.pidfd)), server_(server) {}

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] int pidfd() const noexcept { return server_ ? pidfd_.get() : proc_.pidfd(); }
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout);
  std::optional<ExitStatus> try_wait() { return wait_for(std::chrono::milliseconds(0)); }
  ExitStatus wait();
  void kill(int sig);

 private:
  Process proc_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  ForkServer* server_ = nullptr;
  std::optional<ExitStatus> status_;
};

}  // namespace ipckit::detail
