// Test bodies for the requests and point-to-point calls beyond send/recv, for every Comm
// backend (the conventions of comm_bodies.hpp): test/wait_any/wait_some, persistent requests,
// CartComm::shift, SharedWindow, tags, kAnySource/kAnyTag and probe. The message bytes are
// collective_bodies.hpp's coll_block pattern.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "collective_bodies.hpp"
#include "comm_bodies.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/comm.hpp"
#include "ipckit/spmd/shared_window.hpp"

namespace ipckit::testing::bodies {

// test(), wait_any() and wait_some(): a receive whose message cannot have been sent yet
// tests false; wait_any returns the one that can complete, not the first posted; wait_some
// completes every one that has; a collective request tests true once all ranks arrived;
// an error comes out of test().
inline void test_wait_any_wait_some(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  if (p < 2) return;
  std::int64_t v = -1;
  const auto bytes = [](std::int64_t& x) { return std::as_writable_bytes(std::span(&x, 1)); };
  const auto send = [&](int to, std::int64_t x) { c.send(to, std::as_bytes(std::span(&x, 1))); };
  // test: rank 1 sends only after the barrier.
  if (r == 0) {
    Request a = c.irecv(1, bytes(v));
    SPMD_CHECK(c, !c.test(a));
    SPMD_CHECK(c, a.valid());
    c.barrier();
    while (!c.test(a)) {
    }
    SPMD_CHECK(c, !a.valid() && v == 11);
  } else {
    c.barrier();
    if (r == 1) send(0, 11);
  }
  // wait_any: rank 1's message waits for rank 0's go, the last rank's does not.
  if (p >= 3) {
    const int last = p - 1;
    if (r == 0) {
      std::int64_t from1 = 0;
      std::int64_t from_last = 0;
      Request reqs[2] = {c.irecv(1, bytes(from1)), c.irecv(last, bytes(from_last))};
      SPMD_CHECK(c, c.wait_any(reqs) == 1);
      SPMD_CHECK(c, from_last == 77 && reqs[0].valid() && !reqs[1].valid());
      send(1, 1);  // go
      SPMD_CHECK(c, c.wait_any(reqs) == 0);
      SPMD_CHECK(c, from1 == 55);
      SPMD_CHECK(c, c.wait_any(reqs) == 2);  // none left
    } else if (r == 1) {
      std::int64_t go = 0;
      c.recv(0, bytes(go));
      send(0, 55);
    } else if (r == last) {
      send(0, 77);
    }
  }
  // wait_some: every other rank sends at once; rank 0 collects them all, each once.
  if (r == 0) {
    std::vector<std::int64_t> got(static_cast<std::size_t>(p), -1);
    std::vector<Request> reqs;
    for (int q = 1; q < p; ++q) reqs.push_back(c.irecv(q, bytes(got[static_cast<std::size_t>(q)])));
    std::vector<int> seen(static_cast<std::size_t>(p), 0);
    for (;;) {
      const std::vector<std::size_t> done = c.wait_some(reqs);
      if (done.empty()) break;
      for (const std::size_t i : done) {
        SPMD_CHECK(c, !reqs[i].valid());
        ++seen[i + 1];
      }
    }
    for (int q = 1; q < p; ++q) {
      SPMD_CHECK(c, seen[static_cast<std::size_t>(q)] == 1);
      SPMD_CHECK(c, got[static_cast<std::size_t>(q)] == 1000 + q);
    }
  } else {
    send(0, 1000 + r);
  }
  // A collective request tests false while a rank has not arrived (rank 1 posts its
  // ibarrier only after rank 0's test), then true.
  if (r == 0) {
    Request b = c.ibarrier();
    SPMD_CHECK(c, !c.test(b));
    send(1, 5);
    while (!c.test(b)) {
    }
  } else {
    if (r == 1) {
      std::int64_t go = 0;
      c.recv(0, bytes(go));
    }
    Request b = c.ibarrier();
    while (!c.test(b)) {
    }
  }
  // An error comes out of test (the message is consumed; the next one arrives).
  if (r == 0) {
    std::int64_t two[2] = {0, 0};
    Request a = c.irecv(1, std::as_writable_bytes(std::span(two)));
    bool thrown = false;
    try {
      while (!c.test(a)) {
      }
    } catch (const Error& e) {
      thrown = e.is(errc::size_mismatch);
    }
    SPMD_CHECK(c, thrown && !a.valid());
    c.recv(1, bytes(v));
    SPMD_CHECK(c, v == 13);
  } else if (r == 1) {
    send(0, 12);
    send(0, 13);
  }
  Request none;
  SPMD_CHECK(c, c.test(none));
  c.barrier();
}

// Persistent requests: a ring exchange started many times from the same requests; an
// inactive one tests true and is skipped by wait_any; starting an active one, or a request
// that is not persistent, is invalid_argument.
inline void persistent_requests(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const int right = (r + 1) % p;
  const int left = (r + p - 1) % p;
  std::int64_t out = 0;
  std::int64_t in = -1;
  Request reqs[2] = {c.send_init(right, std::as_bytes(std::span(&out, 1))),
                     c.recv_init(left, std::as_writable_bytes(std::span(&in, 1)))};
  SPMD_CHECK(c, c.test(reqs[0]) && reqs[0].valid());  // inactive: nothing to wait for
  SPMD_CHECK(c, c.wait_any(reqs) == 2);
  for (int round = 0; round < 50; ++round) {
    out = std::int64_t{r} * 1000 + round;
    c.start_all(reqs);
    SPMD_CHECK_ERRC(c, c.start(reqs[1]), errc::invalid_argument);  // still active
    if (round % 2 == 0) {
      c.wait_all(reqs);
    } else {
      while (!c.test(reqs[1])) {
      }
      c.wait(reqs[0]);
    }
    SPMD_CHECK_AT(c, in == std::int64_t{left} * 1000 + round, "round " + std::to_string(round));
    SPMD_CHECK(c, reqs[0].valid() && reqs[1].valid());
  }
  // wait_any over started persistent requests: each once, then none active.
  out = r;
  c.start_all(reqs);
  SPMD_CHECK(c, reqs[0].active() && reqs[1].active());
  const std::size_t first = c.wait_any(reqs);
  const std::size_t second = c.wait_any(reqs);
  SPMD_CHECK(c, first + second == 1);
  SPMD_CHECK(c, c.wait_any(reqs) == 2 && in == left);
  // A group of persistent requests, started and waited as one, several times.
  std::vector<Request> parts;
  parts.push_back(c.send_init(right, std::as_bytes(std::span(&out, 1))));
  parts.push_back(c.recv_init(left, std::as_writable_bytes(std::span(&in, 1))));
  Request group = Request::persistent_group(std::move(parts));
  for (int round = 0; round < 3; ++round) {
    out = 7 * r + round;
    c.start(group);
    c.wait(group);
    SPMD_CHECK(c, group.valid() && !group.active() && in == 7 * left + round);
  }
  Request empty = Request::persistent_group({});
  c.start(empty);
  c.wait(empty);
  c.start(empty);  // still a persistent group
  c.wait(empty);
  Request plain = c.ibarrier();
  SPMD_CHECK_ERRC(c, c.start(plain), errc::invalid_argument);
  c.wait(plain);
  SPMD_CHECK_ERRC(c, (void)c.send_init(p, {}), errc::invalid_argument);
}

// CartComm::shift against coordinates: dest is `disp` steps up the axis (wrapped on periodic
// axes, -1 past an edge), source as many down.
inline void cart_shift(Comm& c) {
  for (const bool wrap : {false, true}) {
    CartComm g(c, 2, {}, {wrap, !wrap});
    const CartComm::Offset me = g.coords();
    for (int axis = 0; axis < 2; ++axis) {
      const int extent = g.dims()[static_cast<std::size_t>(axis)];
      for (int disp = -3; disp <= 3; ++disp) {
        const auto [source, dest] = g.shift(axis, disp);
        for (const int sign : {-1, 1}) {
          CartComm::Offset at = me;
          int& v = at[static_cast<std::size_t>(axis)];
          v += sign * disp;
          int want = -1;
          if (g.periodic(axis)) {
            v = ((v % extent) + extent) % extent;
            want = g.rank_at(at);
          } else if (v >= 0 && v < extent) {
            want = g.rank_at(at);
          }
          SPMD_CHECK_AT(c, (sign > 0 ? dest : source) == want,
                        "axis " + std::to_string(axis) + " disp " + std::to_string(disp));
        }
      }
    }
    SPMD_CHECK_ERRC(c, (void)g.shift(2, 1), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, (void)g.shift(-1, 1), errc::invalid_argument);
  }
}

// SharedWindow: parts of different sizes (rank 0's empty), zero-filled and aligned; each
// rank fills its own, and after a fence every rank reads every part in place; then each
// rank writes into its right neighbour's part, and the neighbour sees it after the next
// fence.
inline void shared_window(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const auto count = [](int q) { return static_cast<std::size_t>(q) * 1000; };
  SharedWindow<std::int64_t> w(c, count(r));
  SPMD_CHECK(c, w.local().size() == count(r));
  for (int q = 0; q < p; ++q) {
    const std::span<std::int64_t> part = w.of(q);
    SPMD_CHECK(c, part.size() == count(q));
    SPMD_CHECK(c, reinterpret_cast<std::uintptr_t>(part.data()) % 64 == 0 || part.empty());
  }
  for (const std::int64_t v : w.local()) SPMD_CHECK(c, v == 0);
  w.fence();
  for (std::size_t i = 0; i < w.local().size(); ++i) {
    w.local()[i] = std::int64_t{r} * 1000000 + static_cast<std::int64_t>(i);
  }
  w.fence();
  for (int q = 0; q < p; ++q) {
    const std::span<std::int64_t> part = w.of(q);
    for (std::size_t i = 0; i < part.size(); ++i) {
      SPMD_CHECK_AT(c, part[i] == std::int64_t{q} * 1000000 + static_cast<std::int64_t>(i),
                    "part " + std::to_string(q) + " element " + std::to_string(i));
    }
  }
  w.fence();
  const int right = (r + 1) % p;
  if (!w.of(right).empty()) w.of(right)[0] = -r - 1;
  w.fence();
  if (!w.local().empty()) SPMD_CHECK(c, w.local()[0] == -((r + p - 1) % p) - 1);
  SPMD_CHECK_ERRC(c, (void)w.of(p), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)w.of(-1), errc::invalid_argument);
  // sync() and a message instead of fence(): each rank writes into its right neighbour's
  // part, syncs, tells it; the neighbour, told, syncs and reads.
  if (p >= 2) {
    SharedWindow<std::int64_t> cell(c, 1);
    const int left = (r + p - 1) % p;
    cell.of(right)[0] = 7000 + r;
    cell.sync();
    std::int64_t told = r;
    std::int64_t heard = -1;
    c.sendrecv(right, std::as_bytes(std::span(&told, 1)), left,
               std::as_writable_bytes(std::span(&heard, 1)));
    cell.sync();
    SPMD_CHECK(c, heard == left && cell.local()[0] == 7000 + left);
    cell.fence();  // before the window goes
  }
  // A window of nothing at all.
  SharedWindow<double> none(c, 0);
  SPMD_CHECK(c, none.local().empty());
  none.fence();
}

// Tags, kAnySource, kAnyTag, probe and iprobe: messages with other tags are taken out of
// order (those with one tag stay in order), a probe sees past a message no receive wants
// (one larger than a ring included), any-source receives say who sent, and a wrong size
// is still consumed.
inline void tags_any_source_probe(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  if (p < 2) return;
  const auto msg = [](int from, int tag, std::size_t n) { return coll_block(from, tag, 777, n); };
  const auto ok = [&](const std::vector<std::byte>& got, int from, int tag) {
    return is_block(got, 0, from, tag, 777, got.size());
  };
  if (r == 0) {
    // 1. Tags 5 then 7; three of tag 3 (kept in order); a big one of tag 1, a small of 2.
    c.send(1, std::span<const std::byte>(msg(0, 5, 100)), 5);
    c.send(1, std::span<const std::byte>(msg(0, 7, 200)), 7);
    for (int i = 0; i < 3; ++i) c.send(1, std::span<const std::byte>(msg(0, 3, 10 + i)), 3);
    c.barrier();  // rank 1's iprobe of tag 9 saw nothing before this
    c.send(1, std::span<const std::byte>(msg(0, 9, 12345)), 9);
    const std::vector<std::byte> large = msg(0, 1, 3 * kMiB);  // alive until the wait
    Request big = c.isend(1, std::span<const std::byte>(large), 1);
    c.send(1, std::span<const std::byte>(msg(0, 2, 64)), 2);
    c.wait(big);
    // 2. Posted receives by tag, sent in the other order.
    c.send(1, std::span<const std::byte>(msg(0, 11, 8)), 11);
    c.send(1, std::span<const std::byte>(msg(0, 12, 16)), 12);
    // 3. Both arrived before the receives are posted: an any-tag receive posted first gets
    //    the earlier one.
    c.send(1, std::span<const std::byte>(msg(0, 13, 8)), 13);
    c.send(1, std::span<const std::byte>(msg(0, 14, 16)), 14);
    c.barrier();
    // 4. Three of tag 3 kept aside while rank 1 waits for tag 8 behind them.
    for (int i = 0; i < 3; ++i) c.send(1, std::span<const std::byte>(msg(0, 3, 20 + i)), 3);
    c.send(1, std::span<const std::byte>(msg(0, 8, 8)), 8);
    // 5. A large message whose receive was dropped unmoved, passed by a later tag.
    const std::vector<std::byte> dropped = msg(0, 40, 3 * kMiB);
    Request d = c.isend(1, std::span<const std::byte>(dropped), 40);
    c.send(1, std::span<const std::byte>(msg(0, 41, 32)), 41);
    c.wait(d);
  } else if (r == 1) {
    std::vector<std::byte> b(200);
    Status st = c.recv(0, std::span(b), 7);
    SPMD_CHECK(c, st.source == 0 && st.tag == 7 && st.bytes == 200 && ok(b, 0, 7));
    b.resize(100);
    st = c.recv(0, std::span(b), kAnyTag);
    SPMD_CHECK(c, st.tag == 5 && ok(b, 0, 5));
    for (int i = 0; i < 3; ++i) {
      b.resize(10 + static_cast<std::size_t>(i));
      st = c.recv(kAnySource, std::span(b), 3);
      SPMD_CHECK_AT(c, st.source == 0 && ok(b, 0, 3), "tag 3 message " + std::to_string(i));
    }
    SPMD_CHECK(c, !c.iprobe(0, 9).has_value());
    c.barrier();
    // probe says the size; the receive then takes exactly that.
    Status seen = c.probe(0, 9);
    SPMD_CHECK(c, seen.source == 0 && seen.tag == 9 && seen.bytes == 12345);
    b.resize(seen.bytes);
    c.recv(0, std::span(b), 9);
    SPMD_CHECK(c, ok(b, 0, 9));
    // The 3 MiB message of tag 1 is seen while it is being kept aside; its receive takes it
    // over. The probe of tag 2 looks past it.
    seen = c.probe(0, 1);
    SPMD_CHECK(c, seen.tag == 1 && seen.bytes == 3 * kMiB);
    seen = c.probe(kAnySource, 2);
    SPMD_CHECK(c, seen.source == 0 && seen.bytes == 64);
    std::vector<std::byte> wrong(63);
    SPMD_CHECK_ERRC(c, c.recv(0, std::span(wrong), 2), errc::size_mismatch);  // consumed
    SPMD_CHECK(c, !c.iprobe(0, 2).has_value());
    b.resize(3 * kMiB);
    st = c.recv(0, std::span(b), 1);
    SPMD_CHECK(c, st.bytes == 3 * kMiB && ok(b, 0, 1));
    std::vector<std::byte> x(16);
    std::vector<std::byte> y(8);
    Status sx;
    Status sy;
    Request q[2] = {c.irecv(0, std::span(x), 12, &sx),
                    c.irecv(kAnySource, std::span(y), kAnyTag, &sy)};
    c.wait_all(q);
    SPMD_CHECK(c, sx.tag == 12 && ok(x, 0, 12) && sy.tag == 11 && sy.source == 0 && ok(y, 0, 11));
    c.barrier();
    std::vector<std::byte> u(8);
    std::vector<std::byte> v(16);
    Status su;
    Status sv;
    Request q2[2] = {c.irecv(0, std::span(u), kAnyTag, &su), c.irecv(0, std::span(v), 14, &sv)};
    c.wait_all(q2);
    SPMD_CHECK(c, su.tag == 13 && ok(u, 0, 13) && sv.tag == 14 && ok(v, 0, 14));
    std::vector<std::byte> eight(8);
    c.recv(0, std::span(eight), 8);
    SPMD_CHECK(c, ok(eight, 0, 8));
    for (int i = 0; i < 3; ++i) {
      b.resize(20 + static_cast<std::size_t>(i));
      st = c.recv(0, std::span(b), 3);
      SPMD_CHECK_AT(c, st.bytes == b.size() && ok(b, 0, 3),
                    "kept tag 3 message " + std::to_string(i));
    }
    std::vector<std::byte> big(3 * kMiB);
    {
      Request gone = c.irecv(0, std::span(big), 40);  // dropped before it moved: withdrawn
    }
    std::vector<std::byte> after(32);
    c.recv(0, std::span(after), 41);  // past the large one (ShmComm keeps it aside)
    SPMD_CHECK(c, ok(after, 0, 41));
    c.recv(0, std::span(big), 40);
    SPMD_CHECK(c, ok(big, 0, 40));
  } else {
    c.barrier();
    c.barrier();  // the others meet ranks 0 and 1 at their barrier
  }
  // 3. Any source: rank 0 hears once from every other rank, in whatever order they come.
  if (r == 0) {
    std::vector<int> heard(static_cast<std::size_t>(p), 0);
    for (int i = 1; i < p; ++i) {
      std::vector<std::byte> b(40);
      const Status st = c.recv(kAnySource, std::span(b), 21);
      SPMD_CHECK(c, st.source >= 1 && st.source < p && ok(b, st.source, 21));
      ++heard[static_cast<std::size_t>(st.source)];
    }
    for (int q = 1; q < p; ++q) SPMD_CHECK(c, heard[static_cast<std::size_t>(q)] == 1);
  } else {
    c.send(0, std::span<const std::byte>(msg(r, 21, 40)), 21);
  }
  // 4. A dropped receive of a tag is withdrawn; the message goes to the next receive.
  if (r == 1) {
    std::vector<std::byte> b(8);
    { Request dropped = c.irecv(0, std::span(b), 30); }
    c.barrier();
    c.recv(0, std::span(b), 30);
    SPMD_CHECK(c, ok(b, 0, 30));
  } else {
    c.barrier();
    if (r == 0) c.send(1, std::span<const std::byte>(msg(0, 30, 8)), 30);
  }
  // Bad tags.
  std::vector<std::byte> none;
  SPMD_CHECK_ERRC(c, c.send(0, std::span<const std::byte>(none), kAnyTag), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, c.send(0, std::span<const std::byte>(none), kMaxTag + 1),
                  errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)c.iprobe(0, -5), errc::invalid_argument);
  c.barrier();
}

}  // namespace ipckit::testing::bodies
