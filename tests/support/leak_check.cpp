#include "leak_check.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace ipckit::testing {

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
