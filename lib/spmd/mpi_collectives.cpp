// MpiComm's collectives. Each is MPI's non-blocking form, completed by progress_until()
// (which matches this comm's queued receives while it waits: a peer may be blocked sending
// one before it can reach the collective). Every rank calls the same form, so the blocking
// and the non-blocking collectives match each other, as on ShmComm. The collectives with
// roots, counts or sizes that ranks could disagree on first agree on them with one small
// allreduce (MpiComm::agree), so that every rank throws the same error.
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "collective_checks.hpp"
#include "ipckit/spmd/mpi_comm.hpp"
#include "mpi_internal.hpp"

namespace ipckit {
namespace {

using detail::count_of;
using detail::MpiRequest;
using mpi::check;

// A Reduction as an MPI datatype and operation, for the length of one call. A user function
// becomes MPI_Type_contiguous bytes and an MPI_Op that calls it back (MPI calls it on this
// thread, inside the calls that progress the collective).
class MpiReduction {
 public:
  explicit MpiReduction(const Reduction& r) : saved_(current_) {
    if (r.builtin()) {
      type_ = mpi::datatype_of(r.type());
      op_ = mpi::op_of(r.op());
      return;
    }
    const int bytes = count_of(r.element_size(), "a Reduction's element size");
    check(MPI_Type_contiguous(bytes, MPI_BYTE, &type_), "MPI_Type_contiguous");
    owned_type_ = true;
    check(MPI_Type_commit(&type_), "MPI_Type_commit");
    check(MPI_Op_create(&call, r.commutative() ? 1 : 0, &op_), "MPI_Op_create");
    owned_op_ = true;
    current_ = &r;
  }
  ~MpiReduction() {
    current_ = saved_;
    if (owned_op_) MPI_Op_free(&op_);
    if (owned_type_) MPI_Type_free(&type_);
  }
  MpiReduction(const MpiReduction&) = delete;
  MpiReduction& operator=(const MpiReduction&) = delete;

  [[nodiscard]] MPI_Datatype type() const noexcept { return type_; }
  [[nodiscard]] MPI_Op op() const noexcept { return op_; }

 private:
  // MPI: inout = in op inout, `in` holding the lower ranks; a Reduction: acc = acc op next.
  static void call(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
    const Reduction& r = *current_;
    const std::size_t bytes = static_cast<std::size_t>(*len) * r.element_size();
    thread_local std::vector<std::byte> acc;
    acc.assign(static_cast<const std::byte*>(in), static_cast<const std::byte*>(in) + bytes);
    r.combine(acc.data(), inout, static_cast<std::size_t>(*len));
    std::memcpy(inout, acc.data(), bytes);
  }

  static thread_local const Reduction* current_;
  const Reduction* saved_;
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  MPI_Op op_ = MPI_OP_NULL;
  bool owned_type_ = false;
  bool owned_op_ = false;
};
thread_local const Reduction* MpiReduction::current_ = nullptr;

// MPI's int counts and displacements of byte counts.
std::vector<int> ints_of(std::span<const std::size_t> v, const char* what) {
  std::vector<int> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = count_of(v[i], what);
  return out;
}

}  // namespace

void MpiComm::run_collective(const char* what, const std::function<int(MPI_Request*)>& start) {
  MPI_Request r = MPI_REQUEST_NULL;
  check(start(&r), what);
  progress_until(r, what);
}

Request MpiComm::post_collective(const char* what, const std::function<int(MPI_Request*)>& start) {
  auto state = std::make_unique<MpiRequest>();
  state->matcher = matcher_;
  state->collective = true;
  check(start(&state->request), what);
  return Request(std::move(state));
}

void MpiComm::agree(const Agree& a, const char* what) {
  const auto hi = static_cast<std::int64_t>(a.sig >> 32);
  const auto lo = static_cast<std::int64_t>(a.sig & 0xffffffffU);
  // One MAX gives the largest and (negated) the smallest of each.
  std::int64_t v[] = {a.bad ? 1 : 0, a.mismatch ? 1 : 0, a.root, -a.root, hi, -hi, lo, -lo, a.size,
                      -a.size};
  allreduce(v, std::size(v), DataType::i64, ReduceOp::max);
  const std::string w(what);
  if (v[0] != 0) throw Error(errc::invalid_argument, w + ": a rank passed malformed arguments");
  if (v[2] != -v[3]) {
    throw Error(errc::invalid_argument, w + ": the ranks pass roots between " +
                                            std::to_string(-v[3]) + " and " + std::to_string(v[2]));
  }
  if (v[4] != -v[5] || v[6] != -v[7]) {
    throw Error(errc::invalid_argument, w + ": the ranks pass different reductions or counts");
  }
  if (v[1] != 0) {
    throw Error(errc::size_mismatch, w + ": a rank's contribution is not what the counts say");
  }
  if (!a.varying && v[8] != -v[9]) {
    throw Error(errc::size_mismatch, w + ": the ranks contribute between " + std::to_string(-v[9]) +
                                         " and " + std::to_string(v[8]) + " bytes (this rank " +
                                         std::to_string(a.size) + ")");
  }
}

void MpiComm::barrier() {
  run_collective("MPI_Ibarrier", [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
}

Request MpiComm::ibarrier() {
  return post_collective("MPI_Ibarrier", [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
}

void MpiComm::allreduce(void* inout, std::size_t count, const Reduction& op) {
  const int n = count_of(count, "MpiComm::allreduce");
  const MpiReduction m(op);
  run_collective("MPI_Iallreduce", [&](MPI_Request* r) {
    return MPI_Iallreduce(MPI_IN_PLACE, inout, n, m.type(), m.op(), comm_, r);
  });
}

Request MpiComm::iallreduce(void* inout, std::size_t count, const Reduction& op) {
  const int n = count_of(count, "MpiComm::iallreduce");
  if (!op.builtin()) {
    // The user function must be reachable while the request progresses: done now.
    allreduce(inout, count, op);
    auto state = std::make_unique<MpiRequest>();
    state->matcher = matcher_;
    state->collective = true;
    state->phase = MpiRequest::Phase::done;
    return Request(std::move(state));
  }
  return post_collective("MPI_Iallreduce", [&](MPI_Request* r) {
    return MPI_Iallreduce(MPI_IN_PLACE, inout, n, mpi::datatype_of(op.type()), mpi::op_of(op.op()),
                          comm_, r);
  });
}

namespace {
bool outside(int r, int n) { return r < 0 || r >= n; }
}  // namespace

void MpiComm::reduce(void* inout, std::size_t count, const Reduction& op, int root) {
  const int n = count_of(count, "MpiComm::reduce");
  agree({static_cast<std::int64_t>(count * op.element_size()), op.signature(), root,
         outside(root, size_)},
        "MpiComm::reduce");
  const MpiReduction m(op);
  run_collective("MPI_Ireduce", [&](MPI_Request* r) {
    return rank_ == root ? MPI_Ireduce(MPI_IN_PLACE, inout, n, m.type(), m.op(), root, comm_, r)
                         : MPI_Ireduce(inout, nullptr, n, m.type(), m.op(), root, comm_, r);
  });
}

void MpiComm::scan(void* inout, std::size_t count, const Reduction& op) {
  const int n = count_of(count, "MpiComm::scan");
  agree({static_cast<std::int64_t>(count * op.element_size()), op.signature()}, "MpiComm::scan");
  const MpiReduction m(op);
  run_collective("MPI_Iscan", [&](MPI_Request* r) {
    return MPI_Iscan(MPI_IN_PLACE, inout, n, m.type(), m.op(), comm_, r);
  });
}

void MpiComm::exscan(void* inout, std::size_t count, const Reduction& op) {
  const int n = count_of(count, "MpiComm::exscan");
  const std::size_t bytes = count * op.element_size();
  agree({static_cast<std::int64_t>(bytes), op.signature()}, "MpiComm::exscan");
  // MPI leaves rank 0's buffer undefined; ipckit leaves it as it was.
  std::vector<std::byte> keep;
  if (rank_ == 0)
    keep.assign(static_cast<std::byte*>(inout), static_cast<std::byte*>(inout) + bytes);
  const MpiReduction m(op);
  run_collective("MPI_Iexscan", [&](MPI_Request* r) {
    return MPI_Iexscan(MPI_IN_PLACE, inout, n, m.type(), m.op(), comm_, r);
  });
  if (rank_ == 0 && bytes != 0) std::memcpy(inout, keep.data(), bytes);
}

void MpiComm::reduce_scatter(std::span<const std::byte> in, std::span<std::byte> out,
                             std::span<const std::size_t> counts, const Reduction& op) {
  const std::size_t esz = op.element_size();
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  const bool bad = counts.size() != static_cast<std::size_t>(size_) || in.size() != total * esz ||
                   out.size() != counts[static_cast<std::size_t>(rank_)] * esz;
  agree({static_cast<std::int64_t>(in.size()), op.signature() ^ detail::hash_of(counts), -1, bad},
        "MpiComm::reduce_scatter");
  const std::vector<int> n = ints_of(counts, "MpiComm::reduce_scatter");
  const MpiReduction m(op);
  run_collective("MPI_Ireduce_scatter", [&](MPI_Request* r) {
    return MPI_Ireduce_scatter(in.data(), out.data(), n.data(), m.type(), m.op(), comm_, r);
  });
}

void MpiComm::gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  const int n = count_of(mine.size(), "MpiComm::gather");
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, root, outside(root, size_) || bad_all},
        "MpiComm::gather");
  run_collective("MPI_Igather", [&](MPI_Request* r) {
    return MPI_Igather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, root, comm_, r);
  });
}

Request MpiComm::igather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  const int n = count_of(mine.size(), "MpiComm::igather");
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, root, outside(root, size_) || bad_all},
        "MpiComm::igather");
  return post_collective("MPI_Igather", [&](MPI_Request* r) {
    return MPI_Igather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, root, comm_, r);
  });
}

void MpiComm::gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                      std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                      int root) {
  const char* what = "MpiComm::gatherv";
  const bool bad_root = outside(root, size_);
  const bool me = rank_ == root;
  const bool bad = bad_root || (me && !detail::blocks_fit(counts, displs, all.size(), size_));
  // The root checks every rank's size against its counts.
  std::vector<std::int64_t> sizes(me ? static_cast<std::size_t>(size_) : 0);
  bool mismatch = false;
  if (!bad_root) {
    const auto mine_size = static_cast<std::int64_t>(mine.size());
    run_collective("MPI_Igather", [&](MPI_Request* r) {
      return MPI_Igather(&mine_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, root, comm_, r);
    });
    for (std::size_t i = 0; i < sizes.size() && !bad; ++i) {
      mismatch = mismatch || static_cast<std::size_t>(sizes[i]) != counts[i];
    }
  }
  agree({0, 0, root, bad, mismatch, true}, what);
  const int n = count_of(mine.size(), what);
  const std::vector<int> c = ints_of(me ? counts : std::span<const std::size_t>(), what);
  const std::vector<int> d = ints_of(me ? displs : std::span<const std::size_t>(), what);
  run_collective("MPI_Igatherv", [&](MPI_Request* r) {
    return MPI_Igatherv(mine.data(), n, MPI_BYTE, all.data(), c.data(), d.data(), MPI_BYTE, root,
                        comm_, r);
  });
}

void MpiComm::scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  const int n = count_of(mine.size(), "MpiComm::scatter");
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, root, outside(root, size_) || bad_all},
        "MpiComm::scatter");
  run_collective("MPI_Iscatter", [&](MPI_Request* r) {
    return MPI_Iscatter(all.data(), n, MPI_BYTE, mine.data(), n, MPI_BYTE, root, comm_, r);
  });
}

Request MpiComm::iscatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  const int n = count_of(mine.size(), "MpiComm::iscatter");
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, root, outside(root, size_) || bad_all},
        "MpiComm::iscatter");
  return post_collective("MPI_Iscatter", [&](MPI_Request* r) {
    return MPI_Iscatter(all.data(), n, MPI_BYTE, mine.data(), n, MPI_BYTE, root, comm_, r);
  });
}

void MpiComm::scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                       std::span<const std::size_t> displs, std::span<std::byte> mine, int root) {
  const char* what = "MpiComm::scatterv";
  const bool bad_root = outside(root, size_);
  const bool me = rank_ == root;
  const bool bad = bad_root || (me && !detail::blocks_fit(counts, displs, all.size(), size_));
  std::vector<std::int64_t> sizes(me ? static_cast<std::size_t>(size_) : 0);
  bool mismatch = false;
  if (!bad_root) {
    const auto mine_size = static_cast<std::int64_t>(mine.size());
    run_collective("MPI_Igather", [&](MPI_Request* r) {
      return MPI_Igather(&mine_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, root, comm_, r);
    });
    for (std::size_t i = 0; i < sizes.size() && !bad; ++i) {
      mismatch = mismatch || static_cast<std::size_t>(sizes[i]) != counts[i];
    }
  }
  agree({0, 0, root, bad, mismatch, true}, what);
  const int n = count_of(mine.size(), what);
  const std::vector<int> c = ints_of(me ? counts : std::span<const std::size_t>(), what);
  const std::vector<int> d = ints_of(me ? displs : std::span<const std::size_t>(), what);
  run_collective("MPI_Iscatterv", [&](MPI_Request* r) {
    return MPI_Iscatterv(all.data(), c.data(), d.data(), MPI_BYTE, mine.data(), n, MPI_BYTE, root,
                         comm_, r);
  });
}

void MpiComm::allgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  const int n = count_of(mine.size(), "MpiComm::allgather");
  const bool bad = all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, -1, bad}, "MpiComm::allgather");
  run_collective("MPI_Iallgather", [&](MPI_Request* r) {
    return MPI_Iallgather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, comm_, r);
  });
}

Request MpiComm::iallgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  const int n = count_of(mine.size(), "MpiComm::iallgather");
  const bool bad = all.size() != mine.size() * static_cast<std::size_t>(size_);
  agree({static_cast<std::int64_t>(mine.size()), 0, -1, bad}, "MpiComm::iallgather");
  return post_collective("MPI_Iallgather", [&](MPI_Request* r) {
    return MPI_Iallgather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, comm_, r);
  });
}

void MpiComm::allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                         std::span<const std::size_t> counts, std::span<const std::size_t> displs) {
  const char* what = "MpiComm::allgatherv";
  const bool bad = !detail::blocks_fit(counts, displs, all.size(), size_);
  const bool mismatch = !bad && counts[static_cast<std::size_t>(rank_)] != mine.size();
  agree({0, detail::hash_of(counts), -1, bad, mismatch, true}, what);
  const int n = count_of(mine.size(), what);
  const std::vector<int> c = ints_of(counts, what);
  const std::vector<int> d = ints_of(displs, what);
  run_collective("MPI_Iallgatherv", [&](MPI_Request* r) {
    return MPI_Iallgatherv(mine.data(), n, MPI_BYTE, all.data(), c.data(), d.data(), MPI_BYTE,
                           comm_, r);
  });
}

void MpiComm::alltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  const auto p = static_cast<std::size_t>(size_);
  const bool bad = out.size() % p != 0 || in.size() != out.size();
  agree({static_cast<std::int64_t>(out.size()), 0, -1, bad}, "MpiComm::alltoall");
  const int n = count_of(out.size() / p, "MpiComm::alltoall");
  run_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(out.data(), n, MPI_BYTE, in.data(), n, MPI_BYTE, comm_, r);
  });
}

Request MpiComm::ialltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  const auto p = static_cast<std::size_t>(size_);
  const bool bad = out.size() % p != 0 || in.size() != out.size();
  agree({static_cast<std::int64_t>(out.size()), 0, -1, bad}, "MpiComm::ialltoall");
  const int n = count_of(out.size() / p, "MpiComm::ialltoall");
  return post_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(out.data(), n, MPI_BYTE, in.data(), n, MPI_BYTE, comm_, r);
  });
}

void MpiComm::alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                        std::span<const std::size_t> out_displs, std::span<std::byte> in,
                        std::span<const std::size_t> in_counts,
                        std::span<const std::size_t> in_displs) {
  const char* what = "MpiComm::alltoallv";
  const bool bad = !detail::blocks_fit(out_counts, out_displs, out.size(), size_) ||
                   !detail::blocks_fit(in_counts, in_displs, in.size(), size_);
  // Each rank learns what the others send it and checks it against what it expects.
  const auto p = static_cast<std::size_t>(size_);
  std::vector<std::int64_t> sends(p, -1);
  std::vector<std::int64_t> coming(p, -1);
  if (!bad) {
    for (std::size_t j = 0; j < p; ++j) sends[j] = static_cast<std::int64_t>(out_counts[j]);
  }
  run_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(sends.data(), 1, MPI_INT64_T, coming.data(), 1, MPI_INT64_T, comm_, r);
  });
  bool mismatch = false;
  for (std::size_t j = 0; j < p && !bad; ++j) {
    mismatch = mismatch || coming[j] != static_cast<std::int64_t>(in_counts[j]);
  }
  agree({0, 0, -1, bad, mismatch, true}, what);
  const std::vector<int> oc = ints_of(out_counts, what);
  const std::vector<int> od = ints_of(out_displs, what);
  const std::vector<int> ic = ints_of(in_counts, what);
  const std::vector<int> id = ints_of(in_displs, what);
  run_collective("MPI_Ialltoallv", [&](MPI_Request* r) {
    return MPI_Ialltoallv(out.data(), oc.data(), od.data(), MPI_BYTE, in.data(), ic.data(),
                          id.data(), MPI_BYTE, comm_, r);
  });
}

void MpiComm::broadcast(std::span<std::byte> data, int root) {
  check_rank(root, "MpiComm::broadcast");
  const int n = count_of(data.size(), "MpiComm::broadcast");
  run_collective("MPI_Ibcast", [&](MPI_Request* r) {
    return MPI_Ibcast(data.data(), n, MPI_BYTE, root, comm_, r);
  });
}

Request MpiComm::ibroadcast(std::span<std::byte> data, int root) {
  check_rank(root, "MpiComm::ibroadcast");
  const int n = count_of(data.size(), "MpiComm::ibroadcast");
  return post_collective("MPI_Ibcast", [&](MPI_Request* r) {
    return MPI_Ibcast(data.data(), n, MPI_BYTE, root, comm_, r);
  });
}

}  // namespace ipckit
