// Running a piece of a test where fork() and thread creation fail for real: under
// RLIMIT_NPROC, in a forked child that takes a uid of its own, so the limit touches neither
// the test runner nor anything else on the machine. Root ignores RLIMIT_NPROC (it holds
// CAP_SYS_RESOURCE): changing every uid to a non-zero one drops that. Used by the pool's and
// spmd::run's start-failure tests.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <fstream>
#include <functional>
#include <string>

#include "ipckit/core/process.hpp"

namespace ipckit::testing {

// The exit code of run_under_nproc_limit's child when the limit could not be set up here.
inline constexpr int kNprocUnavailable = 77;

// Tasks (processes and their threads) whose real uid is `uid`: what RLIMIT_NPROC counts.
inline rlim_t user_tasks(uid_t uid) {
  rlim_t n = 0;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return 0;
  while (const dirent* e = ::readdir(d)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/status");
    std::string line;
    unsigned long real = ~0UL;
    rlim_t threads = 0;
    while (std::getline(f, line)) {
      if (line.rfind("Uid:", 0) == 0) real = std::stoul(line.substr(4));
      if (line.rfind("Threads:", 0) == 0) threads = std::stoul(line.substr(8));
    }
    if (real == uid) n += threads;
  }
  ::closedir(d);
  return n;
}

// MAP_SHARED mappings of the caller ("rw-s" in /proc/self/maps): every ring and shared
// region of the library is one; thread stacks glibc caches are private.
inline std::size_t shared_mappings() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  std::size_t n = 0;
  while (std::getline(f, line)) {
    const auto sp = line.find(' ');
    if (sp != std::string::npos && sp + 4 < line.size() && line[sp + 4] == 's') ++n;
  }
  return n;
}

// True when the caller has no child process left, zombies included.
inline bool no_children() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

// Runs body() in a forked child that may start only `extra` more tasks (forks and threads)
// than it has when body() begins, and returns body()'s result (it returns 0 for success and
// prints what went wrong to stderr otherwise), or kNprocUnavailable when the limit cannot be
// set up (no privilege to change uid, or the kernel does not enforce it).
inline int run_under_nproc_limit(rlim_t extra, const std::function<int()>& body) {
  Process child = Process::spawn([&]() -> int {
    // A uid no other process has, so that no other process counts against the limit.
    const auto own = static_cast<uid_t>(200000 + ::getpid());
    if (::setuid(own) != 0 && ::setuid(65534) != 0) return kNprocUnavailable;
    // Both are reset by the change of uid: die with the test, and keep /proc/self readable.
    (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
    (void)::prctl(PR_SET_DUMPABLE, 1);
    const rlim_t now = user_tasks(::getuid());
    rlimit lim{now, now + extra};
    if (now == 0 || ::setrlimit(RLIMIT_NPROC, &lim) != 0) return kNprocUnavailable;
    // Enforced? At the limit a fork must fail.
    const pid_t probe = ::fork();
    if (probe == 0) ::_exit(0);
    if (probe > 0) {
      (void)::waitpid(probe, nullptr, 0);
      return kNprocUnavailable;
    }
    lim.rlim_cur = now + extra;
    if (::setrlimit(RLIMIT_NPROC, &lim) != 0) return kNprocUnavailable;
    return body();
  });
  const auto st = child.wait_for(std::chrono::seconds(60));  // a hang guard
  if (!st) {
    child.kill(SIGKILL);
    (void)child.wait();
    return -1;
  }
  return st->exited() ? st->value : 128 + st->value;
}

}  // namespace ipckit::testing
