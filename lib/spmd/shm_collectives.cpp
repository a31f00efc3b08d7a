// ShmComm's collectives (point-to-point and the requests are in shm_comm.cpp): each rank
// writes its own collective buffer, the ranks meet at the generation barrier in the header,
// and each reads the others' buffers directly. Two buffers per rank alternate between
// successive collectives, so a rank runs at most one collective ahead; a non-blocking one
// arrives when posted and departs in its wait (or when the next collective starts).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "collective_checks.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "shm_comm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {

using spmd::detail::Coll;
using spmd::detail::kCollBytes;

namespace {

[[noreturn]] void throw_peer_dead(int rank, const char* what) {
  throw Error(errc::peer_dead,
              std::string(what) + ": rank " + std::to_string(rank) + " has exited or died");
}

}  // namespace

void ShmComm::barrier() {
  finish_outstanding();
  meet("ShmComm::barrier");
}

// The barrier every collective meets at; `what` names the user's call in errors.
void ShmComm::meet(const char* what) { depart(arrive(what), what); }

// Counts this rank in at the barrier; returns the generation to wait past.
std::uint32_t ShmComm::arrive(const char* what) {
  if (coll_broken_) {
    throw Error(errc::barrier_broken,
                std::string(what) + ": an earlier collective of this rank timed out");
  }
  Coll& c = *coll_;
  cslot(rank_).barriers.store(++barriers_, std::memory_order_relaxed);  // for messages only
  const std::uint32_t gen = c.generation.load(std::memory_order_acquire);
  if (c.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<std::uint32_t>(n_)) {
    c.arrived.store(0, std::memory_order_relaxed);
    c.generation.store(gen + 1, std::memory_order_release);
    c.ec.notify_all();  // a full fence first: pairs with depart()'s `moving` count
    if (c.moving.load(std::memory_order_acquire) != 0) {
      for (int r = 0; r < n_; ++r) {
        if (cslot(r).moving.load(std::memory_order_relaxed) != 0) {
          slot(world(r)).doorbell.notify_all();
        }
      }
    }
  }
  return gen;
}

// Waits until every rank has arrived at the barrier this rank arrived at in generation
// `gen`, moving this rank's queued point-to-point operations meanwhile (a peer may need
// them to reach the barrier).
void ShmComm::depart(std::uint32_t gen, const char* what) {
  Coll& c = *coll_;
  ShmComm& e = *engine_;  // the point-to-point operations of every communicator
  const auto passed = [&] { return c.generation.load(std::memory_order_acquire) != gen; };
  if (passed()) return;
  const Deadline deadline = call_deadline();
  const auto ready = [&] {
    if (e.pending()) (void)e.progress();
    return passed();
  };
  // With operations queued, the rank sleeps on its doorbell, which peers that move its data
  // ring (wake_peer), and so does the barrier's last arrival when it sees `moving` set. Set
  // (flag, then count) before the wait's fence, so the last arrival either sees them or is
  // seen by the wait's next look.
  struct Moving {
    std::atomic<std::uint32_t>& flag;
    std::atomic<std::uint32_t>& count;
    bool set = false;
    ~Moving() {
      if (!set) return;
      flag.store(0, std::memory_order_relaxed);
      count.fetch_sub(1, std::memory_order_relaxed);
    }
  } moving{cslot(rank_).moving, c.moving};
  const bool p2p = e.pending();
  if (p2p) {
    moving.flag.store(1, std::memory_order_relaxed);
    moving.count.fetch_add(1, std::memory_order_seq_cst);
    moving.set = true;
  }
  const bool met = await(p2p ? slot(me()).doorbell : c.ec, deadline, ready, [&] {
    for (int r = 0; r < n_; ++r) {
      // A rank seen gone may have been the last to arrive before it finished: its stores
      // are visible once its death is, so an unchanged generation settles it.
      if (!alive(world(r)) && !passed()) throw_peer_dead(r, what);
    }
    if (e.pending()) e.fail_dead_peers();
  });
  if (met) return;
  // This rank's arrival stays counted: the barrier cannot be left cleanly, so this comm
  // refuses further collectives rather than miscount them.
  coll_broken_ = true;
  std::vector<int> missing;
  for (int r = 0; r < n_; ++r) {
    if (cslot(r).barriers.load(std::memory_order_relaxed) < barriers_) missing.push_back(world(r));
  }
  throw_timeout(what, missing, *group_, "(not there yet)");
}

// A collective request dropped while its rank unwinds: not waited for; this rank refuses
// further collectives (errc::barrier_broken), as after a timeout.
void ShmComm::abandon_collective(CollOp& c) noexcept {
  if (outstanding_ == &c) outstanding_ = nullptr;
  c.done = true;
  coll_broken_ = true;
}

// Completes the non-blocking collective in flight, if any, before another collective
// starts: the two collective buffers alternate, so a rank runs at most one ahead.
void ShmComm::finish_outstanding() {
  if (outstanding_ != nullptr) finish_collective(*outstanding_);
}

// Every collective round: publish what this rank passes (checked after the meeting).
unsigned ShmComm::begin_collective(const Agree& a, const char* what) {
  (void)what;
  finish_outstanding();
  const unsigned parity = coll_phase_++ & 1U;
  spmd::detail::CollSlot& s = cslot(rank_);
  Bad bad = a.bad;
  if (a.rooted && (a.root < 0 || a.root >= n_)) bad = Bad::root;
  s.size[parity].store(a.size, std::memory_order_relaxed);
  s.sig[parity].store(a.sig, std::memory_order_relaxed);
  s.root[parity].store(a.root, std::memory_order_relaxed);
  s.bad[parity].store(static_cast<std::uint32_t>(bad), std::memory_order_relaxed);
  return parity;
}

namespace {

const char* bad_text(std::uint32_t code) {
  static constexpr const char* kText[] = {
      "passed malformed arguments",
      "is the root, and its buffer is not size() blocks of the contribution",
      "passed a buffer that is not size() blocks",
      "passed counts/displacements not one per rank, or a block outside its buffer",
      "passed an output that is not counts[rank] elements",
      "passed an input that is not sum(counts) elements",
      "passed a root outside [0, size())",
      "passed a byte count that is not whole elements of the reduction",
  };
  return code < std::size(kText) ? kText[code] : kText[0];
}

}  // namespace

// After the first meeting of a collective: every rank reads every rank's slot in the same
// order and compares with rank 0's, so all of them throw the same error, or none does.
void ShmComm::check_agreement(unsigned parity, const Agree& a, const char* what) const {
  const auto fail = [&](errc code, int r, const std::string& why) {
    throw Error(code, std::string(what) + ": rank " + std::to_string(r) + " " + why);
  };
  for (int r = 0; r < n_; ++r) {
    const std::uint32_t bad = cslot(r).bad[parity].load(std::memory_order_relaxed);
    if (bad != 0) fail(errc::invalid_argument, r, bad_text(bad));
  }
  const spmd::detail::CollSlot& first = cslot(0);
  if (a.rooted) {
    const std::int64_t root = first.root[parity].load(std::memory_order_relaxed);
    for (int r = 1; r < n_; ++r) {
      const std::int64_t other = cslot(r).root[parity].load(std::memory_order_relaxed);
      if (other != root) {
        fail(errc::invalid_argument, r,
             "passed root " + std::to_string(other) + ", rank 0 root " + std::to_string(root));
      }
    }
  }
  const std::uint64_t sig = first.sig[parity].load(std::memory_order_relaxed);
  const std::uint64_t size = first.size[parity].load(std::memory_order_relaxed);
  for (int r = 1; r < n_; ++r) {
    if (cslot(r).sig[parity].load(std::memory_order_relaxed) != sig) {
      fail(errc::invalid_argument, r, "passed another reduction or other counts than rank 0");
    }
    const std::uint64_t other = cslot(r).size[parity].load(std::memory_order_relaxed);
    if (!a.varying && other != size) {
      fail(errc::size_mismatch, r,
           "passed " + std::to_string(other) + " bytes, rank 0 " + std::to_string(size));
    }
  }
  // What this rank itself passed, should a peer have scribbled on its slot.
  const bool bad_root = a.rooted && (a.root < 0 || a.root >= n_);
  if (a.bad != Bad::none || bad_root) {
    fail(errc::invalid_argument, rank_,
         bad_text(static_cast<std::uint32_t>(bad_root ? Bad::root : a.bad)));
  }
  if ((a.rooted && a.root != first.root[parity].load(std::memory_order_relaxed)) || a.sig != sig ||
      (!a.varying && a.size != size)) {
    fail(errc::invalid_argument, 0, "changed what it passed during the collective");
  }
}

namespace {
// Bytes of a round of a reduction: whole elements (the same on every rank that agrees).
// Elements larger than a buffer are refused by reduction_agree at the first meeting.
std::size_t unit_of(const Reduction& op) {
  const std::size_t e = op.element_size();
  return e > kCollBytes ? kCollBytes : kCollBytes - kCollBytes % e;
}

}  // namespace

// What a reduction of `count` elements agrees on: elements larger than a collective buffer,
// or more bytes than a size_t holds, are this rank's malformed arguments.
ShmComm::Agree ShmComm::reduction_agree(std::size_t count, const Reduction& op) {
  Agree a{count * op.element_size(), op.signature()};
  if (op.element_size() > kCollBytes || (count != 0 && a.size / count != op.element_size())) {
    a.size = 0;
    a.bad = Bad::reduction;
  }
  return a;
}

// Combines ranks [first, end)'s windows of the stream bytes [want, want + len) in rank order
// into dst (which stands for byte `want`).
void ShmComm::reduce_window(std::byte* dst, std::uint64_t want, std::uint64_t len, std::uint64_t at,
                            std::size_t k, unsigned parity, int first, int end,
                            const Reduction& op) const {
  const std::uint64_t lo = std::max(at, want);
  const std::uint64_t hi = std::min(at + k, spmd::detail::add_sat(want, len));
  if (lo >= hi || first >= end) return;
  std::byte* out = dst + (lo - want);
  std::memcpy(out, coll_buf(first, parity) + (lo - at), hi - lo);
  const std::size_t count = (hi - lo) / op.element_size();
  for (int r = first + 1; r < end; ++r) op.combine(out, coll_buf(r, parity) + (lo - at), count);
}

// The reductions: every rank's stream is `in`; this rank combines ranks [first, end)'s bytes
// [want, want + len) of it into `out` (which stands for byte `want`; it may be `in` itself:
// each round's bytes are published before they are overwritten).
void ShmComm::reducing(const char* what, std::span<const std::byte> in, std::byte* out,
                       std::uint64_t want, std::uint64_t len, int first, int end,
                       const Reduction& op, const Agree& a) {
  rounds(
      what, a, in.size(), unit_of(op),
      [&](std::uint64_t at, std::size_t k, std::byte* buf) { spmd::detail::put(in, at, k, buf); },
      [](unsigned) {},
      [&](std::uint64_t at, std::size_t k, unsigned parity) {
        reduce_window(out, want, len, at, k, parity, first, end, op);
      });
}

void ShmComm::allreduce(void* inout, std::size_t count, const Reduction& op) {
  const Agree a = reduction_agree(count, op);
  auto* data = static_cast<std::byte*>(inout);
  reducing("ShmComm::allreduce", {data, a.size}, data, 0, a.size, 0, n_, op, a);
}

void ShmComm::reduce(void* inout, std::size_t count, const Reduction& op, int root) {
  Agree a = reduction_agree(count, op);
  a.root = root;
  a.rooted = true;
  auto* data = static_cast<std::byte*>(inout);
  reducing("ShmComm::reduce", {data, a.size}, data, 0, a.size, 0, rank_ == root ? n_ : 0, op, a);
}

void ShmComm::scan(void* inout, std::size_t count, const Reduction& op) {
  const Agree a = reduction_agree(count, op);
  auto* data = static_cast<std::byte*>(inout);
  reducing("ShmComm::scan", {data, a.size}, data, 0, a.size, 0, rank_ + 1, op, a);
}

void ShmComm::exscan(void* inout, std::size_t count, const Reduction& op) {
  const Agree a = reduction_agree(count, op);
  auto* data = static_cast<std::byte*>(inout);
  reducing("ShmComm::exscan", {data, a.size}, data, 0, a.size, 0, rank_, op, a);
}

void ShmComm::reduce_scatter(std::span<const std::byte> in, std::span<std::byte> out,
                             std::span<const std::size_t> counts, const Reduction& op) {
  const std::size_t esz = op.element_size();
  Agree a = reduction_agree(0, op);
  a.size = in.size();
  a.sig ^= detail::hash_of(counts);
  std::uint64_t total = 0;
  std::uint64_t want = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    if (r == static_cast<std::size_t>(rank_)) want = total;
    total = spmd::detail::add_sat(total, counts[r]);
  }
  if (a.bad != Bad::none) {
    a.size = 0;
  } else if (counts.size() != static_cast<std::size_t>(n_)) {
    a.bad = Bad::counts;
  } else if (total > in.size() / esz || in.size() != total * esz) {
    a.bad = Bad::in_buffer;
  } else if (out.size() != counts[static_cast<std::size_t>(rank_)] * esz) {
    a.bad = Bad::out_buffer;
  }
  const std::uint64_t len = a.bad == Bad::none ? out.size() : 0;
  reducing("ShmComm::reduce_scatter", in, out.data(), want * esz, len, 0, n_, op, a);
}

Request ShmComm::ibarrier() {
  finish_outstanding();
  auto c = std::make_unique<CollOp>();
  c->what = "ShmComm::ibarrier";
  c->gen = arrive(c->what);
  c->owner = this;
  c->engine = engine_;
  outstanding_ = c.get();
  return Request(std::move(c));
}

Request ShmComm::iallreduce(void* inout, std::size_t count, const Reduction& op) {
  const Agree a = reduction_agree(count, op);
  const std::size_t bytes = a.size;
  auto* data = static_cast<std::byte*>(inout);
  const std::span<const std::byte> in(data, bytes);
  return post_rounds(
      "ShmComm::iallreduce", a, bytes, unit_of(op),
      [in](std::uint64_t at, std::size_t k, std::byte* buf) { spmd::detail::put(in, at, k, buf); },
      [](unsigned) {},
      [this, data, bytes, op](std::uint64_t at, std::size_t k, unsigned parity) {
        reduce_window(data, 0, bytes, at, k, parity, 0, n_, op);
      });
}

// The wait of a non-blocking collective, done once; its error is kept for the request's
// wait (a collective started after it goes on: a size mismatch leaves the barrier in step,
// a timeout breaks it and a dead rank fails the next one too).
void ShmComm::finish_collective(CollOp& c) noexcept {
  if (outstanding_ == &c) outstanding_ = nullptr;
  c.done = true;
  try {
    depart(c.gen, c.what);
    if (!c.finish) return;
    check_agreement(c.parity, c.agree, c.what);
    c.finish(c.parity);
  } catch (...) {
    c.error = std::current_exception();
  }
}

}  // namespace ipckit
