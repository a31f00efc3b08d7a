// What a process has open and running, read from /proc and /dev/shm without gtest: the leak
// checks of the test fixture (leak_check.hpp) and of the chaos program (tests/chaos) share it.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>

namespace ipckit::testing {

// The caller's open file descriptors.
std::set<int> open_fds();
// Processes whose parent is the caller (zombies included).
std::set<pid_t> child_pids();
// The state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), or 0 when there is no such
// process.
char process_state(pid_t pid);
// Names in /dev/shm that start with `prefix`.
std::set<std::string> shm_entries(const std::string& prefix);

}  // namespace ipckit::testing
