// Test fixture that fails a test which leaves behind a child process, an open file
// descriptor, or a /dev/shm entry made under this process's test-name prefix. Names for named
// segments come from shm_name(), so parallel test processes never see each other's entries.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <set>
#include <string>

#include "proc_scan.hpp"

namespace ipckit::testing {

class LeakCheckedTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // A fresh segment name, unique to this test process: "ipckit-test-<pid>-<n>".
  std::string shm_name();
  static std::string shm_prefix();

 private:
  std::set<int> fds_;
  std::set<std::string> shm_;
  int counter_ = 0;
};

}  // namespace ipckit::testing
