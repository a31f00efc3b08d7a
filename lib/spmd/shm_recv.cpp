// ShmComm's receive side: messages matched to receives by source and tag. Each pair of
// ranks has one ring, in the order the sender sent. The head message of a ring goes to the
// earliest posted receive that matches its source and tag; when none does but a receive or
// a probe wants something from that source, the head is received into memory ("kept aside",
// per source in arrival order) so that what is behind it can be reached. A new receive
// takes the earliest kept message it matches before anything else. A ring no receive and no
// probe wants from is not touched: its sender is held back by the ring's room, as before.
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "ipckit/spmd/shm_comm.hpp"
#include "shm_comm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {
namespace {

using ipckit::detail::kFragmentHeader;
constexpr std::uint64_t kTagBytes = 8;

struct Head {
  std::uint64_t total = 0;  // the tag word and the payload
  std::uint32_t context = 0;
  int tag = 0;
};

// The total and tag of the message whose first record is `rec`: words a peer wrote, checked.
Head head_of(std::span<const std::byte> rec) {
  if (rec.size() < kFragmentHeader + kTagBytes) {
    throw Error(errc::bad_frame, "ShmComm: a message's first record has no room for its tag");
  }
  std::uint64_t total = 0;
  std::uint64_t tag = 0;
  std::memcpy(&total, rec.data(), sizeof total);
  std::memcpy(&tag, rec.data() + kFragmentHeader, sizeof tag);
  // The context (any: a message for a communicator this rank never made is kept aside, like
  // one with a tag nobody asks for), then the tag.
  const auto context = static_cast<std::uint32_t>(tag >> 32);
  tag &= 0xffffffffU;
  if (total < kTagBytes || tag > static_cast<std::uint64_t>(kMaxTag)) {
    throw Error(errc::bad_frame, "ShmComm: a message of " + std::to_string(total) +
                                     " bytes with tag " + std::to_string(tag));
  }
  return {total, context, static_cast<int>(tag)};
}

// Marks the source a probe looks at (so that progress keeps aside what no receive wants
// from it), for the probe's length; nested probes restore the outer one's.
class Probing {
 public:
  Probing(int& probing, int src) : probing_(probing), before_(probing) { probing = src; }
  ~Probing() { probing_ = before_; }
  Probing(const Probing&) = delete;
  Probing& operator=(const Probing&) = delete;

 private:
  int& probing_;
  int before_;
};

Error size_error(int from, std::uint64_t has, std::size_t expects) {
  return Error(errc::size_mismatch, "ShmComm::recv from rank " + std::to_string(from) +
                                        ": the message has " + std::to_string(has) +
                                        " bytes, the receive expects " + std::to_string(expects));
}

}  // namespace

bool ShmComm::wanted(int s) const noexcept {
  if (probing_ == kAnySource || probing_ == s) return true;
  return std::any_of(posted_.begin(), posted_.end(), [s](const Op* o) {
    return o->source == s || (o->source == kAnySource && o->group->has(s));
  });
}

ShmComm::Op* ShmComm::match_posted(int s, std::uint32_t context, int tag) const noexcept {
  for (Op* o : posted_) {
    if (o->takes(s, context, tag)) return o;
  }
  return nullptr;
}

// A new receive takes the earliest message kept aside that it matches; otherwise it waits
// in posted_ (nothing moves before a wait: a receive dropped first is simply withdrawn).
void ShmComm::post_receive(Op& op) {
  if (take_unexpected(op)) return;
  posted_.push_back(&op);
}

// Gives `op` the earliest message it matches among those kept aside and those being kept
// right now (a drain in flight is later than every kept message of its source): a kept one
// completes it; a drain in flight is adopted (its bytes so far copied, the rest streamed
// into the receive). False when there is none.
bool ShmComm::take_unexpected(Op& op) {
  const Kept k = find_kept(op.source, op.tag, op.context, *op.group);
  if (k.source < 0) return false;
  if (k.draining) {
    adopt_drain(op, k.source);
    return true;
  }
  const int from = k.source;
  auto& queue = unexpected_[static_cast<std::size_t>(from)];
  const auto best = queue.begin() + static_cast<std::ptrdiff_t>(k.index);
  op.peer = from;
  op.got_tag = best->tag;
  op.bytes = best->payload.size();
  if (best->payload.size() != op.in.size()) {
    op.error =
        std::make_exception_ptr(size_error(op.local(from), best->payload.size(), op.in.size()));
  } else if (!op.in.empty()) {
    std::memcpy(op.in.data(), best->payload.data(), op.in.size());
  }
  queue.erase(best);
  op.complete = true;
  finish_receive(op);
  return true;
}

// `op` takes over source s's drain in flight: what came so far is copied, the rest of the
// message streams into it.
void ShmComm::adopt_drain(Op& op, int s) {
  const auto i = static_cast<std::size_t>(s);
  Op& d = *drains_[i];
  op.peer = s;
  op.got_tag = d.got_tag;
  op.arrival = d.arrival;
  op.bytes = d.bytes;
  op.cursor = d.cursor;
  if (d.bytes != op.in.size()) {
    op.error = std::make_exception_ptr(size_error(op.local(s), d.bytes, op.in.size()));
  } else if (!d.kept.empty()) {
    std::memcpy(op.in.data(), d.kept.data(), d.kept.size());
  }
  bound_[i] = &op;
  drains_[i].reset();
}

// After a message was kept aside: the posted receives, in posting order, take what they
// match.
void ShmComm::deliver_unexpected() noexcept {
  for (auto it = posted_.begin(); it != posted_.end();) {
    Op* o = *it;
    bool took = false;
    try {
      took = take_unexpected(*o);
    } catch (...) {
      o->error = std::current_exception();
      o->complete = true;
      took = true;
    }
    it = took ? posted_.erase(it) : it + 1;
  }
}

void ShmComm::finish_receive(Op& op) noexcept {
  if (op.status != nullptr) *op.status = Status{op.local(op.peer), op.got_tag, op.bytes};
}

// Moves the records of ring s's current message into `op` (a receive, or a drain).
bool ShmComm::stream(Op& op, ByteRing& ring) {
  bool moved = false;
  while (!op.complete) {
    auto rec = ring.try_peek();
    if (!rec) break;
    const bool first = !op.cursor.started();
    const std::span<const std::byte> body = op.cursor.take(*rec, "ShmComm::recv");
    const std::uint64_t end = op.cursor.done();
    const std::uint64_t begin = end - body.size();
    if (first) {
      op.bytes = op.cursor.total() - kTagBytes;  // head_of checked total >= kTagBytes
      if (!op.drain && op.bytes != op.in.size() && !op.error) {
        op.error = std::make_exception_ptr(size_error(op.local(op.peer), op.bytes, op.in.size()));
      }
    }
    // The payload's part of the message bytes [begin, end) (the tag word comes first).
    const std::uint64_t from = std::max(begin, kTagBytes);
    if (from < end) {
      const std::byte* src = body.data() + (from - begin);
      const auto k = static_cast<std::size_t>(end - from);
      if (op.drain) {
        op.kept.insert(op.kept.end(), src, src + k);
      } else if (!op.error && !op.orphaned) {
        std::memcpy(op.in.data() + (from - kTagBytes), src, k);
      }
    }
    ring.release();
    moved = true;
    if (op.cursor.complete()) op.complete = true;  // a wrong-sized message is consumed whole
  }
  return moved;
}

// Moves source s's ring on; true when a record was taken. A record that breaks the format
// fails the receives it reaches but is not taken (it cannot be): false then, so that a loop
// over passes ends, and a wait on a receive it did not fail still reaches its deadline.
bool ShmComm::progress_source(int s) noexcept {
  const auto i = static_cast<std::size_t>(s);
  if (bound_[i] == nullptr && !wanted(s)) return false;
  ByteRing* ring = nullptr;
  try {
    ring = in_ring(s);
  } catch (...) {
    fail_receives(s, std::current_exception(), false);
    return false;
  }
  if (ring == nullptr) return false;
  bool moved = false;
  for (;;) {
    Op* op = bound_[i];
    if (op == nullptr) {
      if (!wanted(s)) break;
      const auto rec = ring->try_peek();
      if (!rec) break;
      try {
        const Head h = head_of(*rec);
        op = match_posted(s, h.context, h.tag);
        if (op != nullptr) {
          posted_.erase(std::find(posted_.begin(), posted_.end(), op));
        } else {  // nobody wants it yet: kept aside, so that what is behind it can be reached
          drains_[i] = std::make_unique<Op>();
          op = drains_[i].get();
          op->drain = true;
          op->source = s;
          op->got_context = h.context;
        }
        op->peer = s;
        op->got_tag = h.tag;
        op->arrival = ++arrivals_;
      } catch (...) {
        fail_receives(s, std::current_exception(), false);
        break;
      }
      bound_[i] = op;
      ++bound_count_;
    }
    try {
      moved |= stream(*op, *ring);
    } catch (...) {  // a record that breaks the format: the message is lost
      if (!op->error) op->error = std::current_exception();
      op->complete = true;
    }
    if (!op->complete) break;
    bound_[i] = nullptr;
    --bound_count_;
    if (op->drain) {
      if (!op->error) {
        try {
          unexpected_[i].push_back(
              Unexpected{op->got_context, op->got_tag, op->arrival, std::move(op->kept)});
        } catch (...) {  // out of memory: the message is lost, and so is the pair's order
          drains_[i].reset();
          fail_receives(s, std::current_exception(), false);
          break;
        }
      }
      drains_[i].reset();
      deliver_unexpected();
      // At most one message kept aside per source and pass: a sender that never stops cannot
      // hold this rank here (its own sends, other sources, a probe's look wait for it).
      break;
    }
    finish_receive(*op);
  }
  if (moved) wake_peer(s);
  return moved;
}

// Ends the receives that wait on source s (and, when s is dead, the any-source ones with no
// other member left) with `error` (dead: peer_dead): s is dead, or its ring cannot be read.
void ShmComm::fail_receives(int s, const std::exception_ptr& error, bool dead) noexcept {
  const auto error_of = [&](const Op& o) { return dead ? dead_error(o, s) : error; };
  for (auto it = posted_.begin(); it != posted_.end();) {
    Op* o = *it;
    // An any-source receive fails once no other member of its communicator is left.
    if (o->source == s ||
        (dead && o->source == kAnySource && o->group->has(s) && !others_alive(*o->group))) {
      o->error = error_of(*o);
      o->complete = true;
      it = posted_.erase(it);
    } else {
      ++it;
    }
  }
  const auto i = static_cast<std::size_t>(s);
  if (Op* o = bound_[i]; o != nullptr) {
    o->error = error_of(*o);
    o->complete = true;
    bound_[i] = nullptr;
    --bound_count_;
    if (o->drain) drains_[i].reset();
  }
}

// A receive dropped before its wait: withdrawn when no message is bound to it; otherwise
// the comm takes the rest of its message and discards it, so the pair's stream stays whole.
void ShmComm::orphan_receive(Op& op) noexcept {
  if (const auto it = std::find(posted_.begin(), posted_.end(), &op); it != posted_.end()) {
    posted_.erase(it);
    return;
  }
  for (std::size_t i = 0; i < bound_.size(); ++i) {
    if (bound_[i] != &op) continue;
    try {
      auto keep = std::make_unique<Op>();
      keep->orphaned = true;
      keep->peer = op.peer;
      keep->source = op.source;
      keep->got_tag = op.got_tag;
      keep->bytes = op.bytes;
      keep->cursor = op.cursor;
      keep->error = op.error;
      bound_[i] = keep.get();
      orphans_.push_back(std::move(keep));
    } catch (...) {  // out of memory: the stream of this pair is lost either way
      bound_[i] = nullptr;
      --bound_count_;
    }
    return;
  }
}

// The earliest message that (src, tag) matches among those kept aside and those being kept
// right now (a drain in flight is later than every kept message of its source).
ShmComm::Kept ShmComm::find_kept(int src, int tag, std::uint32_t context, const Group& g) const {
  Kept k;
  std::uint64_t first = ~std::uint64_t{0};
  for (int s = 0; s < n_; ++s) {
    if (src == kAnySource ? !g.has(s) : src != s) continue;
    const auto i = static_cast<std::size_t>(s);
    const auto& q = unexpected_[i];
    const auto it = std::find_if(q.begin(), q.end(), [&](const Unexpected& u) {
      return u.context == context && (tag == kAnyTag || tag == u.tag);
    });
    if (it != q.end()) {
      if (it->arrival < first) {
        first = it->arrival;
        k = Kept{s, false, static_cast<std::size_t>(it - q.begin())};
      }
      continue;
    }
    const Op* d = drains_[i].get();
    if (d != nullptr && bound_[i] == d && d->got_context == context &&
        (tag == kAnyTag || tag == d->got_tag) && d->arrival < first) {
      first = d->arrival;
      k = Kept{s, true, 0};
    }
  }
  return k;
}

// The earliest message kept aside (or being kept) that matches, without taking it; the
// source in world ranks.
std::optional<Status> ShmComm::look(int src, int tag, std::uint32_t context, const Group& g) const {
  const Kept k = find_kept(src, tag, context, g);
  if (k.source < 0) return std::nullopt;
  const auto i = static_cast<std::size_t>(k.source);
  if (k.draining) return Status{k.source, drains_[i]->got_tag, drains_[i]->bytes};
  const Unexpected& u = unexpected_[i][k.index];
  return Status{k.source, u.tag, u.payload.size()};
}

std::optional<Status> ShmComm::iprobe(int src, int tag) {
  check_source(src, "ShmComm::iprobe");
  check_tag(tag, true, "ShmComm::iprobe");
  ShmComm& e = *engine_;
  const int from = world_source(src);
  const Probing restore(e.probing_, from);
  (void)e.progress();  // heads no receive wants are kept aside: the probe looks past them
  std::optional<Status> found = e.look(from, tag, group_->context, *group_);
  if (found) found->source = group_->local_of(found->source);
  return found;
}

Status ShmComm::probe(int src, int tag) {
  check_source(src, "ShmComm::probe");
  check_tag(tag, true, "ShmComm::probe");
  ShmComm& e = *engine_;
  const Group& g = *group_;
  const int from = world_source(src);
  const Probing restore(e.probing_, from);
  std::optional<Status> found;
  const auto ready = [&] {
    (void)e.progress();
    found = e.look(from, tag, g.context, g);
    return found.has_value();
  };
  const auto result = [&] { return Status{g.local_of(found->source), found->tag, found->bytes}; };
  if (ready()) return result();
  const Deadline deadline = call_deadline();
  const int self = e.rank_;
  for (;;) {
    const bool woke = await(e.slot(self).doorbell, deadline, ready, [&] {
      bool gone = true;
      for (int r : g.ranks) {
        if ((from == kAnySource ? r != self : r == from) && e.alive(r)) gone = false;
      }
      // This rank's own messages to itself still count.
      if (from == self ||
          (from == kAnySource && !e.sendq_[static_cast<std::size_t>(self)].empty())) {
        gone = false;
      }
      if (gone && !ready()) {
        throw Error(errc::peer_dead,
                    from == kAnySource
                        ? std::string("ShmComm::probe: every other rank has gone")
                        : "ShmComm::probe: rank " + std::to_string(src) + " has exited or died");
      }
    });
    if (found) return result();
    if (!woke) {
      std::vector<int> peers;
      for (int r : g.ranks) {
        if (from == r || (from == kAnySource && r != self)) peers.push_back(r);
      }
      e.throw_timeout("ShmComm::probe", peers, g, "");
    }
  }
}

}  // namespace ipckit
