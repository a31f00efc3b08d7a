// Test bodies for Comm::split, Comm::dup and CartComm::sub, for every Comm backend (the
// conventions of comm_bodies.hpp): the new communicators' ranks and order, their
// collectives and messages, and that none of them ever meets another communicator's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "comm_bodies.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/comm.hpp"
#include "ipckit/spmd/shared_window.hpp"

namespace ipckit::testing::bodies {

inline std::span<const std::byte> bytes_of(const std::int64_t& v) {
  return std::as_bytes(std::span(&v, 1));
}
inline std::span<std::byte> bytes_of(std::int64_t& v) {
  return std::as_writable_bytes(std::span(&v, 1));
}

// Split by parity with keys that reverse the order: ranks, sizes, collectives over the
// members only, and messages whose tag and pair equal the parent's, taken in the opposite
// order from the parent's (so they cannot share a stream).
inline void split_by_parity(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  std::unique_ptr<Comm> s = c.split(r % 2, -r);
  SPMD_CHECK(c, s != nullptr);
  std::vector<int> mates;  // parent ranks of the new communicator, in its order
  for (int q = p - 1; q >= 0; --q) {
    if (q % 2 == r % 2) mates.push_back(q);
  }
  const auto n = static_cast<int>(mates.size());
  SPMD_CHECK(c, s->size() == n);
  const int me = s->rank();
  SPMD_CHECK(c, me >= 0 && me < n && mates[static_cast<std::size_t>(me)] == r);

  // Collectives see the members only, in the new order.
  const std::vector<std::int64_t> all = s->allgather(static_cast<std::int64_t>(r));
  for (int i = 0; i < n; ++i) {
    SPMD_CHECK(c, all[static_cast<std::size_t>(i)] == mates[static_cast<std::size_t>(i)]);
  }
  const std::int64_t sum = std::accumulate(mates.begin(), mates.end(), std::int64_t{0});
  SPMD_CHECK(c, s->allreduce(static_cast<std::int64_t>(r), ReduceOp::sum) == sum);
  SPMD_CHECK(c, s->broadcast(static_cast<std::int64_t>(r * 10), n - 1) == mates.back() * 10);
  SPMD_CHECK(c, s->scan(std::int64_t{1}, ReduceOp::sum) == me + 1);
  const std::vector<std::int64_t> got = s->gather(static_cast<std::int64_t>(me), 0);
  if (me == 0) {
    for (int i = 0; i < n; ++i) SPMD_CHECK(c, got[static_cast<std::size_t>(i)] == i);
  }
  // Collectives on the parent between the sub-communicator's still see every rank.
  SPMD_CHECK(c, c.allreduce(std::int64_t{1}, ReduceOp::sum) == p);
  s->barrier();

  // The same pair and tag on both: the parent's message is sent first, the sub's taken
  // first.
  if (n >= 2) {
    const int to = (me + 1) % n;
    const int from = (me + n - 1) % n;
    const int to_parent = mates[static_cast<std::size_t>(to)];
    const int from_parent = mates[static_cast<std::size_t>(from)];
    const std::int64_t a = 1000 + r;
    const std::int64_t b = 2000 + r;
    Request sends[2] = {c.isend(to_parent, bytes_of(a), 3), s->isend(to, bytes_of(b), 3)};
    std::int64_t got_b = 0;
    std::int64_t got_a = 0;
    const Status sb = s->recv(from, bytes_of(got_b), 3);
    const Status sa = c.recv(from_parent, bytes_of(got_a), 3);
    c.wait_all(std::span(&sends[0], 1));
    s->wait_all(std::span(&sends[1], 1));
    SPMD_CHECK(c, got_b == 2000 + from_parent && got_a == 1000 + from_parent);
    SPMD_CHECK(c, sb.source == from && sb.tag == 3 && sb.bytes == 8);
    SPMD_CHECK(c, sa.source == from_parent);
  }
  s->barrier();

  // Any-source and probe on the sub-communicator: only members, in its numbering, while a
  // non-member (parent rank 1) first sends the parent's same tag to the same rank.
  const int even0 = (p - 1) - (p - 1) % 2;  // the even ranks' sub rank 0 (keys reverse)
  if ((p + 1) / 2 >= 2) {
    if (r == 1) {
      const std::int64_t v = -1;
      c.send(even0, bytes_of(v), 4);
    }
    c.barrier();  // rank 1's message is there before any member's
    if (r % 2 == 0 && me == 0) {
      std::vector<bool> seen(static_cast<std::size_t>(n), false);
      for (int k = 1; k < n; ++k) {
        const Status pr = s->probe(kAnySource, 4);
        SPMD_CHECK(c, pr.source >= 1 && pr.source < n && pr.bytes == 8 && pr.tag == 4);
        std::int64_t v = 0;
        const Status st = s->recv(kAnySource, bytes_of(v), kAnyTag);
        SPMD_CHECK(c, st.source >= 1 && st.source < n);
        SPMD_CHECK(c, !seen[static_cast<std::size_t>(st.source)] && v == 500 + st.source);
        seen[static_cast<std::size_t>(st.source)] = true;
      }
      std::int64_t v = 0;
      const Status st = c.recv(kAnySource, bytes_of(v), 4);
      SPMD_CHECK(c, st.source == 1 && v == -1);
    } else if (r % 2 == 0) {
      const std::int64_t v = 500 + me;
      s->send(0, bytes_of(v), 4);
    }
  }
  c.barrier();
}

// dup(): the same ranks in the same order; its messages and collectives stay apart from
// the parent's. A stream of counted, checksummed messages on both at once loses nothing.
inline void dup_isolates(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  std::unique_ptr<Comm> d = c.dup();
  SPMD_CHECK(c, d != nullptr && d->size() == p && d->rank() == r);
  // A non-blocking collective on the dup in flight across one on the parent.
  std::int64_t v = r;
  Request red = d->iallreduce(std::span(&v, 1), ReduceOp::sum);
  SPMD_CHECK(c, c.allreduce(std::int64_t{2}, ReduceOp::sum) == 2 * p);
  d->wait(red);
  SPMD_CHECK(c, v == static_cast<std::int64_t>(p) * (p - 1) / 2);

  // Interleaved streams, same tag: rank r sends k messages to r+1 on each, alternating.
  if (p >= 2) {
    constexpr int kMessages = 400;
    const int to = (r + 1) % p;
    const int from = (r + p - 1) % p;
    std::vector<std::int64_t> out(2 * kMessages);
    std::vector<std::int64_t> in(2 * kMessages, -1);
    std::vector<Request> reqs;
    for (int k = 0; k < kMessages; ++k) {
      out[static_cast<std::size_t>(2 * k)] = r * 1000003LL + k;
      out[static_cast<std::size_t>(2 * k + 1)] = -(r * 1000003LL + k);
      reqs.push_back(c.isend(to, bytes_of(out[static_cast<std::size_t>(2 * k)]), 7));
      reqs.push_back(d->isend(to, bytes_of(out[static_cast<std::size_t>(2 * k + 1)]), 7));
    }
    // Receive the dup's stream whole first, then the parent's.
    for (int k = 0; k < kMessages; ++k) {
      reqs.push_back(d->irecv(from, bytes_of(in[static_cast<std::size_t>(2 * k + 1)]), 7));
    }
    for (int k = 0; k < kMessages; ++k) {
      reqs.push_back(c.irecv(from, bytes_of(in[static_cast<std::size_t>(2 * k)]), 7));
    }
    // Each comm completes its own requests here (ShmComm's own test waits them together).
    std::vector<Request> mine_c;
    std::vector<Request> mine_d;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const bool on_dup = i < 2 * kMessages ? i % 2 == 1 : i < 3 * kMessages;
      (on_dup ? mine_d : mine_c).push_back(std::move(reqs[i]));
    }
    Request all_d = Request::group(std::move(mine_d));
    Request all_c = Request::group(std::move(mine_c));
    // Wait on both together, through whichever finishes: the dup's receives are last in
    // neither stream.
    while (!d->test(all_d) || !c.test(all_c)) {
    }
    std::int64_t sum = 0;
    for (int k = 0; k < kMessages; ++k) {
      const std::int64_t a = in[static_cast<std::size_t>(2 * k)];
      const std::int64_t b = in[static_cast<std::size_t>(2 * k + 1)];
      SPMD_CHECK_AT(c, a == from * 1000003LL + k && b == -a, "message " + std::to_string(k));
      sum += a + b;
    }
    SPMD_CHECK(c, sum == 0);
  }
  d->barrier();
}

// kUndefinedColor gets nullptr; a one-rank communicator works; a negative color is an
// error on every rank and changes nothing; a split of a split works.
inline void split_undefined_and_nested(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  std::unique_ptr<Comm> solo = c.split(r == 0 ? 5 : kUndefinedColor, 0);
  SPMD_CHECK(c, (solo != nullptr) == (r == 0));
  if (solo) {
    SPMD_CHECK(c, solo->size() == 1 && solo->rank() == 0);
    SPMD_CHECK(c, solo->allreduce(std::int64_t{9}, ReduceOp::sum) == 9);
    std::int64_t v = 4;
    std::int64_t w = 0;
    solo->sendrecv(0, bytes_of(v), 0, bytes_of(w));
    SPMD_CHECK(c, w == 4);
  }
  SPMD_CHECK_ERRC(c, (void)c.split(r == p - 1 ? -5 : 0, 0), errc::invalid_argument);
  SPMD_CHECK(c, c.allreduce(std::int64_t{1}, ReduceOp::sum) == p);

  // Halves, then each half split again by parity of its rank.
  std::unique_ptr<Comm> half = c.split(r < p / 2 ? 0 : 1, r);
  const int hn = half->size();
  std::unique_ptr<Comm> quarter = half->split(half->rank() % 2, half->rank());
  const std::vector<std::int64_t> members = quarter->allgather(static_cast<std::int64_t>(r));
  const int lo = r < p / 2 ? 0 : p / 2;
  std::vector<std::int64_t> want;
  for (int i = 0; i < hn; ++i) {
    if (i % 2 == half->rank() % 2) want.push_back(lo + i);
  }
  SPMD_CHECK(c, members == want);
  // A window over a split communicator: its members' parts only, in its order.
  SharedWindow<std::int64_t> w(*quarter, 1);
  w.local()[0] = r;
  w.fence();
  for (int i = 0; i < quarter->size(); ++i) {
    SPMD_CHECK(c, w.of(i)[0] == members[static_cast<std::size_t>(i)]);
  }
  w.fence();
  SPMD_CHECK(c, half->allreduce(std::int64_t{1}, ReduceOp::sum) == hn);
  quarter->barrier();
  half->barrier();
  c.barrier();
}

// CartComm over a split communicator, and CartComm::sub: rows and columns of a 2-D grid,
// each a 1-D grid whose ranks follow the coordinates; halo exchange along a row.
inline void cart_sub(Comm& c) {
  const int p = c.size();
  const CartComm grid(c, 2, {}, {true, false});
  const auto me = grid.coords();
  const CartComm row = grid.sub({true, false});
  SPMD_CHECK(c, row.ndims() == 1 && row.size() == grid.dims()[0] && row.periodic(0));
  SPMD_CHECK(c, row.coords()[0] == me[0] && row.rank() == me[0]);
  const CartComm col = grid.sub({false, true});
  SPMD_CHECK(c, col.ndims() == 1 && col.size() == grid.dims()[1] && !col.periodic(0));
  SPMD_CHECK(c, col.rank() == me[1]);
  // The row's sum of x coordinates, the column's of y.
  const std::int64_t nx = grid.dims()[0];
  const std::int64_t ny = grid.dims()[1];
  SPMD_CHECK(c, row.comm().allreduce(static_cast<std::int64_t>(me[0]), ReduceOp::sum) ==
                    nx * (nx - 1) / 2);
  SPMD_CHECK(c, col.comm().allreduce(static_cast<std::int64_t>(me[1]), ReduceOp::sum) ==
                    ny * (ny - 1) / 2);
  // A 1-D periodic halo along the row: the left neighbour's and the right one's x.
  const std::int64_t x = me[0];
  std::int64_t from_left = -1;
  std::int64_t from_right = -1;
  const std::span<const std::byte> send[2] = {bytes_of(x), bytes_of(x)};
  const std::span<std::byte> recv[2] = {bytes_of(from_left), bytes_of(from_right)};
  CartComm r2 = row;  // a copy shares the communicator
  r2.halo_exchange(send, recv);
  SPMD_CHECK(c, from_left == (x + nx - 1) % nx && from_right == (x + 1) % nx);
  SPMD_CHECK_ERRC(c, (void)grid.sub({true}), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)grid.sub({false, false}), errc::invalid_argument);
  // A grid over a split communicator: the even ranks as a 1-D ring.
  std::unique_ptr<Comm> even = c.split(c.rank() % 2, c.rank());
  const CartComm ring(*even, 1, {}, {true});
  SPMD_CHECK(c, ring.size() == (p + 1 - c.rank() % 2) / 2 && ring.rank() == c.rank() / 2);
  const auto [down, up] = ring.shift(0, 1);
  SPMD_CHECK(c, down == (ring.rank() + ring.size() - 1) % ring.size() &&
                    up == (ring.rank() + 1) % ring.size());
  c.barrier();
}

// A receive posted on one communicator while its rank waits in another's collective: the
// sender's blocking send, larger than any ring or eager limit, still gets through (every
// wait moves every communicator's operations), in both directions and on a split.
inline void pending_across_communicators(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  if (p < 2) return;
  const std::size_t n = 4 * kMiB;
  std::unique_ptr<Comm> d = c.dup();
  std::unique_ptr<Comm> pair = c.split(r < 2 ? 0 : 1, r);
  const auto check = [&](const std::vector<std::byte>& in, const char* where) {
    SPMD_CHECK_AT(c, first_wrong(in, 1, 0) == n, std::string(where));
  };
  for (int round = 0; round < 3; ++round) {
    Comm& on = round == 1 ? *d : c;                         // where the message travels
    Comm& meet = round == 0 ? *d : round == 1 ? c : *pair;  // whose collective waits
    if (r == 0) {
      std::vector<std::byte> in(n);
      Request req = on.irecv(1, in);
      meet.barrier();
      on.wait(req);
      check(in, round == 0   ? "parent's message, dup's barrier"
                : round == 1 ? "dup's message, parent's barrier"
                             : "parent's message, split's barrier");
    } else if (r == 1) {
      on.send(0, std::span<const std::byte>(make_message(1, 0, n)));
      meet.barrier();
    } else {
      meet.barrier();
    }
  }
  // A dropped ibarrier is completed by its destructor, which must move the dup's receive
  // too: rank 1 reaches the barrier only after its send.
  if (r == 0) {
    std::vector<std::byte> in(n);
    Request bar = c.ibarrier();
    Request req = d->irecv(1, in);
    bar.reset();
    d->wait(req);
    check(in, "dup's message, a dropped ibarrier");
  } else if (r == 1) {
    d->send(0, std::span<const std::byte>(make_message(1, 0, n)));
    c.barrier();
  } else {
    c.barrier();
  }
  c.barrier();
}

}  // namespace ipckit::testing::bodies
