// ShmComm's collectives that move bytes (the reductions and the barrier are in
// shm_collectives.cpp): broadcast, gather, scatter, allgather, alltoall and their v forms,
// each as rounds through the 64 KiB collective buffers (ShmComm::rounds in
// shm_comm_internal.hpp). Each rank writes its stream (what it contributes) a window at a
// time; the others take from the window what is theirs. The v forms whose counts only some
// ranks know (gatherv, scatterv, alltoallv) first exchange their counts in one meeting.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "collective_checks.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "shm_comm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {

using detail::blocks_fit;
using detail::hash_of;
using spmd::detail::add_sat;
using spmd::detail::kCollBytes;
using spmd::detail::put;
using spmd::detail::take;

namespace {

// What rounds() runs for one collective. The functions capture by value: a non-blocking
// form keeps them until its wait.
template <class Write, class Check, class Read>
struct Spec {
  const char* what;
  std::uint64_t longest;  // the longest stream
  Write write;
  Check check;
  Read read;
};
template <class Write, class Check, class Read>
Spec(const char*, std::uint64_t, Write, Check, Read) -> Spec<Write, Check, Read>;

// Copies the pieces' concatenation's bytes [at, at + k) (those that exist) into buf.
void put_pieces(std::span<const std::byte> base, std::span<const std::size_t> counts,
                std::span<const std::size_t> displs, std::uint64_t at, std::size_t k,
                std::byte* buf) {
  std::uint64_t start = 0;  // of the piece in the stream
  const std::uint64_t end = at + k;
  for (std::size_t j = 0; j < counts.size() && start < end; ++j) {
    const std::uint64_t lo = std::max(start, at);
    const std::uint64_t hi = std::min(start + counts[j], end);
    if (lo < hi) std::memcpy(buf + (lo - at), base.data() + displs[j] + (lo - start), hi - lo);
    start += counts[j];
  }
}

}  // namespace

struct ShmComm::Specs {
  // Runs a collective's {Agree, Spec} now, or posts it.
  template <class P>
  static void run(ShmComm& c, P p) {
    auto& [a, s] = p;
    c.rounds(s.what, a, s.longest, kCollBytes, s.write, s.check, s.read);
  }
  template <class P>
  static Request post(ShmComm& c, P p) {
    auto& [a, s] = p;
    return c.post_rounds(s.what, a, s.longest, kCollBytes, s.write, s.check, s.read);
  }

  static auto broadcast(ShmComm& c, std::span<std::byte> data, int root) {
    const bool me = c.rank_ == root;
    return std::pair(Agree{data.size(), 0, root, true},
                     Spec{"ShmComm::broadcast", data.size(),
                          [data, me](std::uint64_t at, std::size_t k, std::byte* buf) {
                            if (me) put(data, at, k, buf);
                          },
                          [](unsigned) {},
                          [&c, data, me, root](std::uint64_t at, std::size_t k, unsigned parity) {
                            if (!me)
                              take(c.coll_buf(root, parity), at, k, 0, data.size(), data.data());
                          }});
  }

  static auto gather(ShmComm& c, std::span<const std::byte> mine, std::span<std::byte> all,
                     int root) {
    const bool me = c.rank_ == root;
    const std::size_t b = mine.size();
    Agree a{b, 0, root, true};
    if (me && all.size() / c.n_ != b) a.bad = Bad::root_buffer;
    if (me && all.size() % c.n_ != 0) a.bad = Bad::root_buffer;
    return std::pair(
        a, Spec{"ShmComm::gather", b,
                [mine](std::uint64_t at, std::size_t k, std::byte* buf) { put(mine, at, k, buf); },
                [](unsigned) {},
                [&c, all, b, me](std::uint64_t at, std::size_t k, unsigned parity) {
                  if (!me) return;
                  for (int r = 0; r < c.n_; ++r) {
                    take(c.coll_buf(r, parity), at, k, 0, b,
                         all.data() + static_cast<std::size_t>(r) * b);
                  }
                }});
  }

  static auto scatter(ShmComm& c, std::span<const std::byte> all, std::span<std::byte> mine,
                      int root) {
    const bool me = c.rank_ == root;
    const std::size_t b = mine.size();
    Agree a{b, 0, root, true};
    if (me && (all.size() % c.n_ != 0 || all.size() / c.n_ != b)) a.bad = Bad::root_buffer;
    const std::uint64_t whole = b * static_cast<std::uint64_t>(c.n_);
    return std::pair(a, Spec{"ShmComm::scatter", whole,
                             [all, me](std::uint64_t at, std::size_t k, std::byte* buf) {
                               if (me) put(all, at, k, buf);
                             },
                             [](unsigned) {},
                             [&c, mine, b, root](std::uint64_t at, std::size_t k, unsigned parity) {
                               take(c.coll_buf(root, parity), at, k,
                                    static_cast<std::uint64_t>(c.rank_) * b, b, mine.data());
                             }});
  }

  static auto allgather(ShmComm& c, std::span<const std::byte> mine, std::span<std::byte> all) {
    const std::size_t b = mine.size();
    Agree a{b};
    if (all.size() % c.n_ != 0 || all.size() / c.n_ != b) a.bad = Bad::buffer;
    return std::pair(
        a, Spec{"ShmComm::allgather", b,
                [mine](std::uint64_t at, std::size_t k, std::byte* buf) { put(mine, at, k, buf); },
                [](unsigned) {},
                [&c, all, b](std::uint64_t at, std::size_t k, unsigned parity) {
                  for (int r = 0; r < c.n_; ++r) {
                    take(c.coll_buf(r, parity), at, k, 0, b,
                         all.data() + static_cast<std::size_t>(r) * b);
                  }
                }});
  }

  static auto alltoall(ShmComm& c, std::span<const std::byte> out, std::span<std::byte> in) {
    Agree a{out.size()};
    if (out.size() % c.n_ != 0 || in.size() != out.size()) a.bad = Bad::buffer;
    const std::size_t b = out.size() / c.n_;
    return std::pair(
        a, Spec{"ShmComm::alltoall", out.size(),
                [out](std::uint64_t at, std::size_t k, std::byte* buf) { put(out, at, k, buf); },
                [](unsigned) {},
                [&c, in, b](std::uint64_t at, std::size_t k, unsigned parity) {
                  const std::uint64_t mine = static_cast<std::uint64_t>(c.rank_) * b;
                  for (int r = 0; r < c.n_; ++r) {
                    take(c.coll_buf(r, parity), at, k, mine, b,
                         in.data() + static_cast<std::size_t>(r) * b);
                  }
                }});
  }
};

void ShmComm::broadcast(std::span<std::byte> data, int root) {
  Specs::run(*this, Specs::broadcast(*this, data, root));
}
Request ShmComm::ibroadcast(std::span<std::byte> data, int root) {
  return Specs::post(*this, Specs::broadcast(*this, data, root));
}
void ShmComm::gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  Specs::run(*this, Specs::gather(*this, mine, all, root));
}
Request ShmComm::igather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  return Specs::post(*this, Specs::gather(*this, mine, all, root));
}
void ShmComm::scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  Specs::run(*this, Specs::scatter(*this, all, mine, root));
}
Request ShmComm::iscatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  return Specs::post(*this, Specs::scatter(*this, all, mine, root));
}
void ShmComm::allgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  Specs::run(*this, Specs::allgather(*this, mine, all));
}
Request ShmComm::iallgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  return Specs::post(*this, Specs::allgather(*this, mine, all));
}
void ShmComm::alltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  Specs::run(*this, Specs::alltoall(*this, out, in));
}
Request ShmComm::ialltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  return Specs::post(*this, Specs::alltoall(*this, out, in));
}

// Every rank's contribution (its published size) against `counts`, the same on every rank
// that gets here: size_mismatch on all of them, or none.
void ShmComm::agree_counts(unsigned parity, std::span<const std::size_t> counts, const char* what,
                           const char* whose) const {
  for (int r = 0; r < n_; ++r) {
    const std::uint64_t got = cslot(r).size[parity].load(std::memory_order_relaxed);
    const std::size_t want = counts[static_cast<std::size_t>(r)];
    if (got != want) {
      throw Error(errc::size_mismatch, std::string(what) + ": rank " + std::to_string(r) +
                                           " contributes " + std::to_string(got) + " bytes, " +
                                           whose + " counts say " + std::to_string(want));
    }
  }
}

// One meeting that passes tables of counts: each rank writes `table`; after the agreement,
// every rank reads `entries` words of rank `from`'s table and checks each rank's size
// against them (from >= 0), or of every rank's table, concatenated (from < 0).
std::vector<std::size_t> ShmComm::meta_round(const char* what, const Agree& a,
                                             std::span<const std::size_t> table, int from,
                                             std::size_t entries) {
  const unsigned parity = begin_collective(a, what);
  if (!table.empty()) {
    std::memcpy(coll_buf(rank_, parity), table.data(), std::min(table.size_bytes(), kCollBytes));
  }
  meet(what);
  check_agreement(parity, a, what);
  const std::size_t bytes = entries * sizeof(std::size_t);  // at most 16 KiB: n <= 1024
  std::vector<std::size_t> got(from >= 0 ? entries : entries * static_cast<std::size_t>(n_));
  for (int r = from >= 0 ? from : 0; r < (from >= 0 ? from + 1 : n_); ++r) {
    const std::size_t at = from >= 0 ? 0 : static_cast<std::size_t>(r) * entries;
    std::memcpy(got.data() + at, coll_buf(r, parity), bytes);
  }
  if (from >= 0) agree_counts(parity, got, what, from == 0 ? "rank 0's" : "the root's");
  return got;
}

void ShmComm::gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                      std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                      int root) {
  const char* what = "ShmComm::gatherv";
  const bool me = rank_ == root;
  Agree a{mine.size(), 0, root, true};
  a.varying = true;
  if (me && !blocks_fit(counts, displs, all.size(), n_)) a.bad = Bad::counts;
  const auto n = static_cast<std::size_t>(n_);
  const std::vector<std::size_t> table = meta_round(
      what, a, me && a.bad == Bad::none ? counts : std::span<const std::size_t>(), root, n);
  const std::uint64_t longest = *std::max_element(table.begin(), table.end());
  rounds(
      what, a, longest, kCollBytes,
      [mine](std::uint64_t at, std::size_t k, std::byte* buf) { put(mine, at, k, buf); },
      [](unsigned) {},
      [&](std::uint64_t at, std::size_t k, unsigned parity) {
        if (!me) return;
        // The root's own counts (checked against its buffer), not the table a peer could
        // have written over since.
        for (std::size_t r = 0; r < n; ++r) {
          take(coll_buf(static_cast<int>(r), parity), at, k, 0, counts[r], all.data() + displs[r]);
        }
      });
}

void ShmComm::scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                       std::span<const std::size_t> displs, std::span<std::byte> mine, int root) {
  const char* what = "ShmComm::scatterv";
  const bool me = rank_ == root;
  Agree a{mine.size(), 0, root, true};
  a.varying = true;
  if (me && !blocks_fit(counts, displs, all.size(), n_)) a.bad = Bad::counts;
  const std::vector<std::size_t> table =
      meta_round(what, a, me && a.bad == Bad::none ? counts : std::span<const std::size_t>(), root,
                 static_cast<std::size_t>(n_));
  // The root's stream: the blocks in rank order, packed.
  std::uint64_t longest = 0;
  std::uint64_t want = 0;
  for (std::size_t r = 0; r < table.size(); ++r) {
    if (r == static_cast<std::size_t>(rank_)) want = longest;
    longest = add_sat(longest, table[r]);
  }
  rounds(
      what, a, longest, kCollBytes,
      [&](std::uint64_t at, std::size_t k, std::byte* buf) {
        if (me) put_pieces(all, counts, displs, at, k, buf);
      },
      [](unsigned) {},
      [&](std::uint64_t at, std::size_t k, unsigned parity) {
        take(coll_buf(root, parity), at, k, want, mine.size(), mine.data());
      });
}

void ShmComm::allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                         std::span<const std::size_t> counts, std::span<const std::size_t> displs) {
  const char* what = "ShmComm::allgatherv";
  // Every rank has the counts: their hash is checked, then each rank's size against them.
  Agree a{mine.size(), hash_of(counts)};
  a.varying = true;
  if (!blocks_fit(counts, displs, all.size(), n_)) a.bad = Bad::counts;
  const std::uint64_t longest =
      a.bad == Bad::none ? *std::max_element(counts.begin(), counts.end()) : mine.size();
  rounds(
      what, a, longest, kCollBytes,
      [mine](std::uint64_t at, std::size_t k, std::byte* buf) { put(mine, at, k, buf); },
      [&](unsigned parity) { agree_counts(parity, counts, what, "the"); },
      [&](std::uint64_t at, std::size_t k, unsigned parity) {
        for (int r = 0; r < n_; ++r) {
          const auto i = static_cast<std::size_t>(r);
          take(coll_buf(r, parity), at, k, 0, counts[i], all.data() + displs[i]);
        }
      });
}

void ShmComm::alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                        std::span<const std::size_t> out_displs, std::span<std::byte> in,
                        std::span<const std::size_t> in_counts,
                        std::span<const std::size_t> in_displs) {
  const char* what = "ShmComm::alltoallv";
  const auto n = static_cast<std::size_t>(n_);
  const auto me = static_cast<std::size_t>(rank_);
  Agree a{0};
  if (!blocks_fit(out_counts, out_displs, out.size(), n_) ||
      !blocks_fit(in_counts, in_displs, in.size(), n_)) {
    a.bad = Bad::counts;
  }
  // Each rank's out counts, then its in counts.
  std::vector<std::size_t> mine(2 * n);
  if (a.bad == Bad::none) {
    std::copy(out_counts.begin(), out_counts.end(), mine.begin());
    std::copy(in_counts.begin(), in_counts.end(), mine.begin() + static_cast<std::ptrdiff_t>(n));
  }
  const std::vector<std::size_t> all = meta_round(what, a, mine, -1, 2 * n);
  // Rank r's counts to j, and j's from r: the same on every pair, checked by every rank.
  std::uint64_t longest = 0;
  std::vector<std::uint64_t> from(n);  // where this rank's block starts in rank r's stream
  for (std::size_t r = 0; r < n; ++r) {
    std::uint64_t stream = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t sent = all[r * 2 * n + j];
      const std::size_t expected = all[j * 2 * n + n + r];
      if (sent != expected) {
        throw Error(errc::size_mismatch, std::string(what) + ": rank " + std::to_string(r) +
                                             " sends " + std::to_string(sent) + " bytes to rank " +
                                             std::to_string(j) + ", which expects " +
                                             std::to_string(expected));
      }
      if (j == me) from[r] = stream;
      stream = add_sat(stream, sent);
    }
    longest = std::max(longest, stream);
  }
  rounds(
      what, a, longest, kCollBytes,
      [&](std::uint64_t at, std::size_t k, std::byte* buf) {
        put_pieces(out, out_counts, out_displs, at, k, buf);
      },
      [](unsigned) {},
      [&](std::uint64_t at, std::size_t k, unsigned parity) {
        for (std::size_t r = 0; r < n; ++r) {
          take(coll_buf(static_cast<int>(r), parity), at, k, from[r], in_counts[r],
               in.data() + in_displs[r]);
        }
      });
}

}  // namespace ipckit
