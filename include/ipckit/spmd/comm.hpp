/// @class ipckit::Comm
/// Comm: the SPMD communicator. A program written once against Comm runs as forked processes
/// on one machine (ShmComm, through spmd::run) or under mpirun across machines (MpiComm,
/// target ipckit::mpi). Ranks are 0 .. size()-1.
///
///     ipckit::spmd::run(4, [](ipckit::Comm& c) {
///       double mine = c.rank() * 1.5;
///       double total = c.allreduce(mine, ipckit::ReduceOp::sum);
///       std::vector<double> halo(n), edge(n);
///       c.sendrecv(right, std::as_bytes(std::span(edge)),
///                  left, std::as_writable_bytes(std::span(halo)));
///     });
///
/// Point-to-point: messages from one rank to another with one tag arrive in the order they
/// were sent (a receive may name kAnySource and kAnyTag; probe() tells a message's size); a
/// receive names the exact number of bytes it expects (Error(errc::size_mismatch) when the
/// message has another size). send() may block until the receiver takes the message (large
/// messages, a full channel): exchanges in both directions use sendrecv() or isend/irecv +
/// wait_all, which make progress on every posted operation at once and never deadlock.
/// Collectives (barrier, broadcast, the reductions, the gathers, scatters and all-to-alls,
/// and their non-blocking forms) must be called by every rank in the same order. A non-blocking
/// collective returns a Request at once; its result is there when wait()/wait_all() returns. Posted
/// isend/irecv move inside wait_all(), send(), recv() and every collective's wait (ShmComm
/// also writes what fits at once when an isend is posted), so a rank blocked in a collective
/// still lets a peer's exchange with it finish. Every blocking call ends with
/// Error(errc::peer_dead) when a rank it waits for died (ShmComm; under MPI, a dead rank ends
/// the whole job, as mpirun does).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/spmd/reduction.hpp"

namespace ipckit {

/// A posted isend/irecv or non-blocking collective; complete after wait_all(). Move-only;
/// owned by the caller.
class Request {
 public:
  /// What a backend keeps for a posted operation (each backend derives its own).
  struct State {
    virtual ~State() = default;  ///< backends derive from State
  };
  /// No operation (valid() is false).
  Request() = default;
  /// A request for the operation `s` describes (made by a backend).
  explicit Request(std::unique_ptr<State> s) noexcept : state_(std::move(s)) {}
  /// The backend's state, nullptr when there is none.
  [[nodiscard]] State* state() const noexcept { return state_.get(); }
  /// True while the request holds an operation (until wait_all() or reset(); a persistent
  /// request until it is destroyed).
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// Drops the operation: cancelled, or finished by the backend (see Comm::isend and
  /// Comm::iallreduce).
  void reset() noexcept { state_.reset(); }
  /// One request standing for several (CartComm::ihalo_exchange): wait_all() completes all
  /// of them; dropping it drops each.
  static Request group(std::vector<Request> parts);
  /// A group of persistent requests (CartComm::halo_init): started by Comm::start() and
  /// left valid by its waits, even with no parts.
  static Request persistent_group(std::vector<Request> parts);
  /// True while the request has an operation in flight: a plain one while valid(), a
  /// persistent one between start() and the wait that completes it, a group while any part
  /// is.
  [[nodiscard]] bool active() const;

 private:
  std::unique_ptr<State> state_;
};

/// The state of Request::group(): the requests it stands for.
struct RequestGroup final : Request::State {
  std::vector<Request> parts;  ///< completed together by Comm::wait_all
  bool persistent = false;     ///< made by persistent_group(): never reset by a wait
};

class Comm;

/// Memory every rank of a communicator maps (made by Comm::allocate_shared, for
/// SharedWindow): each rank's part, and the fence that orders writes and reads across ranks.
class SharedMemory {
 public:
  virtual ~SharedMemory() = default;  ///< unmaps (MpiComm: frees the window, collectively)
  /// Rank r's part (0 <= r < size()).
  [[nodiscard]] virtual std::span<std::byte> part(int r) const = 0;
  /// Collective: writes before it on any rank are seen by reads after it on every rank.
  virtual void fence() = 0;
};

/// The state of a persistent request (Comm::send_init, Comm::recv_init): the operation each
/// Comm::start() posts, and the one in flight.
struct PersistentRequest final : Request::State {
  Comm* comm = nullptr;            ///< the comm that made it (and posts it)
  bool is_send = false;            ///< isend, else irecv
  int peer = 0;                    ///< destination or source (or kAnySource)
  int tag = 0;                     ///< the tag (a receive's may be kAnyTag)
  std::span<const std::byte> out;  ///< send: the bytes
  std::span<std::byte> in;         ///< receive: the buffer
  Request active;                  ///< this round's operation (invalid between rounds)
};

/// Receive from any rank (recv, irecv, probe).
inline constexpr int kAnySource = -1;
/// Receive a message of any tag.
inline constexpr int kAnyTag = -1;
/// The largest tag (what every MPI guarantees, MPI_TAG_UB >= 32767).
inline constexpr int kMaxTag = 32767;
/// Comm::split's color for a rank that joins no new communicator (MPI_UNDEFINED).
inline constexpr int kUndefinedColor = -1;

/// What a receive got, or what a probe found.
struct Status {
  int source = -1;        ///< the sending rank
  int tag = -1;           ///< the message's tag
  std::size_t bytes = 0;  ///< the message's size
};

class Comm {
 public:
  virtual ~Comm() = default;  ///< backends derive from Comm

  /// This rank, 0 .. size()-1.
  [[nodiscard]] virtual int rank() const noexcept = 0;
  /// The number of ranks.
  [[nodiscard]] virtual int size() const noexcept = 0;

  // ---- point-to-point (bytes) --------------------------------------------------------------
  // Every message carries a tag, 0 .. kMaxTag (0 unless given). A receive takes the next
  // message from `src` with its tag; kAnySource and kAnyTag widen that. Messages from one
  // rank with one tag arrive in the order they were sent (those with other tags may be taken
  // first: the receiver keeps them aside until a receive or probe wants them).

  /// Sends data.size() bytes to `dest` with `tag`; may block until the receiver takes them.
  /// Error(errc::invalid_argument) for a rank outside [0, size()) or a tag outside
  /// [0, kMaxTag].
  virtual void send(int dest, std::span<const std::byte> data, int tag) = 0;
  /// Receives exactly data.size() bytes of the next message from `src` (or kAnySource) with
  /// `tag` (or kAnyTag); returns where it came from. Error(errc::size_mismatch) (the message
  /// is consumed) when it has another size: probe() first when the size is not known.
  virtual Status recv(int src, std::span<std::byte> data, int tag) = 0;
  ///@{
  /// Posts without waiting; the buffers (and `status`, filled when the receive completes)
  /// must stay valid until the wait returns. A request dropped without a wait is cancelled;
  /// where it has already begun to move (ShmComm), the rest of the message is discarded or
  /// sent as zero bytes, so the pair's later messages still arrive whole. (MpiComm: a dropped
  /// isend still completes, so its buffer must stay valid.)
  [[nodiscard]] virtual Request isend(int dest, std::span<const std::byte> data, int tag) = 0;
  [[nodiscard]] virtual Request irecv(int src, std::span<std::byte> data, int tag,
                                      Status* status) = 0;
  ///@}
  /// Waits until a message from `src` (or kAnySource) with `tag` (or kAnyTag) can be
  /// received, and says whose, which tag and how many bytes, without receiving it.
  /// Error(errc::peer_dead) when `src` (kAnySource: every other rank) has gone with none.
  virtual Status probe(int src, int tag) = 0;
  /// probe() that does not wait: nothing when no such message has arrived. Behind messages
  /// no receive wants, one call may not see it yet (ShmComm keeps one of those aside per
  /// sender and call): call it again.
  virtual std::optional<Status> iprobe(int src, int tag) = 0;
  /// send() with tag 0.
  void send(int dest, std::span<const std::byte> data) { send(dest, data, 0); }
  /// recv() of tag 0 from `src`.
  Status recv(int src, std::span<std::byte> data) { return recv(src, data, 0); }
  /// isend() with tag 0.
  [[nodiscard]] Request isend(int dest, std::span<const std::byte> data) {
    return isend(dest, data, 0);
  }
  /// irecv() of tag 0, whose status is not wanted.
  [[nodiscard]] Request irecv(int src, std::span<std::byte> data) {
    return irecv(src, data, 0, nullptr);
  }
  /// irecv() whose status is not wanted.
  [[nodiscard]] Request irecv(int src, std::span<std::byte> data, int tag) {
    return irecv(src, data, tag, nullptr);
  }
  /// Completes every request (making progress on all of them together), then resets them.
  /// The first error (size_mismatch, peer_dead) is thrown after all others completed or
  /// failed. Requests of groups are completed like the others; Error(errc::invalid_argument),
  /// before anything waits, for a request another backend made.
  void wait_all(std::span<Request> requests);
  /// wait_all() of one request.
  void wait(Request& request) { wait_all(std::span(&request, 1)); }
  /// Moves the request on without blocking: true when it has completed (it is reset, and
  /// its error thrown), false while it is still in progress. True for an empty request.
  bool test(Request& request);
  /// Waits until one of the requests has completed, completes it (reset; its error thrown)
  /// and returns its index; the others stay posted. requests.size() when none is active
  /// (empty, completed, or persistent and not started).
  /// A group counts as complete when all its parts are. It polls (spinning, then yielding,
  /// then sleeping 50 us at a time). Error(errc::timeout) when the backend's call timeout
  /// (ShmComm: spmd::RunOptions::call_timeout) passes with none complete; the requests stay
  /// posted. Without one, a posted operation that never completes keeps it waiting.
  std::size_t wait_any(std::span<Request> requests);
  /// Waits until at least one of the requests has completed, completes every one that has
  /// (the first error is thrown after all of them are reset) and returns their indices in
  /// order; empty when none is active. Polls, and times out, as wait_any() does.
  std::vector<std::size_t> wait_some(std::span<Request> requests);
  ///@{
  /// A persistent send or receive (the halo pattern): made once, posted by each start() as
  /// isend(dest, data, tag) / irecv(src, data, tag) into the same Request (a persistent
  /// receive fills no Status). wait()/wait_all()/test()
  /// complete the round and leave the request valid but inactive, for the next start();
  /// wait_any()/wait_some() skip inactive ones. The buffer must stay valid while the request
  /// lives. Error(errc::invalid_argument) for a rank outside [0, size()) or a bad tag.
  [[nodiscard]] Request send_init(int dest, std::span<const std::byte> data, int tag = 0);
  [[nodiscard]] Request recv_init(int src, std::span<std::byte> data, int tag = 0);
  ///@}
  /// Posts a persistent request's operation (every part of a group of them).
  /// Error(errc::invalid_argument), before anything is posted, for a request that is not
  /// persistent, was made by another Comm, or is still active. When posting one fails, the
  /// ones this call posted are dropped again (none of them is active after the throw).
  void start(Request& request);
  /// start() of each request.
  void start_all(std::span<Request> requests);
  /// Sends to `dest` and receives from `src` at the same time.
  void sendrecv(int dest, std::span<const std::byte> out, int src, std::span<std::byte> in) {
    check_rank(dest, "Comm::sendrecv");  // both before anything is posted
    check_rank(src, "Comm::sendrecv");
    Request r[2] = {isend(dest, out), irecv(src, in)};
    wait_all(r);
  }

  // ---- collectives ------------------------------------------------------------------------
  // Every rank calls them in the same order with agreeing arguments. Sizes are in bytes
  // (elements in the typed forms and for reductions). A rank whose contribution has another
  // size than the others' gets Error(errc::size_mismatch), a bad root or a buffer of the
  // wrong size Error(errc::invalid_argument) - on every rank, so that all stay in step
  // (MpiComm: see its class comment for what it checks). Input and output buffers must not
  // overlap, except for the in-place reductions.

  /// Returns once every rank has entered the barrier.
  virtual void barrier() = 0;
  /// Element-wise reduction over every rank, in place; every rank gets the same bytes.
  virtual void allreduce(void* inout, std::size_t count, const Reduction& op) = 0;
  /// allreduce() with a built-in operation.
  void allreduce(void* inout, std::size_t count, DataType type, ReduceOp op) {
    allreduce(inout, count, Reduction(type, op));
  }
  /// The reduction over every rank, in place on the root; the other ranks' buffers are left
  /// as they were.
  virtual void reduce(void* inout, std::size_t count, const Reduction& op, int root) = 0;
  /// Inclusive prefix reduction in place: rank r gets ranks 0 .. r combined.
  virtual void scan(void* inout, std::size_t count, const Reduction& op) = 0;
  /// Exclusive prefix reduction in place: rank r > 0 gets ranks 0 .. r-1 combined; rank 0's
  /// buffer is left as it was.
  virtual void exscan(void* inout, std::size_t count, const Reduction& op) = 0;
  /// Every rank passes `in`, sum(counts) elements (`counts` in elements, one per rank, the
  /// same on every rank); rank r gets in `out` (counts[r] elements) block r reduced over
  /// every rank.
  virtual void reduce_scatter(std::span<const std::byte> in, std::span<std::byte> out,
                              std::span<const std::size_t> counts, const Reduction& op) = 0;
  /// Each rank contributes mine.size() bytes (the same on every rank); the root receives them
  /// in rank order into `all` (size() times that; ignored elsewhere).
  virtual void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) = 0;
  /// gather() of contributions that differ in size: rank r's mine.size() must be counts[r],
  /// and lands at all[displs[r]] on the root (counts and displs are read on the root only;
  /// each block must lie inside `all`, and blocks must not overlap).
  virtual void gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                       std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                       int root) = 0;
  /// The root's `all` (size() times mine.size() bytes) in rank order: rank r gets block r.
  virtual void scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) = 0;
  /// scatter() of blocks that differ in size: rank r gets counts[r] bytes from
  /// all[displs[r]] (counts and displs read on the root only; rank r's mine.size() must be
  /// counts[r]).
  virtual void scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                        std::span<const std::size_t> displs, std::span<std::byte> mine,
                        int root) = 0;
  /// gather() to every rank.
  virtual void allgather(std::span<const std::byte> mine, std::span<std::byte> all) = 0;
  /// gatherv() to every rank (every rank passes the same counts; its own displs).
  virtual void allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                          std::span<const std::size_t> counts,
                          std::span<const std::size_t> displs) = 0;
  /// Block j of rank i's `out` becomes block i of rank j's `in`; `out` and `in` are size()
  /// blocks of the same size on every rank.
  virtual void alltoall(std::span<const std::byte> out, std::span<std::byte> in) = 0;
  /// alltoall() of blocks that differ in size: rank i sends out_counts[j] bytes from
  /// out[out_displs[j]] to rank j, which receives them into in[in_displs[i]] and must expect
  /// in_counts[i] == that many.
  virtual void alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                         std::span<const std::size_t> out_displs, std::span<std::byte> in,
                         std::span<const std::size_t> in_counts,
                         std::span<const std::size_t> in_displs) = 0;
  /// The root's bytes to every rank (every rank passes a buffer of the same size).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;

  // ---- non-blocking collectives -------------------------------------------------------------
  // The result is there when wait()/wait_all()/test() says the request completed, and the
  // buffers must stay valid and untouched until then. A request dropped unwaited is
  // completed by its destructor (so the collectives of every rank stay in step): the buffers
  // must outlive the request. Size and argument errors are reported on every rank, by the
  // wait (ShmComm) or by the post (MpiComm's igather, iscatter, iallgather and ialltoall
  // agree on their arguments with a small allreduce before they return, so their post
  // returns once every rank has posted). They match the blocking forms: ibarrier() on one
  // rank meets barrier() on another.

  /// barrier() that returns at once; the request completes once every rank has entered it.
  [[nodiscard]] virtual Request ibarrier() = 0;
  /// allreduce() that returns at once.
  [[nodiscard]] virtual Request iallreduce(void* inout, std::size_t count, const Reduction& op) = 0;
  /// iallreduce() with a built-in operation.
  [[nodiscard]] Request iallreduce(void* inout, std::size_t count, DataType type, ReduceOp op) {
    return iallreduce(inout, count, Reduction(type, op));
  }
  /// broadcast() that returns at once.
  [[nodiscard]] virtual Request ibroadcast(std::span<std::byte> data, int root) = 0;
  /// gather() that returns at once.
  [[nodiscard]] virtual Request igather(std::span<const std::byte> mine, std::span<std::byte> all,
                                        int root) = 0;
  /// scatter() that returns at once.
  [[nodiscard]] virtual Request iscatter(std::span<const std::byte> all, std::span<std::byte> mine,
                                         int root) = 0;
  /// allgather() that returns at once.
  [[nodiscard]] virtual Request iallgather(std::span<const std::byte> mine,
                                           std::span<std::byte> all) = 0;
  /// alltoall() that returns at once.
  [[nodiscard]] virtual Request ialltoall(std::span<const std::byte> out,
                                          std::span<std::byte> in) = 0;

  // ---- shared memory ------------------------------------------------------------------------
  /// Collective: memory every rank maps, `bytes` of it this rank's part (zero-filled, 64-byte
  /// aligned). SharedWindow<T> is the typed way to use it. Errors are thrown on every rank.
  [[nodiscard]] virtual std::unique_ptr<SharedMemory> allocate_shared(std::size_t bytes) = 0;

  // ---- communicators ----------------------------------------------------------------------
  /// Collective: one new communicator per color (MPI_Comm_split). The ranks that pass the
  /// same color form it, ranked by `key` (ties by their rank here); each gets its own, and a
  /// rank passing kUndefinedColor gets nullptr. Its messages and collectives never meet this
  /// communicator's (or any other's), and it has everything a Comm has (CartComm over it,
  /// split again). Error(errc::invalid_argument) on every rank when a rank passes a color
  /// below 0 other than kUndefinedColor. ShmComm: it must be destroyed before the Comm
  /// spmd::run gave.
  [[nodiscard]] virtual std::unique_ptr<Comm> split(int color, int key) = 0;
  /// Collective: a communicator of the same ranks in the same order whose messages and
  /// collectives never meet this one's (MPI_Comm_dup): a library's own traffic.
  [[nodiscard]] virtual std::unique_ptr<Comm> dup() = 0;

  // ---- typed conveniences (spans of trivially copyable T; counts in elements) ---------------
  /// send() of a span of trivially copyable T.
  template <class T>
  void send(int dest, std::span<const T> data, int tag = 0) {
    static_assert(std::is_trivially_copyable_v<T>);
    send(dest, std::as_bytes(data), tag);
  }
  /// recv() into a span of trivially copyable T.
  template <class T>
  Status recv(int src, std::span<T> data, int tag = 0) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>);
    return recv(src, std::as_writable_bytes(data), tag);
  }
  /// allreduce() of one value; returns the result.
  template <class T>
  T allreduce(T value, ReduceOp op) {
    allreduce(&value, 1, data_type_of<T>(), op);
    return value;
  }
  /// allreduce() of one value with a user Reduction (Reduction::of<T>).
  template <class T>
  T allreduce(T value, const Reduction& op) {
    check_element<T>(op, "Comm::allreduce");
    allreduce(&value, 1, op);
    return value;
  }
  /// allreduce() of a span, element-wise, in place.
  template <class T>
  void allreduce(std::span<T> inout, ReduceOp op) {
    allreduce(inout.data(), inout.size(), data_type_of<T>(), op);
  }
  /// iallreduce() of a span, element-wise, in place (the result after the wait).
  template <class T>
  [[nodiscard]] Request iallreduce(std::span<T> inout, ReduceOp op) {
    return iallreduce(inout.data(), inout.size(), data_type_of<T>(), op);
  }
  /// reduce() of one value: the result on the root, `value` itself elsewhere.
  template <class T>
  T reduce(T value, ReduceOp op, int root) {
    reduce(&value, 1, Reduction(data_type_of<T>(), op), root);
    return value;
  }
  /// scan() of one value: ranks 0 .. rank() combined.
  template <class T>
  T scan(T value, ReduceOp op) {
    scan(&value, 1, Reduction(data_type_of<T>(), op));
    return value;
  }
  /// exscan() of one value: ranks 0 .. rank()-1 combined (rank 0: `value` itself).
  template <class T>
  T exscan(T value, ReduceOp op) {
    exscan(&value, 1, Reduction(data_type_of<T>(), op));
    return value;
  }
  /// reduce_scatter() of built-in T: block rank() of `in` reduced over every rank into `out`
  /// (counts[rank()] elements).
  template <class T>
  void reduce_scatter(std::span<const T> in, std::span<T> out, std::span<const std::size_t> counts,
                      ReduceOp op) {
    reduce_scatter(std::as_bytes(in), std::as_writable_bytes(out), counts,
                   Reduction(data_type_of<T>(), op));
  }
  /// The root gets every rank's value in rank order; other ranks get an empty vector.
  template <class T>
  std::vector<T> gather(const T& value, int root) {
    return gather(std::span<const T>(&value, 1), root);
  }
  /// The root gets every rank's span, concatenated in rank order; other ranks get an empty
  /// vector.
  template <class T>
  std::vector<T> gather(std::span<const T> mine, int root) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> all(rank() == root ? mine.size() * static_cast<std::size_t>(size()) : 0);
    gather(std::as_bytes(mine), std::as_writable_bytes(std::span(all)), root);
    return all;
  }
  /// The root gets every rank's span (of any length), concatenated in rank order (after one
  /// gather of the lengths); other ranks get an empty vector.
  template <class T>
  std::vector<T> gatherv(std::span<const T> mine, int root) {
    static_assert(std::is_trivially_copyable_v<T>);
    const std::vector<std::size_t> counts = gather(mine.size_bytes(), root);
    const std::vector<std::size_t> displs = packed(counts);
    std::vector<T> all((counts.empty() ? 0 : displs.back() + counts.back()) / sizeof(T));
    gatherv(std::as_bytes(mine), std::as_writable_bytes(std::span(all)), counts, displs, root);
    return all;
  }
  /// Every rank's value in rank order, on every rank.
  template <class T>
  std::vector<T> allgather(const T& value) {
    return allgather(std::span<const T>(&value, 1));
  }
  /// Every rank's span, concatenated in rank order, on every rank.
  template <class T>
  std::vector<T> allgather(std::span<const T> mine) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> all(mine.size() * static_cast<std::size_t>(size()));
    allgather(std::as_bytes(mine), std::as_writable_bytes(std::span(all)));
    return all;
  }
  /// Every rank's span (of any length), concatenated in rank order, on every rank (after one
  /// allgather of the lengths).
  template <class T>
  std::vector<T> allgatherv(std::span<const T> mine) {
    static_assert(std::is_trivially_copyable_v<T>);
    const std::vector<std::size_t> counts = allgather(mine.size_bytes());
    const std::vector<std::size_t> displs = packed(counts);
    std::vector<T> all((counts.empty() ? 0 : displs.back() + counts.back()) / sizeof(T));
    allgatherv(std::as_bytes(mine), std::as_writable_bytes(std::span(all)), counts, displs);
    return all;
  }
  /// Rank r gets element r of the root's `all` (size() elements; ignored elsewhere).
  template <class T>
  T scatter(std::span<const T> all, int root) {
    static_assert(std::is_trivially_copyable_v<T>);
    T mine{};
    scatter(std::as_bytes(all), std::as_writable_bytes(std::span(&mine, 1)), root);
    return mine;
  }
  /// alltoall() of spans of T: element block j of `out` goes to rank j.
  template <class T>
  void alltoall(std::span<const T> out, std::span<T> in) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>);
    alltoall(std::as_bytes(out), std::as_writable_bytes(in));
  }
  /// broadcast() of a span of trivially copyable T, in place.
  template <class T>
  void broadcast(std::span<T> data, int root) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>);
    broadcast(std::as_writable_bytes(data), root);
  }
  /// The root's `value`, on every rank.
  template <class T>
  T broadcast(T value, int root) {
    broadcast(std::span(&value, 1), root);
    return value;
  }

 protected:
  /// Throws Error(errc::invalid_argument) unless 0 <= r < size(); `what` names the call.
  void check_rank(int r, const char* what) const;
  /// check_rank(), or kAnySource.
  void check_source(int r, const char* what) const;
  /// Throws Error(errc::invalid_argument) unless 0 <= tag <= kMaxTag (or kAnyTag, when
  /// `any` is allowed).
  static void check_tag(int tag, bool any, const char* what);
  /// The backend's wait_all, over requests with no groups among them (wait_all() has taken
  /// them apart); it resets every request, also when it throws.
  virtual void complete(std::span<Request> requests) = 0;
  /// How long a blocking call may wait (0: forever); wait_any()/wait_some() honour it.
  [[nodiscard]] virtual std::chrono::nanoseconds call_timeout() const noexcept { return {}; }
  /// Moves every request on without blocking and sets done[i] for each that has completed
  /// (left for complete() to reset and report). No groups among them; throws
  /// Error(errc::invalid_argument) for a request another backend made.
  virtual void poll(std::span<Request* const> requests, std::vector<bool>& done) = 0;

 private:
  std::vector<bool> ready(std::span<Request> requests);
  // The displacements of blocks of `counts` laid end to end.
  static std::vector<std::size_t> packed(const std::vector<std::size_t>& counts) {
    std::vector<std::size_t> displs(counts.size());
    std::size_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      displs[r] = total;
      total += counts[r];
    }
    return displs;
  }
  template <class T>
  static void check_element(const Reduction& op, const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (op.element_size() != sizeof(T)) bad_typed_arguments(what);
  }
  // Error(errc::invalid_argument): a typed form's spans or reduction do not fit.
  [[noreturn]] static void bad_typed_arguments(const char* what);
};

}  // namespace ipckit
