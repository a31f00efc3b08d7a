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
#include "ipckit/core/process.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
class Segment;
}

namespace ipckit::detail {

inline constexpr std::size_t kCacheLine = 64;

// Processes attached to one side of a channel (producers or consumers). A process attaches
// on its first blocking or non-blocking operation (or explicitly); waiters on the other side
// use the table to learn that nobody is left to wake them.
class PeerTable {
 public:
  static constexpr std::size_t kMaxPeers = 64;

  // Adds `pid` unless present. Throws Error(errc::invalid_argument) when kMaxPeers distinct
  // live processes are attached already (slots of dead processes are reused).
  void attach(pid_t pid, const char* who);
  // True when at least one process has attached.
  [[nodiscard]] bool any_attached() const noexcept;
  // True when some process other than the caller attached and every such process has
  // exited. Processes count from their first operation (or attach): when several producers
  // are forked, have each attach before any may finish, or a consumer that drained the
  // early ones sees peer_dead before the late ones start.
  [[nodiscard]] bool all_dead() const noexcept;

 private:
  std::array<std::atomic<pid_t>, kMaxPeers> pids_{};
};

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
  // The wait policy as a waiter may use it, read once per wait: any peer may have written
  // anything into shared memory, so the flag is read as a byte and the durations are clamped
  // (spin to [0, 1 s], check_interval to [1 ms, 1 s]: a garbage interval cannot stop a
  // waiter from noticing a dead peer).
  [[nodiscard]] WaitPolicy safe_policy() const noexcept {
    unsigned char sleep = 0;
    std::chrono::nanoseconds::rep spin = 0;
    std::chrono::milliseconds::rep check = 0;
    std::memcpy(&sleep, &policy.sleep, 1);
    std::memcpy(&spin, &policy.spin, sizeof spin);
    std::memcpy(&check, &policy.check_interval, sizeof check);
    WaitPolicy p;
    p.sleep = sleep != 0;
    p.spin = std::chrono::nanoseconds(std::clamp<decltype(spin)>(spin, 0, 1'000'000'000));
    p.check_interval = std::chrono::milliseconds(std::clamp<decltype(check)>(check, 1, 1000));
    return p;
  }
  // Closing is for the sending side after its last send (or for tearing down): a send that
  // races a close() from another process may land after the receiver's final drain.
  void close() noexcept {
    closed.store(1, std::memory_order_release);
    readable.notify_all();
    writable.notify_all();
  }
};

static_assert(std::is_standard_layout_v<ChannelControl>);
static_assert(std::atomic<pid_t>::is_always_lock_free);

// Memory a channel layout lives in: either a private MAP_SHARED|MAP_ANONYMOUS mapping owned
// by the handle (inherited by forked children, unmapped by each process's handle), or bytes
// in a Segment (unnamed, or named so that unrelated processes can find them). Move-only.
class Region {
 public:
  Region() noexcept = default;
  // A zero-filled anonymous mapping of its own.
  static Region anonymous(std::size_t bytes);
  // Unnamed bytes on a segment's heap (the segment must outlive every handle).
  static Region in(Segment& seg, std::size_t bytes);
  // Named bytes in a segment: exclusive create, or lookup of what create() made.
  static Region create(Segment& seg, std::string_view name, std::size_t bytes);
  static Region find(Segment& seg, std::string_view name);
  // Bytes owned by someone else (shared memory the caller manages): never unmapped here.
  static Region view(std::byte* p, std::size_t n) noexcept { return Region(p, n, false); }

  Region(Region&& o) noexcept;
  Region& operator=(Region&& o) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  Region(std::byte* p, std::size_t n, bool owned) noexcept : data_(p), size_(n), owned_(owned) {}
  void release() noexcept;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool owned_ = false;
};

// Rejects capacities that are zero, not a power of two or above `max`, naming `what`
// ("SpscQueue capacity") in the message. Throws Error(errc::invalid_argument).
void check_capacity(std::uint64_t capacity, std::uint64_t min, std::uint64_t max, const char* what);
// Throws Error(errc::bad_layout) when a layout found in shared memory is not what `what`
// expects (magic, version, element size).
[[noreturn]] void throw_bad_layout(const char* what, std::string_view detail);
[[noreturn]] void throw_closed(const char* what);
[[noreturn]] void throw_peer_dead(const char* what);

// The one blocking loop of every shared channel: retries `attempt` until it succeeds, the
// channel closes, every process on the other side (`others`) has exited, or the deadline
// passes; sleeps on `ec` between tries as ctl.policy says. After closed/dead is seen, a
// consumer (`fail_if_closed` false) tries once more, so what was published just before is
// still delivered. Returns false on timeout; throws errc::closed or errc::peer_dead.
template <class Attempt>
bool wait_side(ChannelControl& ctl, EventCount& ec, const PeerTable& others,
               const Deadline& deadline, const char* what, Attempt&& attempt, bool fail_if_closed) {
  if (fail_if_closed && ctl.is_closed()) throw_closed(what);
  if (attempt()) return true;
  bool done = false;
  bool gone = false;
  ec.await([&] { return (done = attempt()) || ctl.is_closed() || gone; }, deadline,
           ctl.safe_policy(),
           [&] { gone = others.all_dead(); });
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
  AttachOnce(const AttachOnce& o) noexcept : attached_(o.attached_.load(std::memory_order_relaxed)) {}
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
    table.attach(me, who);
    attached_.store(me, std::memory_order_relaxed);
    return true;
  }

 private:
  std::atomic<pid_t> attached_{0};
};

}  // namespace ipckit::detail
