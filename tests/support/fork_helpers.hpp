// Helpers for tests that run code in real child processes.
#pragma once

#include <chrono>
#include <functional>
#include <vector>

#include "ipckit/core/process.hpp"

namespace ipckit::testing {

// Spawns n children running body(i) and returns them (the caller waits).
inline std::vector<Process> spawn_n(int n, const std::function<int(int)>& body) {
  std::vector<Process> kids;
  kids.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) kids.push_back(Process::spawn([&body, i] { return body(i); }));
  return kids;
}

// Waits for every child (at most `limit` each) and returns true if all exited with code 0.
inline bool all_succeed(std::vector<Process>& kids,
                        std::chrono::seconds limit = std::chrono::seconds(60)) {
  bool ok = true;
  for (auto& k : kids) {
    auto st = k.wait_for(limit);
    if (!st) {
      k.kill(SIGKILL);
      k.wait();
      ok = false;
    } else if (!st->success()) {
      ok = false;
    }
  }
  return ok;
}

}  // namespace ipckit::testing
