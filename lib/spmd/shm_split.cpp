// ShmComm::split and dup: sub-communicators over the world's rings. Every rank of the parent
// learns every rank's (color, key) by one allgather (with the contexts rank 0 took from the
// header); each new communicator's rank 0 makes its collective state (SubLayout: a barrier,
// the ranks' collective slots and buffers) in a segment its members open (share_segment).
// Its messages travel on the world's rings with its context in the upper half of the tag
// word, so they never meet the parent's.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ipckit/spmd/shm_comm.hpp"
#include "shm_comm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {
namespace {

// What each rank passes to split, and the contexts rank 0 took.
struct SplitEntry {
  std::int32_t color = 0;
  std::int32_t key = 0;
  std::uint32_t context = 0;  // rank 0's: the first of size() fresh contexts (0: none left)
  std::uint32_t unused = 0;
};

}  // namespace

std::unique_ptr<Comm> ShmComm::split(int color, int key) {
  const char* what = "ShmComm::split";
  SplitEntry mine{color, key, 0, 0};
  if (rank_ == 0) {
    // One context per communicator this split can make (at most one per rank); never 0,
    // the world's, and never wrapping around to contexts in use.
    const auto n = static_cast<std::uint32_t>(n_);
    std::uint32_t first = h_->next_context.load(std::memory_order_relaxed);
    // Never past the end: once contexts run out, every later split fails alike.
    while (first != 0 && first <= UINT32_MAX - n &&
           !h_->next_context.compare_exchange_weak(first, first + n, std::memory_order_relaxed)) {
    }
    mine.context = first == 0 || first > UINT32_MAX - n ? 0 : first;
  }
  const std::vector<SplitEntry> all = allgather(mine);
  // Checked by every rank in the same order: all throw the same error.
  for (int r = 0; r < n_; ++r) {
    const SplitEntry& e = all[static_cast<std::size_t>(r)];
    if (e.color < 0 && e.color != kUndefinedColor) {
      throw Error(errc::invalid_argument, std::string(what) + ": rank " + std::to_string(r) +
                                              " passed color " + std::to_string(e.color) +
                                              " (a color is >= 0, or kUndefinedColor)");
    }
  }
  if (all[0].context == 0) {
    throw Error(errc::out_of_memory, std::string(what) + ": no communicator contexts are left");
  }
  // This rank's new communicator: the ranks of its color by (key, rank).
  std::vector<int> members;
  if (color != kUndefinedColor) {
    for (int r = 0; r < n_; ++r) {
      if (all[static_cast<std::size_t>(r)].color == color) members.push_back(r);
    }
    std::stable_sort(members.begin(), members.end(), [&](int a, int b) {
      return all[static_cast<std::size_t>(a)].key < all[static_cast<std::size_t>(b)].key;
    });
  }
  const int leader = members.empty() ? -1 : members.front();
  const auto m = static_cast<int>(members.size());
  const auto layout = spmd::detail::SubLayout::of(std::max(m, 1));
  Shared shared = share_segment(layout.total, rank_ == leader, leader, what, [&](std::byte* at) {
    new (at) spmd::detail::Coll();
    for (int r = 0; r < m; ++r) {
      new (at + layout.slots_at + static_cast<std::size_t>(r) * sizeof(spmd::detail::CollSlot))
          spmd::detail::CollSlot();
    }
  });
  if (members.empty()) return nullptr;

  auto g = std::make_shared<Group>();
  g->context = all[0].context + static_cast<std::uint32_t>(leader);
  g->local.assign(group_->local.size(), -1);
  int rank = 0;
  for (int i = 0; i < m; ++i) {
    const int w = world(members[static_cast<std::size_t>(i)]);
    g->ranks.push_back(w);
    g->local[static_cast<std::size_t>(w)] = i;
    if (members[static_cast<std::size_t>(i)] == rank_) rank = i;
  }
  return std::unique_ptr<Comm>(
      new ShmComm(*this, std::move(g), rank, std::move(shared.segment), shared.base));
}

std::unique_ptr<Comm> ShmComm::dup() { return split(0, rank_); }

}  // namespace ipckit
