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
/// Point-to-point: messages from one rank to another arrive in the order they were sent; a
/// receive names the exact number of bytes it expects (Error(errc::size_mismatch) when the
/// message has another size). send() may block until the receiver takes the message (large
/// messages, a full channel): exchanges in both directions use sendrecv() or isend/irecv +
/// wait_all, which make progress on every posted operation at once and never deadlock.
/// Collectives (barrier, allreduce, gather, broadcast, and the non-blocking ibarrier and
/// iallreduce) must be called by every rank in the same order. A non-blocking collective
/// returns a Request at once; its result is there when wait()/wait_all() returns. Posted
/// isend/irecv move inside wait_all(), send(), recv() and every collective's wait (ShmComm
/// also writes what fits at once when an isend is posted), so a rank blocked in a collective
/// still lets a peer's exchange with it finish. Every blocking call ends with
/// Error(errc::peer_dead) when a rank it waits for died (ShmComm; under MPI, a dead rank ends
/// the whole job, as mpirun does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "ipckit/core/error.hpp"

namespace ipckit {

/// How allreduce combines the ranks' values.
enum class ReduceOp {
  sum,  ///< the sum (in rank order on ShmComm)
  min,  ///< the smallest
  max   ///< the largest
};

/// The element types allreduce works on.
enum class DataType {
  i32,  ///< std::int32_t
  i64,  ///< std::int64_t (and long long)
  u32,  ///< std::uint32_t
  u64,  ///< std::uint64_t (and unsigned long long)
  f32,  ///< float
  f64   ///< double
};

/// The DataType of T; a compile-time error for any other type.
template <class T>
constexpr DataType data_type_of() {
  // long long is a distinct type from int64_t (long) on LP64, with the same 8 bytes.
  constexpr bool i64 =
      std::is_same_v<T, std::int64_t> || (std::is_same_v<T, long long> && sizeof(long long) == 8);
  constexpr bool u64 = std::is_same_v<T, std::uint64_t> ||
                       (std::is_same_v<T, unsigned long long> && sizeof(long long) == 8);
  if constexpr (std::is_same_v<T, std::int32_t>)
    return DataType::i32;
  else if constexpr (i64)
    return DataType::i64;
  else if constexpr (std::is_same_v<T, std::uint32_t>)
    return DataType::u32;
  else if constexpr (u64)
    return DataType::u64;
  else if constexpr (std::is_same_v<T, float>)
    return DataType::f32;
  else if constexpr (std::is_same_v<T, double>)
    return DataType::f64;
  else
    static_assert(sizeof(T) == 0, "allreduce: int32/int64/uint32/uint64/float/double only");
}
/// Bytes of one element of type `t`.
std::size_t size_of(DataType t) noexcept;

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
  /// True while the request holds an operation (until wait_all() or reset()).
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// Drops the operation: cancelled, or finished by the backend (see Comm::isend and
  /// Comm::iallreduce).
  void reset() noexcept { state_.reset(); }
  /// One request standing for several (CartComm::ihalo_exchange): wait_all() completes all
  /// of them; dropping it drops each.
  static Request group(std::vector<Request> parts);

 private:
  std::unique_ptr<State> state_;
};

/// The state of Request::group(): the requests it stands for.
struct RequestGroup final : Request::State {
  std::vector<Request> parts;  ///< completed together by Comm::wait_all
};

class Comm {
 public:
  virtual ~Comm() = default;  ///< backends derive from Comm

  /// This rank, 0 .. size()-1.
  [[nodiscard]] virtual int rank() const noexcept = 0;
  /// The number of ranks.
  [[nodiscard]] virtual int size() const noexcept = 0;

  // ---- point-to-point (bytes) --------------------------------------------------------------
  /// Sends data.size() bytes to `dest`; may block until the receiver takes them.
  /// Error(errc::invalid_argument) for a rank outside [0, size()).
  virtual void send(int dest, std::span<const std::byte> data) = 0;
  /// Receives exactly data.size() bytes; Error(errc::size_mismatch) (message consumed) when
  /// the message has another size.
  virtual void recv(int src, std::span<std::byte> data) = 0;
  ///@{
  /// Posts without waiting; the buffers must stay valid until wait_all() returns. A request
  /// dropped without wait_all() is cancelled; where it has already begun to move (ShmComm),
  /// the rest of the message is discarded or sent as zero bytes, so the pair's later
  /// messages still arrive whole.
  [[nodiscard]] virtual Request isend(int dest, std::span<const std::byte> data) = 0;
  [[nodiscard]] virtual Request irecv(int src, std::span<std::byte> data) = 0;
  ///@}
  /// Completes every request (making progress on all of them together), then resets them.
  /// The first error (size_mismatch, peer_dead) is thrown after all others completed or
  /// failed. Requests of groups are completed like the others; Error(errc::invalid_argument),
  /// before anything waits, for a request another backend made.
  void wait_all(std::span<Request> requests);
  /// wait_all() of one request.
  void wait(Request& request) { wait_all(std::span(&request, 1)); }
  /// Sends to `dest` and receives from `src` at the same time.
  void sendrecv(int dest, std::span<const std::byte> out, int src, std::span<std::byte> in) {
    check_rank(dest, "Comm::sendrecv");  // both before anything is posted
    check_rank(src, "Comm::sendrecv");
    Request r[2] = {isend(dest, out), irecv(src, in)};
    wait_all(r);
  }

  // ---- collectives ------------------------------------------------------------------------
  /// Returns once every rank has entered the barrier.
  virtual void barrier() = 0;
  /// Element-wise reduction over every rank, in place; every rank gets the same bytes (the
  /// ranks' values are combined in rank order).
  virtual void allreduce(void* inout, std::size_t count, DataType type, ReduceOp op) = 0;
  /// Each rank contributes mine.size() bytes (the same on every rank, else
  /// errc::size_mismatch); the root receives them in rank order into all (size() * that many
  /// bytes, else errc::invalid_argument on every rank; ignored elsewhere).
  virtual void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) = 0;
  /// The root's bytes to every rank (every rank passes a buffer of the same size).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;

  // ---- non-blocking collectives -------------------------------------------------------------
  /// barrier() that returns at once; the request completes once every rank has entered it.
  [[nodiscard]] virtual Request ibarrier() = 0;
  /// allreduce() that returns at once: `inout` holds the result (the same bytes as
  /// allreduce() gives) when wait()/wait_all() returns, and must stay valid and untouched
  /// until then. A request dropped unwaited is completed by its destructor (so the
  /// collectives of every rank stay in step): the buffer must outlive the request.
  /// Size mismatches are reported by the wait, on every rank.
  [[nodiscard]] virtual Request iallreduce(void* inout, std::size_t count, DataType type,
                                           ReduceOp op) = 0;

  // ---- typed conveniences -----------------------------------------------------------------
  /// send() of a span of trivially copyable T.
  template <class T>
  void send(int dest, std::span<const T> data) {
    static_assert(std::is_trivially_copyable_v<T>);
    send(dest, std::as_bytes(data));
  }
  /// recv() into a span of trivially copyable T.
  template <class T>
  void recv(int src, std::span<T> data) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>);
    recv(src, std::as_writable_bytes(data));
  }
  /// allreduce() of one value; returns the result.
  template <class T>
  T allreduce(T value, ReduceOp op) {
    allreduce(&value, 1, data_type_of<T>(), op);
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
  /// The root gets every rank's value in rank order; other ranks get an empty vector.
  template <class T>
  std::vector<T> gather(const T& value, int root) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> all(rank() == root ? static_cast<std::size_t>(size()) : 0);
    gather(std::as_bytes(std::span(&value, 1)), std::as_writable_bytes(std::span(all)), root);
    return all;
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
  /// The backend's wait_all, over requests with no groups among them (wait_all() has taken
  /// them apart); it resets every request, also when it throws.
  virtual void complete(std::span<Request> requests) = 0;
};

/// Combines `in` into `acc` element-wise (acc = op(acc, in)); used by backends.
void reduce_into(void* acc, const void* in, std::size_t count, DataType type, ReduceOp op);

}  // namespace ipckit
