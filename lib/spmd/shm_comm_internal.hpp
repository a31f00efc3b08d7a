// What ShmComm's files (shm_comm.cpp, shm_recv.cpp, shm_collectives.cpp, shm_exchange.cpp)
// share: a point-to-point operation, a kept-aside message, a collective's agreement and
// request, the round engine of the collectives, and the way a rank waits.
#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "../channel/fragment.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

// A communicator's ranks, in the world's numbers, and its context (the upper half of every
// message's tag word; 0 for the world).
struct ShmComm::Group {
  std::uint32_t context = 0;
  std::vector<int> ranks;  // this communicator's rank r is world rank ranks[r]
  std::vector<int> local;  // world rank -> this communicator's rank, -1 when not a member
  [[nodiscard]] bool has(int world_rank) const noexcept {
    return world_rank >= 0 && static_cast<std::size_t>(world_rank) < local.size() &&
           local[static_cast<std::size_t>(world_rank)] >= 0;
  }
  [[nodiscard]] int local_of(int world_rank) const noexcept {
    return has(world_rank) ? local[static_cast<std::size_t>(world_rank)] : world_rank;
  }
};

// A segment every rank of a communicator maps (share_segment): SharedWindow's memory, a
// sub-communicator's collective state.
struct ShmComm::Shared {
  std::unique_ptr<Segment> segment;  // null on a rank that opened none
  std::byte* base = nullptr;
};

// One posted send or receive. A request dropped without a wait leaves the pair's stream
// whole: not yet begun, it is taken out of its queue; begun, the comm finishes it by itself
// (the rest of a receive is discarded, the rest of a send goes as zero bytes). Every message
// starts with its tag (a u64 word), then the payload.
struct ShmComm::Op final : Request::State {
  ~Op() override {
    if (owner != nullptr && !complete) owner->orphan(*this);
  }
  ShmComm* owner = nullptr;  // set for posted requests (not for blocking calls' own ops)
  bool orphaned = false;     // owned by the comm: no user buffer behind it
  bool drain = false;        // the comm's own receive of a message no receive wanted yet
  bool is_send = false;
  // Ranks are the world's (the engine's); `group` tells the communicator's.
  int peer = 0;                           // send: the destination; receive: the source once bound
  int source = 0;                         // receive: the source asked for (or kAnySource)
  std::uint32_t context = 0;              // receive: the communicator's context
  const Group* group = nullptr;           // receive: its communicator (any-source: its members)
  std::shared_ptr<const Group> keep;      // a posted operation: keeps `group` alive
  int tag = 0;                            // send: the tag; receive: the tag asked for (or kAnyTag)
  int got_tag = -1;                       // receive: the tag of the message it takes
  std::uint64_t tag_word = 0;             // send: context << 32 | tag, as it goes on the wire
  std::uint32_t got_context = 0;          // a drain: the context of the message it keeps
  std::uint64_t arrival = 0;              // receive: when its message reached the head of its ring
  std::uint64_t bytes = 0;                // receive: the payload's size, once known
  Status* status = nullptr;               // receive: filled when it completes
  std::span<const std::byte> out;         // send
  std::span<std::byte> in;                // receive
  std::vector<std::byte> kept;            // drain: the payload so far
  ipckit::detail::FragmentWriter writer;  // send: started on its first progress
  ipckit::detail::FragmentCursor cursor{UINT64_MAX};  // receive: the fragments read so far
  bool complete = false;
  std::exception_ptr error;
  // A receive: whether it takes a message from world rank s with (context, tag t).
  [[nodiscard]] bool takes(int s, std::uint32_t ctx, int t) const noexcept {
    return ctx == context && (source == s || (source == kAnySource && group->has(s))) &&
           (tag == kAnyTag || tag == t);
  }
  // The communicator's number of a world rank (in a receive's errors and status).
  [[nodiscard]] int local(int world_rank) const noexcept {
    return group != nullptr ? group->local_of(world_rank) : world_rank;
  }
  // Whether part of the message has moved: the pair's stream now expects the rest.
  [[nodiscard]] bool started() const noexcept {
    return is_send ? writer.started() : cursor.started();
  }
};

// A message received before any receive or probe wanted it (kept aside, in arrival order).
struct ShmComm::Unexpected {
  std::uint32_t context = 0;
  int tag = 0;
  std::uint64_t arrival = 0;
  std::vector<std::byte> payload;
};

// Why a rank's own arguments to a collective are malformed: published in its slot, so that
// every rank throws Error(errc::invalid_argument) naming it.
enum class ShmComm::Bad : std::uint32_t {
  none,
  root_buffer,  // the root's buffer is not size() blocks
  buffer,       // a buffer is not size() blocks (allgather, alltoall)
  counts,       // counts/displs: not one per rank, or a block outside the buffer
  out_buffer,   // reduce_scatter: `out` is not counts[rank] elements
  in_buffer,    // reduce_scatter: `in` is not sum(counts) elements
  root,         // the root is outside [0, size())
  reduction,    // the element count does not fit the reduction's element size
  last = reduction
};

// What a rank passes to a collective, published in its slot and checked by every rank after
// the first barrier, in an order all ranks share, against rank 0's: any rank's Bad (then
// invalid_argument), the roots, the signatures (reduction, counts; invalid_argument), the
// sizes (size_mismatch) unless they may vary.
struct ShmComm::Agree {
  std::uint64_t size = 0;
  std::uint64_t sig = 0;
  int root = 0;
  bool rooted = false;  // the collective has a root (`root`, checked against [0, size()))
  Bad bad = Bad::none;
  bool varying = false;
};

// A posted non-blocking collective. The rank has written its part and arrived at the
// collective's barrier; the wait waits for the others, checks the agreement and runs
// `finish` (it reads the others' buffers). Dropped unwaited, it is finished by its
// destructor: the ranks' collectives stay in step.
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
  ShmComm* owner = nullptr;   // null once the comm is gone (and the request done)
  ShmComm* engine = nullptr;  // the owner's engine: which communicators may wait on it
  const char* what = "";
  Agree agree;
  std::function<void(unsigned parity)> finish;  // empty: ibarrier
  unsigned parity = 0;
  std::uint32_t gen = 0;  // the barrier's generation at this rank's arrival
  bool done = false;
  std::exception_ptr error;
};

namespace spmd::detail {

// a + b, or the largest value when that overflows (offsets a peer published may be garbage).
inline std::uint64_t add_sat(std::uint64_t a, std::uint64_t b) {
  return a > ~std::uint64_t{0} - b ? ~std::uint64_t{0} : a + b;
}

// Copies a stream's bytes [at, at + k) that exist (the stream has stream.size()) into a
// collective buffer.
inline void put(std::span<const std::byte> stream, std::uint64_t at, std::size_t k,
                std::byte* buf) {
  if (at >= stream.size()) return;
  std::memcpy(buf, stream.data() + at, std::min<std::uint64_t>(k, stream.size() - at));
}

// Takes from a rank's window (its stream's bytes [at, at + k), in its collective buffer) the
// part of [want, want + len) it holds, into dst (which stands for the stream's byte `want`).
inline void take(const std::byte* window, std::uint64_t at, std::size_t k, std::uint64_t want,
                 std::uint64_t len, std::byte* dst) {
  const std::uint64_t lo = std::max(at, want);
  const std::uint64_t hi = std::min(at + k, add_sat(want, len));
  if (lo < hi) std::memcpy(dst + (lo - want), window + (lo - at), hi - lo);
}

}  // namespace spmd::detail

// One collective as rounds through the collective buffers: each round, every rank writes its
// stream's next `unit` bytes (write(at, k, buf)), meets the others, and takes what it needs
// of their windows (read(at, k, parity)), until the `longest` stream is through. The
// agreement, then check(parity), are checked after the first meeting.
template <class Write, class Check, class Read>
void ShmComm::rounds(const char* what, const Agree& a, std::uint64_t longest, std::size_t unit,
                     Write&& write, Check&& check, Read&& read) {
  std::uint64_t at = 0;
  do {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(unit, longest - at));
    const unsigned parity = begin_collective(a, what);
    write(at, k, coll_buf(rank_, parity));
    meet(what);
    if (at == 0) {
      check_agreement(parity, a, what);
      check(parity);
    }
    read(at, k, parity);
    at += k;
  } while (at < longest);
}

// rounds() that returns at once when it fits one round: the rank writes and arrives, and the
// request's wait does the rest. Longer ones are done before it returns (a later round waited
// for in a wait could stall a peer's point-to-point exchange with this rank).
template <class Write, class Check, class Read>
Request ShmComm::post_rounds(const char* what, const Agree& a, std::uint64_t longest,
                             std::size_t unit, Write&& write, Check&& check, Read&& read) {
  auto c = std::make_unique<CollOp>();
  if (longest > unit) {
    // Its error is the wait's, as for the others (the collectives stay in step: every rank
    // threw at the same meeting).
    try {
      rounds(what, a, longest, unit, write, check, read);
    } catch (...) {
      c->error = std::current_exception();
    }
    c->done = true;
    c->owner = this;
    c->engine = engine_;
    return Request(std::move(c));
  }
  c->owner = this;
  c->engine = engine_;
  c->what = what;
  c->agree = a;
  c->parity = begin_collective(a, what);
  write(0, static_cast<std::size_t>(longest), coll_buf(rank_, c->parity));
  c->finish = [check, read, k = static_cast<std::size_t>(longest)](unsigned parity) mutable {
    check(parity);
    read(0, k, parity);
  };
  c->gen = arrive(what);
  outstanding_ = c.get();
  return Request(std::move(c));
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

}  // namespace ipckit
