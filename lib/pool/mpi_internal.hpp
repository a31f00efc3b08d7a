// What mpi::Pool's two sides share (part of ipckit::mpi): the message tags, where each rank
// runs, and how an idle side waits for MPI, which has no descriptor to sleep on.
//
//   mpi_driver.cpp  MpiCore, rank 0's driver thread
//   mpi_worker.cpp  the worker ranks' serve loop, fatal-signal reports, Pool's constructor
//
// The protocol on MPI_COMM_WORLD, between rank 0 and each worker rank:
//   kTask    0 -> w  a task message as a local worker gets it (TaskFrame, callable, inputs)
//   kResult  w -> 0  a result message (ResultFrame, results or the exception); kInitError
//                    once, first, when the rank's initializer threw
//   kStop    0 -> w  two std::uint64_t: the task and kSkip messages rank 0 sent this rank in
//                    this pool. The rank receives those it has not taken yet (tasks dropped,
//                    unrun)
//   kStopped w -> 0  a std::uint64_t: the result messages the rank sent in this pool, after
//                    the last of them: once rank 0 has them all, nothing of this pool is left
//                    in flight between the two, and the next pool starts clean
//   kSkip    0 -> w  std::uint64_t ids of task messages sent to the rank that it must not run
//                    (moved to other ranks when a chunk ahead of them timed out); it answers
//                    each with an empty kError result, which rank 0 drops
// A worker looks for kStop and kSkip when idle, after a chunk of 10 us or more and every 32
// chunks (mpi_worker.cpp), so terminate() drops queued chunks and a skip is seen in time. Every
// task message gets exactly one result message (or none after kStop).
#pragma once

#include <mpi.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ipckit::detail {

// (An MpiComm works on a duplicate of its communicator: its tags never meet these.)
inline constexpr int kTaskTag = 0x1c0;
inline constexpr int kResultTag = 0x1c1;
inline constexpr int kStopTag = 0x1c2;
inline constexpr int kStoppedTag = 0x1c3;
inline constexpr int kSkipTag = 0x1c4;

// The most bytes one MPI message of ours carries (MPI counts are int).
inline constexpr std::size_t kMaxMpiMessage = 0x7fffffff;

// True while rank 0 drives an mpi::Pool (set by mpi::Pool's constructor, cleared when the
// driver has stopped every rank).
inline std::atomic<bool> g_driving{false};

// A worker rank as rank 0 knows it: gathered when the pool is made.
struct RankInfo {
  int rank = 0;
  pid_t pid = 0;
  std::string host;
  // "rank 2 on node7", for errors.
  [[nodiscard]] std::string where() const { return "rank " + std::to_string(rank) + " on " + host; }
};

class PoolBackend;
// Starts rank 0's driver over the worker ranks `ranks` (mpi_driver.cpp).
std::shared_ptr<PoolBackend> start_mpi_driver(std::vector<RankInfo> ranks,
                                              std::optional<std::chrono::nanoseconds> timeout);

// How a side that waits for MPI messages polls: spin while messages came recently, then sleep
// in steps that grow with the time nothing came (50 us, then 1 ms after 20 ms of nothing).
// A busy pool never sleeps; an idle one costs a wake-up a millisecond.
class MpiBackoff {
 public:
  using clock = std::chrono::steady_clock;
  void reset() noexcept { since_ = clock::now(); }
  // How long to sleep now (zero: poll again at once).
  [[nodiscard]] std::chrono::microseconds step() const noexcept {
    const auto idle = clock::now() - since_;
    if (idle < std::chrono::microseconds(100)) return std::chrono::microseconds(0);
    if (idle < std::chrono::milliseconds(20)) return std::chrono::microseconds(50);
    return std::chrono::microseconds(1000);
  }
  void wait() const {
    const auto d = step();
    if (d.count() == 0) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(d);
    }
  }

 private:
  clock::time_point since_ = clock::now();
};

}  // namespace ipckit::detail
