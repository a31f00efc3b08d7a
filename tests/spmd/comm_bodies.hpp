// Test bodies for every Comm backend: each is a function of Comm& that every rank calls with
// the same arguments. A failed check throws std::runtime_error naming the condition, the rank
// and the place (no gtest assertions), so the same bodies run under mpirun (MpiComm) and in
// forked ShmComm ranks. Bodies that need two ranks do nothing on a one-rank Comm.
// Over 600 lines: one body per Comm call, shared by every backend's tests.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/comm.hpp"

namespace ipckit::testing {

[[noreturn]] inline void spmd_fail(const Comm& c, const std::string& what, const char* file,
                                   int line) {
  throw std::runtime_error("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.size()) +
                           ": " + what + " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace ipckit::testing

// Throws unless `cond` holds.
#define SPMD_CHECK(comm, cond)                                                          \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      ::ipckit::testing::spmd_fail((comm), "check failed: " #cond, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)

// Throws unless `cond` holds; `context` (a std::string expression, evaluated only on
// failure) says where, e.g. which message or cell.
#define SPMD_CHECK_AT(comm, cond, context)                                                      \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      ::ipckit::testing::spmd_fail((comm), "check failed: " #cond " at " + (context), __FILE__, \
                                   __LINE__);                                                   \
    }                                                                                           \
  } while (0)

// Throws unless `expr` throws ipckit::Error carrying `code` (an ipckit::errc).
#define SPMD_CHECK_ERRC(comm, expr, code)                                                        \
  do {                                                                                           \
    bool spmd_thrown_ = false;                                                                   \
    try {                                                                                        \
      expr;                                                                                      \
    } catch (const ::ipckit::Error& spmd_e_) {                                                   \
      spmd_thrown_ = true;                                                                       \
      if (!spmd_e_.is(code)) {                                                                   \
        ::ipckit::testing::spmd_fail(                                                            \
            (comm), #expr " threw another error than " #code ": " + std::string(spmd_e_.what()), \
            __FILE__, __LINE__);                                                                 \
      }                                                                                          \
    }                                                                                            \
    if (!spmd_thrown_) {                                                                         \
      ::ipckit::testing::spmd_fail((comm), #expr " did not throw " #code, __FILE__, __LINE__);   \
    }                                                                                            \
  } while (0)

namespace ipckit::testing::bodies {

inline constexpr std::size_t kMiB = std::size_t{1} << 20;

// The message sizes the point-to-point bodies try: empty, odd, word-sized, one page, the
// usual eager/rendezvous and ring-capacity borders, and larger than any ring.
inline std::vector<std::size_t> message_sizes() {
  return {0, 1, 7, 8, 4096, 65536, kMiB, 16 * kMiB};
}

// The bytes a message from `src` to `dst` of `n` bytes carries; differ per pair and size.
inline std::byte pattern(int src, int dst, std::size_t n, std::size_t i) {
  return static_cast<std::byte>((static_cast<std::size_t>(src) * 31 +
                                 static_cast<std::size_t>(dst) * 7 + n * 3 + i * 13 + (i >> 8)) &
                                0xff);
}

inline std::vector<std::byte> make_message(int src, int dst, std::size_t n) {
  std::vector<std::byte> m(n);
  for (std::size_t i = 0; i < n; ++i) m[i] = pattern(src, dst, n, i);
  return m;
}

// The index of the first byte that is not the pattern, or n.
inline std::size_t first_wrong(std::span<const std::byte> m, int src, int dst) {
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (m[i] != pattern(src, dst, m.size(), i)) return i;
  }
  return m.size();
}

inline std::string msg_text(int src, int dst, std::size_t n) {
  return "message " + std::to_string(src) + "->" + std::to_string(dst) + " of " +
         std::to_string(n) + " bytes";
}

// Every ordered pair of ranks: for each shift k, rank r sends to r+k and receives from r-k
// (sendrecv), every size of message_sizes().
inline void ring_every_pair(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  for (int k = 1; k < p; ++k) {
    const int dst = (r + k) % p;
    const int src = (r - k + p) % p;
    for (const std::size_t n : message_sizes()) {
      const std::vector<std::byte> out = make_message(r, dst, n);
      std::vector<std::byte> in(n, std::byte{0xee});
      c.sendrecv(dst, out, src, in);
      const std::size_t bad = first_wrong(in, src, r);
      SPMD_CHECK_AT(c, bad == n, msg_text(src, r, n) + ", byte " + std::to_string(bad));
    }
  }
}

// A rank exchanging with itself: sendrecv, and isend posted before the matching irecv.
inline void self_messages(Comm& c) {
  const int r = c.rank();
  for (const std::size_t n : message_sizes()) {
    const std::vector<std::byte> out = make_message(r, r, n);
    std::vector<std::byte> in(n, std::byte{0xee});
    c.sendrecv(r, out, r, in);
    SPMD_CHECK_AT(c, first_wrong(in, r, r) == n, msg_text(r, r, n) + " (sendrecv)");
    std::fill(in.begin(), in.end(), std::byte{0xee});
    Request req[2] = {c.isend(r, out), c.irecv(r, in)};
    c.wait_all(req);
    SPMD_CHECK_AT(c, first_wrong(in, r, r) == n, msg_text(r, r, n) + " (isend, irecv)");
    SPMD_CHECK(c, !req[0].valid() && !req[1].valid());
  }
}

// Blocking send/recv between ranks 0 and 1 both ways, every size.
inline void blocking_pair(Comm& c) {
  if (c.size() < 2 || c.rank() > 1) return;
  const int r = c.rank();
  const int other = 1 - r;
  for (const std::size_t n : message_sizes()) {
    std::vector<std::byte> in(n, std::byte{0xee});
    if (r == 0) {
      c.send(1, std::span<const std::byte>(make_message(0, 1, n)));
      c.recv(1, std::span<std::byte>(in));
    } else {
      c.recv(0, std::span<std::byte>(in));
      c.send(0, std::span<const std::byte>(make_message(1, 0, n)));
    }
    SPMD_CHECK_AT(c, first_wrong(in, other, r) == n, msg_text(other, r, n));
  }
  // The typed conveniences.
  std::array<std::int64_t, 3> v{};
  if (r == 0) {
    const std::array<std::int64_t, 3> w{-1, 1LL << 40, 42};
    c.send(1, std::span<const std::int64_t>(w));
  } else {
    c.recv(0, std::span<std::int64_t>(v));
    SPMD_CHECK(c, (v == std::array<std::int64_t, 3>{-1, 1LL << 40, 42}));
  }
}

// Messages between each pair arrive in the order they were sent: every rank posts 100
// isends to every other rank and 100 irecvs from every other rank, then one wait_all.
// Every tenth message is 100000 bytes (a different protocol than the small ones in most
// transports), the others 16 + seq bytes.
inline void ordering_every_pair(Comm& c) {
  constexpr int kMessages = 100;
  const int p = c.size();
  const int r = c.rank();
  const auto size_of_msg = [](int seq) -> std::size_t {
    return seq % 10 == 9 ? 100000 : 16 + static_cast<std::size_t>(seq);
  };
  const auto header = [](int src, int seq) { return std::array<std::int32_t, 2>{src, seq}; };
  std::vector<std::vector<std::byte>> out, in;
  std::vector<int> in_src;
  std::vector<Request> req;
  for (int peer = 0; peer < p; ++peer) {
    if (peer == r) continue;
    for (int seq = 0; seq < kMessages; ++seq) {
      in.emplace_back(size_of_msg(seq), std::byte{0xee});
      in_src.push_back(peer);
      req.push_back(c.irecv(peer, in.back()));
    }
  }
  for (int peer = 0; peer < p; ++peer) {
    if (peer == r) continue;
    for (int seq = 0; seq < kMessages; ++seq) {
      std::vector<std::byte> m = make_message(r, peer, size_of_msg(seq));
      const auto h = header(r, seq);
      std::memcpy(m.data(), h.data(), sizeof h);
      out.push_back(std::move(m));
      req.push_back(c.isend(peer, out.back()));
    }
  }
  c.wait_all(req);
  for (std::size_t i = 0; i < in.size(); ++i) {
    const int seq = static_cast<int>(i % kMessages);
    std::array<std::int32_t, 2> h{};
    std::memcpy(h.data(), in[i].data(), sizeof h);
    SPMD_CHECK_AT(c, h == header(in_src[i], seq),
                  "message " + std::to_string(seq) + " from rank " + std::to_string(in_src[i]) +
                      " holds sequence number " + std::to_string(h[1]) + " of rank " +
                      std::to_string(h[0]));
    for (std::size_t b = sizeof h; b < in[i].size(); ++b) {
      SPMD_CHECK_AT(c, in[i][b] == pattern(in_src[i], r, in[i].size(), b),
                    "message " + std::to_string(seq) + " from rank " + std::to_string(in_src[i]) +
                        " byte " + std::to_string(b));
    }
  }
}

// A blocking recv() after irecv()s from the same rank gets the message after theirs; the
// irecvs, waited for afterwards, get the earlier ones (ranks 0 and 1, sizes small and large).
inline void recv_after_queued_irecv(Comm& c) {
  if (c.size() < 2 || c.rank() > 1) return;
  const std::size_t sizes[] = {8, kMiB, 24};
  if (c.rank() == 0) {
    for (const std::size_t n : sizes) c.send(1, std::span<const std::byte>(make_message(0, 1, n)));
    return;
  }
  std::vector<std::byte> first(sizes[0]), second(sizes[1]), third(sizes[2]);
  Request req[2] = {c.irecv(0, first), c.irecv(0, second)};
  c.recv(0, std::span<std::byte>(third));
  c.wait_all(req);
  SPMD_CHECK(c, first_wrong(first, 0, 1) == first.size());
  SPMD_CHECK(c, first_wrong(second, 0, 1) == second.size());
  SPMD_CHECK(c, first_wrong(third, 0, 1) == third.size());
}

// A receive of the wrong size throws errc::size_mismatch, consumes that message, and the
// next message arrives intact: blocking recv and irecv, larger and smaller messages, small
// and large (1 MiB into 64 KiB) ones, and empty ones. Ranks 0 (sender) and 1.
inline void size_mismatch(Comm& c) {
  if (c.size() < 2 || c.rank() > 1) return;
  struct Case {
    std::size_t sent;
    std::size_t expected;
  };
  const Case cases[] = {{16, 8}, {8, 16}, {kMiB, 65536}, {65536, kMiB}, {0, 4}, {4, 0}};
  for (const bool nonblocking : {false, true}) {
    for (const Case& k : cases) {
      const std::string where = std::string(nonblocking ? "irecv" : "recv") + " of " +
                                std::to_string(k.expected) + " bytes, message of " +
                                std::to_string(k.sent);
      if (c.rank() == 0) {
        c.send(1, std::span<const std::byte>(make_message(0, 1, k.sent)));
        c.send(1, std::span<const std::byte>(make_message(0, 1, 24)));
        continue;
      }
      std::vector<std::byte> wrong(k.expected);
      if (nonblocking) {
        Request req[1] = {c.irecv(0, wrong)};
        SPMD_CHECK_ERRC(c, c.wait_all(req), errc::size_mismatch);
        SPMD_CHECK_AT(c, !req[0].valid(), where);
      } else {
        SPMD_CHECK_ERRC(c, c.recv(0, std::span<std::byte>(wrong)), errc::size_mismatch);
      }
      std::vector<std::byte> next(24);
      c.recv(0, std::span<std::byte>(next));
      SPMD_CHECK_AT(c, first_wrong(next, 0, 1) == next.size(), "the message after " + where);
    }
  }
  // In one wait_all, the other requests complete although one receive fails: rank 1's
  // reply still reaches rank 0.
  if (c.rank() == 0) {
    c.send(1, std::span<const std::byte>(make_message(0, 1, 32)));
    std::vector<std::byte> reply(40);
    c.recv(1, std::span<std::byte>(reply));
    SPMD_CHECK(c, first_wrong(reply, 1, 0) == reply.size());
  } else {
    std::vector<std::byte> wrong(31);
    const std::vector<std::byte> reply = make_message(1, 0, 40);
    Request req[2] = {c.irecv(0, wrong), c.isend(0, reply)};
    SPMD_CHECK_ERRC(c, c.wait_all(req), errc::size_mismatch);
    SPMD_CHECK(c, !req[0].valid() && !req[1].valid());
  }
}

// A rank outside [0, size()) is errc::invalid_argument, raised before anything is sent: every
// rank passes the same bad root, so nobody waits.
inline void rank_out_of_range(Comm& c) {
  std::array<std::byte, 8> buf{};
  // kAnySource (-1) is a source for receives, never a destination.
  SPMD_CHECK_ERRC(c, c.send(kAnySource, std::span<const std::byte>(buf)), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)c.isend(kAnySource, buf), errc::invalid_argument);
  for (const int bad : {-2, c.size(), c.size() + 100}) {
    SPMD_CHECK_ERRC(c, c.send(bad, std::span<const std::byte>(buf)), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, c.recv(bad, std::span<std::byte>(buf)), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, (void)c.isend(bad, buf), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, (void)c.irecv(bad, buf), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, c.sendrecv(bad, buf, bad, buf), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, (void)c.gather(std::int32_t{1}, bad), errc::invalid_argument);
    SPMD_CHECK_ERRC(c, c.broadcast(std::span<std::byte>(buf), bad), errc::invalid_argument);
  }
  // The communicator is intact afterwards.
  SPMD_CHECK(c, c.allreduce(std::int32_t{1}, ReduceOp::sum) == c.size());
}

// The value rank r contributes at index i: positive, or alternating in sign for signed
// types, offset so that the top bit of unsigned and 64-bit types matters, and so that every
// sum is exact.
template <class T>
T reduce_value(int r, std::size_t i, ReduceOp op) {
  const std::int64_t base = std::int64_t{r + 1} * static_cast<std::int64_t>(i + 1);
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(i % 2 == 1 ? -base : base) * T(0.5);
  } else if constexpr (std::is_signed_v<T>) {
    const std::int64_t v = i % 2 == 1 ? -base : base;
    if constexpr (sizeof(T) == 8) return static_cast<T>(v * (std::int64_t{1} << 36));
    return static_cast<T>(v);
  } else {
    // min/max: odd ranks' values are above the signed range, even ranks' below, which a
    // signed MPI type would order the other way; sums stay in range.
    const T offset =
        op == ReduceOp::sum || r % 2 == 0 ? T{0} : std::numeric_limits<T>::max() / 2 + 1;
    if constexpr (sizeof(T) == 8) {
      return offset + static_cast<T>(base) * (T{1} << 36);
    }
    return offset + static_cast<T>(base);
  }
}

template <class T>
T reduce_expected(int p, std::size_t i, ReduceOp op) {
  T acc = reduce_value<T>(0, i, op);
  for (int r = 1; r < p; ++r) {
    const T v = reduce_value<T>(r, i, op);
    switch (op) {
      case ReduceOp::sum: acc = static_cast<T>(acc + v); break;
      case ReduceOp::min: acc = std::min(acc, v); break;
      case ReduceOp::max: acc = std::max(acc, v); break;
      default: break;  // the others have bodies of their own
    }
  }
  return acc;
}

template <class T>
void allreduce_one_type(Comm& c, const char* type_name) {
  constexpr std::size_t kCount = 5;
  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::min, ReduceOp::max}) {
    const std::string where =
        std::string(type_name) + " op " + std::to_string(static_cast<int>(op));
    std::array<T, kCount> v{};
    for (std::size_t i = 0; i < kCount; ++i) v[i] = reduce_value<T>(c.rank(), i, op);
    c.allreduce(v.data(), kCount, data_type_of<T>(), op);
    for (std::size_t i = 0; i < kCount; ++i) {
      SPMD_CHECK_AT(c, v[i] == reduce_expected<T>(c.size(), i, op),
                    where + " element " + std::to_string(i));
    }
    // The typed scalar form.
    const T one = c.allreduce(reduce_value<T>(c.rank(), 3, op), op);
    SPMD_CHECK_AT(c, one == reduce_expected<T>(c.size(), 3, op), where + " (scalar)");
  }
}

// Every DataType with every ReduceOp, through the void* form and the typed ones.
inline void allreduce_every_type_and_op(Comm& c) {
  allreduce_one_type<std::int32_t>(c, "i32");
  allreduce_one_type<std::int64_t>(c, "i64");
  allreduce_one_type<std::uint32_t>(c, "u32");
  allreduce_one_type<std::uint64_t>(c, "u64");
  allreduce_one_type<float>(c, "f32");
  allreduce_one_type<double>(c, "f64");
  // long long maps to i64.
  SPMD_CHECK(c, c.allreduce(static_cast<long long>(c.rank()), ReduceOp::max) == c.size() - 1);
}

// A span of 10000 doubles (exact sums), each op.
inline void allreduce_span(Comm& c) {
  constexpr std::size_t kCount = 10000;
  const int p = c.size();
  const auto value = [](int r, std::size_t i) {
    return static_cast<double>(r) * 10000.0 + static_cast<double>(i) * 0.25;
  };
  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::min, ReduceOp::max}) {
    std::vector<double> v(kCount);
    for (std::size_t i = 0; i < kCount; ++i) v[i] = value(c.rank(), i);
    c.allreduce(std::span<double>(v), op);
    for (std::size_t i = 0; i < kCount; ++i) {
      double want = 0;
      if (op == ReduceOp::sum) {
        want = 10000.0 * p * (p - 1) / 2 + static_cast<double>(i) * 0.25 * p;
      } else {
        want = value(op == ReduceOp::min ? 0 : p - 1, i);
      }
      SPMD_CHECK_AT(c, v[i] == want,
                    "op " + std::to_string(static_cast<int>(op)) + " element " + std::to_string(i));
    }
  }
}

// gather of one value (a small struct and an int) to every root.
inline void gather_scalar_every_root(Comm& c) {
  struct Item {
    std::int32_t rank;
    std::int32_t root;
    double x;
  };
  for (int root = 0; root < c.size(); ++root) {
    const std::vector<Item> all = c.gather(Item{c.rank(), root, c.rank() * 1.5 + root}, root);
    const std::vector<std::int32_t> ints = c.gather(std::int32_t{c.rank() * 10 + root}, root);
    if (c.rank() != root) {
      SPMD_CHECK(c, all.empty() && ints.empty());
      continue;
    }
    SPMD_CHECK(c, all.size() == static_cast<std::size_t>(c.size()));
    SPMD_CHECK(c, ints.size() == static_cast<std::size_t>(c.size()));
    for (int r = 0; r < c.size(); ++r) {
      const Item& it = all[static_cast<std::size_t>(r)];
      SPMD_CHECK_AT(c, it.rank == r && it.root == root && it.x == r * 1.5 + root,
                    "root " + std::to_string(root) + " entry " + std::to_string(r));
      SPMD_CHECK(c, ints[static_cast<std::size_t>(r)] == r * 10 + root);
    }
  }
}

// gather of spans (1000 ints, and empty) to every root.
inline void gather_span_every_root(Comm& c) {
  constexpr std::size_t kCount = 1000;
  for (int root = 0; root < c.size(); ++root) {
    std::vector<std::int32_t> mine(kCount);
    for (std::size_t i = 0; i < kCount; ++i) {
      mine[i] = c.rank() * 100000 + root * 10000 + static_cast<std::int32_t>(i);
    }
    const std::vector<std::int32_t> all = c.gather(std::span<const std::int32_t>(mine), root);
    const std::vector<std::int32_t> none = c.gather(std::span<const std::int32_t>(), root);
    SPMD_CHECK(c, none.empty());
    if (c.rank() != root) {
      SPMD_CHECK(c, all.empty());
      continue;
    }
    SPMD_CHECK(c, all.size() == kCount * static_cast<std::size_t>(c.size()));
    for (std::size_t j = 0; j < all.size(); ++j) {
      const auto r = static_cast<std::int32_t>(j / kCount);
      const auto i = static_cast<std::int32_t>(j % kCount);
      SPMD_CHECK_AT(c, all[j] == r * 100000 + root * 10000 + i,
                    "root " + std::to_string(root) + " element " + std::to_string(j));
    }
  }
}

// Contributions of different sizes: errc::size_mismatch on every rank, and the next gather
// works.
inline void gather_size_mismatch(Comm& c) {
  if (c.size() < 2) return;
  std::vector<std::int32_t> mine(c.rank() == 1 ? 3 : 4, c.rank());
  SPMD_CHECK_ERRC(c, (void)c.gather(std::span<const std::int32_t>(mine), 0), errc::size_mismatch);
  const std::vector<std::int32_t> all = c.gather(std::int32_t{c.rank()}, 0);
  if (c.rank() == 0) {
    for (int r = 0; r < c.size(); ++r) SPMD_CHECK(c, all[static_cast<std::size_t>(r)] == r);
  }
}

// broadcast of 8 bytes and of 1 MiB from every root, and the typed scalar form.
inline void broadcast_every_root(Comm& c) {
  for (int root = 0; root < c.size(); ++root) {
    for (const std::size_t n : {std::size_t{8}, kMiB}) {
      std::vector<std::byte> data =
          c.rank() == root ? make_message(root, -1, n) : std::vector<std::byte>(n, std::byte{0xee});
      c.broadcast(std::span<std::byte>(data), root);
      const std::size_t bad = first_wrong(data, root, -1);
      SPMD_CHECK_AT(c, bad == n,
                    "root " + std::to_string(root) + ", " + std::to_string(n) + " bytes, byte " +
                        std::to_string(bad));
    }
    const double x = c.broadcast(c.rank() == root ? 0.5 + root : -1.0, root);
    SPMD_CHECK(c, x == 0.5 + root);
  }
}

// 100 barriers in a row complete on every rank; and no rank leaves a barrier before the
// last one entered it (rank 0 enters 200 ms late; the others must wait for it).
inline void barrier_many(Comm& c) {
  int passed = 0;
  for (int i = 0; i < 100; ++i) {
    c.barrier();
    ++passed;
  }
  SPMD_CHECK(c, c.allreduce(std::int32_t{passed}, ReduceOp::sum) == 100 * c.size());
  c.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  if (c.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  c.barrier();
  const auto waited = std::chrono::steady_clock::now() - t0;
  SPMD_CHECK_AT(
      c, waited >= std::chrono::milliseconds(100),
      "left the barrier after " +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()) +
          " ms");
}

// ---- CartComm ---------------------------------------------------------------------------

// The coordinates of rank r in a row-major grid (x fastest).
inline CartComm::Offset grid_coords(const std::vector<int>& dims, int r) {
  const int dx = dims[0];
  const int dy = dims[1];
  return {r % dx, (r / dx) % dy, dims.size() == 3 ? r / (dx * dy) : 0};
}

// The rank at coordinates c + d by the formula, -1 past a non-periodic edge.
inline int grid_neighbor(const std::vector<int>& dims, const std::vector<bool>& periodic,
                         CartComm::Offset c, CartComm::Offset d) {
  int rank = 0;
  int stride = 1;
  for (std::size_t a = 0; a < dims.size(); ++a) {
    int x = c[a] + d[a];
    if (x < 0 || x >= dims[a]) {
      if (!periodic[a]) return -1;
      x = ((x % dims[a]) + dims[a]) % dims[a];
    }
    rank += x * stride;
    stride *= dims[a];
  }
  return rank;
}

inline std::string grid_text(const std::vector<int>& dims, const std::vector<bool>& periodic) {
  std::string s;
  for (std::size_t a = 0; a < dims.size(); ++a) {
    s += (a ? "x" : "") + std::to_string(dims[a]) + (periodic[a] ? "p" : "");
  }
  return "grid " + s;
}

// dims_for() and directions() by the formulas; the constructor's argument checks.
inline void cart_static(Comm& c) {
  SPMD_CHECK(c, CartComm::dims_for(4, 2) == (std::vector<int>{2, 2}));
  SPMD_CHECK(c, CartComm::dims_for(12, 2) == (std::vector<int>{4, 3}));
  SPMD_CHECK(c, CartComm::dims_for(7, 2) == (std::vector<int>{7, 1}));
  SPMD_CHECK(c, CartComm::dims_for(8, 3) == (std::vector<int>{2, 2, 2}));
  SPMD_CHECK(c, CartComm::dims_for(6, 3) == (std::vector<int>{3, 2, 1}));
  SPMD_CHECK(c, CartComm::dims_for(1, 2) == (std::vector<int>{1, 1}));
  for (const int nd : {1, 2, 3}) {
    const std::vector<CartComm::Offset> dirs = CartComm::directions(nd);
    std::vector<CartComm::Offset> want;
    for (int dz = nd == 3 ? -1 : 0; dz <= (nd == 3 ? 1 : 0); ++dz) {
      for (int dy = nd >= 2 ? -1 : 0; dy <= (nd >= 2 ? 1 : 0); ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          if (dx != 0 || dy != 0 || dz != 0) want.push_back({dx, dy, dz});
        }
      }
    }
    SPMD_CHECK_AT(c, dirs == want, std::to_string(nd) + " dims");
    for (std::size_t k = 0; k < dirs.size(); ++k) {
      const CartComm::Offset& o = dirs[dirs.size() - 1 - k];
      SPMD_CHECK(c, o[0] == -dirs[k][0] && o[1] == -dirs[k][1] && o[2] == -dirs[k][2]);
    }
  }
  const int p = c.size();
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 0), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 4), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 2, {p, 2}), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 2, {p}), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 2, {p, 1}, {true}), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, (void)CartComm(c, 2, {-p, -1}), errc::invalid_argument);
  const CartComm chosen(c, 2);
  SPMD_CHECK(c, chosen.dims() == CartComm::dims_for(p, 2));
  SPMD_CHECK(c, !chosen.periodic(0) && !chosen.periodic(1));
}

// Coordinates, rank_at and neighbor() of every rank against the formulas.
inline void cart_layout(Comm& c, const std::vector<int>& dims, const std::vector<bool>& periodic) {
  const CartComm g(c, static_cast<int>(dims.size()), dims, periodic);
  const std::string where = grid_text(dims, periodic);
  SPMD_CHECK_AT(c, g.ndims() == static_cast<int>(dims.size()) && g.dims() == dims, where);
  SPMD_CHECK_AT(c, g.rank() == c.rank() && g.size() == c.size() && &g.comm() == &c, where);
  for (std::size_t a = 0; a < dims.size(); ++a) {
    SPMD_CHECK_AT(c, g.periodic(static_cast<int>(a)) == periodic[a], where);
  }
  SPMD_CHECK_AT(c, g.coords() == grid_coords(dims, c.rank()), where);
  for (int r = 0; r < c.size(); ++r) {
    const CartComm::Offset rc = grid_coords(dims, r);
    SPMD_CHECK_AT(c, g.coords_of(r) == rc, where + " rank " + std::to_string(r));
    SPMD_CHECK_AT(c, g.rank_at(rc) == r, where + " rank " + std::to_string(r));
  }
  const CartComm::Offset me = g.coords();
  for (const CartComm::Offset& d : CartComm::directions(static_cast<int>(dims.size()))) {
    const int want = grid_neighbor(dims, periodic, me, d);
    const std::string at = where + " offset (" + std::to_string(d[0]) + "," + std::to_string(d[1]) +
                           "," + std::to_string(d[2]) + ")";
    SPMD_CHECK_AT(c, g.neighbor(d[0], d[1], d[2]) == want, at);
    SPMD_CHECK_AT(c, g.rank_at({me[0] + d[0], me[1] + d[1], me[2] + d[2]}) == want, at);
  }
  // Two steps away, where a grid of extent 1 or 2 wraps onto itself.
  SPMD_CHECK_AT(c, g.neighbor(2, 0) == grid_neighbor(dims, periodic, me, {2, 0, 0}), where);
  SPMD_CHECK_AT(c, g.neighbor(0, -2) == grid_neighbor(dims, periodic, me, {0, -2, 0}), where);
}

// One cell of a halo message: who sent it, towards which direction index.
struct HaloCell {
  std::int32_t rank;
  std::int32_t dir;
};

// halo_exchange() over the grid, `rounds` times: send[k] holds base_cells + k cells of
// (rank, k); recv[k] must then hold base_cells + (n-1-k) cells of (neighbour at
// directions()[k], n-1-k). Sizes differ per direction, so a message matched to the wrong
// receive shows as a size mismatch or a wrong cell.
inline void cart_halo(Comm& c, const std::vector<int>& dims, const std::vector<bool>& periodic,
                      std::size_t base_cells, int rounds = 6) {
  CartComm g(c, static_cast<int>(dims.size()), dims, periodic);
  const std::vector<CartComm::Offset> dirs = CartComm::directions(g.ndims());
  const std::size_t n = dirs.size();
  const std::string where = grid_text(dims, periodic);
  std::vector<int> nb(n);
  std::vector<std::vector<HaloCell>> out(n), in(n);
  std::vector<std::span<const std::byte>> send(n);
  std::vector<std::span<std::byte>> recv(n);
  for (std::size_t k = 0; k < n; ++k) {
    nb[k] = g.neighbor(dirs[k][0], dirs[k][1], dirs[k][2]);
    if (nb[k] < 0) continue;
    out[k].assign(base_cells + k, HaloCell{c.rank(), static_cast<std::int32_t>(k)});
    in[k].resize(base_cells + (n - 1 - k));
    send[k] = std::as_bytes(std::span(out[k]));
    recv[k] = std::as_writable_bytes(std::span(in[k]));
  }
  // Round 3k: blocking; 3k+1: overlapped; 3k+2: the persistent requests, made once.
  Request persistent = g.halo_init(send, recv);
  for (int round = 0; round < rounds; ++round) {
    for (auto& v : in) std::fill(v.begin(), v.end(), HaloCell{-7, -7});
    if (round % 3 == 0) {
      g.halo_exchange(send, recv);
    } else if (round % 3 == 2) {
      c.start(persistent);
      SPMD_CHECK(c, persistent.active() || dims == std::vector<int>(dims.size(), 1));
      c.wait(persistent);
      SPMD_CHECK(c, persistent.valid() && !persistent.active());  // ready for the next start
    } else {
      // The overlapped form, with a non-blocking reduction and a blocking collective in
      // flight at the same time (messages larger than a ring cannot finish when posted:
      // they move on in the barrier or in the wait).
      Request halo = g.ihalo_exchange(send, recv);
      std::int64_t sum = c.rank();
      Request total = c.iallreduce(std::span(&sum, 1), ReduceOp::sum);
      c.barrier();
      c.wait(halo);
      SPMD_CHECK(c, !halo.valid());
      c.wait(total);
      SPMD_CHECK(c, sum == std::int64_t{c.size()} * (c.size() - 1) / 2);
    }
    for (std::size_t k = 0; k < n; ++k) {
      const auto want_dir = static_cast<std::int32_t>(n - 1 - k);
      for (std::size_t i = 0; i < in[k].size(); ++i) {
        const HaloCell& cell = in[k][i];
        SPMD_CHECK_AT(c, cell.rank == nb[k] && cell.dir == want_dir,
                      where + " round " + std::to_string(round) + " direction " +
                          std::to_string(k) + " cell " + std::to_string(i) + ": (" +
                          std::to_string(cell.rank) + ", " + std::to_string(cell.dir) +
                          "), expected (" + std::to_string(nb[k]) + ", " +
                          std::to_string(want_dir) + ")");
      }
    }
  }
}

// Every rank of a periodic 2-D grid exchanging 4 MiB with all 8 neighbours at once (in a
// 2x2 grid each neighbour is met in 2 or 4 directions): no deadlock, every byte right.
inline void cart_halo_large(Comm& c) {
  const std::vector<int> dims =
      c.size() == 4 ? std::vector<int>{2, 2} : CartComm::dims_for(c.size(), 2);
  cart_halo(c, dims, {true, true}, 4 * kMiB / sizeof(HaloCell), 3);
}

// iallreduce gives the bytes allreduce gives, for every op, from nothing to several rounds of
// ShmComm's 64 KiB collective buffers; the rank computes while it is in flight.
inline void iallreduce_matches_allreduce(Comm& c) {
  for (const std::size_t count : {std::size_t{0}, std::size_t{5}, std::size_t{20000}}) {
    for (const ReduceOp op : {ReduceOp::sum, ReduceOp::min, ReduceOp::max}) {
      std::vector<double> v(count), w(count);
      for (std::size_t i = 0; i < count; ++i) {
        v[i] = w[i] = static_cast<double>(c.rank()) * 1e4 + static_cast<double>(i) * 0.25;
      }
      Request r = c.iallreduce(std::span(v), op);
      SPMD_CHECK(c, r.valid());
      double busy = 0;
      for (std::size_t i = 0; i < count; ++i) busy += w[i];  // not v: it is in flight
      c.allreduce(std::span(w), op);
      c.wait(r);
      SPMD_CHECK(c, !r.valid());
      SPMD_CHECK_AT(c, count == 0 || std::memcmp(v.data(), w.data(), count * sizeof(double)) == 0,
                    "count " + std::to_string(count) + " op " +
                        std::to_string(static_cast<int>(op)) + " (busy " + std::to_string(busy) +
                        ")");
    }
  }
  Request b = c.ibarrier();
  c.wait(b);
  SPMD_CHECK(c, !b.valid());
}

// A non-blocking collective dropped unwaited still completes (its result lands, the ranks
// stay in step); one left in flight is completed by the next collective, and its own wait
// then just returns.
inline void icollective_dropped_or_overtaken(Comm& c) {
  std::int32_t v = c.rank() + 1;
  { Request dropped = c.iallreduce(std::span(&v, 1), ReduceOp::sum); }
  SPMD_CHECK(c, v == c.size() * (c.size() + 1) / 2);
  Request b = c.ibarrier();
  std::int32_t m = c.rank();
  Request r = c.iallreduce(std::span(&m, 1), ReduceOp::max);
  SPMD_CHECK(c, c.allreduce(std::int32_t{1}, ReduceOp::sum) == c.size());
  c.wait_all(std::span(&b, 1));
  c.wait(r);
  SPMD_CHECK(c, m == c.size() - 1);
  c.barrier();
}

// A rank blocked in a collective still moves its posted point-to-point operations: rank 1
// sends rank 0 a message larger than any ring (blocking) before it enters the barrier, and
// rank 0 posts the receive, enters the barrier and only then waits for the receive. Without
// progress inside the barrier, each would wait for the other.
inline void collective_moves_posted_p2p(Comm& c) {
  if (c.size() < 2) return;
  const std::size_t n = 16 * kMiB;
  if (c.rank() == 1) {
    const std::vector<std::byte> m = make_message(1, 0, n);
    c.send(0, std::span<const std::byte>(m));
    c.barrier();
  } else if (c.rank() == 0) {
    std::vector<std::byte> m(n);
    Request r = c.irecv(1, std::span(m));
    c.barrier();
    c.wait(r);
    SPMD_CHECK_AT(c, first_wrong(m, 1, 0) == n, msg_text(1, 0, n));
  } else {
    c.barrier();
  }
  // And the same with a non-blocking collective posted first and a blocking one after.
  std::int64_t x = 1;
  if (c.rank() == 1) {
    Request s = c.iallreduce(std::span(&x, 1), ReduceOp::sum);
    const std::vector<std::byte> m = make_message(1, 0, n);
    c.send(0, std::span<const std::byte>(m));
    c.wait(s);
  } else if (c.rank() == 0) {
    std::vector<std::byte> m(n);
    Request r = c.irecv(1, std::span(m));
    Request s = c.iallreduce(std::span(&x, 1), ReduceOp::sum);
    c.barrier();  // completes s first, moving r meanwhile
    c.wait(r);
    c.wait(s);
    SPMD_CHECK_AT(c, first_wrong(m, 1, 0) == n, msg_text(1, 0, n));
  } else {
    Request s = c.iallreduce(std::span(&x, 1), ReduceOp::sum);
    c.wait(s);
  }
  if (c.rank() != 0) c.barrier();
  SPMD_CHECK(c, x == c.size());
  // A non-blocking collective dropped unwaited while a receive is queued: its completion
  // (in the request's destructor) must move the receive too.
  std::int64_t y = 2;
  if (c.rank() == 1) {
    const std::vector<std::byte> m = make_message(1, 0, n);
    c.send(0, std::span<const std::byte>(m));
    Request s = c.iallreduce(std::span(&y, 1), ReduceOp::sum);
    c.wait(s);
  } else if (c.rank() == 0) {
    std::vector<std::byte> m(n);
    Request r = c.irecv(1, std::span(m));
    { Request dropped = c.iallreduce(std::span(&y, 1), ReduceOp::sum); }
    c.wait(r);
    SPMD_CHECK_AT(c, first_wrong(m, 1, 0) == n, msg_text(1, 0, n));
  } else {
    Request s = c.iallreduce(std::span(&y, 1), ReduceOp::sum);
    c.wait(s);
  }
  SPMD_CHECK(c, y == 2 * std::int64_t{c.size()});
}

// A receive dropped unwaited is cancelled even when its message has already arrived: the
// message goes to the next receive.
inline void dropped_irecv_after_arrival(Comm& c) {
  if (c.size() < 2) return;
  std::int64_t v = 0;
  if (c.rank() == 0) {
    v = 5;
    c.send(1, std::span<const std::int64_t>(&v, 1));
    c.barrier();
  } else if (c.rank() == 1) {
    c.barrier();  // the message has been sent (it fits in any eager buffer or ring)
    { Request dropped = c.irecv(0, std::as_writable_bytes(std::span(&v, 1))); }
    SPMD_CHECK(c, v == 0);
    c.recv(0, std::span(&v, 1));
    SPMD_CHECK(c, v == 5);
  } else {
    c.barrier();
  }
}

}  // namespace ipckit::testing::bodies
