// ShmComm (spmd::run is in run.cpp): construction, the send side and the requests. Everything
// the ranks share lives in one anonymous mapping made before the fork (nothing in /dev/shm;
// lib/spmd/shm_layout.hpp): the header with the collective barrier (arrival count and
// generation), one Slot per rank (its identity, the doorbell it sleeps on, its error text,
// what it passes to the current collective), the directory of point-to-point rings (offset
// of the ring from rank i to rank j, 0 until i first sends to j), two 64 KiB collective
// buffers per rank, and the arena where rings are made on first use.
// Point-to-point messages travel over ByteRings in fragments of at most 256 KiB (the fragment
// layer, lib/channel/fragment.hpp), each led by its tag word. Sends queue per peer; receives
// are matched by source and tag in shm_recv.cpp. Everything posted moves in every wait (and
// in every collective's wait); a rank with nothing to do sleeps on its doorbell, which a peer
// rings after publishing to it or freeing room in its ring. The collectives are in
// shm_collectives.cpp (barrier, reductions) and shm_exchange.cpp; SharedWindow's memory in
// shm_window.cpp.
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
#include <cstddef>
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
#include "shm_comm_internal.hpp"
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
using spmd::detail::CollSlot;
using spmd::detail::Header;
using spmd::detail::kCollBytes;
using spmd::detail::Slot;

using spmd::detail::process_stopped;
using spmd::detail::rank_list;

ShmComm::ShmComm(std::byte* base, int rank) : base_(base), rank_(rank) {
  h_ = reinterpret_cast<Header*>(base);
  n_ = h_->n;
  out_.resize(static_cast<std::size_t>(n_));
  in_.resize(static_cast<std::size_t>(n_));
  sendq_.resize(static_cast<std::size_t>(n_));
  bound_.resize(static_cast<std::size_t>(n_));
  drains_.resize(static_cast<std::size_t>(n_));
  unexpected_.resize(static_cast<std::size_t>(n_));
  fragment_bytes_ =
      std::min<std::size_t>(ByteRing::max_message_for(h_->ring_bytes), std::size_t{1} << 18);
  policy_ = WaitPolicy::hybrid();
  policy_.spin = std::chrono::nanoseconds(h_->spin_ns);
  yield_ = h_->oversubscribed != 0;
  call_timeout_ = std::chrono::nanoseconds(
      static_cast<std::int64_t>(std::min<std::uint64_t>(h_->call_timeout_ns, INT64_MAX)));
  auto g = std::make_shared<Group>();
  g->ranks.resize(static_cast<std::size_t>(n_));
  for (int r = 0; r < n_; ++r) g->ranks[static_cast<std::size_t>(r)] = r;
  g->local = g->ranks;
  group_ = std::move(g);
  coll_ = &h_->coll;
  cslots_ = base_ + h_->slots_at + offsetof(Slot, coll);
  cslot_stride_ = sizeof(Slot);
  bufs_ = base_ + h_->coll_buf_at;
}

ShmComm::ShmComm(ShmComm& parent, std::shared_ptr<const Group> group, int rank,
                 std::unique_ptr<Segment> segment, std::byte* at)
    : base_(parent.base_),
      h_(parent.h_),
      rank_(rank),
      n_(static_cast<int>(group->ranks.size())),
      engine_(parent.engine_),
      group_(std::move(group)),
      segment_(std::move(segment)),
      fragment_bytes_(parent.fragment_bytes_),
      policy_(parent.policy_),
      yield_(parent.yield_),
      call_timeout_(parent.call_timeout_) {
  const auto l = spmd::detail::SubLayout::of(n_);
  coll_ = reinterpret_cast<Coll*>(at);
  cslots_ = at + l.slots_at;
  cslot_stride_ = sizeof(CollSlot);
  bufs_ = at + l.bufs_at;
}

ShmComm::~ShmComm() {
  // Requests may outlive the comm: they must not call back into it (a request done before
  // keeps its pointer, but nothing reads it once done). While the rank unwinds an exception
  // the collective in flight is not waited for (as ~CollOp does).
  if (outstanding_ != nullptr) {
    CollOp* c = outstanding_;
    if (std::uncaught_exceptions() > 0) {
      abandon_collective(*c);
    } else {
      finish_collective(*c);
    }
    c->owner = nullptr;
  }
  for (auto& q : sendq_) {
    for (Op* op : q) op->owner = nullptr;
  }
  for (Op* op : posted_) op->owner = nullptr;
  for (Op* op : bound_) {
    if (op != nullptr) op->owner = nullptr;
  }
}

Slot& ShmComm::slot(int world_rank) const noexcept {
  return reinterpret_cast<Slot*>(base_ + h_->slots_at)[world_rank];
}
CollSlot& ShmComm::cslot(int r) const noexcept {
  return *reinterpret_cast<CollSlot*>(cslots_ + static_cast<std::size_t>(r) * cslot_stride_);
}
int ShmComm::world(int r) const noexcept { return group_->ranks[static_cast<std::size_t>(r)]; }
int ShmComm::me() const noexcept { return engine_->rank_; }
std::atomic<std::uint64_t>& ShmComm::dir(int from, int to) const noexcept {
  auto* d = reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + h_->dir_at);
  return d[static_cast<std::size_t>(from) * static_cast<std::size_t>(n_) +
           static_cast<std::size_t>(to)];
}
std::byte* ShmComm::coll_buf(int r, unsigned parity) const noexcept {
  return bufs_ + (static_cast<std::size_t>(r) * 2 + parity) * kCollBytes;
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

// After moving data to or from `peer`: wakes it, in a point-to-point wait or in a collective
// with operations queued (both sleep on its doorbell).
void ShmComm::wake_peer(int peer) noexcept { slot(peer).doorbell.notify_all(); }

// Moves as much of `op` as the ring allows now. True when anything moved.
bool ShmComm::progress_send(Op& op) {
  ByteRing& ring = out_ring(op.peer);
  if (!op.writer.active()) op.writer.start({std::as_bytes(std::span(&op.tag_word, 1)), op.out});
  const bool moved =
      op.writer.write(ring, fragment_bytes_, ipckit::detail::FragmentWriter::Mode::commit);
  if (op.writer.done()) op.complete = true;
  if (moved) wake_peer(op.peer);
  return moved;
}

// Moves `op` on; a failure (no arena room for a new ring, a corrupt fragment) ends that
// operation with the error rather than escaping: progress() never throws, so a wait never
// leaves its doorbell registration behind or another operation half-done.
bool ShmComm::step(Op& op) noexcept {
  try {
    return progress_send(op);  // receives move through progress_source()
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
  }
  if (!posted_.empty() || bound_count_ != 0 || probing_ != kNotProbing) {
    for (int p = 0; p < n_; ++p) moved |= progress_source(p);
  }
  return moved;
}

// The deadline of a blocking call that starts now: RunOptions::call_timeout from now.
Deadline ShmComm::call_deadline() const noexcept {
  return call_timeout_.count() > 0 ? Deadline::after(call_timeout_) : Deadline::never();
}

// Error(errc::timeout): "<what>: call_timeout of 500 ms passed waiting for rank 1 (stopped)
// <state>".
void ShmComm::throw_timeout(const char* what, const std::vector<int>& peers, const Group& g,
                            const char* state) const {
  std::vector<bool> stopped;
  std::vector<int> named;
  stopped.reserve(peers.size());
  for (int p : peers) {
    stopped.push_back(process_stopped(identity_pid(slot(p).id.load(std::memory_order_acquire))));
    named.push_back(g.local_of(p));
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(call_timeout_).count();
  std::string msg =
      std::string(what) + ": call_timeout of " + std::to_string(ms) + " ms passed waiting for ";
  msg += peers.empty() ? std::string("the other ranks") : rank_list(named, stopped);
  if (*state != '\0') msg += std::string(" ") + state;
  throw Error(errc::timeout, msg);
}

// Error(errc::peer_dead) for `op`, naming world rank p in its communicator's numbers.
std::exception_ptr ShmComm::dead_error(const Op& op, int p) noexcept {
  try {
    return std::make_exception_ptr(Error(
        errc::peer_dead, "ShmComm: rank " + std::to_string(op.local(p)) + " has exited or died"));
  } catch (...) {  // out of memory for the text
    return std::current_exception();
  }
}

// True when a rank of `g` other than this one is alive.
bool ShmComm::others_alive(const Group& g) const noexcept {
  return std::any_of(g.ranks.begin(), g.ranks.end(), [&](int r) { return r != rank_ && alive(r); });
}

// Fails the queued operations with peers that died (after one more pass: what they
// published before dying still counts).
void ShmComm::fail_dead_peers() {
  for (int p = 0; p < n_; ++p) {
    auto& sq = sendq_[static_cast<std::size_t>(p)];
    const bool receiving =
        bound_[static_cast<std::size_t>(p)] != nullptr ||
        std::any_of(posted_.begin(), posted_.end(), [&](const Op* o) {
          return o->source == p ||
                 (o->source == kAnySource && o->group->has(p) && !others_alive(*o->group));
        });
    if ((sq.empty() && !receiving) || alive(p)) continue;
    // What the dead rank sent before it died still arrives: its ring is read to the end
    // (each pass keeps aside at most one message no receive wants yet).
    (void)progress();
    while (progress_source(p)) {
    }
    for (Op* op : sq) {
      if (!op->complete) {
        op->error = dead_error(*op, p);
        op->complete = true;
      }
    }
    queued_ -= sq.size();
    sq.clear();
    fail_receives(p, nullptr, true);
  }
}

void ShmComm::wait_ops(std::span<Op* const> ops, const char* what, const Group* naming) {
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
      const Group* g = naming;  // the waiting communicator's numbers (else the first op's)
      for (const Op* o : ops) {
        if (o->complete) continue;
        if (g == nullptr) g = o->group;
        if (o->peer >= 0) {
          peers.push_back(o->peer);
        } else {  // an any-source receive not bound yet: it waits on every other member
          for (int r : o->group->ranks) {
            if (r != rank_) peers.push_back(r);
          }
        }
      }
      std::sort(peers.begin(), peers.end());
      peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
      throw_timeout(what, peers, g != nullptr ? *g : *group_, "");
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
  if (!op.is_send) {
    orphan_receive(op);
    return;
  }
  auto& q = sendq_[static_cast<std::size_t>(op.peer)];
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
    keep->is_send = true;
    keep->peer = op.peer;
    keep->writer = op.writer;
    keep->writer.orphan();  // the rest goes as zero bytes: the user's buffer may be gone
    keep->error = op.error;
    *it = keep.get();
    orphans_.push_back(std::move(keep));
  } catch (...) {
    q.erase(it);  // out of memory: the stream of this pair is lost either way
    --queued_;
  }
}

// On the engine: posts an operation of the communicator `group` (peer and tag_word on the
// wire: world rank, context and tag).
Request ShmComm::post(bool is_send, int peer, int tag, std::uint64_t tag_word,
                      std::span<const std::byte> out, std::span<std::byte> in, Status* status,
                      const std::shared_ptr<const Group>& group) {
  auto op = std::make_unique<Op>();
  op->owner = this;
  op->is_send = is_send;
  op->peer = peer;
  op->source = peer;
  op->tag = tag;
  op->tag_word = tag_word;
  op->context = group->context;
  op->group = group.get();
  op->keep = group;
  op->status = status;
  op->out = out;
  op->in = in;
  Op* raw = op.get();
  if (!is_send) {
    post_receive(*raw);
    return Request(std::move(op));
  }
  auto& q = sendq_[static_cast<std::size_t>(peer)];
  // A send first in its queue moves at once as far as the ring allows (a halo that fits is
  // on its way while the sender computes). Receives wait for a wait: one dropped before
  // it must still be cancellable.
  if (q.empty()) (void)step(*raw);
  if (!raw->complete) {
    q.push_back(raw);
    ++queued_;
  }
  return Request(std::move(op));
}

// Blocking calls keep their operation on the stack: when nothing is queued before it and
// the ring has room (or the message is there), it completes without an allocation.
void ShmComm::run_blocking(Op& op, const char* what) {
  if (!op.is_send) {
    post_receive(op);
    if (op.complete) {
      if (op.error) std::rethrow_exception(op.error);
      return;
    }
  } else {
    auto& q = sendq_[static_cast<std::size_t>(op.peer)];
    if (q.empty()) {
      (void)step(op);
      if (op.complete) {
        if (op.error) std::rethrow_exception(op.error);
        return;
      }
    }
    q.push_back(&op);
    ++queued_;
  }
  try {
    Op* one = &op;
    wait_ops(std::span(&one, 1), what, op.group);
  } catch (...) {
    // Never leave a pointer to this frame behind; a half-moved message is finished by the
    // comm (as for a dropped request), so that the pair's stream stays whole.
    if (!op.complete) orphan(op);
    if (op.is_send) {
      queued_ -= std::erase(sendq_[static_cast<std::size_t>(op.peer)], &op);
    } else {
      std::erase(posted_, &op);
    }
    throw;
  }
}

// The tag word of this communicator's message with `tag`.
std::uint64_t ShmComm::wire(int tag) const noexcept {
  return std::uint64_t{group_->context} << 32 | static_cast<std::uint32_t>(tag);
}

// A source as the engine knows it: the world rank, or kAnySource.
int ShmComm::world_source(int src) const noexcept { return src == kAnySource ? src : world(src); }

void ShmComm::send(int dest, std::span<const std::byte> data, int tag) {
  check_rank(dest, "ShmComm::send");
  check_tag(tag, false, "ShmComm::send");
  Op op;
  op.is_send = true;
  op.peer = world(dest);
  op.tag = tag;
  op.tag_word = wire(tag);
  op.group = group_.get();
  op.out = data;
  engine_->run_blocking(op, "ShmComm::send");
}

Status ShmComm::recv(int src, std::span<std::byte> data, int tag) {
  check_source(src, "ShmComm::recv");
  check_tag(tag, true, "ShmComm::recv");
  Status got;
  Op op;
  op.peer = world_source(src);
  op.source = op.peer;
  op.tag = tag;
  op.context = group_->context;
  op.group = group_.get();
  op.in = data;
  op.status = &got;
  engine_->run_blocking(op, "ShmComm::recv");
  return got;
}

Request ShmComm::isend(int dest, std::span<const std::byte> data, int tag) {
  check_rank(dest, "ShmComm::isend");
  check_tag(tag, false, "ShmComm::isend");
  return engine_->post(true, world(dest), tag, wire(tag), data, {}, nullptr, group_);
}

Request ShmComm::irecv(int src, std::span<std::byte> data, int tag, Status* status) {
  check_source(src, "ShmComm::irecv");
  check_tag(tag, true, "ShmComm::irecv");
  return engine_->post(false, world_source(src), tag, 0, {}, data, status, group_);
}

// Requests this communicator may complete: any of its family's (they share the engine).
bool ShmComm::owns(const Op& op) const noexcept { return op.owner == engine_; }
bool ShmComm::owns(const CollOp& op) const noexcept { return op.engine == engine_; }

void ShmComm::complete(std::span<Request> requests) {
  std::vector<Op*> ops;
  std::vector<CollOp*> colls;
  ops.reserve(requests.size());
  try {
    for (Request& r : requests) {
      if (!r.valid()) continue;
      if (auto* op = dynamic_cast<Op*>(r.state()); op != nullptr && owns(*op)) {
        ops.push_back(op);
      } else if (auto* c = dynamic_cast<CollOp*>(r.state()); c != nullptr && owns(*c)) {
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
      engine_->wait_ops(ops, "ShmComm::wait_all", group_.get());
    } catch (...) {
      first = std::current_exception();
    }
    for (CollOp* c : colls) {
      if (!c->done) c->owner->finish_collective(*c);
      if (c->error && !first) first = c->error;
    }
    if (first) std::rethrow_exception(first);
  } catch (...) {
    for (Request& r : requests) r.reset();
    throw;
  }
  for (Request& r : requests) r.reset();
}

// One pass for test/wait_any/wait_some: moves the queued operations, fails those with a
// dead peer, and says which requests are done. A collective is done once every rank has
// arrived (its reading is left to complete()), or when a rank died (complete() reports it).
void ShmComm::poll(std::span<Request* const> requests, std::vector<bool>& done) {
  (void)engine_->progress();
  engine_->fail_dead_peers();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Request::State* s = requests[i]->state();
    if (auto* op = dynamic_cast<Op*>(s); op != nullptr && owns(*op)) {
      done[i] = op->complete;
    } else if (auto* c = dynamic_cast<CollOp*>(s); c != nullptr && owns(*c)) {
      if (c->done) {  // its owner may be gone
        done[i] = true;
        continue;
      }
      const ShmComm& o = *c->owner;  // not done: in flight, so its comm lives
      bool dead = false;
      for (int r = 0; r < o.n_; ++r) dead = dead || !alive(o.world(r));
      done[i] = o.coll_->generation.load(std::memory_order_acquire) != c->gen || dead;
    } else {
      throw Error(errc::invalid_argument, "ShmComm::test: a request made by another communicator");
    }
  }
}

}  // namespace ipckit
