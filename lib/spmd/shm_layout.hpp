// The shared mapping of spmd::run as ShmComm reads it (see lib/spmd/shm_comm.cpp): the
// header, one Slot per rank, the ring directory, the collective buffers and the arena the
// point-to-point rings live in; and the parsers of what a peer rank writes there (a ring's
// offset in the directory; the fragments of a message are read by lib/channel/fragment.hpp). A peer
// that writes garbage gets Error(errc::bad_frame) / Error(errc::bad_layout), never a read outside
// the mapping.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit::spmd::detail {

constexpr std::uint32_t kMagic = 0x53504D44;               // "SPMD"
constexpr std::size_t kCollBytes = std::size_t{64} << 10;  // per rank, per parity
constexpr std::size_t kErrorBytes = 512;
// A rank's exception of a type given to register_exception: u32 name length, the mangled
// name, its encoding (a longer one crosses as text only).
constexpr std::size_t kExceptionBytes = 4096;

// What a rank publishes for the collectives of one communicator: the world's is in its Slot,
// a sub-communicator's (Comm::split) in that communicator's own segment (SubLayout).
struct alignas(64) CollSlot {
  // How many barriers the rank has entered: who has not arrived, when a barrier times out.
  std::atomic<std::uint64_t> barriers{0};
  // Set while the rank waits in a collective with point-to-point operations queued: it
  // sleeps on its doorbell then, and the barrier's last arrival rings it.
  std::atomic<std::uint32_t> moving{0};
  // What the rank passes to the current collective, per buffer parity; every rank checks
  // every rank's after the collective's barrier (ShmComm::Agree in shm_comm_internal.hpp).
  std::atomic<std::uint64_t> size[2]{};  // its contribution's bytes
  std::atomic<std::uint64_t> sig[2]{};   // its reduction, or a hash of its counts
  std::atomic<std::int64_t> root[2]{};
  std::atomic<std::uint32_t> bad[2]{};  // why its own arguments are malformed (0: they are not)
};

struct alignas(64) Slot {
  EventCount doorbell;
  std::atomic<ProcessIdentity> id{0};  // pid and start time (core/process.hpp)
  char error[kErrorBytes]{};
  std::atomic<std::uint32_t> exception_size{0};  // bytes of `exception` in use (0: none)
  char exception[kExceptionBytes]{};
  std::atomic<std::uint32_t> peer_dead{0};
  std::atomic<std::uint32_t> timed_out{0};  // its error was errc::timeout (a call_timeout)
  std::atomic<std::uint32_t> finished{0};   // returned from fn: gone, whatever its pid says
  CollSlot coll;                            // for the world communicator's collectives
};

struct alignas(64) Coll {
  alignas(64) std::atomic<std::uint32_t> arrived{0};
  alignas(64) std::atomic<std::uint32_t> generation{0};
  // How many ranks wait with `moving` set in their CollSlot: the last arrival looks at their
  // flags only when this is not 0 (one word on the line it just wrote).
  std::atomic<std::uint32_t> moving{0};
  EventCount ec;
};

struct alignas(64) Header {
  std::uint32_t magic = kMagic;
  std::int32_t n = 0;
  std::uint64_t ring_bytes = 0;
  std::uint64_t spin_ns = 0;
  std::uint32_t oversubscribed = 0;   // more ranks than CPUs this process may use
  std::uint64_t call_timeout_ns = 0;  // RunOptions::call_timeout; 0: none
  std::uint64_t slots_at = 0;         // offsets from the header
  std::uint64_t dir_at = 0;
  std::uint64_t coll_buf_at = 0;
  std::uint64_t arena_at = 0;
  std::uint64_t arena_bytes = 0;
  // The next communicator context (Comm::split): the upper half of a message's tag word,
  // 0 for the world. Only rank 0 of a splitting communicator takes from it.
  std::atomic<std::uint32_t> next_context{1};
  Coll coll;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);  // ProcessIdentity too
static_assert(std::is_standard_layout_v<Slot> && std::is_standard_layout_v<Coll> &&
              std::is_standard_layout_v<Header> && std::is_standard_layout_v<CollSlot>);

// A sub-communicator's collective state, in a segment its rank 0 makes (lib/spmd/shm_split.cpp):
// the barrier, one CollSlot per rank, two collective buffers per rank. Offsets from the
// start, computed from the size alone (nothing read from shared memory).
struct SubLayout {
  std::size_t slots_at, bufs_at, total;
  static SubLayout of(int n) {
    const auto un = static_cast<std::size_t>(n);
    SubLayout l{};
    l.slots_at = (sizeof(Coll) + 63) & ~std::size_t{63};
    l.bufs_at = (l.slots_at + un * sizeof(CollSlot) + 4095) & ~std::size_t{4095};
    l.total = l.bufs_at + un * 2 * kCollBytes;
    return l;
  }
};

struct Layout {
  std::size_t slots_at, dir_at, coll_buf_at, arena_at, total;
  static Layout of(int n, std::size_t ring_bytes) {
    const auto up = [](std::size_t v) { return (v + 4095) & ~std::size_t{4095}; };
    Layout l{};
    const auto un = static_cast<std::size_t>(n);
    l.slots_at = up(sizeof(Header));
    l.dir_at = up(l.slots_at + un * sizeof(Slot));
    l.coll_buf_at = up(l.dir_at + un * un * sizeof(std::uint64_t));
    l.arena_at = up(l.coll_buf_at + un * 2 * kCollBytes);
    // Room for every rank to talk to 26 others (a 3-D stencil), or to all of them.
    const std::size_t rings = un * std::min<std::size_t>(un, 27);
    l.total = l.arena_at + up(rings * (ByteRing::bytes_for(ring_bytes) + 128) + 4096);
    return l;
  }
};

// Lays the header, the slots and the arena of `l` for `n` ranks at `base` (l.total bytes,
// zero-filled, page aligned). spin_ns, oversubscribed and call_timeout_ns are left for the
// caller.
Header& lay_out(std::byte* base, int n, std::size_t ring_bytes, const Layout& l);

// Checks a ring offset (from the header) that a sending rank published in the directory:
// a ring of h.ring_bytes, 64-byte aligned, inside the arena. Throws Error(errc::bad_layout).
void check_ring_offset(const Header& h, std::uint64_t at);

}  // namespace ipckit::spmd::detail
