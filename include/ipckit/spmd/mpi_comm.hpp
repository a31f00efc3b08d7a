/// @class ipckit::MpiComm
/// MpiComm: the Comm backend over MPI (target ipckit::mpi), for running the same SPMD program
/// under mpirun across machines. mpi::Environment initialises and finalises MPI around main():
///
///     int main(int argc, char** argv) {
///       ipckit::mpi::Environment env(argc, argv);
///       ipckit::MpiComm comm;                 // MPI_COMM_WORLD
///       solve(comm);                          // any function written against ipckit::Comm&
///     }
///
/// A receive is matched to its message inside this Comm's calls (wait_all, recv, send): a
/// matched probe (MPI_Improbe) sees the message's size first, then MPI_Imrecv takes that very
/// message, so a message of the wrong size, larger or smaller, is consumed and reported as
/// errc::size_mismatch with both sizes. (An MPI_Irecv posted ahead cannot do that safely:
/// Open MPI 4.1's shared-memory single-copy path writes a truncated large message past the
/// receive buffer.) A blocking recv() with no receive queued uses MPI_Probe + MPI_Recv of the
/// probed source and tag. Like ShmComm, a rank takes messages for its posted irecvs only
/// inside this Comm's calls (waits, tests, send, recv, probes and every collective's wait),
/// not while it computes. A dropped isend still completes: its buffer must stay valid.
///
/// Differences from ShmComm that a program may notice:
///  - a rank that dies ends the whole job (mpirun's rule); there is no errc::peer_dead;
///  - allreduce() combines the ranks' values in the order the MPI library chooses, so
///    floating-point sums may differ in the last bits from ShmComm's rank-order sums (every
///    rank still gets the same bytes with Open MPI);
///  - a message, a gather contribution, a broadcast or an allreduce is at most INT_MAX bytes
///    (elements for allreduce): errc::message_too_large above that;
///  - broadcast(), allreduce() and the non-blocking ibarrier/iallreduce/ibroadcast do not
///    check that every rank passed the same size or reduction (a mismatch is MPI's undefined
///    behaviour: an MPI error on some ranks, a hang on others); the other collectives agree
///    on their arguments with one small allreduce first.
///
/// This is the only ipckit header that includes `<mpi.h>`.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ipckit/spmd/comm.hpp"

/// The MPI backend (library target ipckit::mpi): the Environment, MpiComm's helpers and the
/// mapping of MPI errors to ipckit::Error.
namespace ipckit::mpi {

/// Initialises MPI, asking for MPI_THREAD_SERIALIZED (MpiComm calls MPI from the thread that
/// made the Environment only; mpi::Pool's driver thread calls it on rank 0 while the pool
/// lives), unless it already is, and finalises it on destruction if it initialised
/// it. Sets MPI_ERRORS_RETURN on MPI_COMM_WORLD, so that failed MPI calls throw ipckit::Error
/// instead of aborting the job. One per process, made in main() before any MpiComm. Throws
/// Error when MPI was already finalised or cannot give MPI_THREAD_FUNNELED.
class Environment {
 public:
  /// Initialises MPI without the program's arguments.
  Environment();
  /// Initialises MPI with main()'s arguments (MPI may remove the ones it consumed).
  Environment(int& argc, char**& argv);
  /// Finalises MPI if this Environment initialised it. While an exception is unwinding past
  /// it (a rank failed), it calls MPI_Abort instead: the other ranks may be blocked in a call
  /// this rank will never make, and MPI_Finalize would wait for them.
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  /// True when this object called MPI_Init_thread (and will call MPI_Finalize).
  [[nodiscard]] bool owns_mpi() const noexcept { return owns_; }
  /// The thread level MPI provides (MPI_THREAD_FUNNELED or higher).
  [[nodiscard]] int thread_level() const noexcept { return provided_; }

 private:
  void init(int* argc, char*** argv);

  bool owns_ = false;
  int provided_ = 0;
  int uncaught_ = 0;
};

/// Throws Error("<what> failed: <MPI error string>") unless rc is MPI_SUCCESS. The code is
/// errc::size_mismatch for MPI_ERR_TRUNCATE, errc::invalid_argument for a bad rank, count,
/// buffer, root or argument, and otherwise error_category()'s code for the MPI error class.
void check(int rc, const char* what);
/// The category of MPI error classes that have no ipckit::errc (name "ipckit.mpi").
const std::error_category& error_category() noexcept;
/// The text MPI gives for an error code.
std::string error_string(int rc);

///@{
/// The MPI datatype and operation of a DataType and a ReduceOp.
MPI_Datatype datatype_of(DataType type) noexcept;
MPI_Op op_of(ReduceOp op) noexcept;
///@}

}  // namespace ipckit::mpi

namespace ipckit {
namespace detail {
struct MpiMatcher;
struct MpiFamily;
struct MpiRequest;
}  // namespace detail

/// A Comm over an MPI communicator (MPI_COMM_WORLD by default): the constructor, called by
/// every rank of it, duplicates it (MPI_Comm_dup; freed by the destructor), so the
/// program's own MPI traffic on `comm` never meets this Comm's messages, whose MPI tag is
/// the Comm tag. The constructor sets MPI_ERRORS_RETURN on `comm` and on the duplicate.
/// Every call must be made from the thread that made the mpi::Environment. Requests may
/// outlive the MpiComm that made them, not MPI_Finalize.
class MpiComm final : public Comm {
 public:
  /// A Comm over `comm` (see the class comment); throws Error when an MPI call fails.
  explicit MpiComm(MPI_Comm comm = MPI_COMM_WORLD);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  [[nodiscard]] int rank() const noexcept override { return rank_; }
  [[nodiscard]] int size() const noexcept override { return size_; }
  /// The MPI communicator this Comm works on (its own duplicate of the one it was given).
  [[nodiscard]] MPI_Comm native() const noexcept { return comm_; }

  ///@{
  /// While they wait, send() and recv() take messages for this rank's queued irecvs (they
  /// are isend/irecv + wait_all then; with none queued, MPI_Send and MPI_Probe + MPI_Recv).
  /// The tag is the MPI tag.
  void send(int dest, std::span<const std::byte> data, int tag) override;
  Status recv(int src, std::span<std::byte> data, int tag) override;
  ///@}
  [[nodiscard]] Request isend(int dest, std::span<const std::byte> data, int tag) override;
  /// Queues the receive; a wait matches it to the next message from `src` with `tag`.
  [[nodiscard]] Request irecv(int src, std::span<std::byte> data, int tag, Status* status) override;
  /// MPI_Iprobe, after the queued receives took the messages they match; probe() spins on it.
  Status probe(int src, int tag) override;
  std::optional<Status> iprobe(int src, int tag) override;

  void barrier() override;
  void allreduce(void* inout, std::size_t count, const Reduction& op) override;
  void reduce(void* inout, std::size_t count, const Reduction& op, int root) override;
  void scan(void* inout, std::size_t count, const Reduction& op) override;
  void exscan(void* inout, std::size_t count, const Reduction& op) override;
  void reduce_scatter(std::span<const std::byte> in, std::span<std::byte> out,
                      std::span<const std::size_t> counts, const Reduction& op) override;
  void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) override;
  void gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
               std::span<const std::size_t> counts, std::span<const std::size_t> displs,
               int root) override;
  void scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) override;
  void scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                std::span<const std::size_t> displs, std::span<std::byte> mine, int root) override;
  void allgather(std::span<const std::byte> mine, std::span<std::byte> all) override;
  void allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                  std::span<const std::size_t> counts,
                  std::span<const std::size_t> displs) override;
  void alltoall(std::span<const std::byte> out, std::span<std::byte> in) override;
  void alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                 std::span<const std::size_t> out_displs, std::span<std::byte> in,
                 std::span<const std::size_t> in_counts,
                 std::span<const std::size_t> in_displs) override;
  void broadcast(std::span<std::byte> data, int root) override;
  /// The non-blocking collectives are MPI's (MPI_Ibarrier, MPI_Iallreduce, ...), matched by
  /// the blocking forms. igather, iscatter, iallgather and ialltoall first agree on sizes
  /// and roots, like their blocking forms, with a small allreduce before they return (so
  /// that post returns once every rank has posted, and argument errors are thrown by the
  /// post, on every rank); ibarrier, iallreduce and ibroadcast return at once, unchecked
  /// (ranks that pass different sizes get what MPI gives: MPI_ERR_TRUNCATE, or a hang). An
  /// iallreduce with a user function is done before it returns (MPI calls the function back
  /// while the request progresses).
  [[nodiscard]] Request ibarrier() override;
  [[nodiscard]] Request iallreduce(void* inout, std::size_t count, const Reduction& op) override;
  [[nodiscard]] Request ibroadcast(std::span<std::byte> data, int root) override;
  [[nodiscard]] Request igather(std::span<const std::byte> mine, std::span<std::byte> all,
                                int root) override;
  [[nodiscard]] Request iscatter(std::span<const std::byte> all, std::span<std::byte> mine,
                                 int root) override;
  [[nodiscard]] Request iallgather(std::span<const std::byte> mine,
                                   std::span<std::byte> all) override;
  [[nodiscard]] Request ialltoall(std::span<const std::byte> out, std::span<std::byte> in) override;

  /// See SharedWindow (shared_window.hpp) for how each backend makes it.
  [[nodiscard]] std::unique_ptr<SharedMemory> allocate_shared(std::size_t bytes) override;

  /// MPI_Comm_split (after an agreement on the colors, so that a bad one is an error on
  /// every rank) and MPI_Comm_dup; the result is an MpiComm over its own duplicate.
  [[nodiscard]] std::unique_ptr<Comm> split(int color, int key) override;
  [[nodiscard]] std::unique_ptr<Comm> dup() override;

  using Comm::allgather;
  using Comm::allgatherv;
  using Comm::allreduce;
  using Comm::alltoall;
  using Comm::broadcast;
  using Comm::exscan;
  using Comm::gather;
  using Comm::gatherv;
  using Comm::iallreduce;
  using Comm::irecv;
  using Comm::isend;
  using Comm::recv;
  using Comm::reduce;
  using Comm::reduce_scatter;
  using Comm::scan;
  using Comm::scatter;
  using Comm::send;

 protected:
  /// Throws Error(errc::invalid_argument), before waiting on anything, for a request that
  /// another backend made. A request dropped without wait_all(): a receive not yet matched
  /// is withdrawn, a matched one (and a collective) waited for; a send goes on (its buffer
  /// must stay valid).
  void complete(std::span<Request> requests) override;
  void poll(std::span<Request* const> requests, std::vector<bool>& done) override;

 private:
  // A communicator of `family` (split, dup): over its own duplicate of `comm`.
  MpiComm(MPI_Comm comm, std::shared_ptr<detail::MpiFamily> family);
  void progress_until(MPI_Request& request, const char* what);
  bool test_some(std::span<detail::MpiRequest* const> states);
  // Starts a non-blocking MPI collective (start(&request) returns its MPI code) and waits
  // for it, matching queued receives meanwhile; or returns it as a Request.
  void run_collective(const char* what, const std::function<int(MPI_Request*)>& start);
  Request post_collective(const char* what, const std::function<int(MPI_Request*)>& start);
  // What every rank passed, agreed by one allreduce: the same error on every rank.
  struct Agree {
    std::int64_t size = 0;  // equal on every rank unless `varying`
    std::uint64_t sig = 0;  // equal on every rank
    int root = -1;          // -1: none
    bool bad = false;       // invalid_argument: this rank's arguments are malformed
    bool mismatch = false;  // size_mismatch: a count this rank checked disagrees
    bool varying = false;
    bool too_large = false;  // message_too_large: a count is over INT_MAX
  };
  void agree(const Agree& a, const char* what);
  static constexpr int kNoRoot = -1;  // agree_blocks: no root (a root passed is range-checked)
  int agree_blocks(std::size_t bytes, bool rooted, int root, bool bad, const char* what);
  void agree_rooted_counts(std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                           std::size_t buffer, std::size_t mine, int root, std::vector<int>& c,
                           std::vector<int>& d, const char* what);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
  std::shared_ptr<detail::MpiMatcher> matcher_;
  // The matchers of every MpiComm made from this one or it from (split, dup): each wait
  // matches all of their queued receives, as a peer may be blocked sending one of them.
  std::shared_ptr<detail::MpiFamily> family_;
};

}  // namespace ipckit
