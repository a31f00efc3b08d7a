/// @file
/// ipckit::cpu_count(): the CPUs this process may really use, for sizing pools and ranks.
#pragma once

#include <cstddef>
#include <string>

namespace ipckit {

/// The CPUs this process may use: the CPUs of its affinity mask (sched_getaffinity: taskset,
/// cpusets), lowered to a cgroup v2 CPU quota when one applies (`cpu.max` of the process's
/// cgroup or any ancestor: quota ÷ period, rounded up), at least 1. Falls back to
/// std::thread::hardware_concurrency() where the mask cannot be read. Reads /proc and
/// /sys/fs/cgroup on each call (tens of microseconds): call it once and keep the answer.
[[nodiscard]] std::size_t cpu_count();

namespace detail {
/// cpu_count()'s arithmetic, for tests: `affinity` CPUs, limited by the quotas found in
/// `cgroup_root` (normally /sys/fs/cgroup) along the path `cgroup` (the "0::" line of
/// /proc/self/cgroup), from that cgroup up to the root.
std::size_t cpu_count_from(std::size_t affinity, const std::string& cgroup_root,
                           const std::string& cgroup);
}  // namespace detail

}  // namespace ipckit
