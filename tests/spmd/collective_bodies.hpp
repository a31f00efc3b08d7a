// Test bodies for the collectives beyond barrier/allreduce/gather/broadcast, for every Comm
// backend (the conventions of comm_bodies.hpp: every rank calls a body with the same
// arguments; a failed check throws naming the rank). Sizes cover empty contributions, odd
// ones, and ones longer than ShmComm's 64 KiB collective buffer (several rounds); every
// received byte is checked against the pattern its sender wrote. Over 600 lines: one body
// per collective family, shared by every backend's tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "comm_bodies.hpp"
#include "ipckit/spmd/comm.hpp"

namespace ipckit::testing::bodies {

// Byte i of what rank `r` contributes for rank `to` (or -1) in a call of tag `t`.
inline std::byte coll_byte(int r, int to, std::size_t t, std::size_t i) {
  return static_cast<std::byte>((static_cast<std::size_t>(r) * 131 +
                                 static_cast<std::size_t>(to + 1) * 17 + t * 7 + i * 13 +
                                 (i >> 9)) &
                                0xff);
}

inline std::vector<std::byte> coll_block(int r, int to, std::size_t t, std::size_t n) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = coll_byte(r, to, t, i);
  return b;
}

// True when bytes [at, at + n) of `got` are rank r's block for `to`.
inline bool is_block(std::span<const std::byte> got, std::size_t at, int r, int to, std::size_t t,
                     std::size_t n) {
  if (at + n > got.size()) return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (got[at + i] != coll_byte(r, to, t, i)) return false;
  }
  return true;
}

// The block sizes the bodies try: empty, odd, and over one 64 KiB round.
inline std::array<std::size_t, 3> coll_sizes() { return {0, 13, 70001}; }

// ---- reductions ------------------------------------------------------------------------------

// Every new built-in operation on every type it is defined on, checked against a serial
// fold in rank order; minloc/maxloc with ties (the lowest index wins); undefined pairs are
// refused.
inline void reduce_ops_every_type(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  // prod: small values, exact in every type.
  SPMD_CHECK(
      c, c.allreduce(std::int64_t{r % 3 + 1}, ReduceOp::prod) == [&] {
        std::int64_t x = 1;
        for (int q = 0; q < p; ++q) x *= q % 3 + 1;
        return x;
      }());
  SPMD_CHECK(
      c, c.allreduce(0.5 * (r + 1), ReduceOp::prod) == [&] {
        double x = 1;
        for (int q = 0; q < p; ++q) x *= 0.5 * (q + 1);
        return x;
      }());
  // Logical and bitwise, over u32 and i64 bit patterns.
  const auto bits = [](int q) { return std::uint32_t{0xf0f0u} ^ (std::uint32_t{1} << (q % 32)); };
  std::uint32_t band = 0xffffffffu;
  std::uint32_t bor = 0;
  std::uint32_t bxor = 0;
  for (int q = 0; q < p; ++q) {
    band &= bits(q);
    bor |= bits(q);
    bxor ^= bits(q);
  }
  SPMD_CHECK(c, c.allreduce(bits(r), ReduceOp::band) == band);
  SPMD_CHECK(c, c.allreduce(bits(r), ReduceOp::bor) == bor);
  SPMD_CHECK(c, c.allreduce(bits(r), ReduceOp::bxor) == bxor);
  SPMD_CHECK(c, c.allreduce(std::int64_t{-1} << (r % 8), ReduceOp::band) ==
                    std::int64_t{-1} << ((p - 1) % 8 < 8 && p <= 8 ? p - 1 : 7));
  // Logical: rank 0 holds 0, the others non-zero values (not just 1).
  const std::int32_t truth = r == 0 ? 0 : 7 * r;
  SPMD_CHECK(c, c.allreduce(truth, ReduceOp::land) == 0);  // rank 0's is 0
  SPMD_CHECK(c, c.allreduce(truth, ReduceOp::lor) == (p > 1 ? 1 : 0));
  SPMD_CHECK(c, c.allreduce(truth, ReduceOp::lxor) == ((p - 1) % 2));
  // One rank gets its value back uncombined (as under MPI); more get a logical 0 or 1.
  SPMD_CHECK(c, c.allreduce(std::uint64_t{5}, ReduceOp::land) == (p == 1 ? 5 : 1));
  // minloc/maxloc: the values tie between pairs of ranks (r / 2), so the lowest index wins.
  {
    const ValueIndex<double> mine{static_cast<double>((r / 2) % 3) - 1.5, r};
    const auto lo = c.allreduce(mine, ReduceOp::minloc);
    const auto hi = c.allreduce(mine, ReduceOp::maxloc);
    ValueIndex<double> want_lo{1e300, 0};
    ValueIndex<double> want_hi{-1e300, 0};
    for (int q = p - 1; q >= 0; --q) {
      const double v = static_cast<double>((q / 2) % 3) - 1.5;
      if (v <= want_lo.value) want_lo = {v, q};
      if (v >= want_hi.value) want_hi = {v, q};
    }
    SPMD_CHECK(c, lo == want_lo);
    SPMD_CHECK(c, hi == want_hi);
  }
  SPMD_CHECK(c, (c.allreduce(ValueIndex<float>{static_cast<float>(-r), r}, ReduceOp::minloc) ==
                 ValueIndex<float>{static_cast<float>(1 - p), p - 1}));
  SPMD_CHECK(c, (c.allreduce(ValueIndex<std::int32_t>{r % 2, 10 + r}, ReduceOp::maxloc) ==
                 ValueIndex<std::int32_t>{p > 1 ? 1 : 0, p > 1 ? 11 : 10}));
  SPMD_CHECK(c,
             (c.allreduce(ValueIndex<std::int64_t>{std::int64_t{1} << 40, r}, ReduceOp::minloc) ==
              ValueIndex<std::int64_t>{std::int64_t{1} << 40, 0}));
  // prod, bitwise and logical ops on every integer type (and prod on floats), against a
  // serial fold: a wrong MPI datatype or op mapping shows here.
  const auto every_type = [&](auto zero) {
    using T = decltype(zero);
    const auto v = [](int q) { return static_cast<T>(q % 3 == 2 ? 0 : (q % 5) + 1); };
    T prod = v(0);
    for (int q = 1; q < p; ++q) prod = static_cast<T>(prod * v(q));
    SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::prod) == prod);
    if constexpr (std::is_integral_v<T>) {
      T band = v(0);
      T bor = v(0);
      T bxor = v(0);
      bool land = v(0) != 0;
      bool lor = v(0) != 0;
      bool lxor = v(0) != 0;
      for (int q = 1; q < p; ++q) {
        band = static_cast<T>(band & v(q));
        bor = static_cast<T>(bor | v(q));
        bxor = static_cast<T>(bxor ^ v(q));
        land = land && v(q) != 0;
        lor = lor || v(q) != 0;
        lxor = lxor != (v(q) != 0);
      }
      SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::band) == band);
      SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::bor) == bor);
      SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::bxor) == bxor);
      if (p > 1) {
        SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::land) == static_cast<T>(land));
        SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::lor) == static_cast<T>(lor));
        SPMD_CHECK(c, c.allreduce(v(r), ReduceOp::lxor) == static_cast<T>(lxor));
      }
    }
  };
  every_type(std::int32_t{});
  every_type(std::int64_t{});
  every_type(std::uint32_t{});
  every_type(std::uint64_t{});
  every_type(float{});
  every_type(double{});
  // minloc over a span of pairs, several elements.
  {
    std::vector<ValueIndex<std::int64_t>> v(5);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = {static_cast<std::int64_t>((static_cast<std::size_t>(r) + i) % 3), r};
    }
    c.allreduce(v.data(), v.size(), DataType::i64_index, ReduceOp::minloc);
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::int64_t best = 3;
      int at = 0;
      for (int q = 0; q < p; ++q) {
        const auto x = static_cast<std::int64_t>((static_cast<std::size_t>(q) + i) % 3);
        if (x < best) {
          best = x;
          at = q;
        }
      }
      SPMD_CHECK_AT(c, v[i].value == best && v[i].index == at, "element " + std::to_string(i));
    }
  }
  // Undefined pairs are refused before anything is sent.
  SPMD_CHECK_ERRC(c, Reduction(DataType::f64, ReduceOp::band), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, Reduction(DataType::f32, ReduceOp::land), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, Reduction(DataType::i32, ReduceOp::minloc), errc::invalid_argument);
  SPMD_CHECK_ERRC(c, Reduction(DataType::f64_index, ReduceOp::sum), errc::invalid_argument);
}

// A 2x2 integer matrix: products do not commute, so the order of combination shows.
struct Mat2 {
  std::int64_t a, b, c, d;
  friend bool operator==(const Mat2&, const Mat2&) = default;
};
inline Mat2 mat_mul(const Mat2& x, const Mat2& y) {
  return {x.a * y.a + x.b * y.c, x.a * y.b + x.b * y.d, x.c * y.a + x.d * y.c,
          x.c * y.b + x.d * y.d};
}
// Rank r's matrix at element i: unimodular-ish small entries, so products stay exact.
inline Mat2 mat_of(int r, std::size_t i) {
  const auto k = static_cast<std::int64_t>((static_cast<std::size_t>(r) + i) % 3);
  return {1, k, (r + static_cast<int>(i)) % 2, 1 + k * ((r + static_cast<int>(i)) % 2)};
}
// Ranks [first, end)'s matrices at element i, multiplied in rank order.
inline Mat2 mat_fold(int first, int end, std::size_t i) {
  Mat2 x = mat_of(first, i);
  for (int q = first + 1; q < end; ++q) x = mat_mul(x, mat_of(q, i));
  return x;
}

// A user function that does not commute, through allreduce, reduce (every root), scan,
// exscan and reduce_scatter, on one element and on more than one round's worth.
inline void user_reduction_in_rank_order(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const Reduction op = Reduction::of<Mat2>(mat_mul);
  SPMD_CHECK(c, c.allreduce(mat_of(r, 0), op) == mat_fold(0, p, 0));
  for (const std::size_t n : {std::size_t{1}, std::size_t{5000}}) {  // 5000 x 32 B: 3 rounds
    const auto mine = [&] {
      std::vector<Mat2> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = mat_of(r, i);
      return v;
    };
    const std::string where = std::to_string(n) + " elements";
    std::vector<Mat2> v = mine();
    c.allreduce(v.data(), n, op);
    for (std::size_t i = 0; i < n; ++i) SPMD_CHECK_AT(c, v[i] == mat_fold(0, p, i), where);
    for (int root = 0; root < p; ++root) {
      v = mine();
      c.reduce(v.data(), n, op, root);
      for (std::size_t i = 0; i < n; ++i) {
        SPMD_CHECK_AT(c, v[i] == (r == root ? mat_fold(0, p, i) : mat_of(r, i)),
                      where + ", root " + std::to_string(root));
      }
    }
    v = mine();
    c.scan(v.data(), n, op);
    for (std::size_t i = 0; i < n; ++i) SPMD_CHECK_AT(c, v[i] == mat_fold(0, r + 1, i), where);
    v = mine();
    c.exscan(v.data(), n, op);
    for (std::size_t i = 0; i < n; ++i) {
      SPMD_CHECK_AT(c, v[i] == (r == 0 ? mat_of(0, i) : mat_fold(0, r, i)), where + " exscan");
    }
  }
  // reduce_scatter: rank q's block has q + 1 elements (and rank 1's none).
  std::vector<std::size_t> counts(static_cast<std::size_t>(p));
  for (int q = 0; q < p; ++q) counts[static_cast<std::size_t>(q)] = q == 1 ? 0 : 700 * (q + 1);
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  std::vector<Mat2> in(total);
  for (std::size_t i = 0; i < total; ++i) in[i] = mat_of(r, i);
  std::vector<Mat2> out(counts[static_cast<std::size_t>(r)]);
  c.reduce_scatter(std::as_bytes(std::span(in)), std::as_writable_bytes(std::span(out)), counts,
                   op);
  std::size_t first = 0;
  for (int q = 0; q < r; ++q) first += counts[static_cast<std::size_t>(q)];
  for (std::size_t i = 0; i < out.size(); ++i) {
    SPMD_CHECK_AT(c, out[i] == mat_fold(0, p, first + i),
                  "reduce_scatter element " + std::to_string(i));
  }
}

// A user reduction of 24-byte elements (a round is not whole elements of 64 KiB) over
// several rounds, and a captureless lambda given as a temporary.
struct Triple {
  std::int64_t x, y, z;
  friend bool operator==(const Triple&, const Triple&) = default;
};
inline void user_reduction_odd_element(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  constexpr std::size_t n = 6000;  // 144 000 bytes: three rounds of 65 520
  const auto val = [](int q, std::size_t i) {
    return Triple{q + static_cast<std::int64_t>(i), q * 2 - static_cast<std::int64_t>(i),
                  static_cast<std::int64_t>(i % 7) * q};
  };
  std::vector<Triple> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = val(r, i);
  c.allreduce(v.data(), n, Reduction::of<Triple>([](const Triple& a, const Triple& b) {
                return Triple{a.x + b.x, std::max(a.y, b.y), a.z};  // associative (as MPI requires)
              }));
  for (std::size_t i = 0; i < n; ++i) {
    Triple want = val(0, i);
    for (int q = 1; q < p; ++q) {
      const Triple b = val(q, i);
      want = {want.x + b.x, std::max(want.y, b.y), want.z};
    }
    SPMD_CHECK_AT(c, v[i] == want, "element " + std::to_string(i));
  }
}

// Built-in reduce/scan/exscan/reduce_scatter of int64 sums, short and over several rounds.
inline void reduce_scan_builtin(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const auto val = [](int q, std::size_t i) {
    return std::int64_t{q + 1} * 1000003 + static_cast<std::int64_t>(i);
  };
  const auto sum = [&](int first, int end, std::size_t i) {
    std::int64_t s = 0;
    for (int q = first; q < end; ++q) s += val(q, i);
    return s;
  };
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{20000}}) {
    std::vector<std::int64_t> v(n);
    const auto reset = [&] {
      for (std::size_t i = 0; i < n; ++i) v[i] = val(r, i);
    };
    const Reduction op(DataType::i64, ReduceOp::sum);
    for (int root = 0; root < p; ++root) {
      reset();
      c.reduce(v.data(), n, op, root);
      for (std::size_t i = 0; i < n; ++i) {
        SPMD_CHECK(c, v[i] == (r == root ? sum(0, p, i) : val(r, i)));
      }
    }
    reset();
    c.scan(v.data(), n, op);
    for (std::size_t i = 0; i < n; ++i) SPMD_CHECK(c, v[i] == sum(0, r + 1, i));
    reset();
    c.exscan(v.data(), n, op);
    for (std::size_t i = 0; i < n; ++i) SPMD_CHECK(c, v[i] == (r == 0 ? val(0, i) : sum(0, r, i)));
    // reduce_scatter: n elements to each rank.
    std::vector<std::int64_t> in(n * static_cast<std::size_t>(p));
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = val(r, i);
    std::vector<std::int64_t> out(n);
    const std::vector<std::size_t> counts(static_cast<std::size_t>(p), n);
    c.reduce_scatter(std::span<const std::int64_t>(in), std::span(out), counts, ReduceOp::sum);
    for (std::size_t i = 0; i < n; ++i) {
      SPMD_CHECK(c, out[i] == sum(0, p, static_cast<std::size_t>(r) * n + i));
    }
  }
  SPMD_CHECK(c, c.scan(r + 1, ReduceOp::sum) == (r + 1) * (r + 2) / 2);
  SPMD_CHECK(c, c.exscan(r + 1, ReduceOp::max) == (r == 0 ? 1 : r));
  SPMD_CHECK(c, c.reduce(r + 1, ReduceOp::sum, p - 1) == (r == p - 1 ? p * (p + 1) / 2 : r + 1));
}

// ---- data movement -----------------------------------------------------------------------------

// scatter and gather from/to every root, allgather and alltoall, every size; and the typed
// forms.
inline void scatter_allgather_alltoall(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const auto up = static_cast<std::size_t>(p);
  std::size_t t = 0;
  for (const std::size_t n : coll_sizes()) {
    for (int root = 0; root < p; ++root, ++t) {
      std::vector<std::byte> all;
      if (r == root) {
        for (int q = 0; q < p; ++q) {
          const auto b = coll_block(root, q, t, n);
          all.insert(all.end(), b.begin(), b.end());
        }
      }
      std::vector<std::byte> mine(n, std::byte{0xee});
      c.scatter(std::span<const std::byte>(all), std::span(mine), root);
      SPMD_CHECK_AT(c, is_block(mine, 0, root, r, t, n), "scatter of " + std::to_string(n));
    }
    ++t;
    const auto mine = coll_block(r, -1, t, n);
    std::vector<std::byte> all(n * up);
    c.allgather(std::span<const std::byte>(mine), std::span(all));
    for (int q = 0; q < p; ++q) {
      SPMD_CHECK_AT(c, is_block(all, static_cast<std::size_t>(q) * n, q, -1, t, n),
                    "allgather of " + std::to_string(n) + " from " + std::to_string(q));
    }
    ++t;
    std::vector<std::byte> out;
    for (int q = 0; q < p; ++q) {
      const auto b = coll_block(r, q, t, n);
      out.insert(out.end(), b.begin(), b.end());
    }
    std::vector<std::byte> in(n * up);
    c.alltoall(std::span<const std::byte>(out), std::span(in));
    for (int q = 0; q < p; ++q) {
      SPMD_CHECK_AT(c, is_block(in, static_cast<std::size_t>(q) * n, q, r, t, n),
                    "alltoall of " + std::to_string(n) + " from " + std::to_string(q));
    }
  }
  // Typed forms.
  std::vector<std::int32_t> values(up);
  for (int q = 0; q < p; ++q) values[static_cast<std::size_t>(q)] = 10 * q + 3;
  SPMD_CHECK(c, c.scatter(std::span<const std::int32_t>(values), p - 1) == 10 * r + 3);
  const std::vector<std::int32_t> every = c.allgather(std::int32_t{10 * r + 3});
  SPMD_CHECK(c, every == values);
}

// gatherv, scatterv, allgatherv and alltoallv with blocks of different sizes (some empty, some
// over a round), placed in reverse rank order with gaps.
inline void v_forms(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const auto up = static_cast<std::size_t>(p);
  const auto size_of_block = [](int from, int to) {
    return static_cast<std::size_t>(((from * 5 + to * 3) % 4) * 23000 + (from + to) % 3);
  };
  // Blocks in reverse order, 8 bytes apart.
  const auto layout = [&](const std::vector<std::size_t>& counts) {
    std::vector<std::size_t> displs(counts.size());
    std::size_t at = 0;
    for (std::size_t q = counts.size(); q-- > 0;) {
      displs[q] = at;
      at += counts[q] + 8;
    }
    return std::pair(displs, at);
  };
  std::size_t t = 100;
  for (int root = 0; root < p; ++root, t += 2) {
    std::vector<std::size_t> counts(up);
    for (int q = 0; q < p; ++q) counts[static_cast<std::size_t>(q)] = size_of_block(q, root);
    const auto [displs, total] = layout(counts);
    // gatherv
    const auto mine = coll_block(r, root, t, counts[static_cast<std::size_t>(r)]);
    std::vector<std::byte> all(r == root ? total : 0);
    // counts and displs are read on the root only: the others pass none.
    const std::vector<std::size_t> none;
    const bool me = r == root;
    c.gatherv(std::span<const std::byte>(mine), std::span(all), me ? counts : none,
              me ? displs : none, root);
    if (r == root) {
      for (int q = 0; q < p; ++q) {
        const auto i = static_cast<std::size_t>(q);
        SPMD_CHECK_AT(c, is_block(all, displs[i], q, root, t, counts[i]),
                      "gatherv from " + std::to_string(q) + " to " + std::to_string(root));
      }
    }
    // scatterv
    std::vector<std::byte> source(r == root ? total : 0);
    if (r == root) {
      for (int q = 0; q < p; ++q) {
        const auto i = static_cast<std::size_t>(q);
        const auto b = coll_block(root, q, t + 1, counts[i]);
        std::copy(b.begin(), b.end(), source.begin() + static_cast<std::ptrdiff_t>(displs[i]));
      }
    }
    std::vector<std::byte> got(counts[static_cast<std::size_t>(r)]);
    c.scatterv(std::span<const std::byte>(source), me ? counts : none, me ? displs : none,
               std::span(got), root);
    SPMD_CHECK_AT(c, is_block(got, 0, root, r, t + 1, got.size()),
                  "scatterv from " + std::to_string(root));
  }
  // allgatherv: rank q contributes size_of_block(q, 0) bytes.
  {
    std::vector<std::size_t> counts(up);
    for (int q = 0; q < p; ++q) counts[static_cast<std::size_t>(q)] = size_of_block(q, 1);
    const auto [displs, total] = layout(counts);
    const auto mine = coll_block(r, -1, t, counts[static_cast<std::size_t>(r)]);
    std::vector<std::byte> all(total);
    c.allgatherv(std::span<const std::byte>(mine), std::span(all), counts, displs);
    for (int q = 0; q < p; ++q) {
      const auto i = static_cast<std::size_t>(q);
      SPMD_CHECK_AT(c, is_block(all, displs[i], q, -1, t, counts[i]),
                    "allgatherv from " + std::to_string(q));
    }
  }
  // alltoallv: rank r sends size_of_block(r, q) bytes to q.
  {
    ++t;
    std::vector<std::size_t> out_counts(up);
    std::vector<std::size_t> in_counts(up);
    for (int q = 0; q < p; ++q) {
      out_counts[static_cast<std::size_t>(q)] = size_of_block(r, q);
      in_counts[static_cast<std::size_t>(q)] = size_of_block(q, r);
    }
    const auto [out_displs, out_total] = layout(out_counts);
    const auto [in_displs, in_total] = layout(in_counts);
    std::vector<std::byte> out(out_total);
    for (int q = 0; q < p; ++q) {
      const auto i = static_cast<std::size_t>(q);
      const auto b = coll_block(r, q, t, out_counts[i]);
      std::copy(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(out_displs[i]));
    }
    std::vector<std::byte> in(in_total);
    c.alltoallv(std::span<const std::byte>(out), out_counts, out_displs, std::span(in), in_counts,
                in_displs);
    for (int q = 0; q < p; ++q) {
      const auto i = static_cast<std::size_t>(q);
      SPMD_CHECK_AT(c, is_block(in, in_displs[i], q, r, t, in_counts[i]),
                    "alltoallv from " + std::to_string(q));
    }
  }
  // The typed v forms agree on the lengths themselves.
  std::vector<std::int32_t> mine(static_cast<std::size_t>(r) * 3 + 1, r);
  const std::vector<std::int32_t> every = c.allgatherv(std::span<const std::int32_t>(mine));
  const std::vector<std::int32_t> at0 = c.gatherv(std::span<const std::int32_t>(mine), 0);
  std::vector<std::int32_t> want;
  for (int q = 0; q < p; ++q) want.insert(want.end(), static_cast<std::size_t>(q) * 3 + 1, q);
  SPMD_CHECK(c, every == want);
  SPMD_CHECK(c, at0 == (r == 0 ? want : std::vector<std::int32_t>{}));
}

// Arguments that do not agree: the same error on every rank, and the next collective works.
inline void collective_argument_errors(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  if (p < 2) return;
  const auto up = static_cast<std::size_t>(p);
  const auto still_in_step = [&] { SPMD_CHECK(c, c.allreduce(1, ReduceOp::sum) == p); };
  // scatter: the root's buffer is one block short.
  {
    std::vector<std::byte> all(r == 1 ? 8 * (up - 1) : 0);
    std::vector<std::byte> mine(8);
    SPMD_CHECK_ERRC(c, c.scatter(std::span<const std::byte>(all), std::span(mine), 1),
                    errc::invalid_argument);
    still_in_step();
  }
  // reduce: the ranks name different roots; then a root outside the ranks.
  {
    std::int64_t v = 1;
    SPMD_CHECK_ERRC(c, c.reduce(&v, 1, Reduction(DataType::i64, ReduceOp::sum), r == 0 ? 1 : 0),
                    errc::invalid_argument);
    still_in_step();
    SPMD_CHECK_ERRC(c, c.reduce(&v, 1, Reduction(DataType::i64, ReduceOp::sum), p),
                    errc::invalid_argument);
    still_in_step();
    // Different operations.
    SPMD_CHECK_ERRC(c,
                    c.scan(&v, 1, Reduction(DataType::i64, r == 0 ? ReduceOp::sum : ReduceOp::max)),
                    errc::invalid_argument);
    still_in_step();
  }
  // allgather: rank 1 contributes a byte more.
  {
    std::vector<std::byte> mine(r == 1 ? 5 : 4);
    std::vector<std::byte> all(mine.size() * up);
    SPMD_CHECK_ERRC(c, c.allgather(std::span<const std::byte>(mine), std::span(all)),
                    errc::size_mismatch);
    still_in_step();
  }
  // gatherv: rank 1's contribution is not what the root's counts say.
  {
    const std::vector<std::size_t> counts(up, 4);
    std::vector<std::size_t> displs(up);
    for (std::size_t q = 0; q < up; ++q) displs[q] = 4 * q;
    std::vector<std::byte> mine(r == 1 ? 3 : 4);
    std::vector<std::byte> all(4 * up);
    SPMD_CHECK_ERRC(c,
                    c.gatherv(std::span<const std::byte>(mine), std::span(all), counts, displs, 0),
                    errc::size_mismatch);
    still_in_step();
    // A block outside the root's buffer.
    std::vector<std::byte> small(4 * up - 1);
    std::vector<std::byte> four(4);
    SPMD_CHECK_ERRC(
        c, c.gatherv(std::span<const std::byte>(four), std::span(small), counts, displs, 0),
        errc::invalid_argument);
    still_in_step();
  }
  // gatherv and scatterv with roots that disagree; broadcast and gather to a root outside
  // the ranks.
  {
    const std::vector<std::size_t> counts(up, 4);
    std::vector<std::size_t> displs(up);
    for (std::size_t q = 0; q < up; ++q) displs[q] = 4 * q;
    std::vector<std::byte> four(4);
    std::vector<std::byte> all(4 * up);
    SPMD_CHECK_ERRC(
        c,
        c.gatherv(std::span<const std::byte>(four), std::span(all), counts, displs, r == 0 ? 1 : 0),
        errc::invalid_argument);
    still_in_step();
    SPMD_CHECK_ERRC(c,
                    c.scatterv(std::span<const std::byte>(all), counts, displs, std::span(four),
                               r == 1 ? 0 : 1),
                    errc::invalid_argument);
    still_in_step();
    SPMD_CHECK_ERRC(c, c.broadcast(std::span(four), p), errc::invalid_argument);
    still_in_step();
    SPMD_CHECK_ERRC(c, c.gather(std::span<const std::byte>(four), std::span(all), -0x7fffffff),
                    errc::invalid_argument);
    still_in_step();
  }
  // Non-blocking forms whose sizes disagree, within one round and over one: the error comes
  // from the post or the wait, on every rank, and the collectives stay in step.
  for (const std::size_t n : {std::size_t{4}, std::size_t{70000}}) {
    std::vector<std::byte> mine(r == 1 ? n + 1 : n);
    std::vector<std::byte> all(mine.size() * up);
    SPMD_CHECK_ERRC(
        c,
        {
          Request q = c.iallgather(std::span<const std::byte>(mine), std::span(all));
          c.wait(q);
        },
        errc::size_mismatch);
    still_in_step();
  }
  // alltoallv: rank 0 sends rank 1 more than rank 1 expects.
  {
    std::vector<std::size_t> out_counts(up, 2);
    std::vector<std::size_t> in_counts(up, 2);
    if (r == 0) out_counts[1] = 3;
    std::vector<std::size_t> displs(up);
    for (std::size_t q = 0; q < up; ++q) displs[q] = 3 * q;
    std::vector<std::byte> out(3 * up);
    std::vector<std::byte> in(3 * up);
    SPMD_CHECK_ERRC(c,
                    c.alltoallv(std::span<const std::byte>(out), out_counts, displs, std::span(in),
                                in_counts, displs),
                    errc::size_mismatch);
    still_in_step();
  }
}

// The non-blocking forms give the blocking forms' bytes and match them: even ranks call the
// blocking form, odd ranks post and wait (with point-to-point traffic in between).
inline void nonblocking_collectives(Comm& c) {
  const int p = c.size();
  const int r = c.rank();
  const auto up = static_cast<std::size_t>(p);
  const bool post = r % 2 == 1;
  std::size_t t = 300;
  for (const std::size_t n : coll_sizes()) {
    ++t;
    const int root = static_cast<int>(t % up);
    // broadcast
    std::vector<std::byte> data =
        r == root ? coll_block(root, -1, t, n) : std::vector<std::byte>(n);
    // igather/iscatter buffers
    const auto mine = coll_block(r, -1, t, n);
    std::vector<std::byte> gathered(r == root ? n * up : 0);
    std::vector<std::byte> source;
    if (r == root) {
      for (int q = 0; q < p; ++q) {
        const auto b = coll_block(root, q, t, n);
        source.insert(source.end(), b.begin(), b.end());
      }
    }
    std::vector<std::byte> scattered(n);
    std::vector<std::byte> everyone(n * up);
    std::vector<std::byte> out;
    for (int q = 0; q < p; ++q) {
      const auto b = coll_block(r, q, t, n);
      out.insert(out.end(), b.begin(), b.end());
    }
    std::vector<std::byte> in(n * up);
    if (post) {
      std::vector<Request> reqs;
      reqs.push_back(c.ibroadcast(std::span(data), root));
      reqs.push_back(c.igather(std::span<const std::byte>(mine), std::span(gathered), root));
      reqs.push_back(c.iscatter(std::span<const std::byte>(source), std::span(scattered), root));
      reqs.push_back(c.iallgather(std::span<const std::byte>(mine), std::span(everyone)));
      reqs.push_back(c.ialltoall(std::span<const std::byte>(out), std::span(in)));
      c.wait_all(reqs);
    } else {
      c.broadcast(std::span(data), root);
      c.gather(std::span<const std::byte>(mine), std::span(gathered), root);
      c.scatter(std::span<const std::byte>(source), std::span(scattered), root);
      c.allgather(std::span<const std::byte>(mine), std::span(everyone));
      c.alltoall(std::span<const std::byte>(out), std::span(in));
    }
    const std::string where = std::to_string(n) + " bytes, root " + std::to_string(root);
    SPMD_CHECK_AT(c, is_block(data, 0, root, -1, t, n), "ibroadcast, " + where);
    SPMD_CHECK_AT(c, is_block(scattered, 0, root, r, t, n), "iscatter, " + where);
    for (int q = 0; q < p; ++q) {
      const std::size_t at = static_cast<std::size_t>(q) * n;
      if (r == root) SPMD_CHECK_AT(c, is_block(gathered, at, q, -1, t, n), "igather, " + where);
      SPMD_CHECK_AT(c, is_block(everyone, at, q, -1, t, n), "iallgather, " + where);
      SPMD_CHECK_AT(c, is_block(in, at, q, r, t, n), "ialltoall, " + where);
    }
  }
  // A posted broadcast while a message to this rank waits to be received.
  if (p >= 2) {
    const int peer = r ^ 1;
    if (peer < p) {
      std::int64_t v = r == 0 ? 42 : 0;
      std::vector<std::byte> msg(64 * 1024);
      std::vector<std::byte> got(msg.size());
      msg = coll_block(r, peer, 999, msg.size());
      Request reqs[3] = {c.ibroadcast(std::as_writable_bytes(std::span(&v, 1)), 0),
                         c.isend(peer, std::span<const std::byte>(msg)),
                         c.irecv(peer, std::span(got))};
      c.wait_all(reqs);
      SPMD_CHECK(c, v == 42);
      SPMD_CHECK(c, is_block(got, 0, peer, r, 999, got.size()));
    } else {
      SPMD_CHECK(c, c.broadcast(std::int64_t{r == 0 ? 42 : 0}, 0) == 42);
    }
  }
}

}  // namespace ipckit::testing::bodies
