// cpu_count(): the affinity mask, lowered by cgroup v2 quotas (cpu.max) along the cgroup's
// path. The quotas come from a fake cgroup tree in a temporary directory.
#include "ipckit/core/cpu_count.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ipckit {
namespace {

namespace fs = std::filesystem;

class CpuCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ipckit-cgroup-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "a" / "b");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const std::string& dir, const std::string& text) {
    std::ofstream(root_ / dir / "cpu.max") << text;
  }
  std::size_t count(std::size_t affinity, const std::string& cgroup) {
    return detail::cpu_count_from(affinity, root_.string(), cgroup);
  }
  fs::path root_;
};

TEST_F(CpuCountTest, WithoutQuotasItIsTheAffinity) {
  EXPECT_EQ(count(8, "/a/b"), 8u);
  write("a/b", "max 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 8u);
}

TEST_F(CpuCountTest, AQuotaRoundsUpAndLowersTheCount) {
  write("a/b", "150000 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 2u);
  write("a/b", "50000 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 1u);
  write("a/b", "1600000 100000\n");  // more than the mask allows: the mask wins
  EXPECT_EQ(count(4, "/a/b"), 4u);
}

TEST_F(CpuCountTest, AnAncestorsQuotaCountsAndTheSmallestWins) {
  write("a", "300000 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 3u);
  write("a/b", "max 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 3u);
  write("a/b", "200000 100000\n");
  EXPECT_EQ(count(8, "/a/b"), 2u);
}

TEST_F(CpuCountTest, GarbageInCpuMaxIsIgnored) {
  write("a/b", "lots of\n");
  EXPECT_EQ(count(6, "/a/b"), 6u);
  write("a/b", "-5 100000\n");
  EXPECT_EQ(count(6, "/a/b"), 6u);
  write("a/b", "100000 0\n");
  EXPECT_EQ(count(6, "/a/b"), 6u);
  EXPECT_EQ(count(0, "/a/b"), 1u);  // never 0
}

TEST_F(CpuCountTest, HonoursTheAffinityMaskOfTheProcess) {
  cpu_set_t set;
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_LE(cpu_count(), static_cast<std::size_t>(CPU_COUNT(&set)));
  EXPECT_GE(cpu_count(), 1u);
  // One CPU only (taskset -c <first>): cpu_count() follows, in a child so the test's own
  // mask stays.
  int first = 0;
  while (!CPU_ISSET(first, &set)) ++first;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) ::_exit(2);
    ::_exit(cpu_count() == 1 ? 0 : 1);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

}  // namespace
}  // namespace ipckit
