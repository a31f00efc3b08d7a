// MpiComm's collectives. Each is MPI's non-blocking form, completed by progress_until()
// (which matches this comm's queued receives while it waits: a peer may be blocked sending
// one before it can reach the collective). Every rank calls the same form, so the blocking
// and the non-blocking collectives match each other, as on ShmComm. The collectives with
// roots, counts or sizes that ranks could disagree on first agree on them with one small
// allreduce (MpiComm::agree), so that every rank throws the same error.
#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
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
    std::vector<std::byte> acc(static_cast<const std::byte*>(in),
                               static_cast<const std::byte*>(in) + bytes);
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

// MPI's int of a count; sets `too_large` (agreed on by every rank) when it does not fit.
int int_of(std::size_t v, bool& too_large) {
  if (v > static_cast<std::size_t>(INT_MAX)) {
    too_large = true;
    return 0;
  }
  return static_cast<int>(v);
}

std::vector<int> ints_of(std::span<const std::size_t> v, bool& too_large) {
  std::vector<int> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = int_of(v[i], too_large);
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
  state->family = family_;
  state->collective = true;
  check(start(&state->request), what);
  return Request(std::move(state));
}

void MpiComm::agree(const Agree& a, const char* what) {
  const auto hi = static_cast<std::int64_t>(a.sig >> 32);
  const auto lo = static_cast<std::int64_t>(a.sig & 0xffffffffU);
  // One MAX gives the largest and (negated) the smallest of each.
  std::int64_t v[] = {a.bad ? 1 : 0, a.mismatch ? 1 : 0, a.root, -a.root, hi, -hi, lo, -lo, a.size,
                      -a.size,       a.too_large ? 1 : 0};
  allreduce(v, std::size(v), DataType::i64, ReduceOp::max);
  const std::string w(what);
  if (v[10] != 0) {
    throw Error(errc::message_too_large, w + ": a rank's count is over INT_MAX, MPI's limit");
  }
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
    state->family = family_;
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
  Agree a{static_cast<std::int64_t>(count * op.element_size()), op.signature(), root,
          outside(root, size_)};
  const int n = int_of(count, a.too_large);
  agree(a, "MpiComm::reduce");
  const MpiReduction m(op);
  run_collective("MPI_Ireduce", [&](MPI_Request* r) {
    return rank_ == root ? MPI_Ireduce(MPI_IN_PLACE, inout, n, m.type(), m.op(), root, comm_, r)
                         : MPI_Ireduce(inout, nullptr, n, m.type(), m.op(), root, comm_, r);
  });
}

void MpiComm::scan(void* inout, std::size_t count, const Reduction& op) {
  Agree a{static_cast<std::int64_t>(count * op.element_size()), op.signature()};
  const int n = int_of(count, a.too_large);
  agree(a, "MpiComm::scan");
  const MpiReduction m(op);
  run_collective("MPI_Iscan", [&](MPI_Request* r) {
    return MPI_Iscan(MPI_IN_PLACE, inout, n, m.type(), m.op(), comm_, r);
  });
}

void MpiComm::exscan(void* inout, std::size_t count, const Reduction& op) {
  const std::size_t bytes = count * op.element_size();
  Agree a{static_cast<std::int64_t>(bytes), op.signature()};
  const int n = int_of(count, a.too_large);
  agree(a, "MpiComm::exscan");
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
  Agree a{static_cast<std::int64_t>(in.size()), op.signature() ^ detail::hash_of(counts), -1, bad};
  const std::vector<int> n = ints_of(counts, a.too_large);
  agree(a, "MpiComm::reduce_scatter");
  const MpiReduction m(op);
  run_collective("MPI_Ireduce_scatter", [&](MPI_Request* r) {
    return MPI_Ireduce_scatter(in.data(), out.data(), n.data(), m.type(), m.op(), comm_, r);
  });
}

// gather, scatter, allgather, alltoall and their i-forms: one contribution of `bytes` from
// each rank (each block, for alltoall); `bad` when this rank's buffers do not fit.
int MpiComm::agree_blocks(std::size_t bytes, bool rooted, int root, bool bad, const char* what) {
  Agree a{static_cast<std::int64_t>(bytes), 0, rooted ? root : kNoRoot,
          bad || (rooted && outside(root, size_))};
  const int n = int_of(bytes, a.too_large);
  agree(a, what);
  return n;
}

void MpiComm::gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), true, root, bad_all, "MpiComm::gather");
  run_collective("MPI_Igather", [&](MPI_Request* r) {
    return MPI_Igather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, root, comm_, r);
  });
}

Request MpiComm::igather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), true, root, bad_all, "MpiComm::igather");
  return post_collective("MPI_Igather", [&](MPI_Request* r) {
    return MPI_Igather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, root, comm_, r);
  });
}

// gatherv/scatterv: the roots agree first (everything after depends on them); then the
// root checks every rank's size against its counts, and the ranks agree on that.
void MpiComm::agree_rooted_counts(std::span<const std::size_t> counts,
                                  std::span<const std::size_t> displs, std::size_t buffer,
                                  std::size_t mine, int root, std::vector<int>& c,
                                  std::vector<int>& d, const char* what) {
  const bool me = rank_ == root;
  Agree a{0, 0, root, outside(root, size_)};
  a.varying = true;
  a.bad = a.bad || (me && !detail::blocks_fit(counts, displs, buffer, size_));
  (void)int_of(mine, a.too_large);
  if (me && !a.bad) {
    c = ints_of(counts, a.too_large);
    d = ints_of(displs, a.too_large);
  }
  agree(a, what);
  std::vector<std::int64_t> sizes(me ? static_cast<std::size_t>(size_) : 0);
  const auto mine_size = static_cast<std::int64_t>(mine);
  run_collective("MPI_Igather", [&](MPI_Request* r) {
    return MPI_Igather(&mine_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, root, comm_, r);
  });
  Agree sized{0, 0, root};
  sized.varying = true;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    sized.mismatch = sized.mismatch || static_cast<std::size_t>(sizes[i]) != counts[i];
  }
  agree(sized, what);
}

void MpiComm::gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                      std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                      int root) {
  std::vector<int> c;
  std::vector<int> d;
  agree_rooted_counts(counts, displs, all.size(), mine.size(), root, c, d, "MpiComm::gatherv");
  const int n = static_cast<int>(mine.size());
  run_collective("MPI_Igatherv", [&](MPI_Request* r) {
    return MPI_Igatherv(mine.data(), n, MPI_BYTE, all.data(), c.data(), d.data(), MPI_BYTE, root,
                        comm_, r);
  });
}

void MpiComm::scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), true, root, bad_all, "MpiComm::scatter");
  run_collective("MPI_Iscatter", [&](MPI_Request* r) {
    return MPI_Iscatter(all.data(), n, MPI_BYTE, mine.data(), n, MPI_BYTE, root, comm_, r);
  });
}

Request MpiComm::iscatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) {
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), true, root, bad_all, "MpiComm::iscatter");
  return post_collective("MPI_Iscatter", [&](MPI_Request* r) {
    return MPI_Iscatter(all.data(), n, MPI_BYTE, mine.data(), n, MPI_BYTE, root, comm_, r);
  });
}

void MpiComm::scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                       std::span<const std::size_t> displs, std::span<std::byte> mine, int root) {
  std::vector<int> c;
  std::vector<int> d;
  agree_rooted_counts(counts, displs, all.size(), mine.size(), root, c, d, "MpiComm::scatterv");
  const int n = static_cast<int>(mine.size());
  run_collective("MPI_Iscatterv", [&](MPI_Request* r) {
    return MPI_Iscatterv(all.data(), c.data(), d.data(), MPI_BYTE, mine.data(), n, MPI_BYTE, root,
                         comm_, r);
  });
}

void MpiComm::allgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  const bool bad = all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), false, kNoRoot, bad, "MpiComm::allgather");
  run_collective("MPI_Iallgather", [&](MPI_Request* r) {
    return MPI_Iallgather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, comm_, r);
  });
}

Request MpiComm::iallgather(std::span<const std::byte> mine, std::span<std::byte> all) {
  const bool bad = all.size() != mine.size() * static_cast<std::size_t>(size_);
  const int n = agree_blocks(mine.size(), false, kNoRoot, bad, "MpiComm::iallgather");
  return post_collective("MPI_Iallgather", [&](MPI_Request* r) {
    return MPI_Iallgather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, comm_, r);
  });
}

void MpiComm::allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                         std::span<const std::size_t> counts, std::span<const std::size_t> displs) {
  Agree a{0, detail::hash_of(counts), -1, !detail::blocks_fit(counts, displs, all.size(), size_)};
  a.varying = true;
  a.mismatch = !a.bad && counts[static_cast<std::size_t>(rank_)] != mine.size();
  const int n = int_of(mine.size(), a.too_large);
  const std::vector<int> c = ints_of(counts, a.too_large);
  const std::vector<int> d = ints_of(displs, a.too_large);
  agree(a, "MpiComm::allgatherv");
  run_collective("MPI_Iallgatherv", [&](MPI_Request* r) {
    return MPI_Iallgatherv(mine.data(), n, MPI_BYTE, all.data(), c.data(), d.data(), MPI_BYTE,
                           comm_, r);
  });
}

void MpiComm::alltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  const auto p = static_cast<std::size_t>(size_);
  const bool bad = out.size() % p != 0 || in.size() != out.size();
  const int n = agree_blocks(out.size() / p, false, kNoRoot, bad, "MpiComm::alltoall");
  run_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(out.data(), n, MPI_BYTE, in.data(), n, MPI_BYTE, comm_, r);
  });
}

Request MpiComm::ialltoall(std::span<const std::byte> out, std::span<std::byte> in) {
  const auto p = static_cast<std::size_t>(size_);
  const bool bad = out.size() % p != 0 || in.size() != out.size();
  const int n = agree_blocks(out.size() / p, false, kNoRoot, bad, "MpiComm::ialltoall");
  return post_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(out.data(), n, MPI_BYTE, in.data(), n, MPI_BYTE, comm_, r);
  });
}

void MpiComm::alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                        std::span<const std::size_t> out_displs, std::span<std::byte> in,
                        std::span<const std::size_t> in_counts,
                        std::span<const std::size_t> in_displs) {
  Agree a{0, 0, -1,
          !detail::blocks_fit(out_counts, out_displs, out.size(), size_) ||
              !detail::blocks_fit(in_counts, in_displs, in.size(), size_)};
  a.varying = true;
  // Each rank learns what the others send it and checks it against what it expects.
  const auto p = static_cast<std::size_t>(size_);
  std::vector<std::int64_t> sends(p, -1);
  std::vector<std::int64_t> coming(p, -1);
  std::vector<int> oc;
  std::vector<int> od;
  std::vector<int> ic;
  std::vector<int> id;
  if (!a.bad) {
    for (std::size_t j = 0; j < p; ++j) sends[j] = static_cast<std::int64_t>(out_counts[j]);
    oc = ints_of(out_counts, a.too_large);
    od = ints_of(out_displs, a.too_large);
    ic = ints_of(in_counts, a.too_large);
    id = ints_of(in_displs, a.too_large);
  }
  run_collective("MPI_Ialltoall", [&](MPI_Request* r) {
    return MPI_Ialltoall(sends.data(), 1, MPI_INT64_T, coming.data(), 1, MPI_INT64_T, comm_, r);
  });
  for (std::size_t j = 0; j < p && !a.bad; ++j) {
    a.mismatch = a.mismatch || coming[j] != static_cast<std::int64_t>(in_counts[j]);
  }
  agree(a, "MpiComm::alltoallv");
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

namespace {

// An MPI shared-memory window: each rank's part, MPI_Win_fence as the fence.
class MpiMemory final : public SharedMemory {
 public:
  // `sizes`: what each rank asked for (MPI's parts are rounded up).
  MpiMemory(MPI_Win win, const std::vector<std::uint64_t>& sizes)
      : win_(win), parts_(sizes.size()) {
    for (int r = 0; r < static_cast<int>(sizes.size()); ++r) {
      MPI_Aint bytes = 0;
      int unit = 0;
      void* base = nullptr;
      check(MPI_Win_shared_query(win_, r, &bytes, &unit, &base), "MPI_Win_shared_query");
      // Each part starts at the first cache line of MPI's (the mappings are page aligned
      // in every process, so every rank finds the same line).
      const auto i = static_cast<std::size_t>(r);
      const auto at = reinterpret_cast<std::uintptr_t>(base);  // NOLINT: an address
      const std::size_t skip = (64 - at % 64) % 64;
      const auto got = static_cast<std::size_t>(bytes);
      parts_[i] = {static_cast<std::byte*>(base) + std::min(skip, got),
                   std::min(got - std::min(skip, got), static_cast<std::size_t>(sizes[i]))};
    }
  }
  ~MpiMemory() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // Collective: not while the rank unwinds (the Environment aborts the job then).
    if (finalized == 0 && std::uncaught_exceptions() == 0) MPI_Win_free(&win_);
  }
  MpiMemory(const MpiMemory&) = delete;
  MpiMemory& operator=(const MpiMemory&) = delete;
  [[nodiscard]] std::span<std::byte> part(int r) const override {
    return parts_[static_cast<std::size_t>(r)];
  }
  void fence() override { check(MPI_Win_fence(0, win_), "MPI_Win_fence"); }

 private:
  MPI_Win win_;
  std::vector<std::span<std::byte>> parts_;
};

}  // namespace

std::unique_ptr<SharedMemory> MpiComm::allocate_shared(std::size_t bytes) {
  const char* what = "MpiComm::allocate_shared";
  // MPI_Comm_split_type blocks without matching queued receives: a barrier first (which
  // does) lets every peer's send to one of them through.
  barrier();
  // Every rank must share this node's memory with all the others.
  MPI_Comm node = MPI_COMM_NULL;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type");
  int node_size = 0;
  const int rc = MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  check(rc, "MPI_Comm_size");
  Agree a{0, 0, kNoRoot, node_size != size_};
  a.varying = true;
  a.too_large = bytes > static_cast<std::size_t>(INT64_MAX / 2);
  agree(a, what);
  const std::vector<std::uint64_t> sizes = allgather(static_cast<std::uint64_t>(bytes));
  // A part rounded up to whole cache lines, and one more line to align its start.
  const auto rounded = static_cast<MPI_Aint>((bytes + 63) / 64 * 64 + 64);
  void* base = nullptr;
  MPI_Win win = MPI_WIN_NULL;
  check(MPI_Win_allocate_shared(rounded, 1, MPI_INFO_NULL, comm_, &base, &win),
        "MPI_Win_allocate_shared");
  std::memset(base, 0, static_cast<std::size_t>(rounded));
  auto memory = std::make_unique<MpiMemory>(win, sizes);
  memory->fence();  // the zeros, before anyone writes
  return memory;
}

std::unique_ptr<Comm> MpiComm::split(int color, int key) {
  const char* what = "MpiComm::split";
  Agree a{0, 0, kNoRoot, color < 0 && color != kUndefinedColor};
  a.varying = true;
  agree(a, what);
  MPI_Comm part = MPI_COMM_NULL;
  check(MPI_Comm_split(comm_, color == kUndefinedColor ? MPI_UNDEFINED : color, key, &part),
        "MPI_Comm_split");
  if (part == MPI_COMM_NULL) return nullptr;
  // MpiComm works on a duplicate of its own: `part` is freed either way.
  struct Free {
    MPI_Comm& c;
    ~Free() { MPI_Comm_free(&c); }
  } free_part{part};
  return std::unique_ptr<Comm>(new MpiComm(part, family_));
}

std::unique_ptr<Comm> MpiComm::dup() {
  // MPI_Comm_dup blocks without matching queued receives: a barrier first (which does) lets
  // every peer's send to one of them through.
  barrier();
  return std::unique_ptr<Comm>(new MpiComm(comm_, family_));
}

}  // namespace ipckit
