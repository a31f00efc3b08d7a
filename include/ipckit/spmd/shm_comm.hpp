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
///
/// split() and dup() make sub-communicators that share the ranks' rings: their messages carry
/// the communicator's context (the upper half of the tag word), and their collectives use a
/// barrier and buffers of their own, in a segment the new rank 0 makes. A sub-communicator
/// must be destroyed before the communicator spmd::run gave (which drives its messages).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
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
class Segment;
namespace spmd::detail {
struct Header;
struct Slot;
struct Coll;
struct CollSlot;
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

  void send(int dest, std::span<const std::byte> data, int tag) override;
  Status recv(int src, std::span<std::byte> data, int tag) override;
  [[nodiscard]] Request isend(int dest, std::span<const std::byte> data, int tag) override;
  [[nodiscard]] Request irecv(int src, std::span<std::byte> data, int tag, Status* status) override;
  /// Messages that no receive wanted when the probe looked past them are kept aside (in
  /// memory) for the receives to come.
  Status probe(int src, int tag) override;
  std::optional<Status> iprobe(int src, int tag) override;

  void barrier() override;
  void allreduce(void* inout, std::size_t count, const Reduction& op) override;
  void reduce(void* inout, std::size_t count, const Reduction& op, int root) override;
  void scan(void* inout, std::size_t count, const Reduction& op) override;
  void exscan(void* inout, std::size_t count, const Reduction& op) override;
  void reduce_scatter(std::span<const std::byte> in, std::span<std::byte> out,
                      std::span<const std::size_t> counts, const Reduction& op) override;
  void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) override;
  void gatherv(std::span<const std::byte> mine, std::span<std::byte> all,
               std::span<const std::size_t> counts, std::span<const std::size_t> displs,
               int root) override;
  void scatter(std::span<const std::byte> all, std::span<std::byte> mine, int root) override;
  void scatterv(std::span<const std::byte> all, std::span<const std::size_t> counts,
                std::span<const std::size_t> displs, std::span<std::byte> mine, int root) override;
  void allgather(std::span<const std::byte> mine, std::span<std::byte> all) override;
  void allgatherv(std::span<const std::byte> mine, std::span<std::byte> all,
                  std::span<const std::size_t> counts,
                  std::span<const std::size_t> displs) override;
  void alltoall(std::span<const std::byte> out, std::span<std::byte> in) override;
  void alltoallv(std::span<const std::byte> out, std::span<const std::size_t> out_counts,
                 std::span<const std::size_t> out_displs, std::span<std::byte> in,
                 std::span<const std::size_t> in_counts,
                 std::span<const std::size_t> in_displs) override;
  void broadcast(std::span<std::byte> data, int root) override;
  // The non-blocking collectives write this rank's part and arrive now; the wait combines or
  // copies. One larger than a 64 KiB collective buffer (for this rank's or the longest
  // contribution) is done before it returns, as its blocking form. At most one
  // non-blocking collective is in flight per rank and communicator: the next collective call
  // on that communicator completes the one before first (its result is in its buffers then; its
  // wait only reports). One dropped while its rank unwinds an exception is not waited for, and that
  // rank's later collectives throw errc::barrier_broken.
  [[nodiscard]] Request ibarrier() override;
  [[nodiscard]] Request iallreduce(void* inout, std::size_t count, const Reduction& op) override;
  [[nodiscard]] Request ibroadcast(std::span<std::byte> data, int root) override;
  [[nodiscard]] Request igather(std::span<const std::byte> mine, std::span<std::byte> all,
                                int root) override;
  [[nodiscard]] Request iscatter(std::span<const std::byte> all, std::span<std::byte> mine,
                                 int root) override;
  [[nodiscard]] Request iallgather(std::span<const std::byte> mine,
                                   std::span<std::byte> all) override;
  [[nodiscard]] Request ialltoall(std::span<const std::byte> out, std::span<std::byte> in) override;

  /// See SharedWindow (shared_window.hpp) for how each backend makes it.
  [[nodiscard]] std::unique_ptr<SharedMemory> allocate_shared(std::size_t bytes) override;

  [[nodiscard]] std::unique_ptr<Comm> split(int color, int key) override;
  [[nodiscard]] std::unique_ptr<Comm> dup() override;

  using Comm::allgather;
  using Comm::allgatherv;
  using Comm::allreduce;
  using Comm::alltoall;
  using Comm::broadcast;
  using Comm::exscan;
  using Comm::gather;
  using Comm::gatherv;
  using Comm::iallreduce;
  using Comm::irecv;
  using Comm::isend;
  using Comm::recv;
  using Comm::reduce;
  using Comm::reduce_scatter;
  using Comm::scan;
  using Comm::scatter;
  using Comm::send;

 protected:
  void complete(std::span<Request> requests) override;
  void poll(std::span<Request* const> requests, std::vector<bool>& done) override;
  [[nodiscard]] std::chrono::nanoseconds call_timeout() const noexcept override {
    return call_timeout_;
  }

 private:
  struct Op;
  struct Unexpected;
  struct CollOp;
  struct Agree;
  struct Specs;
  struct Group;
  struct Shared;
  enum class Bad : std::uint32_t;
  // A sub-communicator of `parent` (split): `group` names its ranks in the world's numbers,
  // `at` is its collective state (SubLayout) in `segment`.
  ShmComm(ShmComm& parent, std::shared_ptr<const Group> group, int rank,
          std::unique_ptr<Segment> segment, std::byte* at);
  Shared share_segment(std::size_t bytes, bool make, int from, const char* what,
                       const std::function<void(std::byte*)>& init);
  // World slots are indexed by world rank; collective slots and buffers by this comm's.
  spmd::detail::Slot& slot(int world_rank) const noexcept;
  spmd::detail::CollSlot& cslot(int r) const noexcept;
  [[nodiscard]] int world(int r) const noexcept;
  [[nodiscard]] int me() const noexcept;
  std::atomic<std::uint64_t>& dir(int from, int to) const noexcept;
  std::byte* coll_buf(int r, unsigned parity) const noexcept;
  Arena& arena() const noexcept;
  bool alive(int r) const noexcept;
  ByteRing& out_ring(int to);
  ByteRing* in_ring(int from);
  bool progress_send(Op& op);
  // The receive side (shm_recv.cpp): messages matched to receives by source and tag.
  void post_receive(Op& op);
  bool progress_source(int s) noexcept;
  bool stream(Op& op, ByteRing& ring);
  Op* match_posted(int s, std::uint32_t context, int tag) const noexcept;
  bool take_unexpected(Op& op);
  void adopt_drain(Op& op, int s);
  void deliver_unexpected() noexcept;
  void finish_receive(Op& op) noexcept;
  // Ends the receives waiting on source s with `error`; with `dead`, s died: each gets
  // peer_dead (in its communicator's numbers), any-source ones too once no other member of
  // their communicator is left.
  void fail_receives(int s, const std::exception_ptr& error, bool dead) noexcept;
  static std::exception_ptr dead_error(const Op& op, int p) noexcept;
  void orphan_receive(Op& op) noexcept;
  [[nodiscard]] bool wanted(int s) const noexcept;
  [[nodiscard]] bool pending() const noexcept {
    return queued_ != 0 || !posted_.empty() || bound_count_ != 0;
  }
  // Where the earliest kept (or being kept) message a receive or probe matches is.
  struct Kept {
    int source = -1;        // -1: none
    bool draining = false;  // still being kept (drains_[source])
    std::size_t index = 0;  // in unexpected_[source]
  };
  [[nodiscard]] Kept find_kept(int src, int tag, std::uint32_t context, const Group& g) const;
  std::optional<Status> look(int src, int tag, std::uint32_t context, const Group& g) const;
  bool step(Op& op) noexcept;
  bool progress() noexcept;
  void fail_dead_peers();
  // `naming`: the communicator whose numbers a timeout uses (null: the first op's).
  void wait_ops(std::span<Op* const> ops, const char* what, const Group* naming);
  void run_blocking(Op& op, const char* what);
  [[nodiscard]] Deadline call_deadline() const noexcept;
  template <class Ready, class Check>
  [[nodiscard]] bool await(EventCount& ec, const Deadline& deadline, Ready&& ready, Check&& check);
  // `peers` in world ranks; the message names them in `g`'s.
  [[noreturn]] void throw_timeout(const char* what, const std::vector<int>& peers, const Group& g,
                                  const char* state) const;
  void meet(const char* what);
  [[nodiscard]] std::uint32_t arrive(const char* what);
  void depart(std::uint32_t gen, const char* what);
  void finish_collective(CollOp& op) noexcept;
  void abandon_collective(CollOp& op) noexcept;
  void finish_outstanding();
  void wake_peer(int peer) noexcept;
  void orphan(Op& op) noexcept;
  Request post(bool is_send, int peer, int tag, std::uint64_t tag_word,
               std::span<const std::byte> out, std::span<std::byte> in, Status* status,
               const std::shared_ptr<const Group>& group);
  [[nodiscard]] std::uint64_t wire(int tag) const noexcept;
  [[nodiscard]] int world_source(int src) const noexcept;
  [[nodiscard]] bool others_alive(const Group& g) const noexcept;
  [[nodiscard]] bool owns(const Op& op) const noexcept;
  [[nodiscard]] bool owns(const CollOp& op) const noexcept;
  unsigned begin_collective(const Agree& a, const char* what);
  void check_agreement(unsigned parity, const Agree& a, const char* what) const;
  static Agree reduction_agree(std::size_t count, const Reduction& op);
  template <class Write, class Check, class Read>
  void rounds(const char* what, const Agree& a, std::uint64_t longest, std::size_t unit,
              Write&& write, Check&& check, Read&& read);
  template <class Write, class Check, class Read>
  Request post_rounds(const char* what, const Agree& a, std::uint64_t longest, std::size_t unit,
                      Write&& write, Check&& check, Read&& read);
  void reduce_window(std::byte* dst, std::uint64_t want, std::uint64_t len, std::uint64_t at,
                     std::size_t k, unsigned parity, int first, int end, const Reduction& op) const;
  void reducing(const char* what, std::span<const std::byte> in, std::byte* out, std::uint64_t want,
                std::uint64_t len, int first, int end, const Reduction& op, const Agree& a);
  void agree_counts(unsigned parity, std::span<const std::size_t> counts, const char* what,
                    const char* whose) const;
  std::vector<std::uint64_t> meta_round(const char* what, const Agree& a,
                                        std::span<const std::uint64_t> table, int from,
                                        std::size_t entries);

  std::byte* base_;
  spmd::detail::Header* h_;
  int rank_;
  int n_ = 0;
  // The communicator whose rings and queues carry this one's messages: the world's (for
  // the world, itself). Every point-to-point member below is used on the engine only.
  ShmComm* engine_ = this;
  std::shared_ptr<const Group> group_;  // its ranks and context
  spmd::detail::Coll* coll_ = nullptr;  // its barrier
  std::byte* cslots_ = nullptr;         // its collective slots, cslot_stride_ apart
  std::size_t cslot_stride_ = 0;
  std::byte* bufs_ = nullptr;         // its collective buffers
  std::unique_ptr<Segment> segment_;  // a sub-communicator's collective state
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
  std::deque<Op*> posted_;                   // receives not bound to a message, posting order
  std::vector<Op*> bound_;                   // per source: the receive taking its current message
  std::vector<std::unique_ptr<Op>> drains_;  // per source: the comm's own receive into `kept`
  std::vector<std::deque<Unexpected>> unexpected_;  // per source, in arrival order
  std::size_t bound_count_ = 0;                     // non-null entries of bound_
  std::uint64_t arrivals_ = 0;
  static constexpr int kNotProbing = -2;
  int probing_ = kNotProbing;                 // the source a probe looks at (kAnySource: all)
  std::vector<std::unique_ptr<Op>> orphans_;  // dropped requests the comm finishes
  std::size_t queued_ = 0;                    // operations in sendq_
  CollOp* outstanding_ = nullptr;             // the non-blocking collective in flight
};

}  // namespace ipckit
