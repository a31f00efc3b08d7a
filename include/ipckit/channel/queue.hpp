/// @file
/// ipckit::Queue<T>: Python's multiprocessing.Queue between processes — any number of
/// producers and consumers, any type the codec handles, variable size — that a process killed
/// in the middle of a put or a get does not break.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "ipckit/channel/codec.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/event_count.hpp"
#include "ipckit/sync/wait_source.hpp"

namespace ipckit {
namespace detail {

struct QueueHeader;

// The queue in shared memory, as bytes: a ring of records under two robust locks, the
// producers' (tail) and the consumers' (head). Every change of the ring's committed state is
// one store under its side's lock (tail by a put, head by a get), so a process killed at any
// instruction leaves the old state or the new one:
// a put killed before its commit loses its own message, a get killed before its commit leaves
// the message for another consumer, and nothing else is touched. (lib/channel/queue.cpp)
class QueueCore {
 public:
  // Bytes of shared memory a queue of `capacity` data bytes takes.
  static std::size_t bytes_for(std::size_t capacity);
  // Lays a fresh queue over `mem` (bytes_for(capacity) bytes, 64-byte aligned); `joinable`:
  // it counts tasks (JoinableQueue).
  static QueueCore create(std::span<std::byte> mem, std::size_t capacity, WaitPolicy policy,
                          bool joinable = false);
  // A queue another process laid there; Error(errc::bad_layout) when it is not one.
  static QueueCore attach(std::span<std::byte> mem);
  QueueCore() = default;

  // Puts one message; false when there was no room by the deadline. Throws
  // Error(errc::closed) once closed, errc::message_too_large above max_message(),
  // errc::peer_dead when it is full and every consumer that ever got is dead.
  bool put(std::span<const std::byte> msg, const Deadline& deadline);
  // Takes the oldest message into `out`; false when none came by the deadline. Throws
  // errc::closed once closed and drained, errc::peer_dead when it is empty and every producer
  // that ever put is dead, errc::bad_layout when the shared state is not a queue's.
  bool get(std::vector<std::byte>& out, const Deadline& deadline);
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept;
  [[nodiscard]] bool empty() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;
  // Records this process among the producers or the consumers (once per process; put and get
  // do it themselves).
  void enroll(bool producer);
  // JoinableQueue: one task got by this process is done; Error(errc::invalid_argument) when
  // it has no task left to mark.
  void task_done();
  // JoinableQueue: true once every item put has been marked done (or was got by a consumer
  // that died: released); false at the deadline.
  bool join(const Deadline& deadline);
  // JoinableQueue: tasks got by consumers that died before marking them done: those already
  // folded into the done count (a slot reused) and those of dead consumers not yet.
  [[nodiscard]] std::uint64_t abandoned() const;
  [[nodiscard]] std::uint64_t pending_release() const;
  [[nodiscard]] bool joinable() const noexcept { return joinable_; }
  // For a WaitSet, the consumers' side: ready when a get would not wait (an item, closed, or
  // every producer dead); woken by the producers' notify.
  [[nodiscard]] WaitSource wait_source() const;

 private:
  explicit QueueCore(QueueHeader* h) noexcept : h_(h) {}
  // Throw errc::peer_dead: empty with every producer dead; full (for an item of `len` bytes)
  // with every consumer dead.
  void check_producers() const;
  void check_consumers(std::size_t len) const;

  QueueHeader* h_ = nullptr;
  std::uint64_t cap_ = 0;   // the capacity as this process made or checked it
  bool joinable_ = false;   // as this process made or found it
  pid_t producer_pid_ = 0;  // the process that enrolled as a producer through this handle
  pid_t consumer_pid_ = 0;  // ... as a consumer
  // The other side's index as this handle last read it (a lower bound: indexes only grow):
  // a put reads head again only when this shows too little room, a get reads tail again only
  // when this shows nothing to take.
  std::uint64_t head_seen_ = 0;
  std::uint64_t tail_seen_ = 0;
};

}  // namespace detail

/// Queue<T>: a queue between processes, after Python's multiprocessing.Queue. Any number of
/// processes put and get; T is anything the codec handles (trivially copyable values,
/// strings and vectors of them, cereal types), one message per value, of any size up to half
/// the queue's capacity; each item takes its encoding plus 8 bytes of the capacity, rounded up
/// to a 64-byte cache line (so that producer and consumer never write the same line). Items
/// come out in the order their puts committed; each item is got once.
///
///     ipckit::Queue<std::string> q;                  // anonymous: made before fork
///     auto kid = ipckit::Process::spawn([&] { q.put("hello"); });
///     std::string s = q.get();
///
/// Death: a process killed at any point of a put loses at most the item it was putting; one
/// killed in a get loses at most the item it was taking (if it had not taken it yet, another
/// consumer gets it); the queue goes on for everyone else (its locks are robust, and each state
/// change is one store). A get on an empty queue whose producers (the processes that put
/// at least once) are all dead throws Error(errc::peer_dead) instead of waiting forever, and
/// so does a put on a full queue whose consumers (those that got at least once) are all dead;
/// close() makes gets drain what is there, then throw Error(errc::closed).
///
/// Waits follow the queue's WaitPolicy; every wait has a timed form. A handle copied into a
/// forked child (or found in a named Segment) works there; the memory lives as long as the
/// mapping (the anonymous one: until the last process that has it exits).
template <class T>
class Queue {
  static_assert(codec::is_encodable_v<T>,
                "ipckit::Queue<T>: T must be trivially copyable, a vector/string of such, or have "
                "a cereal serialize()");

 public:
  /// Data bytes of a queue made without a size: 1 MiB.
  static constexpr std::size_t kDefaultCapacity = std::size_t{1} << 20;

  /// A queue in an anonymous shared mapping of its own, shared with processes forked after.
  /// Throws Error(errc::invalid_argument) for a capacity under 64 bytes or over 1 TiB.
  explicit Queue(std::size_t capacity = kDefaultCapacity, WaitPolicy policy = WaitPolicy::hybrid())
      : Queue(capacity, policy, false) {}
  /// A queue stored under `name` in `seg`, for processes that open the segment by name.
  static Queue construct(Segment& seg, std::string_view name,
                         std::size_t capacity = kDefaultCapacity,
                         WaitPolicy policy = WaitPolicy::hybrid()) {
    const std::span<std::byte> bytes =
        seg.construct_bytes(name, detail::QueueCore::bytes_for(capacity), 64);
    return Queue(detail::QueueCore::create(bytes, capacity, policy));
  }
  /// The queue stored under `name` in `seg` (errc::not_found; errc::bad_layout when the bytes
  /// there are not a queue).
  static Queue find(const Segment& seg, std::string_view name) {
    return Queue(detail::QueueCore::attach(seg.lookup_bytes(name)));
  }

  ///@{
  /// Puts `v`: blocks while the queue is full. put_for/put_until return false (nothing put)
  /// when there was no room in time, or another live process held the queue's lock past the
  /// deadline; try_put does not wait for room. Throw errc::peer_dead when the queue is full
  /// and every process that ever got from it has died. Throw Error(errc::closed) after
  /// close(), errc::message_too_large when v's encoding exceeds max_message().
  void put(const T& v) { (void)put_until(v, Deadline::never()); }
  bool put_until(const T& v, const Deadline& deadline) {
    codec::encode(v, buf_);
    return core_.put(buf_, deadline);
  }
  template <class Rep, class Period>
  bool put_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return put_until(v, Deadline::after(timeout));
  }
  bool try_put(const T& v) { return put_until(v, Deadline::after(std::chrono::seconds(0))); }
  ///@}

  ///@{
  /// Takes the oldest item: get blocks until there is one; get_for/get_until return nullopt
  /// when none came in time (or another live process held the lock past the deadline);
  /// try_get does not wait for an item. Throw Error(errc::closed) once the queue is
  /// closed and drained, errc::peer_dead when it is empty and every producer has died,
  /// errc::bad_frame when an item does not decode as a T (it is consumed).
  T get() { return *get_until(Deadline::never()); }
  std::optional<T> get_until(const Deadline& deadline) {
    if (!core_.get(buf_, deadline)) return std::nullopt;
    return codec::decode<T>(buf_);
  }
  template <class Rep, class Period>
  std::optional<T> get_for(std::chrono::duration<Rep, Period> timeout) {
    return get_until(Deadline::after(timeout));
  }
  std::optional<T> try_get() { return get_until(Deadline::after(std::chrono::seconds(0))); }
  ///@}

  ///@{
  /// Counts this process as a producer (or a consumer) from now on, before its first put (or
  /// get): if it dies before then, the other side still learns that it is gone (peer_dead).
  void attach_producer() { core_.enroll(true); }
  void attach_consumer() { core_.enroll(false); }
  ///@}

  /// No more puts (they throw errc::closed); gets drain what is there, then throw it. Wakes
  /// every waiter. Any process may close it.
  void close() noexcept { core_.close(); }
  /// Whether close() was called.
  [[nodiscard]] bool closed() const noexcept { return core_.closed(); }
  /// Whether no item is queued now (a snapshot).
  [[nodiscard]] bool empty() const noexcept { return core_.empty(); }
  /// The largest encoded item it takes: half its capacity less a record header, and at most
  /// 2^31 - 1 bytes.
  [[nodiscard]] std::size_t max_message() const noexcept { return core_.max_message(); }
  /// For a WaitSet (ipckit/sync/wait_set.hpp): ready when a get() would not wait.
  friend WaitSource wait_source(Queue& q) { return q.core_.wait_source(); }

 protected:
  /// @cond internal
  Queue(std::size_t capacity, WaitPolicy policy, bool joinable)
      : mem_(detail::Mapping::anonymous(detail::QueueCore::bytes_for(capacity), "Queue")),
        core_(detail::QueueCore::create(std::span(mem_.data(), mem_.size()), capacity, policy,
                                        joinable)) {}
  explicit Queue(detail::QueueCore core) : core_(core) {}
  /// @endcond

  detail::Mapping mem_;         ///< the anonymous queue's memory (empty for one in a Segment)
  detail::QueueCore core_;      ///< the queue's shared state
  std::vector<std::byte> buf_;  ///< this handle's encoding buffer
};

/// JoinableQueue<T>: a Queue<T> that counts tasks, after Python's
/// multiprocessing.JoinableQueue. Each item put is a task; a consumer calls task_done() once
/// it has finished with an item it got, and join() waits until every task put so far is done.
///
///     ipckit::JoinableQueue<Job> jobs;
///     // consumers:  for (;;) { Job j = jobs.get(); run(j); jobs.task_done(); }
///     for (const Job& j : work) jobs.put(j);
///     jobs.join();                        // every job has been run
///
/// A consumer that dies holding tasks it got and never marked done does not hang join():
/// those tasks are released (join() counts them done) and abandoned() says how many; a dead
/// consumer's slot, when reused, folds them into the done count. Tasks are tracked per
/// consumer process for up to 64 consumers (more are counted in total only). task_done()
/// called more often than the calling process got items throws
/// Error(errc::invalid_argument) and changes nothing.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  /// A joinable queue in an anonymous shared mapping (see Queue).
  explicit JoinableQueue(std::size_t capacity = Queue<T>::kDefaultCapacity,
                         WaitPolicy policy = WaitPolicy::hybrid())
      : Queue<T>(capacity, policy, true) {}
  /// A joinable queue stored under `name` in `seg`.
  static JoinableQueue construct(Segment& seg, std::string_view name,
                                 std::size_t capacity = Queue<T>::kDefaultCapacity,
                                 WaitPolicy policy = WaitPolicy::hybrid()) {
    const std::span<std::byte> bytes =
        seg.construct_bytes(name, detail::QueueCore::bytes_for(capacity), 64);
    return JoinableQueue(detail::QueueCore::create(bytes, capacity, policy, true));
  }
  /// The joinable queue stored under `name` in `seg` (errc::bad_layout for a plain Queue).
  static JoinableQueue find(const Segment& seg, std::string_view name) {
    detail::QueueCore core = detail::QueueCore::attach(seg.lookup_bytes(name));
    if (!core.joinable()) {
      throw Error(errc::bad_layout, "JoinableQueue::find: the queue there is not joinable");
    }
    return JoinableQueue(core);
  }

  /// One task this process got is done.
  void task_done() { this->core_.task_done(); }
  /// Waits until every task put so far is done (or released by a consumer's death).
  void join() { (void)join_until(Deadline::never()); }
  /// Like join(); false when tasks were still pending at the deadline.
  bool join_until(const Deadline& deadline) { return this->core_.join(deadline); }
  /// join_until(Deadline::after(timeout)).
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> timeout) {
    return join_until(Deadline::after(timeout));
  }
  /// Tasks got by consumers that died before marking them done (released from join()).
  [[nodiscard]] std::uint64_t abandoned() const { return this->core_.abandoned(); }

 private:
  explicit JoinableQueue(detail::QueueCore core) : Queue<T>(core) {}
};

}  // namespace ipckit
