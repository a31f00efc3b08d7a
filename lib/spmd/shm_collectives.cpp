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
  Coll& c = h_->coll;
  slot(rank_).barriers.store(++barriers_, std::memory_order_relaxed);  // for messages only
  const std::uint32_t gen = c.generation.load(std::memory_order_acquire);
  if (c.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<std::uint32_t>(n_)) {
    c.arrived.store(0, std::memory_order_relaxed);
    c.generation.store(gen + 1, std::memory_order_release);
    c.ec.notify_all();
  }
  return gen;
}

// Waits until every rank has arrived at the barrier this rank arrived at in generation
// `gen`, moving this rank's queued point-to-point operations meanwhile (a peer may need
// them to reach the barrier).
void ShmComm::depart(std::uint32_t gen, const char* what) {
  Coll& c = h_->coll;
  const auto passed = [&] { return c.generation.load(std::memory_order_acquire) != gen; };
  if (passed()) return;
  const Deadline deadline = call_deadline();
  const auto ready = [&] {
    if (queued_ != 0) (void)progress();
    return passed();
  };
  // With operations queued, peers that move data to or from this rank wake the collective's
  // sleepers too (wake_peer). Set before the wait's fence, so a move either sees the flag or
  // is seen by the wait's next look.
  struct Moving {
    std::atomic<std::uint32_t>& flag;
    ~Moving() { flag.store(0, std::memory_order_relaxed); }
  } moving{slot(rank_).coll_moving};
  if (queued_ != 0) moving.flag.store(1, std::memory_order_relaxed);
  const bool met = await(c.ec, deadline, ready, [&] {
    for (int r = 0; r < n_; ++r) {
      // A rank seen gone may have been the last to arrive before it finished: its stores
      // are visible once its death is, so an unchanged generation settles it.
      if (!alive(r) && !passed()) throw_peer_dead(r, what);
    }
    if (queued_ != 0) fail_dead_peers();
  });
  if (met) return;
  // This rank's arrival stays counted: the barrier cannot be left cleanly, so this comm
  // refuses further collectives rather than miscount them.
  coll_broken_ = true;
  std::vector<int> missing;
  for (int r = 0; r < n_; ++r) {
    if (slot(r).barriers.load(std::memory_order_relaxed) < barriers_) missing.push_back(r);
  }
  throw_timeout(what, missing, "(not there yet)");
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

// Every collective: publish this rank's size, meet, and check that all ranks agree.
unsigned ShmComm::begin_collective(std::uint64_t bytes, const char* what, int root) {
  if (root != kNoRoot) check_rank(root, what);
  finish_outstanding();
  const unsigned parity = coll_phase_++ & 1U;
  slot(rank_).coll_size[parity].store(bytes, std::memory_order_relaxed);
  return parity;
}

void ShmComm::check_sizes(unsigned parity, std::uint64_t expect, const char* what) {
  for (int r = 0; r < n_; ++r) {
    const std::uint64_t s = slot(r).coll_size[parity].load(std::memory_order_relaxed);
    if (s != expect) {
      throw Error(errc::size_mismatch, std::string(what) + ": rank " + std::to_string(r) +
                                           " passed " + std::to_string(s) + " bytes, rank " +
                                           std::to_string(rank_) + " " + std::to_string(expect));
    }
  }
}

namespace {
// Elements of `type` in one round of allreduce (one collective buffer).
std::size_t per_round(DataType type) { return kCollBytes / size_of(type); }
}  // namespace

void ShmComm::allreduce(void* inout, std::size_t count, DataType type, ReduceOp op) {
  auto* data = static_cast<std::byte*>(inout);
  const std::size_t esz = size_of(type);
  std::size_t at = 0;
  do {
    const std::size_t k = std::min(per_round(type), count - at);
    const unsigned parity = begin_collective(count * esz, "ShmComm::allreduce", kNoRoot);
    if (k != 0) std::memcpy(coll_buf(rank_, parity), data + at * esz, k * esz);
    meet("ShmComm::allreduce");
    check_sizes(parity, count * esz, "ShmComm::allreduce");
    // Every rank combines in rank order: the same bytes everywhere.
    if (k != 0) std::memcpy(data + at * esz, coll_buf(0, parity), k * esz);
    for (int r = 1; r < n_; ++r) reduce_into(data + at * esz, coll_buf(r, parity), k, type, op);
    at += k;
  } while (at < count);
}

Request ShmComm::ibarrier() {
  finish_outstanding();
  auto c = std::make_unique<CollOp>();
  c->what = "ShmComm::ibarrier";
  c->gen = arrive(c->what);
  c->owner = this;
  outstanding_ = c.get();
  return Request(std::move(c));
}

Request ShmComm::iallreduce(void* inout, std::size_t count, DataType type, ReduceOp op) {
  if (count > per_round(type)) {
    // More than one collective buffer: done now, as allreduce() (a later round waited for
    // in a wait could stall a peer's point-to-point exchange with this rank).
    allreduce(inout, count, type, op);
    auto c = std::make_unique<CollOp>();
    c->done = true;
    c->owner = this;
    return Request(std::move(c));
  }
  auto c = std::make_unique<CollOp>();
  c->what = "ShmComm::iallreduce";
  c->data = static_cast<std::byte*>(inout);
  c->count = count;
  c->type = type;
  c->op = op;
  c->first = std::min(per_round(type), count);
  c->parity = begin_collective(count * size_of(type), c->what, kNoRoot);
  if (c->first != 0) std::memcpy(coll_buf(rank_, c->parity), c->data, c->first * size_of(type));
  c->gen = arrive(c->what);
  c->owner = this;
  outstanding_ = c.get();
  return Request(std::move(c));
}

// The wait of a non-blocking collective, done once; its error is kept for the request's
// wait (a collective started after it goes on: a size mismatch leaves the barrier in step,
// a timeout breaks it and a dead rank fails the next one too).
void ShmComm::finish_collective(CollOp& c) noexcept {
  if (outstanding_ == &c) outstanding_ = nullptr;
  c.done = true;
  try {
    depart(c.gen, c.what);
    if (c.data == nullptr) return;
    const std::size_t esz = size_of(c.type);
    check_sizes(c.parity, c.count * esz, c.what);
    if (c.first != 0) {
      std::memcpy(c.data, coll_buf(0, c.parity), c.first * esz);
      for (int r = 1; r < n_; ++r)
        reduce_into(c.data, coll_buf(r, c.parity), c.first, c.type, c.op);
    }
  } catch (...) {
    c.error = std::current_exception();
  }
}

void ShmComm::gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  const std::size_t b = mine.size();
  std::size_t at = 0;
  do {
    const std::size_t k = std::min(kCollBytes, b - at);
    const unsigned parity = begin_collective(b, "ShmComm::gather", root);
    if (k != 0) std::memcpy(coll_buf(rank_, parity), mine.data() + at, k);
    if (rank_ == root) slot(root).coll_aux[parity].store(all.size(), std::memory_order_relaxed);
    meet("ShmComm::gather");
    check_sizes(parity, b, "ShmComm::gather");
    // Every rank checks the root's buffer, so that all of them fail alike.
    const std::uint64_t root_bytes = slot(root).coll_aux[parity].load(std::memory_order_relaxed);
    if (root_bytes != b * static_cast<std::uint64_t>(n_)) {
      throw Error(errc::invalid_argument, "ShmComm::gather: the root's buffer has " +
                                              std::to_string(root_bytes) + " bytes for " +
                                              std::to_string(n_) + " x " + std::to_string(b));
    }
    if (rank_ == root && k != 0) {
      for (int r = 0; r < n_; ++r) {
        std::memcpy(all.data() + static_cast<std::size_t>(r) * b + at, coll_buf(r, parity), k);
      }
    }
    at += k;
  } while (at < b);
}

void ShmComm::broadcast(std::span<std::byte> data, int root) {
  const std::size_t b = data.size();
  std::size_t at = 0;
  do {
    const std::size_t k = std::min(kCollBytes, b - at);
    const unsigned parity = begin_collective(b, "ShmComm::broadcast", root);
    if (rank_ == root && k != 0) std::memcpy(coll_buf(root, parity), data.data() + at, k);
    meet("ShmComm::broadcast");
    check_sizes(parity, b, "ShmComm::broadcast");
    if (rank_ != root && k != 0) std::memcpy(data.data() + at, coll_buf(root, parity), k);
    at += k;
  } while (at < b);
}

}  // namespace ipckit
