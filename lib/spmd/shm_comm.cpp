// ShmComm (spmd::run is in run.cpp). Everything the ranks share lives in one anonymous mapping made
// before the fork (nothing in /dev/shm):
//   Header   n, sizes, each rank's identity, and the directory of point-to-point rings
//            (offset of the ring from rank i to rank j, 0 until i first sends to j);
//   Slot     per rank: a doorbell (EventCount) it sleeps on, its error text, and two
//            collective buffers (used alternately by successive collectives);
//   Coll     the collective barrier (arrival count and generation);
//   Arena    where rings are made on first use: only pairs that talk get one.
// Point-to-point messages travel over ByteRings in fragments of at most 256 KiB (the fragment
// layer, lib/channel/fragment.hpp: the first record leads with the message's size). Isend/irecv
// queue per peer and progress together in wait_all(); a rank that finds nothing to do sleeps on its
// doorbell, which a peer rings after publishing to it or freeing room in its ring. Collectives
// write into the rank's own collective buffer, meet at the barrier and read the others' buffers
// directly.
// (Just over 600 lines: point-to-point and collectives share the Op queues and the waits.)
#include "ipckit/spmd/run.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../channel/fragment.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/shm/arena.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "ipckit/sync/event_count.hpp"
#include "shm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {
namespace spmd::detail {

Header& lay_out(std::byte* base, int n, std::size_t ring_bytes, const Layout& l) {
  auto* h = new (base) Header();
  h->n = n;
  h->ring_bytes = ring_bytes;
  h->slots_at = l.slots_at;
  h->dir_at = l.dir_at;
  h->coll_buf_at = l.coll_buf_at;
  h->arena_at = l.arena_at;
  h->arena_bytes = l.total - l.arena_at;
  for (int r = 0; r < n; ++r)
    new (base + l.slots_at + static_cast<std::size_t>(r) * sizeof(Slot)) Slot();
  Arena::create(std::span(base + l.arena_at, h->arena_bytes));
  return *h;
}

void check_ring_offset(const Header& h, std::uint64_t at) {
  const std::uint64_t bytes = ByteRing::bytes_for(h.ring_bytes);
  if (at % 64 != 0 || at < h.arena_at || h.arena_bytes < bytes ||
      at - h.arena_at > h.arena_bytes - bytes) {
    throw Error(errc::bad_layout, "ShmComm: a peer published a ring at offset " +
                                      std::to_string(at) + ", outside the arena");
  }
}

// True when `pid` is stopped (by SIGSTOP and the like, or a debugger): state T or t in
// /proc/<pid>/stat. Only for messages: a stopped rank is the usual cause of a timeout.
bool process_stopped(pid_t pid) noexcept {
  if (pid <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The command name may hold spaces and parentheses: the state follows the last ')'.
  const char* close_paren = std::strrchr(buf, ')');
  return close_paren != nullptr && close_paren[1] == ' ' &&
         (close_paren[2] == 'T' || close_paren[2] == 't');
}

// "rank 3", "ranks 1 (stopped), 3": `ranks` in order, `stopped[i]` marking ranks[i].
std::string rank_list(const std::vector<int>& ranks, const std::vector<bool>& stopped) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i != 0) s += ", ";
    s += std::to_string(ranks[i]);
    if (stopped[i]) s += " (stopped)";
  }
  return s;
}

}  // namespace spmd::detail

using spmd::detail::Coll;
using spmd::detail::Header;
using spmd::detail::kCollBytes;
using spmd::detail::Slot;

using spmd::detail::process_stopped;
using spmd::detail::rank_list;

namespace {

[[noreturn]] void throw_peer_dead(int rank, const char* what) {
  throw Error(errc::peer_dead,
              std::string(what) + ": rank " + std::to_string(rank) + " has exited or died");
}

}  // namespace

// One posted send or receive. A request dropped without wait_all() leaves the pair's stream
// whole: not yet begun, it is taken out of the queue; begun, the comm finishes it by itself
// (the rest of a receive is discarded, the rest of a send goes as zero bytes).
struct ShmComm::Op final : Request::State {
  ~Op() override {
    if (owner != nullptr && !complete) owner->orphan(*this);
  }
  ShmComm* owner = nullptr;  // set for posted requests (not for blocking calls' own ops)
  bool orphaned = false;     // owned by the comm: no user buffer behind it
  bool is_send = false;
  int peer = 0;
  std::span<const std::byte> out;                     // send
  std::span<std::byte> in;                            // receive
  ipckit::detail::FragmentWriter writer;              // send: started on its first progress
  ipckit::detail::FragmentCursor cursor{UINT64_MAX};  // receive: the fragments read so far
  bool complete = false;
  std::exception_ptr error;
  // Whether part of the message has moved: the pair's stream now expects the rest.
  [[nodiscard]] bool started() const noexcept {
    return is_send ? writer.started() : cursor.started();
  }
};

// A posted ibarrier/iallreduce. The rank has arrived at the collective's barrier (and
// written its values for the first round); the wait waits for the others, then combines.
// Dropped unwaited, it is finished by its destructor: the ranks' collectives stay in step.
struct ShmComm::CollOp final : Request::State {
  ~CollOp() override {
    if (owner == nullptr || done) return;
    if (std::uncaught_exceptions() > 0) {
      // The rank is failing: waiting here for ranks that may wait on it could hang it. Its
      // collectives are out of step from now on.
      owner->abandon_collective(*this);
      return;
    }
    owner->finish_collective(*this);  // its error is dropped
  }
  ShmComm* owner = nullptr;
  const char* what = "";
  std::byte* data = nullptr;  // iallreduce: the user's buffer (ibarrier: nullptr)
  std::size_t count = 0;      // elements
  DataType type = DataType::i32;
  ReduceOp op = ReduceOp::sum;
  std::size_t first = 0;  // elements in the round written at post
  unsigned parity = 0;
  std::uint32_t gen = 0;  // the barrier's generation at this rank's arrival
  bool done = false;
  std::exception_ptr error;
};

ShmComm::ShmComm(std::byte* base, int rank) : base_(base), rank_(rank) {
  h_ = reinterpret_cast<Header*>(base);
  n_ = h_->n;
  out_.resize(static_cast<std::size_t>(n_));
  in_.resize(static_cast<std::size_t>(n_));
  sendq_.resize(static_cast<std::size_t>(n_));
  recvq_.resize(static_cast<std::size_t>(n_));
  fragment_bytes_ =
      std::min<std::size_t>(ByteRing::max_message_for(h_->ring_bytes), std::size_t{1} << 18);
  policy_ = WaitPolicy::hybrid();
  policy_.spin = std::chrono::nanoseconds(h_->spin_ns);
  yield_ = h_->oversubscribed != 0;
  call_timeout_ = std::chrono::nanoseconds(
      static_cast<std::int64_t>(std::min<std::uint64_t>(h_->call_timeout_ns, INT64_MAX)));
}

ShmComm::~ShmComm() {
  // Requests may outlive the comm: they must not call back into it.
  if (outstanding_ != nullptr) {
    CollOp* c = outstanding_;
    finish_collective(*c);
    c->owner = nullptr;
  }
  for (auto* queues : {&sendq_, &recvq_}) {
    for (auto& q : *queues) {
      for (Op* op : q) op->owner = nullptr;
    }
  }
}

Slot& ShmComm::slot(int r) const noexcept {
  return reinterpret_cast<Slot*>(base_ + h_->slots_at)[r];
}
std::atomic<std::uint64_t>& ShmComm::dir(int from, int to) const noexcept {
  auto* d = reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + h_->dir_at);
  return d[static_cast<std::size_t>(from) * static_cast<std::size_t>(n_) +
           static_cast<std::size_t>(to)];
}
std::byte* ShmComm::coll_buf(int r, unsigned parity) const noexcept {
  return base_ + h_->coll_buf_at + (static_cast<std::size_t>(r) * 2 + parity) * kCollBytes;
}
Arena& ShmComm::arena() const noexcept { return *reinterpret_cast<Arena*>(base_ + h_->arena_at); }

bool ShmComm::alive(int r) const noexcept {
  if (slot(r).finished.load(std::memory_order_acquire) != 0) return false;
  const ProcessIdentity id = slot(r).id.load(std::memory_order_acquire);
  return id == 0 || identity_alive(id);
}

ByteRing& ShmComm::out_ring(int to) {
  auto& r = out_[static_cast<std::size_t>(to)];
  if (!r) {
    const std::size_t bytes = ByteRing::bytes_for(h_->ring_bytes);
    const std::size_t off = arena().allocate(bytes, 64);
    r.emplace(
        ByteRing::at(std::span(arena().at(off), bytes), h_->ring_bytes, WaitPolicy::spin_only()));
    r->attach_producer();
    // Published after the ring is laid: the receiver attaches only to a finished ring.
    dir(rank_, to).store(h_->arena_at + off, std::memory_order_release);
  }
  return *r;
}

ByteRing* ShmComm::in_ring(int from) {
  auto& r = in_[static_cast<std::size_t>(from)];
  if (!r) {
    const std::uint64_t at = dir(from, rank_).load(std::memory_order_acquire);
    if (at == 0) return nullptr;  // nothing sent yet
    spmd::detail::check_ring_offset(*h_, at);
    // Kept only once attached: a ring that fails its checks fails every receive from `from`.
    ByteRing ring = ByteRing::attach(std::span(base_ + at, ByteRing::bytes_for(h_->ring_bytes)));
    ring.attach_consumer();
    r.emplace(std::move(ring));
  }
  return &*r;
}

// After moving data to or from `peer`: wakes it whether it sleeps in a point-to-point wait
// (its doorbell) or in a collective (which makes point-to-point progress too).
void ShmComm::wake_peer(int peer) noexcept {
  slot(peer).doorbell.notify_all();  // a full fence first: pairs with depart()'s flag
  if (slot(peer).coll_moving.load(std::memory_order_relaxed) != 0) h_->coll.ec.notify_all();
}

// Moves as much of `op` as the ring allows now. True when anything moved.
bool ShmComm::progress_send(Op& op) {
  ByteRing& ring = out_ring(op.peer);
  if (!op.writer.active()) op.writer.start({op.out});
  const bool moved =
      op.writer.write(ring, fragment_bytes_, ipckit::detail::FragmentWriter::Mode::commit);
  if (op.writer.done()) op.complete = true;
  if (moved) wake_peer(op.peer);
  return moved;
}

bool ShmComm::progress_recv(Op& op) {
  ByteRing* ring = in_ring(op.peer);
  if (ring == nullptr) return false;
  bool moved = false;
  while (!op.complete) {
    auto rec = ring->try_peek();
    if (!rec) break;
    const bool first = !op.cursor.started();
    const std::span<const std::byte> body = op.cursor.take(*rec, "ShmComm::recv");
    if (first && op.cursor.total() != op.in.size() && !op.error) {
      op.error = std::make_exception_ptr(Error(
          errc::size_mismatch, "ShmComm::recv from rank " + std::to_string(op.peer) +
                                   ": the message has " + std::to_string(op.cursor.total()) +
                                   " bytes, the receive expects " + std::to_string(op.in.size())));
    }
    if (!op.error && !op.orphaned && !body.empty()) {
      std::memcpy(op.in.data() + (op.cursor.done() - body.size()), body.data(), body.size());
    }
    ring->release();
    moved = true;
    if (op.cursor.complete()) op.complete = true;  // a wrong-sized message is consumed whole
  }
  if (moved) wake_peer(op.peer);
  return moved;
}

// Moves `op` on; a failure (no arena room for a new ring, a corrupt fragment) ends that
// operation with the error rather than escaping: progress() never throws, so a wait never
// leaves its doorbell registration behind or another operation half-done.
bool ShmComm::step(Op& op) noexcept {
  try {
    return op.is_send ? progress_send(op) : progress_recv(op);
  } catch (...) {
    if (!op.error) op.error = std::current_exception();
    op.complete = true;
    return true;
  }
}

// One pass over every peer's queues, oldest operation first. True when anything moved.
bool ShmComm::progress() noexcept {
  bool moved = false;
  for (int p = 0; p < n_; ++p) {
    auto& sq = sendq_[static_cast<std::size_t>(p)];
    while (!sq.empty()) {
      moved |= step(*sq.front());
      if (!sq.front()->complete) break;
      sq.pop_front();
      --queued_;
    }
    auto& rq = recvq_[static_cast<std::size_t>(p)];
    while (!rq.empty()) {
      moved |= step(*rq.front());
      if (!rq.front()->complete) break;
      rq.pop_front();
      --queued_;
    }
  }
  return moved;
}

// The deadline of a blocking call that starts now: RunOptions::call_timeout from now.
Deadline ShmComm::call_deadline() const noexcept {
  return call_timeout_.count() > 0 ? Deadline::after(call_timeout_) : Deadline::never();
}

// How a rank waits. With no more ranks than CPUs: spin briefly, then sleep on the futex.
// With more (oversubscribed), spinning would hold the CPU the awaited rank needs: the rank
// yields it instead (sched_yield) for about a millisecond, then sleeps. False when the
// deadline passed first.
template <class Ready, class Check>
bool ShmComm::await(EventCount& ec, const Deadline& deadline, Ready&& ready, Check&& check) {
  if (yield_) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
      ::sched_yield();
      if ((i & 15) == 0) {
        check();
        const auto now = std::chrono::steady_clock::now();
        if (!deadline.is_never() && now >= deadline.when()) return ready();
        if (now >= end) break;
      }
    }
    return ec.await(ready, deadline, WaitPolicy::block(), check);
  }
  return ec.await(ready, deadline, policy_, check);
}

// Error(errc::timeout): "<what>: call_timeout of 500 ms passed waiting for rank 1 (stopped)
// <state>".
void ShmComm::throw_timeout(const char* what, const std::vector<int>& peers,
                            const char* state) const {
  std::vector<bool> stopped;
  stopped.reserve(peers.size());
  for (int p : peers) {
    stopped.push_back(process_stopped(identity_pid(slot(p).id.load(std::memory_order_acquire))));
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(call_timeout_).count();
  std::string msg =
      std::string(what) + ": call_timeout of " + std::to_string(ms) + " ms passed waiting for ";
  msg += peers.empty() ? std::string("the other ranks") : rank_list(peers, stopped);
  if (*state != '\0') msg += std::string(" ") + state;
  throw Error(errc::timeout, msg);
}

// Fails the queued operations with peers that died (after one more pass: what they
// published before dying still counts).
void ShmComm::fail_dead_peers() {
  for (int p = 0; p < n_; ++p) {
    auto& sq = sendq_[static_cast<std::size_t>(p)];
    auto& rq = recvq_[static_cast<std::size_t>(p)];
    if ((sq.empty() && rq.empty()) || alive(p)) continue;
    (void)progress();
    for (auto* q : {&sq, &rq}) {
      for (Op* op : *q) {
        if (!op->complete) {
          op->error = std::make_exception_ptr(
              Error(errc::peer_dead, "ShmComm: rank " + std::to_string(p) + " has exited or died"));
          op->complete = true;
        }
      }
      queued_ -= q->size();
      q->clear();
    }
  }
}

void ShmComm::wait_ops(std::span<Op* const> ops, const char* what) {
  const auto done = [&] {
    return std::all_of(ops.begin(), ops.end(), [](const Op* o) { return o->complete; });
  };
  const Deadline deadline = call_deadline();
  for (;;) {
    (void)progress();
    if (done()) break;
    EventCount& bell = slot(rank_).doorbell;
    const bool woke = await(
        bell, deadline, [&] { return progress() || done(); }, [&] { fail_dead_peers(); });
    if (done()) break;
    if (!woke) {
      std::vector<int> peers;
      for (const Op* o : ops) {
        if (!o->complete) peers.push_back(o->peer);
      }
      std::sort(peers.begin(), peers.end());
      peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
      throw_timeout(what, peers, "");
    }
  }
  std::erase_if(orphans_, [](const std::unique_ptr<Op>& o) { return o->complete; });
  std::exception_ptr first;
  for (Op* o : ops) {
    if (o->error && !first) first = o->error;
  }
  if (first) std::rethrow_exception(first);
}

void ShmComm::orphan(Op& op) noexcept {
  auto& q = (op.is_send ? sendq_ : recvq_)[static_cast<std::size_t>(op.peer)];
  const auto it = std::find(q.begin(), q.end(), &op);
  if (it == q.end()) return;
  if (!op.started()) {
    q.erase(it);
    --queued_;
    return;
  }
  try {
    auto keep = std::make_unique<Op>();
    keep->orphaned = true;
    keep->is_send = op.is_send;
    keep->peer = op.peer;
    keep->writer = op.writer;
    keep->writer.orphan();  // the rest goes as zero bytes: the user's buffer may be gone
    keep->cursor = op.cursor;
    keep->error = op.error;
    *it = keep.get();
    orphans_.push_back(std::move(keep));
  } catch (...) {
    q.erase(it);  // out of memory: the stream of this pair is lost either way
    --queued_;
  }
}

Request ShmComm::post(bool is_send, int peer, std::span<const std::byte> out,
                      std::span<std::byte> in) {
  auto op = std::make_unique<Op>();
  op->owner = this;
  op->is_send = is_send;
  op->peer = peer;
  op->out = out;
  op->in = in;
  Op* raw = op.get();
  auto& q = (is_send ? sendq_ : recvq_)[static_cast<std::size_t>(peer)];
  // A send first in its queue moves at once as far as the ring allows (a halo that fits is
  // on its way while the sender computes). Receives wait for a wait: one dropped before
  // it must still be cancellable.
  if (is_send && q.empty()) (void)step(*raw);
  if (!raw->complete) {
    q.push_back(raw);
    ++queued_;
  }
  return Request(std::move(op));
}

// Blocking calls keep their operation on the stack: when nothing is queued before it and
// the ring has room (or the message is there), it completes without an allocation.
void ShmComm::run_blocking(Op& op, const char* what) {
  auto& q = (op.is_send ? sendq_ : recvq_)[static_cast<std::size_t>(op.peer)];
  if (q.empty()) {
    (void)step(op);
    if (op.complete) {
      if (op.error) std::rethrow_exception(op.error);
      return;
    }
  }
  q.push_back(&op);
  ++queued_;
  try {
    Op* one = &op;
    wait_ops(std::span(&one, 1), what);
  } catch (...) {
    // Never leave a pointer to this frame behind; a half-moved message is finished by the
    // comm (as for a dropped request), so that the pair's stream stays whole.
    if (!op.complete) orphan(op);
    queued_ -= std::erase(q, &op);
    throw;
  }
}

void ShmComm::send(int dest, std::span<const std::byte> data) {
  check_rank(dest, "ShmComm::send");
  Op op;
  op.is_send = true;
  op.peer = dest;
  op.out = data;
  run_blocking(op, "ShmComm::send");
}

void ShmComm::recv(int src, std::span<std::byte> data) {
  check_rank(src, "ShmComm::recv");
  Op op;
  op.peer = src;
  op.in = data;
  run_blocking(op, "ShmComm::recv");
}

Request ShmComm::isend(int dest, std::span<const std::byte> data) {
  check_rank(dest, "ShmComm::isend");
  return post(true, dest, data, {});
}

Request ShmComm::irecv(int src, std::span<std::byte> data) {
  check_rank(src, "ShmComm::irecv");
  return post(false, src, {}, data);
}

void ShmComm::complete(std::span<Request> requests) {
  std::vector<Op*> ops;
  std::vector<CollOp*> colls;
  ops.reserve(requests.size());
  try {
    for (Request& r : requests) {
      if (!r.valid()) continue;
      if (auto* op = dynamic_cast<Op*>(r.state()); op != nullptr && op->owner == this) {
        ops.push_back(op);
      } else if (auto* c = dynamic_cast<CollOp*>(r.state()); c != nullptr && c->owner == this) {
        colls.push_back(c);
      } else {
        throw Error(errc::invalid_argument,
                    "ShmComm::wait_all: a request made by another communicator");
      }
    }
    // Point-to-point first: a collective's arrival was made when it was posted, so no
    // rank's collective waits on this rank's point-to-point progress.
    std::exception_ptr first;
    try {
      wait_ops(ops, "ShmComm::wait_all");
    } catch (...) {
      first = std::current_exception();
    }
    for (CollOp* c : colls) {
      if (!c->done) finish_collective(*c);
      if (c->error && !first) first = c->error;
    }
    if (first) std::rethrow_exception(first);
  } catch (...) {
    for (Request& r : requests) r.reset();
    throw;
  }
  for (Request& r : requests) r.reset();
}

// ---- collectives ----
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
