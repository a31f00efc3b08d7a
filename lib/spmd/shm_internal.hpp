// What shm_comm.cpp and run.cpp share: laying out the ranks' mapping, and the words used
// to tell how a rank is doing.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "shm_layout.hpp"

namespace ipckit::spmd::detail {

// Lays out the header, the ranks' slots and the ring arena at `base` (zero-filled memory).
Header& lay_out(std::byte* base, int n, std::size_t ring_bytes, const Layout& l);
// True when `pid` is stopped (by SIGSTOP and the like, or a debugger): state T or t in
// /proc/<pid>/stat. Only for messages: a stopped rank is the usual cause of a timeout.
bool process_stopped(pid_t pid) noexcept;
// "rank 3", "ranks 1 (stopped), 3": `ranks` in order, `stopped[i]` marking ranks[i].
std::string rank_list(const std::vector<int>& ranks, const std::vector<bool>& stopped);

}  // namespace ipckit::spmd::detail
