#include "proc_scan.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

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

// State letter and parent of `pid` from /proc/<pid>/stat; false when it is gone.
bool read_stat(pid_t pid, char& state, int& ppid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (!f) return false;
  char buf[512];
  const size_t len = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[len] = '\0';
  const char* rp = std::strrchr(buf, ')');  // the command name may hold spaces and ')'
  return rp && std::sscanf(rp + 1, " %c %d", &state, &ppid) == 2;
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
    char state = 0;
    int ppid = 0;
    if (read_stat(pid, state, ppid) && ppid == me) kids.insert(pid);
  });
  return kids;
}

char process_state(pid_t pid) {
  char state = 0;
  int ppid = 0;
  return read_stat(pid, state, ppid) ? state : 0;
}

std::set<std::string> shm_entries(const std::string& prefix) {
  std::set<std::string> names;
  for_each_entry("/dev/shm", [&](const char* n) {
    if (std::string_view(n).starts_with(prefix)) names.insert(n);
  });
  return names;
}

}  // namespace ipckit::testing
