#include "ipckit/core/cpu_count.hpp"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <thread>

namespace ipckit {
namespace detail {
namespace {

// The CPUs a cgroup's cpu.max allows ("max 100000": none, 0; "150000 100000": 2).
std::size_t quota_cpus(const std::string& file) {
  std::ifstream f(file);
  std::string quota;
  double period = 0;
  if (!(f >> quota >> period) || quota == "max" || period <= 0) return 0;
  double q = 0;
  try {
    q = std::stod(quota);
  } catch (const std::exception&) {
    return 0;  // not a number: ignore it
  }
  if (!(q > 0)) return 0;
  return static_cast<std::size_t>(std::max(1.0, std::ceil(q / period)));
}

}  // namespace

std::size_t cpu_count_from(std::size_t affinity, const std::string& cgroup_root,
                           const std::string& cgroup) {
  std::size_t n = std::max<std::size_t>(affinity, 1);
  std::string path = cgroup;
  for (;;) {
    const std::size_t q = quota_cpus(cgroup_root + path + "/cpu.max");
    if (q != 0) n = std::min(n, q);
    if (path.empty() || path == "/") break;
    const auto slash = path.rfind('/');
    path = slash == std::string::npos ? std::string() : path.substr(0, slash);
  }
  return n;
}

}  // namespace detail

std::size_t cpu_count() {
  std::size_t affinity = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    affinity = static_cast<std::size_t>(CPU_COUNT(&set));
  } else {
    affinity = std::thread::hardware_concurrency();
  }
  std::string cgroup;
  std::ifstream f("/proc/self/cgroup");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("0::", 0) == 0) {  // cgroup v2: "0::/user.slice/..."
      cgroup = line.substr(3);
      break;
    }
  }
  if (cgroup.empty() || cgroup.find("..") != std::string::npos) {
    return std::max<std::size_t>(affinity, 1);
  }
  return detail::cpu_count_from(affinity, "/sys/fs/cgroup", cgroup == "/" ? "" : cgroup);
}

}  // namespace ipckit
