/// @class ipckit::ShmComm
/// ShmComm: the shared-memory Comm of spmd::run (see run.hpp). Ranks are forked processes;
/// point-to-point messages go over ByteRings made on first use for each ordered pair that
/// talks (in one anonymous mapping: nothing in /dev/shm), and collectives are done in shared
/// memory directly: each rank writes its own buffer, the ranks meet at a barrier, and each
/// reads the others' buffers (allreduce combines in rank order, so every rank gets the same
/// bytes). Blocking calls spin briefly, then sleep on a futex, and end with
/// Error(errc::peer_dead) when a rank they wait for has died, or with Error(errc::timeout)
/// when they take longer than spmd::RunOptions::call_timeout (if set): a point-to-point call
/// that timed out leaves the pair's stream whole (as a dropped request does), so it may be
/// tried again; a collective that timed out breaks the collectives (later ones throw
/// errc::barrier_broken).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/spmd/comm.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {
class Arena;
namespace spmd::detail {
struct Header;
struct Slot;
}  // namespace spmd::detail

class ShmComm final : public Comm {
 public:
  /// Made by spmd::run in each rank, over the mapping it prepared.
  ShmComm(std::byte* base, int rank);
  ~ShmComm() override;
  ShmComm(const ShmComm&) = delete;
  ShmComm& operator=(const ShmComm&) = delete;

  [[nodiscard]] int rank() const noexcept override { return rank_; }
  [[nodiscard]] int size() const noexcept override { return n_; }

  void send(int dest, std::span<const std::byte> data) override;
  void recv(int src, std::span<std::byte> data) override;
  [[nodiscard]] Request isend(int dest, std::span<const std::byte> data) override;
  [[nodiscard]] Request irecv(int src, std::span<std::byte> data) override;

  void barrier() override;
  void allreduce(void* inout, std::size_t count, DataType type, ReduceOp op) override;
  void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) override;
  void broadcast(std::span<std::byte> data, int root) override;
  /// Arrives at the barrier now; the wait waits for the others.
  [[nodiscard]] Request ibarrier() override;
  /// Writes this rank's values and arrives now; the wait combines (in rank order, as
  /// allreduce()). Beyond one 64 KiB collective buffer it is allreduce(), done before it
  /// returns. At most one non-blocking collective is in flight per rank: the next collective
  /// call completes the one before first (its result is in its buffer then; its wait only
  /// reports). One dropped while its rank unwinds an exception is not waited for, and that
  /// rank's later collectives throw errc::barrier_broken.
  [[nodiscard]] Request iallreduce(void* inout, std::size_t count, DataType type,
                                   ReduceOp op) override;

  using Comm::allreduce;
  using Comm::broadcast;
  using Comm::gather;
  using Comm::iallreduce;
  using Comm::recv;
  using Comm::send;

 protected:
  void complete(std::span<Request> requests) override;

 private:
  struct Op;
  struct CollOp;
  static constexpr int kNoRoot = -0x7fffffff;
  spmd::detail::Slot& slot(int r) const noexcept;
  std::atomic<std::uint64_t>& dir(int from, int to) const noexcept;
  std::byte* coll_buf(int r, unsigned parity) const noexcept;
  Arena& arena() const noexcept;
  bool alive(int r) const noexcept;
  ByteRing& out_ring(int to);
  ByteRing* in_ring(int from);
  bool progress_send(Op& op);
  bool progress_recv(Op& op);
  bool step(Op& op) noexcept;
  bool progress() noexcept;
  void fail_dead_peers();
  void wait_ops(std::span<Op* const> ops, const char* what);
  void run_blocking(Op& op, const char* what);
  [[nodiscard]] Deadline call_deadline() const noexcept;
  template <class Ready, class Check>
  [[nodiscard]] bool await(EventCount& ec, const Deadline& deadline, Ready&& ready, Check&& check);
  [[noreturn]] void throw_timeout(const char* what, const std::vector<int>& peers,
                                  const char* state) const;
  void meet(const char* what);
  [[nodiscard]] std::uint32_t arrive(const char* what);
  void depart(std::uint32_t gen, const char* what);
  void finish_collective(CollOp& op) noexcept;
  void abandon_collective(CollOp& op) noexcept;
  void finish_outstanding();
  void wake_peer(int peer) noexcept;
  void orphan(Op& op) noexcept;
  Request post(bool is_send, int peer, std::span<const std::byte> out, std::span<std::byte> in);
  unsigned begin_collective(std::uint64_t bytes, const char* what, int root);
  void check_sizes(unsigned parity, std::uint64_t expect, const char* what);

  std::byte* base_;
  spmd::detail::Header* h_;
  int rank_;
  int n_ = 0;
  std::size_t fragment_bytes_ = 0;
  WaitPolicy policy_;
  bool yield_ = false;                        // more ranks than CPUs: yield instead of spinning
  std::chrono::nanoseconds call_timeout_{0};  // 0: blocking calls are not timed
  std::uint64_t coll_phase_ = 0;
  std::uint64_t barriers_ = 0;  // barriers entered (published in this rank's slot)
  bool coll_broken_ = false;    // a collective timed out: the barrier count is off
  std::vector<std::optional<ByteRing>> out_;
  std::vector<std::optional<ByteRing>> in_;
  std::vector<std::deque<Op*>> sendq_;
  std::vector<std::deque<Op*>> recvq_;
  std::vector<std::unique_ptr<Op>> orphans_;  // dropped requests the comm finishes
  std::size_t queued_ = 0;                    // operations in sendq_ and recvq_
  CollOp* outstanding_ = nullptr;             // the non-blocking collective in flight
};

}  // namespace ipckit
