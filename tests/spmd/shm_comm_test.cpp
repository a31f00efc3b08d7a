// ShmComm and spmd::run with real forked ranks: the shared test bodies (comm_bodies.hpp,
// also run under mpirun against MpiComm), then what only the shared-memory backend
// promises: a rank that throws or is killed ends every other rank's wait with peer_dead,
// run() reports which rank failed and why, and nothing is left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "collective_bodies.hpp"
#include "comm_bodies.hpp"
#include "ipckit/pool/exceptions.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/run.hpp"
#include "leak_check.hpp"
#include "nproc_limit.hpp"
#include "request_bodies.hpp"
#include "split_bodies.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ShmCommTest = testing::LeakCheckedTest;
using testing::error_of;

template <class F>
std::optional<spmd::RunError> run_error_of(int n, F&& fn, const spmd::RunOptions& options = {}) {
  try {
    spmd::run(n, fn, options);
  } catch (const spmd::RunError& e) {
    return e;
  }
  return std::nullopt;
}

TEST_F(ShmCommTest, RankThatThrowsIsReportedAndTheOthersEndWithPeerDead) {
  const auto err = run_error_of(4, [](Comm& c) {
    if (c.rank() == 2) throw std::runtime_error("rank two gives up");
    c.barrier();  // the others wait here for rank 2
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), make_error_code(errc::child_failed));
  EXPECT_EQ(err->failed_rank(), 2);
  EXPECT_NE(std::string(err->what()).find("rank two gives up"), std::string::npos) << err->what();
  for (const auto& r : err->ranks()) {
    if (r.rank == 2) continue;
    EXPECT_TRUE(r.peer_dead) << "rank " << r.rank << ": " << r.error;
  }
}

TEST_F(ShmCommTest, RankKilledWhileOthersWaitInRecvAndBarrier) {
  // Rank 1 records its pid and sleeps; rank 3 kills it with SIGKILL, then joins ranks 2 in a
  // barrier, while rank 0 waits in a recv from it. (The killer is a rank, not a thread of
  // the test: no thread runs while spmd::run forks.)
  SharedArray<pid_t> pid(1);
  const auto err = run_error_of(4, [&](Comm& c) {
    if (c.rank() == 1) {
      __atomic_store_n(&pid[0], ::getpid(), __ATOMIC_RELEASE);
      std::this_thread::sleep_for(60s);
    } else if (c.rank() == 0) {
      int v = 0;
      c.recv(1, std::span(&v, 1));
    } else {
      if (c.rank() == 3) {
        pid_t victim = 0;
        for (int i = 0; i < 30000 && victim == 0; ++i) {
          victim = __atomic_load_n(&pid[0], __ATOMIC_ACQUIRE);
          if (victim == 0) std::this_thread::sleep_for(1ms);
        }
        if (victim <= 0) throw std::runtime_error("rank 1 never started");
        std::this_thread::sleep_for(20ms);  // let the others start waiting
        ::kill(victim, SIGKILL);
      }
      c.barrier();
    }
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1) << err->what();
  EXPECT_TRUE(err->ranks()[1].status.signaled());
  EXPECT_EQ(err->ranks()[1].status.value, SIGKILL);
  for (int r : {0, 2, 3}) EXPECT_TRUE(err->ranks()[static_cast<std::size_t>(r)].peer_dead) << r;
}

// What a rank sent before it died still arrives; then the next receive fails.
TEST_F(ShmCommTest, MessagesSentBeforeARankDiesStillArrive) {
  const auto err = run_error_of(2, [](Comm& c) {
    if (c.rank() == 1) {
      for (int i = 0; i < 10; ++i) c.send(0, std::span<const int>(&i, 1));
      ::_exit(9);  // dies without a word
    }
    for (int i = 0; i < 10; ++i) {
      int v = -1;
      c.recv(1, std::span(&v, 1));
      if (v != i) throw std::runtime_error("message " + std::to_string(i) + " lost");
    }
    int more = 0;
    c.recv(1, std::span(&more, 1));  // peer_dead
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1);
  EXPECT_TRUE(err->ranks()[0].peer_dead) << err->ranks()[0].error;
}

TEST_F(ShmCommTest, BadInputIsRejectedWithSpecificErrors) {
  EXPECT_EQ(error_of([] { spmd::run(0, [](Comm&) {}); }), errc::invalid_argument);
  EXPECT_EQ(
      error_of([] { spmd::run(2, [](Comm&) {}, {.ring_bytes = 1000, .spin = {}, .pin = true}); }),
      errc::invalid_argument);
  spmd::run(2, [](Comm& c) {
    const auto expect = [&](errc want, auto&& f) {
      if (error_of(f) != want) throw std::runtime_error("expected another error code");
    };
    int v = 0;
    expect(errc::invalid_argument, [&] { c.send(2, std::span<const int>(&v, 1)); });
    expect(errc::invalid_argument, [&] { c.recv(-2, std::span(&v, 1)); });
    expect(errc::invalid_argument, [&] { c.recv(0, std::span(&v, 1), kMaxTag + 1); });
    expect(errc::invalid_argument, [&] { (void)c.broadcast(v, 5); });
    // A receive of the wrong size fails and consumes the message; the next one is fine.
    if (c.rank() == 0) {
      const std::int64_t big = 7;
      c.send(1, std::span<const std::int64_t>(&big, 1));
      c.send(1, std::span<const int>(&v, 1));
    } else {
      expect(errc::size_mismatch, [&] { c.recv(0, std::span(&v, 1)); });
      c.recv(0, std::span(&v, 1));
    }
    // Collectives whose ranks pass different sizes: every rank learns it.
    std::vector<double> mine(c.rank() == 0 ? 3 : 4, 1.0);
    expect(errc::size_mismatch, [&] { c.broadcast(std::span(mine), 0); });
  });
}

// A collective one rank never joins: the others end with peer_dead once it has exited.
TEST_F(ShmCommTest, ACollectiveOneRankSkipsEndsWithPeerDead) {
  const auto err = run_error_of(3, [](Comm& c) {
    if (c.rank() != 0) c.barrier();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->ranks()[1].peer_dead);
  EXPECT_TRUE(err->ranks()[2].peer_dead);
  EXPECT_TRUE(err->ranks()[0].status.success());
}

// A rank's exception of a registered type comes back in its RankOutcome as that type, fields
// and all; an unregistered one only as text.
struct SolverDiverged : std::exception {
  int step = 0;
  double residual = 0;
  SolverDiverged() = default;
  SolverDiverged(int s, double r) : step(s), residual(r) {}
  [[nodiscard]] const char* what() const noexcept override { return "solver diverged"; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(step, residual);
  }
};

TEST_F(ShmCommTest, ARanksRegisteredExceptionComesBackAsItself) {
  register_exception<SolverDiverged>();
  const auto err = run_error_of(3, [](Comm& comm) {
    if (comm.rank() == 1) throw SolverDiverged(120, 3.5);
    if (comm.rank() == 2) throw std::runtime_error("not registered");
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1);
  const auto& ranks = err->ranks();
  EXPECT_EQ(ranks[0].exception, nullptr);
  ASSERT_NE(ranks[1].exception, nullptr);
  try {
    std::rethrow_exception(ranks[1].exception);
  } catch (const SolverDiverged& e) {
    EXPECT_EQ(e.step, 120);
    EXPECT_EQ(e.residual, 3.5);
  }
  EXPECT_EQ(ranks[1].error, "solver diverged");
  EXPECT_EQ(ranks[2].exception, nullptr);
  EXPECT_EQ(ranks[2].error, "not registered");
}

// ---- the backend-neutral bodies (the same ones MpiComm runs under mpirun) ----------------

namespace bodies = testing::bodies;

// Runs `body` on n forked ranks; a failed check in any rank fails the test with its text.
void on_ranks(int n, const std::function<void(Comm&)>& body) {
  try {
    spmd::run(n, body);
  } catch (const spmd::RunError& e) {
    ADD_FAILURE() << e.what();
  }
}

TEST_F(ShmCommTest, RingBetweenEveryPairEverySize) {
  on_ranks(4, bodies::ring_every_pair);
  on_ranks(3, bodies::ring_every_pair);
}
TEST_F(ShmCommTest, MessagesToSelf) { on_ranks(2, bodies::self_messages); }
TEST_F(ShmCommTest, BlockingSendRecvBetweenZeroAndOne) { on_ranks(2, bodies::blocking_pair); }
TEST_F(ShmCommTest, MessagesBetweenAPairArriveInOrder) { on_ranks(4, bodies::ordering_every_pair); }
TEST_F(ShmCommTest, WrongReceiveSizeIsSizeMismatchAndNextMessageArrives) {
  on_ranks(2, bodies::size_mismatch);
}
TEST_F(ShmCommTest, RankOutOfRangeIsInvalidArgument) { on_ranks(4, bodies::rank_out_of_range); }
TEST_F(ShmCommTest, AllreduceEveryTypeAndOp) {
  on_ranks(4, bodies::allreduce_every_type_and_op);
  on_ranks(1, bodies::allreduce_every_type_and_op);
}
TEST_F(ShmCommTest, AllreduceSpanOfDoubles) { on_ranks(4, bodies::allreduce_span); }
TEST_F(ShmCommTest, GatherScalarToEveryRoot) { on_ranks(4, bodies::gather_scalar_every_root); }
TEST_F(ShmCommTest, GatherSpanToEveryRoot) { on_ranks(4, bodies::gather_span_every_root); }
TEST_F(ShmCommTest, GatherOfUnequalSizesIsSizeMismatchOnEveryRank) {
  on_ranks(4, bodies::gather_size_mismatch);
}
TEST_F(ShmCommTest, BroadcastFromEveryRoot) { on_ranks(4, bodies::broadcast_every_root); }
TEST_F(ShmCommTest, BarrierManyTimesAndWaitsForTheLastRank) { on_ranks(4, bodies::barrier_many); }
TEST_F(ShmCommTest, IallreduceGivesAllreducesBytes) {
  on_ranks(4, bodies::iallreduce_matches_allreduce);
  on_ranks(1, bodies::iallreduce_matches_allreduce);
}
TEST_F(ShmCommTest, NonBlockingCollectiveDroppedOrOvertakenStillCompletes) {
  on_ranks(3, bodies::icollective_dropped_or_overtaken);
}
TEST_F(ShmCommTest, RankBlockedInACollectiveMovesItsPostedReceives) {
  on_ranks(3, bodies::collective_moves_posted_p2p);
}
TEST_F(ShmCommTest, DroppedReceiveIsCancelledAfterItsMessageArrived) {
  on_ranks(3, bodies::dropped_irecv_after_arrival);
}

TEST_F(ShmCommTest, EveryReduceOpOnEveryTypeItIsDefinedOn) {
  on_ranks(4, bodies::reduce_ops_every_type);
  on_ranks(3, bodies::reduce_ops_every_type);
  on_ranks(1, bodies::reduce_ops_every_type);
}
TEST_F(ShmCommTest, UserReductionIsCombinedInRankOrder) {
  on_ranks(4, bodies::user_reduction_in_rank_order);
  on_ranks(1, bodies::user_reduction_in_rank_order);
}
TEST_F(ShmCommTest, ReduceScanExscanReduceScatter) {
  on_ranks(4, bodies::reduce_scan_builtin);
  on_ranks(3, bodies::reduce_scan_builtin);
}
TEST_F(ShmCommTest, ScatterAllgatherAlltoallEverySize) {
  on_ranks(4, bodies::scatter_allgather_alltoall);
  on_ranks(3, bodies::scatter_allgather_alltoall);
  on_ranks(1, bodies::scatter_allgather_alltoall);
}
TEST_F(ShmCommTest, VFormsWithUnequalBlocksInAnyOrder) {
  on_ranks(4, bodies::v_forms);
  on_ranks(3, bodies::v_forms);
}
TEST_F(ShmCommTest, CollectiveArgumentsThatDisagreeFailOnEveryRank) {
  on_ranks(4, bodies::collective_argument_errors);
}
TEST_F(ShmCommTest, NonBlockingCollectivesMatchTheBlockingOnes) {
  on_ranks(4, bodies::nonblocking_collectives);
  on_ranks(3, bodies::nonblocking_collectives);
}
TEST_F(ShmCommTest, UserReductionOfOddSizedElementsOverRounds) {
  on_ranks(3, bodies::user_reduction_odd_element);
}
// ShmComm checks an iallreduce's sizes too (MpiComm leaves that to MPI), in one round and
// over several.
TEST_F(ShmCommTest, IallreduceOfDifferentSizesIsSizeMismatchAtTheWait) {
  on_ranks(3, [](Comm& c) {
    for (const std::size_t n : {std::size_t{4}, std::size_t{9000}}) {
      std::vector<double> v(c.rank() == 1 ? n + 1 : n, 1.0);
      Request q = c.iallreduce(std::span(v), ReduceOp::sum);
      SPMD_CHECK_ERRC(c, c.wait(q), errc::size_mismatch);
      SPMD_CHECK(c, c.allreduce(1, ReduceOp::sum) == 3);
    }
  });
}
// ShmComm's collective buffers hold 64 KiB: a larger element is refused on every rank.
TEST_F(ShmCommTest, ReductionElementLargerThanABufferIsInvalidArgument) {
  on_ranks(2, [](Comm& c) {
    using Big = std::array<char, 70000>;
    Big v{};
    SPMD_CHECK_ERRC(c,
                    c.allreduce(v, Reduction::of<Big>([](const Big& a, const Big&) { return a; })),
                    errc::invalid_argument);
    SPMD_CHECK(c, c.allreduce(1, ReduceOp::sum) == 2);
  });
}
TEST_F(ShmCommTest, PersistentRequestsStartedManyTimes) {
  on_ranks(3, bodies::persistent_requests);
  on_ranks(1, bodies::persistent_requests);
}
TEST_F(ShmCommTest, CartShiftMatchesTheCoordinates) {
  on_ranks(4, bodies::cart_shift);
  on_ranks(6, bodies::cart_shift);
}
TEST_F(ShmCommTest, SharedWindowPartsAreReadAndWrittenInPlace) {
  on_ranks(4, bodies::shared_window);
  on_ranks(1, bodies::shared_window);
}
TEST_F(ShmCommTest, TagsAnySourceAndProbe) {
  on_ranks(4, bodies::tags_any_source_probe);
  on_ranks(2, bodies::tags_any_source_probe);
}
// An any-source receive nobody answers ends at call_timeout naming the other ranks.
TEST_F(ShmCommTest, AnySourceReceivePastCallTimeoutThrowsTimeout) {
  spmd::run(3,
            [](Comm& c) {
              if (c.rank() == 0) {
                std::int64_t v = 0;
                SPMD_CHECK_ERRC(c, c.recv(kAnySource, std::as_writable_bytes(std::span(&v, 1)), 5),
                                errc::timeout);
                SPMD_CHECK_ERRC(c, (void)c.probe(kAnySource, 6), errc::timeout);
              } else {
                std::this_thread::sleep_for(std::chrono::seconds(1));  // alive, silent
              }
            },
            {.call_timeout = std::chrono::milliseconds(200)});
}
TEST_F(ShmCommTest, SplitByParityKeepsCollectivesAndMessagesApart) {
  on_ranks(5, bodies::split_by_parity);
  on_ranks(4, bodies::split_by_parity);
  on_ranks(1, bodies::split_by_parity);
}
TEST_F(ShmCommTest, DupStreamsNeverMeetTheParents) {
  on_ranks(3, bodies::dup_isolates);
  on_ranks(2, bodies::dup_isolates);
}
TEST_F(ShmCommTest, SplitUndefinedColorBadColorAndNestedSplits) {
  on_ranks(5, bodies::split_undefined_and_nested);
  on_ranks(2, bodies::split_undefined_and_nested);
}
TEST_F(ShmCommTest, ReceivePendingAcrossAnotherCommunicatorsCollective) {
  on_ranks(3, bodies::pending_across_communicators);
  on_ranks(2, bodies::pending_across_communicators);
}
TEST_F(ShmCommTest, CartSubRowsAndColumnsAndGridsOverASplit) {
  on_ranks(6, bodies::cart_sub);
  on_ranks(4, bodies::cart_sub);
}
// Requests of a communicator and of its dup complete in one wait_all of either.
TEST_F(ShmCommTest, RequestsOfADupCompleteInTheParentsWaitAll) {
  on_ranks(2, [](Comm& c) {
    std::unique_ptr<Comm> d = c.dup();
    const std::int64_t on_dup = 40 + c.rank();
    const std::int64_t on_parent = 80 + c.rank();
    std::int64_t a = 0;
    std::int64_t b = 0;
    const int other = 1 - c.rank();
    Request reqs[4] = {d->isend(other, bodies::bytes_of(on_dup)),
                       c.isend(other, bodies::bytes_of(on_parent)),
                       d->irecv(other, bodies::bytes_of(a)), c.irecv(other, bodies::bytes_of(b))};
    c.wait_all(reqs);
    SPMD_CHECK(c, a == 40 + other && b == 80 + other);
  });
}
// Making and dropping a communicator leaves no descriptor or mapping behind in the rank.
TEST_F(ShmCommTest, SplitAndDupManyTimesLeakNothing) {
  const auto count = [] {
    std::size_t fds = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
      ++fds;
    // The segments' mappings (memfd), not the heap's: an allocator may map more memory.
    std::ifstream maps("/proc/self/maps");
    std::string line;
    std::size_t lines = 0;
    while (std::getline(maps, line)) lines += line.find("memfd:") != std::string::npos ? 1 : 0;
    return std::pair(fds, lines);
  };
  on_ranks(3, [&](Comm& c) {
    { std::unique_ptr<Comm> warm = c.dup(); }  // what the first one allocates for good
    const auto before = count();
    {
      const std::unique_ptr<Comm> live = c.dup();
      SPMD_CHECK(c, count().second > before.second);  // what the count sees
    }
    for (int i = 0; i < 150; ++i) {
      std::unique_ptr<Comm> d = i % 2 == 0 ? c.dup() : c.split(c.rank() % 2, 0);
      SPMD_CHECK(c, d->allreduce(std::int64_t{1}, ReduceOp::sum) == d->size());
    }
    c.barrier();
    const auto after = count();
    SPMD_CHECK_AT(c, after == before,
                  std::to_string(before.first) + " fds, " + std::to_string(before.second) +
                      " memfd maps before; " + std::to_string(after.first) + ", " +
                      std::to_string(after.second) + " after");
  });
}
// A rank of a sub-communicator killed: the other member's collective ends with peer_dead;
// the other communicator's ranks go on.
TEST_F(ShmCommTest, MemberOfASplitKilledEndsItsPeersCollectiveWithPeerDead) {
  const auto err = run_error_of(4, [](Comm& c) {
    std::unique_ptr<Comm> s = c.split(c.rank() / 2, 0);
    if (c.rank() == 1) ::raise(SIGKILL);
    s->barrier();
    SPMD_CHECK(c, s->allreduce(std::int64_t{1}, ReduceOp::sum) == 2);
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->failed_rank(), 1) << err->what();
  EXPECT_TRUE(err->ranks()[0].peer_dead) << err->ranks()[0].error;
  EXPECT_EQ(err->ranks()[2].error, "");
  EXPECT_EQ(err->ranks()[3].error, "");
}
// A sub-communicator's collective past call_timeout names the missing rank in its own
// numbering.
TEST_F(ShmCommTest, SplitCollectivePastCallTimeoutNamesItsOwnRank) {
  spmd::run(4,
            [](Comm& c) {
              std::unique_ptr<Comm> odd = c.split(c.rank() % 2, 0);
              std::int64_t done = 0;
              if (c.rank() == 3) {  // alive and silent on `odd` until rank 1 has checked
                for (;;) {
                  try {
                    c.recv(1, bodies::bytes_of(done));
                    return;
                  } catch (const Error& e) {
                    if (!e.is(errc::timeout)) throw;
                  }
                }
              }
              if (c.rank() != 1) return;
              try {
                odd->barrier();
                SPMD_CHECK(c, false);
              } catch (const Error& e) {
                const std::string what = e.what();
                SPMD_CHECK_AT(c, e.is(errc::timeout), what);
                SPMD_CHECK_AT(c, what.find("rank 1") != std::string::npos, what);
                SPMD_CHECK_AT(c, what.find("rank 3") == std::string::npos, what);
              }
              c.send(3, bodies::bytes_of(done));
            },
            {.call_timeout = std::chrono::milliseconds(600)});
}
// wait_any/wait_some on a receive nobody answers end at call_timeout; the request stays
// posted and completes once the message comes.
TEST_F(ShmCommTest, WaitAnyAndWaitSomePastCallTimeoutThrowTimeout) {
  spmd::run(2,
            [](Comm& c) {
              std::int64_t v = 0;
              std::int64_t go = 1;
              if (c.rank() == 0) {
                Request rq[1] = {c.irecv(1, bodies::bytes_of(v))};
                SPMD_CHECK_ERRC(c, (void)c.wait_any(rq), errc::timeout);
                SPMD_CHECK(c, rq[0].valid());
                SPMD_CHECK_ERRC(c, (void)c.wait_some(rq), errc::timeout);
                SPMD_CHECK(c, rq[0].valid());
                c.send(1, bodies::bytes_of(go));
                SPMD_CHECK(c, c.wait_any(rq) == 0 && v == 5 && !rq[0].valid());
              } else {
                for (;;) {  // alive and silent until rank 0 has checked
                  try {
                    c.recv(0, bodies::bytes_of(go));
                    break;
                  } catch (const Error& e) {
                    if (!e.is(errc::timeout)) throw;
                  }
                }
                v = 5;
                c.send(0, bodies::bytes_of(v));
              }
            },
            {.call_timeout = std::chrono::milliseconds(200)});
}
TEST_F(ShmCommTest, TestWaitAnyWaitSome) {
  on_ranks(4, bodies::test_wait_any_wait_some);
  on_ranks(2, bodies::test_wait_any_wait_some);
}
TEST_F(ShmCommTest, GatherIntoAWrongSizedRootBufferIsInvalidArgumentOnEveryRank) {
  on_ranks(4, [](Comm& c) {
    std::int32_t mine = c.rank();
    std::vector<std::int32_t> all(c.rank() == 0 ? 1 : 0);
    if (testing::error_of([&] {
          c.gather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(all)), 0);
        }) != errc::invalid_argument) {
      throw std::runtime_error("rank " + std::to_string(c.rank()) + ": not invalid_argument");
    }
    c.barrier();  // and the comm is still usable
  });
}

TEST_F(ShmCommTest, DroppedRequestsLeaveThePairsStreamWhole) {
  on_ranks(2, [](Comm& c) {
    std::int64_t v = 0;
    std::vector<std::byte> big(std::size_t{5} << 20);
    if (c.rank() == 1) {
      { Request dropped = c.irecv(0, std::as_writable_bytes(std::span(&v, 1))); }  // not begun
      c.send(0, std::as_bytes(std::span(&v, 1)));
      c.recv(0, std::span(&v, 1));
      if (v != 77) throw std::runtime_error("the message after a dropped irecv was lost");
      c.recv(0, std::span<std::byte>(big));  // the dropped isend's message, whole
      c.recv(0, std::span(&v, 1));
      if (v != 78) throw std::runtime_error("the stream broke after a dropped isend");
    } else {
      c.recv(1, std::span(&v, 1));
      v = 77;
      c.send(1, std::as_bytes(std::span(&v, 1)));
      {
        // Begun (the first pieces went) and dropped: the comm sends the rest as zeros, and
        // the receiver gets a message of the announced size.
        std::vector<std::byte> tmp(std::size_t{5} << 20);
        Request r = c.isend(1, tmp);
        Request none[1];
        c.wait_all(std::span(none, 0));
        (void)r;
      }
      v = 78;
      c.send(1, std::as_bytes(std::span(&v, 1)));
    }
    (void)big;
  });
}

TEST_F(ShmCommTest, CartCommDimsDirectionsAndArgumentChecks) { on_ranks(4, bodies::cart_static); }

std::vector<std::vector<int>> grids_2d(int p) {
  std::vector<std::vector<int>> g = {{1, p}, {p, 1}};
  if (p == 4) g.push_back({2, 2});
  return g;
}
const std::vector<std::vector<bool>> kPeriodic2d = {{false, false}, {true, true}, {true, false}};

TEST_F(ShmCommTest, CartCommCoordinatesAndNeighborsMatchTheFormula) {
  on_ranks(4, [](Comm& c) {
    for (const auto& dims : grids_2d(c.size())) {
      for (const auto& periodic : kPeriodic2d) bodies::cart_layout(c, dims, periodic);
    }
    bodies::cart_layout(c, {1, 2, 2}, {true, false, true});
    bodies::cart_layout(c, {2, 1, 2}, {false, false, false});
  });
}

TEST_F(ShmCommTest, CartCommHaloExchangeDeliversEachNeighboursCells) {
  on_ranks(4, [](Comm& c) {
    for (const auto& dims : grids_2d(c.size())) {
      for (const auto& periodic : kPeriodic2d) bodies::cart_halo(c, dims, periodic, 100);
    }
    bodies::cart_halo(c, {2, 2, 1}, {true, true, true}, 10);
    bodies::cart_halo(c, {1, 2, 2}, {false, true, false}, 10);
  });
}

// A one-rank grid has no neighbours: every form of the halo is a no-op, restartable.
TEST_F(ShmCommTest, CartHaloOnAOneRankGridWithoutNeighbours) {
  on_ranks(1, [](Comm& c) { bodies::cart_halo(c, {1, 1}, {false, false}, 10); });
}
TEST_F(ShmCommTest, PeriodicGridExchangesFourMiBWithAllNeighboursAtOnce) {
  on_ranks(4, bodies::cart_halo_large);
}

// A program that ends with a collective: the last rank to arrive may return and exit while
// the others are still leaving the barrier; that is not a death. (4 ranks on 2 CPUs make
// the others yield right there.) Repeated to meet the interleaving.
TEST_F(ShmCommTest, EndingOnACollectiveIsNotAPeerDeath) {
  for (int i = 0; i < static_cast<int>(testing::scaled(40)); ++i) {
    on_ranks(4, [](Comm& c) { c.barrier(); });
    on_ranks(4, [](Comm& c) { (void)c.allreduce(c.rank(), ReduceOp::sum); });
  }
}

// ---- timeouts ------------------------------------------------------------------------------

bool contains(const std::string& s, const std::string& piece) {
  return s.find(piece) != std::string::npos;
}

// A rank stops itself; the others wait for it in a barrier. Without timeouts that waits
// forever (by design: the rank is alive); with the run's deadline, run() kills every rank.
TEST_F(ShmCommTest, RunDeadlineKillsAStoppedRankAndNamesIt) {
  const auto start = std::chrono::steady_clock::now();
  const auto err = run_error_of(4,
                                [](Comm& c) {
                                  if (c.rank() == 1) ::raise(SIGSTOP);
                                  c.barrier();
                                },
                                {.timeout = 1000ms});
  EXPECT_LT(std::chrono::steady_clock::now() - start, 60s);  // a hang guard
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->is(errc::timeout)) << err->what();
  EXPECT_EQ(err->failed_rank(), 1) << err->what();
  EXPECT_TRUE(contains(err->what(), "deadline of 1000 ms passed")) << err->what();
  EXPECT_TRUE(contains(err->what(), "1 (stopped)")) << err->what();
  EXPECT_TRUE(err->ranks()[1].unfinished);
  EXPECT_TRUE(err->ranks()[1].stopped);
  EXPECT_TRUE(err->ranks()[1].status.signaled());
  for (int r : {0, 2, 3}) {
    const auto& o = err->ranks()[static_cast<std::size_t>(r)];
    EXPECT_TRUE(o.unfinished) << r;  // still in the barrier
    EXPECT_FALSE(o.stopped) << r;
  }
}

// The same with call_timeout only: the waiting ranks' barriers time out, and run() kills
// the stopped rank call_timeout after the first of them failed.
TEST_F(ShmCommTest, CallTimeoutEndsTheWaitsOnAStoppedRankAndRunKillsIt) {
  const auto start = std::chrono::steady_clock::now();
  const auto err = run_error_of(4,
                                [](Comm& c) {
                                  if (c.rank() == 1) ::raise(SIGSTOP);
                                  c.barrier();
                                },
                                {.call_timeout = 300ms});
  EXPECT_LT(std::chrono::steady_clock::now() - start, 60s);  // a hang guard
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->is(errc::timeout)) << err->what();
  EXPECT_EQ(err->failed_rank(), 1) << err->what();
  EXPECT_TRUE(err->ranks()[1].unfinished && err->ranks()[1].stopped) << err->what();
  EXPECT_TRUE(contains(err->what(), "ShmComm::barrier: call_timeout of 300 ms passed"))
      << err->what();
  int timed_out = 0;
  for (int r : {0, 2, 3}) {
    // Each either timed out itself or saw a rank that had timed out exit first.
    const auto& o = err->ranks()[static_cast<std::size_t>(r)];
    EXPECT_TRUE(o.call_timed_out || o.peer_dead) << r << ": " << o.error;
    EXPECT_FALSE(o.unfinished) << r;
    timed_out += o.call_timed_out ? 1 : 0;
  }
  EXPECT_GE(timed_out, 1);
}

// Rank 0 receives from rank 1, which sends nothing until rank 0 has seen the timeout: the
// receive ends with errc::timeout naming the call and the rank, and the pair's stream is
// whole afterwards (the next receive gets rank 1's message).
TEST_F(ShmCommTest, RecvPastCallTimeoutThrowsTimeoutNamingTheCallAndTheRank) {
  SharedArray<std::uint32_t> seen(1);
  spmd::RunOptions options;
  options.call_timeout = 200ms;
  spmd::run(
      2,
      [&](Comm& c) {
        int v = 0;
        if (c.rank() == 0) {
          try {
            c.recv(1, std::span(&v, 1));
            throw std::runtime_error("the receive returned");
          } catch (const Error& e) {
            if (!e.is(errc::timeout) || !contains(e.what(), "ShmComm::recv") ||
                !contains(e.what(), "rank 1")) {
              throw std::runtime_error(std::string("not the timeout expected: ") + e.what());
            }
          }
          __atomic_store_n(&seen[0], 1U, __ATOMIC_RELEASE);
          c.recv(1, std::span(&v, 1));
          if (v != 42) throw std::runtime_error("the message after the timeout was lost");
        } else {
          for (int i = 0; i < 60000 && __atomic_load_n(&seen[0], __ATOMIC_ACQUIRE) == 0; ++i) {
            std::this_thread::sleep_for(1ms);
          }
          v = 42;
          c.send(0, std::span<const int>(&v, 1));
        }
      },
      options);
}

// A barrier past call_timeout names the rank that has not arrived; the collectives of that
// comm are broken afterwards (barrier_broken), not silently miscounted.
TEST_F(ShmCommTest, BarrierPastCallTimeoutNamesTheMissingRankAndBreaksTheCollectives) {
  SharedArray<std::uint32_t> seen(1);
  spmd::RunOptions options;
  options.call_timeout = 200ms;
  spmd::run(
      2,
      [&](Comm& c) {
        if (c.rank() == 0) {
          try {
            c.barrier();
            throw std::runtime_error("the barrier returned");
          } catch (const Error& e) {
            if (!e.is(errc::timeout) || !contains(e.what(), "ShmComm::barrier") ||
                !contains(e.what(), "rank 1 (not there yet)")) {
              throw std::runtime_error(std::string("not the timeout expected: ") + e.what());
            }
          }
          if (error_of([&] { (void)c.allreduce(1, ReduceOp::sum); }) != errc::barrier_broken) {
            throw std::runtime_error("a collective after a timed-out one was not refused");
          }
          __atomic_store_n(&seen[0], 1U, __ATOMIC_RELEASE);
        } else {
          for (int i = 0; i < 60000 && __atomic_load_n(&seen[0], __ATOMIC_ACQUIRE) == 0; ++i) {
            std::this_thread::sleep_for(1ms);
          }
        }
      },
      options);
}

TEST_F(ShmCommTest, NegativeTimeoutsAreInvalidArguments) {
  spmd::RunOptions bad_run;
  bad_run.timeout = -1ms;
  EXPECT_EQ(error_of([&] {
              spmd::run(
                  2, [](Comm&) {}, bad_run);
            }),
            errc::invalid_argument);
  spmd::RunOptions bad_call;
  bad_call.call_timeout = -1ms;
  EXPECT_EQ(error_of([&] {
              spmd::run(
                  2, [](Comm&) {}, bad_call);
            }),
            errc::invalid_argument);
}

// ---- a run that cannot start (RLIMIT_NPROC) ----------------------------------------------

// Room for two ranks: the third fork fails. run() kills the two, and throws an Error with
// errno EAGAIN that says what it attempted.
TEST_F(ShmCommTest, RunThatCannotForkARankThrowsErrorAndKillsTheOthers) {
  const int rc = testing::run_under_nproc_limit(2, [] {
    const auto fds = testing::open_fds();
    const std::size_t maps = testing::shared_mappings();
    try {
      spmd::run(4, [](Comm& c) { c.barrier(); });
      std::fprintf(stderr, "spmd::run started 4 ranks under the limit\n");
      return 1;
    } catch (const spmd::RunError& e) {
      std::fprintf(stderr, "a RunError, not a start failure: %s\n", e.what());
      return 2;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (e.code() != std::error_code(EAGAIN, std::system_category()) ||
          !contains(what, "spmd::run: could not start rank 2") ||
          !contains(what, "fork() failed") || !contains(what, "RLIMIT_NPROC")) {
        std::fprintf(stderr, "not the error expected: %s\n", e.what());
        return 3;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "not an ipckit::Error: %s\n", e.what());
      return 4;
    }
    if (!testing::no_children()) {
      std::fprintf(stderr, "a rank was left behind\n");
      return 5;
    }
    if (testing::open_fds() != fds || testing::shared_mappings() != maps) {
      std::fprintf(stderr, "a descriptor or shared mapping was left behind\n");
      return 6;
    }
    return 0;
  });
  if (rc == testing::kNprocUnavailable) GTEST_SKIP() << "RLIMIT_NPROC cannot be applied here";
  EXPECT_EQ(rc, 0) << "see the child's stderr above";
}

}  // namespace
}  // namespace ipckit
