#include "ipckit/core/process.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "ipckit/core/error.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ProcessTest = testing::LeakCheckedTest;

TEST_F(ProcessTest, ReturnsTheCallablesExitCode) {
  auto p = Process::spawn([] { return 42; });
  const ExitStatus st = p.wait();
  EXPECT_TRUE(st.exited());
  EXPECT_EQ(st.value, 42);
  EXPECT_EQ(p.wait(), st) << "wait() again returns the same status";
  EXPECT_EQ(st.describe(), "exited with code 42");
}

TEST_F(ProcessTest, VoidCallableExitsWithZero) {
  SharedArray<int> flag(1);
  auto p = Process::spawn([&] { flag[0] = 7; });
  EXPECT_TRUE(p.wait().success());
  EXPECT_EQ(flag[0], 7) << "the child wrote through the shared mapping";
}

TEST_F(ProcessTest, EscapingExceptionBecomesExitCode70) {
  auto p = Process::spawn([]() -> int { throw std::runtime_error("boom"); });
  const ExitStatus st = p.wait();
  EXPECT_TRUE(st.exited());
  EXPECT_EQ(st.value, Process::kExitException);
}

TEST_F(ProcessTest, ChildNeverReturnsIntoCallersStack) {
  // If the child returned from spawn(), it would run the rest of this test and write 2.
  SharedArray<int> visits(1);
  auto p = Process::spawn([] { return 0; });
  visits[0] += 1;
  p.wait();
  EXPECT_EQ(visits[0], 1);
}

TEST_F(ProcessTest, KillIsDecodedAsSignal) {
  auto p = Process::spawn([] {
    for (;;) ::pause();
  });
  EXPECT_TRUE(p.running());
  p.kill(SIGKILL);
  const ExitStatus st = p.wait();
  EXPECT_TRUE(st.signaled());
  EXPECT_EQ(st.value, SIGKILL);
  EXPECT_FALSE(p.running());
  EXPECT_NE(st.describe().find("signal 9"), std::string::npos);
}

TEST_F(ProcessTest, WaitForTimesOutThenSucceeds) {
  SharedArray<int> go(1);
  auto p = Process::spawn([&] {
    while (__atomic_load_n(&go[0], __ATOMIC_ACQUIRE) == 0) std::this_thread::sleep_for(1ms);
    return 3;
  });
  EXPECT_FALSE(p.wait_for(50ms).has_value());
  EXPECT_FALSE(p.try_wait().has_value());
  __atomic_store_n(&go[0], 1, __ATOMIC_RELEASE);
  const auto st = p.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->value, 3);
}

TEST_F(ProcessTest, HasAPidfdOnThisKernel) {
  auto p = Process::spawn([] { return 0; });
  EXPECT_GE(p.pidfd(), 0);
  p.wait();
}

TEST_F(ProcessTest, DestructorKillsARunningChild) {
  pid_t pid = 0;
  {
    auto p = Process::spawn([] {
      for (;;) ::pause();
    });
    pid = p.pid();
  }
  EXPECT_FALSE(process_alive(pid));
}

TEST_F(ProcessTest, ProcessAliveSeesZombiesAsDead) {
  auto p = Process::spawn([] { return 0; });
  const pid_t pid = p.pid();
  // Wait until it has exited without reaping it (it is a zombie then).
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(process_alive(pid));
  EXPECT_TRUE(process_alive(::getpid()));
  p.wait();
}

TEST_F(ProcessTest, ChildDiesWithItsParent) {
  // middle spawns a grandchild, publishes its pid and is killed; the grandchild must follow.
  SharedArray<pid_t> grandchild(1);
  auto middle = Process::spawn([&] {
    auto g = Process::spawn([] {
      for (;;) ::pause();
    });
    __atomic_store_n(&grandchild[0], g.pid(), __ATOMIC_RELEASE);
    for (;;) ::pause();
  });
  while (__atomic_load_n(&grandchild[0], __ATOMIC_ACQUIRE) == 0) std::this_thread::sleep_for(1ms);
  const pid_t g = grandchild[0];
  middle.kill(SIGKILL);
  middle.wait();
  // The grandchild is reparented and gets SIGKILL; init (or a subreaper) reaps it.
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = !process_alive(g);
    if (!gone) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(gone) << "grandchild " << g << " outlived its parent";
}

TEST_F(ProcessTest, WaitOnEmptyProcessIsAnError) {
  Process p;
  try {
    p.wait();
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument));
  }
}

TEST_F(ProcessTest, MoveTransfersOwnership) {
  auto a = Process::spawn([] { return 5; });
  Process b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.wait().value, 5);
}

}  // namespace
}  // namespace ipckit
