// What the pool's translation units share, private to the library: the memory the driver
// and its workers share, the doorbell, the SIGINT bookkeeping and the worker's entry point.
//
//   pool.cpp     Pool's own members, its errors, the checks blocking calls make
//   driver.cpp   PoolCore: the driver thread's life (start, loop, sleep, stop)
//   deaths.cpp   PoolCore: deaths, cancels, timeouts, respawns
//   traffic.cpp  PoolCore: chunks out to workers, results back in
//   worker.cpp   the worker process
//   wire.cpp     the task and result messages, parsed at the trust boundary
//   sigint.cpp   Ctrl-C while a pool call waits
//   forkserver.cpp  StartMethod::forkserver: the helper that forks workers, both sides
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/pool/pool.hpp"

namespace ipckit {
class ByteRing;
}

namespace ipckit::detail {

// ---- shared memory ------------------------------------------------------------------------
inline constexpr std::uint64_t kRingBytes = std::uint64_t{1} << 20;  // per ring, each way
// Bytes per ring record of a large message: a quarter of the ring, so that the writer fills
// one record while the reader drains another.
inline constexpr std::size_t kRecordBytes = std::size_t{1} << 18;
// The largest message a worker or the driver accepts (a corrupt total above it is bad_frame
// rather than an allocation of that size).
inline constexpr std::uint64_t kMaxMessage = std::uint64_t{1} << 40;
inline constexpr int kExitInitFailed = 71;
inline constexpr int kExitProtocol = 72;

// Per worker, written by the worker, read by the driver (after the worker died).
struct alignas(kCacheLine) WorkerShared {
  // The id of the last chunk the worker began (ids grow along each worker's queue); a
  // chunk counts as begun from its first fragment.
  std::atomic<std::uint64_t> started{0};
  // 1 once the initializer has returned: a worker that dies before is not a task's fault.
  std::atomic<std::uint32_t> ready{0};
};
struct alignas(kCacheLine) PoolShared {
  std::atomic<std::uint32_t> driver_sleeping{0};
};
static_assert(std::is_standard_layout_v<WorkerShared> && std::is_standard_layout_v<PoolShared>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
              std::atomic<std::uint32_t>::is_always_lock_free);

// The pool's shared memory, one mapping of a memfd (so that the forkserver can map it too):
// PoolShared, the WorkerShared slots, then each slot's task ring and result ring, each
// ring page-aligned. A replacement worker gets fresh rings laid over its slot's.
struct PoolLayout {
  std::size_t n = 0;
  std::size_t header = 0;      // PoolShared + n WorkerShared, rounded up to a page
  std::size_t ring_bytes = 0;  // one ring, rounded up to a page
  static PoolLayout for_workers(std::size_t n);
  [[nodiscard]] std::size_t total() const noexcept { return header + n * 2 * ring_bytes; }
  [[nodiscard]] std::size_t tasks_at(std::size_t slot) const noexcept {
    return header + 2 * slot * ring_bytes;
  }
  [[nodiscard]] std::size_t results_at(std::size_t slot) const noexcept {
    return tasks_at(slot) + ring_bytes;
  }
};

// ---- the doorbell ---------------------------------------------------------------------------
// One write to the driver's eventfd.
void write_doorbell(int fd) noexcept;
// Rings the doorbell if the driver said it sleeps. Call after publishing.
inline void notify_driver(PoolShared* sh, int fd) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the driver's
  if (sh->driver_sleeping.load(std::memory_order_relaxed) != 0) write_doorbell(fd);
}

// ---- SIGINT (sigint.cpp) ----------------------------------------------------------------------
// The doorbells of pools that handle SIGINT: the handler writes to each.
void register_doorbell(int fd);
void unregister_doorbell(int fd);
// SIGINTs seen so far (the driver compares it with the count it last saw).
std::uint64_t sigint_count() noexcept;

// The driver thread marks itself: a blocking pool call from it (a callback) would wait for
// itself.
void mark_driver_thread() noexcept;
bool on_driver_thread() noexcept;

// ---- the worker process (worker.cpp) ------------------------------------------------------------
struct WorkerEnv {
  std::byte* base = nullptr;  // the pool's shared memory, as this process maps it
  PoolLayout layout;
  std::size_t slot = 0;
  int doorbell = -1;
  int cpu = -1;  // -1: not pinned
  std::size_t max_tasks = 0;
  const Initializer* initializer = nullptr;
  std::size_t max_rss = 0;  // bytes; 0: no limit
};
// The worker's life: attaches to its slot's rings (the driver laid them), runs the
// initializer, then tasks until the ring closes. Returns its exit code.
int worker_main(const WorkerEnv& env);

}  // namespace ipckit::detail
