#include "ipckit/core/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace {

int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

void flush_all() noexcept {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
}

}  // namespace

std::string ExitStatus::describe() const {
  if (kind == Kind::exited) return "exited with code " + std::to_string(value);
  const char* name = ::strsignal(value);
  return "killed by signal " + std::to_string(value) + " (" + (name ? name : "?") + ")";
}

ExitStatus ExitStatus::from_wait_status(int status) noexcept {
  if (WIFSIGNALED(status)) return {Kind::signaled, WTERMSIG(status)};
  return {Kind::exited, WEXITSTATUS(status)};
}

pid_t Process::fork_child(const ProcessOptions& options) {
  flush_all();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork()");
  if (pid == 0) {
    if (options.death_signal != 0) {
      if (::prctl(PR_SET_PDEATHSIG, options.death_signal) != 0) ::_exit(Process::kExitException);
      // The parent may have died between fork() and prctl(): then nobody will signal us.
      if (::getppid() != parent) ::_exit(Process::kExitException);
    }
  }
  return pid;
}

void Process::exit_child(int code) noexcept {
  flush_all();
  ::_exit(code);
}

void Process::exit_child_exception(const char* what) noexcept {
  flush_all();
  std::fprintf(stderr, "ipckit: child process %d terminated by an exception: %s\n",
               static_cast<int>(::getpid()), what);
  std::fflush(stderr);
  ::_exit(kExitException);
}

void Process::adopt(pid_t pid) {
  pid_ = pid;
  owner_ = ::getpid();
  const int fd = open_pidfd(pid);
  if (fd >= 0) pidfd_.reset(fd);
}

Process::Process(Process&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      owner_(std::exchange(o.owner_, -1)),
      pidfd_(std::move(o.pidfd_)),
      status_(std::exchange(o.status_, std::nullopt)) {}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    reap_or_kill();
    pid_ = std::exchange(o.pid_, -1);
    owner_ = std::exchange(o.owner_, -1);
    pidfd_ = std::move(o.pidfd_);
    status_ = std::exchange(o.status_, std::nullopt);
  }
  return *this;
}

Process::~Process() { reap_or_kill(); }

void Process::reap_or_kill() noexcept {
  if (pid_ <= 0 || status_ || owner_ != ::getpid()) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = ExitStatus::from_wait_status(st);
}

bool Process::running() const noexcept {
  if (pid_ <= 0 || status_) return false;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == 0;
}

ExitStatus Process::wait() {
  if (pid_ <= 0) throw_error(errc::invalid_argument, "Process::wait() on an empty Process");
  if (status_) return *status_;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid(" + std::to_string(pid_) + ")");
  }
  status_ = ExitStatus::from_wait_status(st);
  pidfd_.reset();
  return *status_;
}

std::optional<ExitStatus> Process::wait_until(const Deadline& deadline) {
  if (pid_ <= 0) throw_error(errc::invalid_argument, "Process::wait_until() on an empty Process");
  if (status_) return status_;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = ExitStatus::from_wait_status(st);
      pidfd_.reset();
      return status_;
    }
    if (r < 0 && errno != EINTR) throw_errno("waitpid(" + std::to_string(pid_) + ")");
    if (deadline.expired()) return std::nullopt;
    // Sleep until the child exits or the deadline; 10 ms slices keep the no-pidfd path bounded.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline.remaining());
    const auto slice = std::min<std::chrono::milliseconds::rep>(left.count(), pidfd_ ? 1000 : 10);
    if (pidfd_) {
      pollfd p{pidfd_.get(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(slice));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(slice));
    }
  }
}

void Process::kill(int sig) {
  if (pid_ <= 0 || status_) return;
  if (::kill(pid_, sig) != 0 && errno != ESRCH) {
    throw_errno("kill(" + std::to_string(pid_) + ", " + std::to_string(sig) + ")");
  }
}

namespace detail {
std::atomic<pid_t> cached_pid{0};

pid_t init_cached_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { cached_pid.store(::getpid(), std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  const pid_t me = ::getpid();
  cached_pid.store(me, std::memory_order_relaxed);
  return me;
}
}  // namespace detail

bool process_alive(pid_t pid) noexcept {
  if (pid <= 0) return false;
  const int fd = open_pidfd(pid);
  if (fd >= 0) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, 0);
    ::close(fd);
    return r == 0;  // readable once the process has exited
  }
  if (errno == ESRCH) return false;
  // No pidfd: existence, then the state letter in /proc/<pid>/stat (Z = zombie).
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "re");
  if (!f) return errno != ENOENT;  // out of fds is no proof of death
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close_paren = std::strrchr(buf, ')');
  return !(close_paren && close_paren[1] == ' ' &&
           (close_paren[2] == 'Z' || close_paren[2] == 'X'));
}

namespace {
// The low 32 bits of field 22 (starttime) of /proc/<pid>/stat, made non-zero; 0 when it
// cannot be read. The command name (field 2) may hold spaces and parentheses: fields are
// counted after the last ')'.
std::uint32_t start_tag(pid_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  // After ") " comes field 3 (state); starttime is field 22: skip 19 more separators.
  for (int field = 3; field < 22 && p != nullptr; ++field) p = std::strchr(p + 1, ' ');
  if (p == nullptr) return 0;
  const unsigned long long ticks = std::strtoull(p + 1, nullptr, 10);
  const auto tag = static_cast<std::uint32_t>(ticks);
  return tag != 0 ? tag : 1;
}

std::atomic<ProcessIdentity> cached_identity{0};
}  // namespace

ProcessIdentity process_identity(pid_t pid) noexcept {
  if (pid <= 0) return 0;
  const std::uint32_t tag = start_tag(pid);
  if (!process_alive(pid)) return 0;
  return (std::uint64_t{tag} << 32) | static_cast<std::uint32_t>(pid);
}

ProcessIdentity current_identity() noexcept {
  const pid_t me = current_pid();
  const ProcessIdentity cached = cached_identity.load(std::memory_order_relaxed);
  if (cached != 0 && identity_pid(cached) == me) [[likely]]
    return cached;
  const ProcessIdentity id = (std::uint64_t{start_tag(me)} << 32) | static_cast<std::uint32_t>(me);
  cached_identity.store(id, std::memory_order_relaxed);
  return id;
}

bool identity_alive(ProcessIdentity id) noexcept {
  const pid_t pid = identity_pid(id);
  if (pid <= 0 || !process_alive(pid)) return false;
  const auto tag = static_cast<std::uint32_t>(id >> 32);
  if (tag == 0) return true;
  const std::uint32_t now = start_tag(pid);
  return now == 0 || now == tag;  // 0: /proc unreadable now (out of fds): no proof of death
}

}  // namespace ipckit
