// PoolCore: the driver of one pool, behind Pool (a pimpl). One driver thread per pool owns
// the workers: it forks them, feeds each its own task ring (a ByteRing, parent -> worker),
// drains each result ring (worker -> parent), notices deaths through pidfds, and respawns.
// Because every worker has its own rings and runs its chunks in order, the driver always
// knows which chunk a dead worker was running: the last one it began
// (WorkerShared::started), and which chunks it had not begun (those go to other workers).
//
// The driver never blocks on a ring (only try_ calls), so a worker blocked on a full result
// ring always gets drained. It sleeps in poll() on an eventfd (the doorbell) and the workers'
// pidfds: workers ring the doorbell after publishing a result, but only while the driver has
// said it sleeps (a flag in shared memory, Dekker-style with a fence on each side), so a busy
// pool makes no system calls per task.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "../channel/fragment.hpp"
#include "backend.hpp"
#include "forkserver.hpp"
#include "internal.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/pool/pool.hpp"
#include "wire.hpp"

namespace ipckit::detail {

class PoolCore final : public DriverBackend, public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolOptions options);
  ~PoolCore() override;
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  // Forks the workers and starts the driver thread; throws what Pool's constructor documents.
  void start();
  [[nodiscard]] std::vector<WorkerStats> stats() const override;

  const PoolOptions options;

 private:
  struct Worker {
    std::size_t slot = 0;
    WorkerProcess proc;
    pid_t pid = -1;
    std::optional<ByteRing> tasks;
    std::optional<ByteRing> results;
    std::deque<Chunk> inflight;  // dispatched, in the order the worker runs them
    std::uint64_t budget = UINT64_MAX;
    TaskFrame frame{};               // the head of the task message `out` is writing
    FragmentWriter out;              // a task message being written, resumably
    bool staged = false;             // records staged on `tasks`, not yet published
    FragmentReader in{kMaxMessage};  // a result message being read
    double avg_ns = -1;
    std::size_t window = 2;
    bool alive = false;
    bool init_failed = false;
    // The chunk whose clock runs (inflight.front(), seen begun) and since when.
    std::uint64_t clock_id = 0;
    std::chrono::steady_clock::time_point head_since{};
    std::uint64_t timed_out = 0;  // the chunk it was killed for running too long (0: none)
    bool killed_by_pool = false;  // a timeout or a cancel: its other chunks are not at fault
    // A replacement that could not be forked is tried again from this time on.
    std::optional<std::chrono::steady_clock::time_point> respawn_at;
  };

  void run() noexcept;
  void loop();
  void spawn(Worker& w, bool replacement);
  bool collect(Worker& w);
  void handle_result(Worker& w, std::span<const std::byte> msg);
  bool check_deaths(int timeout_ms);
  bool apply_cancels(bool force);
  bool check_timeouts(std::chrono::steady_clock::time_point now);
  int ms_to_next_timeout() const;
  void on_exit(Worker& w);
  bool respawn_pending();
  bool dispatch();
  bool next_chunk(Chunk& c);
  void send_chunk(Worker& w, Chunk c);
  Worker* pick_worker();
  bool idle() const;
  bool anything_ready();
  void sleep();
  void stop_all(const std::exception_ptr& e) noexcept;
  void shutdown_workers();
  void wake_driver() noexcept override { notify_driver(sh_, link->doorbell.get()); }

  PoolLayout layout_;
  UniqueFd memfd_;  // the shared memory's file: the forkserver maps it too
  Mapping mem_;
  PoolShared* sh_ = nullptr;
  WorkerShared* slots_ = nullptr;

  // Driver thread only.
  std::optional<ForkServer> server_;  // StartMethod::forkserver
  std::vector<Worker> workers_;
  std::deque<std::shared_ptr<JobBase>> jobs_;  // may still give chunks
  std::deque<Chunk> retry_;                    // chunks to run again first
  std::uint64_t next_id_ = 1;
  std::uint64_t cancels_seen_ = 0;
  bool took_cancelled_ = false;  // intake() took a job cancelled already
  std::uint64_t sigint_seen_ = 0;
  int init_deaths_ = 0;  // workers in a row that died before their initializer returned
  std::chrono::steady_clock::time_point next_death_check_{};

  mutable std::mutex stats_mu_;
  std::vector<WorkerStats> stats_;
};

}  // namespace ipckit::detail
