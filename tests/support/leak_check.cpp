#include "leak_check.hpp"

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace ipckit::testing {
namespace {

template <class F>
void for_each_entry(const char* dir, F&& f) {
  DIR* d = ::opendir(dir);
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') f(e->d_name);
  }
  ::closedir(d);
}

}  // namespace

std::set<int> open_fds() {
  std::set<int> fds;
  for_each_entry("/proc/self/fd", [&](const char* n) { fds.insert(std::atoi(n)); });
  return fds;
}

std::set<pid_t> child_pids() {
  std::set<pid_t> kids;
  const pid_t me = ::getpid();
  for_each_entry("/proc", [&](const char* n) {
    const pid_t pid = std::atoi(n);
    if (pid <= 0) return;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = std::fopen(path, "re");
    if (!f) return;
    char buf[512];
    const size_t len = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[len] = '\0';
    const char* rp = std::strrchr(buf, ')');
    int ppid = 0;
    char state = 0;
    if (rp && std::sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == me) kids.insert(pid);
  });
  return kids;
}

std::set<std::string> shm_entries(const std::string& prefix) {
  std::set<std::string> names;
  for_each_entry("/dev/shm", [&](const char* n) {
    if (std::string_view(n).starts_with(prefix)) names.insert(n);
  });
  return names;
}

std::string LeakCheckedTest::shm_prefix() {
  return "ipckit-test-" + std::to_string(::getpid()) + "-";
}

std::string LeakCheckedTest::shm_name() { return shm_prefix() + std::to_string(counter_++); }

void LeakCheckedTest::SetUp() {
  fds_ = open_fds();
  shm_ = shm_entries(shm_prefix());
  ASSERT_TRUE(child_pids().empty()) << "a child process was already running";
}

void LeakCheckedTest::TearDown() {
  // Children killed at the very end of a test may take a moment to be reported; a leak is a
  // child that is still there after a generous grace period.
  auto kids = child_pids();
  for (int i = 0; i < 200 && !kids.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    kids = child_pids();
  }
  EXPECT_TRUE(kids.empty()) << kids.size() << " child process(es) left behind, first pid "
                            << (kids.empty() ? 0 : *kids.begin());
  for (pid_t k : kids) {  // don't let one leak fail every following test
    ::kill(k, SIGKILL);
    ::waitpid(k, nullptr, 0);
  }
  const auto fds = open_fds();
  for (int fd : fds) {
    EXPECT_TRUE(fds_.count(fd)) << "file descriptor " << fd << " left open";
  }
  for (const auto& n : shm_entries(shm_prefix())) {
    EXPECT_TRUE(shm_.count(n)) << "/dev/shm/" << n << " left behind";
    ::unlink(("/dev/shm/" + n).c_str());
  }
}

}  // namespace ipckit::testing
