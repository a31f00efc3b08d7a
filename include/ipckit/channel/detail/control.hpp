// Internal building blocks shared by the channel types: the control block every shared
// queue carries (closed flag, the processes on each side, the two EventCounts sleepers wait
// on), the table of attached processes, and Region, the memory a channel lives in.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/detail/layout.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
class Error;
class Segment;
}  // namespace ipckit

namespace ipckit::detail {

inline constexpr std::size_t kCacheLine = 64;

// Processes attached to one side of a channel (producers or consumers), by identity (pid and
// start time: a recycled pid is not taken for the process that had it). A process attaches
// on its first blocking or non-blocking operation, when it creates or opens the channel for
// a side, or explicitly; waiters on the other side use the table to learn that nobody is
// left to wake them.
class PeerTable {
 public:
  static constexpr std::size_t kMaxPeers = 64;

  // Adds `id` unless present. Throws Error(errc::invalid_argument) when kMaxPeers distinct
  // live processes are attached already (slots of dead processes are reused).
  void attach(ProcessIdentity id, const char* who);
  // Adds process `pid` (a child just forked, say) by its identity; a pid that has already
  // exited is added as such, so the other side sees it dead.
  void attach_pid(pid_t pid, const char* who);
  // True when no process has ever attached (every slot empty).
  [[nodiscard]] bool empty() const noexcept;
  // True when some process other than the caller attached and every such process has
  // exited. Processes count from their first operation (or attach): when several producers
  // are forked, have each attach before any may finish, or a consumer that drained the
  // early ones sees peer_dead before the late ones start.
  [[nodiscard]] bool all_dead() const noexcept;

 private:
  std::array<std::atomic<ProcessIdentity>, kMaxPeers> ids_{};
};

}  // namespace ipckit::detail
namespace ipckit {
// Which side a process takes when it creates or opens a channel (sender: push/send/reserve;
// receiver: pop/recv/peek): it counts as a peer of that
// side from that moment, so the other side learns of its death even before its first
// operation. `none`: from its first operation on (or attach_*()).
enum class Side { none, sender, receiver };
}  // namespace ipckit
namespace ipckit::detail {
using ipckit::Side;

// The part of every channel layout that is not the data: lives in shared memory.
struct ChannelControl {
  explicit ChannelControl(const WaitPolicy& p) noexcept : policy(p) {}

  WaitPolicy policy;
  std::atomic<std::uint32_t> closed{0};
  PeerTable producers;
  PeerTable consumers;
  alignas(kCacheLine) EventCount readable;  // consumers sleep here, producers notify
  alignas(kCacheLine) EventCount writable;  // producers sleep here, consumers notify

  [[nodiscard]] bool is_closed() const noexcept {
    return closed.load(std::memory_order_acquire) != 0;
  }
  // The wait policy as a waiter may use it (see read_policy()).
  [[nodiscard]] WaitPolicy safe_policy() const noexcept { return read_policy(policy); }
  // Closing is for the sending side after its last send (or for tearing down): a send that
  // races a close() from another process may land after the receiver's final drain.
  void close() noexcept {
    closed.store(1, std::memory_order_release);
    readable.notify_all();
    writable.notify_all();
  }
};

static_assert(std::is_standard_layout_v<ChannelControl>);
static_assert(std::atomic<ProcessIdentity>::is_always_lock_free);

// Memory a channel layout lives in: either a MAP_SHARED|MAP_ANONYMOUS mapping owned by the
// handle (inherited by forked children, unmapped by each process's handle), or bytes in a
// Segment (unnamed, or named so that unrelated processes can find them). Move-only.
class Region {
 public:
  Region() noexcept = default;
  // A zero-filled anonymous mapping of its own.
  static Region anonymous(std::size_t bytes);
  // Unnamed bytes on a segment's heap (the segment must outlive every handle).
  static Region in(Segment& seg, std::size_t bytes);
  // Named bytes in a segment, exclusive create.
  static Region create(Segment& seg, std::string_view name, std::size_t bytes);
  // What create() made under `name`, once its creator has published it: waits until
  // `deadline` while the name is missing or the object is still being built, polling every
  // millisecond. Returns the region and the capacity validated from its header. Throws
  // Error(errc::not_found) when the name is still missing at the deadline,
  // Error(errc::timeout) when it is still being built, errc::bad_layout when the bytes are
  // not a valid object of `spec`.
  static Region open(Segment& seg, std::string_view name, const LayoutSpec& spec,
                     const Deadline& deadline, const char* what, std::uint64_t& capacity);
  // Bytes owned by someone else (shared memory the caller manages): never unmapped here.
  static Region view(std::byte* p, std::size_t n) noexcept { return Region(p, n); }

  Region(Region&&) noexcept = default;
  Region& operator=(Region&&) noexcept = default;

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // For a region in a named segment: throws Error(errc::bad_layout) naming `what` when
  // another process has truncated the segment's file below the end of this region (the
  // next access would raise SIGBUS, which the segment's guard turns into zero pages). Costs
  // an fstat(); blocking calls run it between sleeps. A no-op for other regions.
  void check_backing(const char* what) const;
  // For a region in a named segment: true when another process created or opened the
  // segment and every such process is dead (Segment::others_gone). False for other regions
  // (their processes are not known). Waiters use it for a side that no process ever joined:
  // nobody who ever came is left to join it.
  [[nodiscard]] bool others_gone() const noexcept;

 private:
  Region(std::byte* p, std::size_t n) noexcept : data_(p), size_(n) {}
  Mapping map_;  // set when the region owns its memory
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  int file_ = -1;              // a named segment's descriptor (owned by the Segment), or -1
  std::size_t file_end_ = 0;   // offset just past this region in that file
  const void* seg_ = nullptr;  // a named segment's Segment::Impl (it outlives every handle)
};

// Throws Error(errc::bad_layout) when a layout found in shared memory is not what `what`
// expects (magic, version, element size).
// Where a new shared object goes: the one place the ways to lay one out are told apart.
struct Placement {
  enum class Kind { own, heap, named } kind = Kind::own;
  Segment* seg = nullptr;
  std::string_view name;

  static Placement own() noexcept { return {}; }                               // its own mapping
  static Placement heap(Segment& s) noexcept { return {Kind::heap, &s, {}}; }  // unnamed
  static Placement named(Segment& s, std::string_view n) noexcept { return {Kind::named, &s, n}; }
  // The memory for `bytes` of object at this place.
  [[nodiscard]] Region make(std::size_t bytes) const {
    switch (kind) {
      case Kind::heap: return Region::in(*seg, bytes);
      case Kind::named: return Region::create(*seg, name, bytes);
      case Kind::own: break;
    }
    return Region::anonymous(bytes);
  }
};

[[noreturn]] void throw_bad_layout(const char* what, std::string_view detail);
[[noreturn]] void throw_bad_frame(const char* what, std::string_view detail);
// Throws `e` again (same code, and the same type when it is a plain Error) under the name of
// the call the user made: a message that starts with a transport's own call
// ("ByteRing::peek: ...", "SocketChannel::recv: ...") starts with `what` instead.
[[noreturn]] void rethrow_as(const Error& e, const char* what);
[[noreturn]] void throw_closed(const char* what);
[[noreturn]] void throw_peer_dead(const char* what);

// The one blocking loop of every shared channel: retries `attempt` until it succeeds, the
// channel closes, every process on the other side (`others`) has exited (or, in a named
// segment, nobody ever joined that side and every other process that ever had the segment
// open has died), or
// the deadline passes; sleeps on `ec` between tries as ctl.policy says. After closed/dead is seen,
// a consumer (`fail_if_closed` false) tries once more, so what was published just before is still
// delivered. Returns false on timeout; throws errc::closed or errc::peer_dead. Between sleeps it
// also checks that `region` is still backed (a named segment truncated under it: errc::bad_layout).
// True when the other side is gone: every process on it has exited, or (in a named segment)
// nobody ever joined it and every other process that had the segment open has died.
inline bool side_gone(const PeerTable& others, const Region& region) {
  return others.all_dead() || (others.empty() && region.others_gone());
}

template <class Attempt>
bool wait_side(ChannelControl& ctl, EventCount& ec, const PeerTable& others, const Region& region,
               const Deadline& deadline, const char* what, Attempt&& attempt, bool fail_if_closed) {
  if (fail_if_closed && ctl.is_closed()) throw_closed(what);
  if (attempt()) return true;
  bool done = false;
  bool gone = false;
  ec.await([&] { return (done = attempt()) || ctl.is_closed() || gone; }, deadline,
           ctl.safe_policy(),
           [&] {
             region.check_backing(what);
             gone = side_gone(others, region);
           });
  if (done) return true;
  if (!fail_if_closed && attempt()) return true;
  if (ctl.is_closed()) throw_closed(what);
  if (gone) throw_peer_dead(what);
  return false;
}

// Attaches the caller to `table` the first time it runs in this process: one compare on the
// hot path (current_pid() is cached; the cache follows fork()). Returns true on that first
// time, when a handle inherited through fork must refresh its process-local cursors.
// Threads may share a handle (several producer threads on one MpmcQueue): the cached pid is
// atomic (a relaxed load on the hot path), and two threads that both see the first time
// both attach the same pid, which the table tolerates.
class AttachOnce {
 public:
  AttachOnce() = default;
  AttachOnce(const AttachOnce& o) noexcept
      : attached_(o.attached_.load(std::memory_order_relaxed)) {}
  AttachOnce& operator=(const AttachOnce& o) noexcept {
    attached_.store(o.attached_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }
  // True until the caller's process has attached through this handle.
  [[nodiscard]] bool pending() const noexcept {
    return current_pid() != attached_.load(std::memory_order_relaxed);
  }
  bool operator()(PeerTable& table, const char* who) {
    const pid_t me = current_pid();
    if (me == attached_.load(std::memory_order_relaxed)) [[likely]]
      return false;
    table.attach(current_identity(), who);
    attached_.store(me, std::memory_order_relaxed);
    return true;
  }

 private:
  std::atomic<pid_t> attached_{0};
};

}  // namespace ipckit::detail
