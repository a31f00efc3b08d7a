// MpiComm under mpirun (ctest runs this with -np 4): every rank runs every test; the program
// fails, and with it mpirun, when a test fails on any rank. The bodies are the backend-neutral
// ones of comm_bodies.hpp. A test that does not end within kTestSeconds (a deadlock) ends its
// rank, which makes mpirun end the job.
#include "ipckit/spmd/mpi_comm.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../support/mpi_test_main.hpp"
#include "collective_bodies.hpp"
#include "comm_bodies.hpp"
#include "request_bodies.hpp"
#include "split_bodies.hpp"

namespace {

using namespace ipckit;
namespace bodies = ipckit::testing::bodies;

constexpr unsigned kTestSeconds = 120;

MpiComm* g_world = nullptr;

MpiComm& world() { return *g_world; }

TEST(MpiComm, RankAndSizeMatchMpi) {
  int rank = -1;
  int size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(world().rank(), rank);
  EXPECT_EQ(world().size(), size);
  int same = MPI_UNEQUAL;
  MPI_Comm_compare(world().native(), MPI_COMM_WORLD, &same);
  EXPECT_EQ(same, MPI_CONGRUENT);  // a duplicate of it
}

TEST(MpiComm, RingBetweenEveryPairEverySize) { EXPECT_NO_THROW(bodies::ring_every_pair(world())); }
TEST(MpiComm, MessagesToSelf) { EXPECT_NO_THROW(bodies::self_messages(world())); }
TEST(MpiComm, BlockingSendRecvBetweenZeroAndOne) {
  EXPECT_NO_THROW(bodies::blocking_pair(world()));
}
TEST(MpiComm, MessagesBetweenAPairArriveInOrder) {
  EXPECT_NO_THROW(bodies::ordering_every_pair(world()));
}
TEST(MpiComm, RecvAfterQueuedIrecvsKeepsTheOrder) {
  EXPECT_NO_THROW(bodies::recv_after_queued_irecv(world()));
}
TEST(MpiComm, WrongReceiveSizeIsSizeMismatchAndNextMessageArrives) {
  EXPECT_NO_THROW(bodies::size_mismatch(world()));
}
TEST(MpiComm, RankOutOfRangeIsInvalidArgument) {
  EXPECT_NO_THROW(bodies::rank_out_of_range(world()));
}
TEST(MpiComm, AllreduceEveryTypeAndOp) {
  EXPECT_NO_THROW(bodies::allreduce_every_type_and_op(world()));
}
TEST(MpiComm, AllreduceSpanOfDoubles) { EXPECT_NO_THROW(bodies::allreduce_span(world())); }
TEST(MpiComm, GatherScalarToEveryRoot) {
  EXPECT_NO_THROW(bodies::gather_scalar_every_root(world()));
}
TEST(MpiComm, GatherSpanToEveryRoot) { EXPECT_NO_THROW(bodies::gather_span_every_root(world())); }
TEST(MpiComm, GatherOfUnequalSizesIsSizeMismatchOnEveryRank) {
  EXPECT_NO_THROW(bodies::gather_size_mismatch(world()));
}
TEST(MpiComm, BroadcastFromEveryRoot) { EXPECT_NO_THROW(bodies::broadcast_every_root(world())); }
TEST(MpiComm, IallreduceGivesAllreducesBytes) {
  EXPECT_NO_THROW(bodies::iallreduce_matches_allreduce(world()));
}
TEST(MpiComm, NonBlockingCollectiveDroppedOrOvertakenStillCompletes) {
  EXPECT_NO_THROW(bodies::icollective_dropped_or_overtaken(world()));
}
TEST(MpiComm, RankBlockedInACollectiveMovesItsPostedReceives) {
  EXPECT_NO_THROW(bodies::collective_moves_posted_p2p(world()));
}
TEST(MpiComm, DroppedReceiveIsCancelledAfterItsMessageArrived) {
  EXPECT_NO_THROW(bodies::dropped_irecv_after_arrival(world()));
}
TEST(MpiComm, EveryReduceOpOnEveryTypeItIsDefinedOn) {
  EXPECT_NO_THROW(bodies::reduce_ops_every_type(world()));
}
TEST(MpiComm, UserReductionIsCombinedInRankOrder) {
  EXPECT_NO_THROW(bodies::user_reduction_in_rank_order(world()));
}
TEST(MpiComm, ReduceScanExscanReduceScatter) {
  EXPECT_NO_THROW(bodies::reduce_scan_builtin(world()));
}
TEST(MpiComm, ScatterAllgatherAlltoallEverySize) {
  EXPECT_NO_THROW(bodies::scatter_allgather_alltoall(world()));
}
TEST(MpiComm, VFormsWithUnequalBlocksInAnyOrder) { EXPECT_NO_THROW(bodies::v_forms(world())); }
TEST(MpiComm, CollectiveArgumentsThatDisagreeFailOnEveryRank) {
  EXPECT_NO_THROW(bodies::collective_argument_errors(world()));
}
TEST(MpiComm, NonBlockingCollectivesMatchTheBlockingOnes) {
  EXPECT_NO_THROW(bodies::nonblocking_collectives(world()));
}
TEST(MpiComm, UserReductionOfOddSizedElementsOverRounds) {
  EXPECT_NO_THROW(bodies::user_reduction_odd_element(world()));
}
TEST(MpiComm, PersistentRequestsStartedManyTimes) {
  EXPECT_NO_THROW(bodies::persistent_requests(world()));
}
TEST(MpiCartComm, ShiftMatchesTheCoordinates) { EXPECT_NO_THROW(bodies::cart_shift(world())); }
TEST(MpiComm, SharedWindowPartsAreReadAndWrittenInPlace) {
  EXPECT_NO_THROW(bodies::shared_window(world()));
}
TEST(MpiComm, TagsAnySourceAndProbe) { EXPECT_NO_THROW(bodies::tags_any_source_probe(world())); }
TEST(MpiComm, SplitByParityKeepsCollectivesAndMessagesApart) {
  EXPECT_NO_THROW(bodies::split_by_parity(world()));
}
TEST(MpiComm, DupStreamsNeverMeetTheParents) { EXPECT_NO_THROW(bodies::dup_isolates(world())); }
TEST(MpiComm, SplitUndefinedColorBadColorAndNestedSplits) {
  EXPECT_NO_THROW(bodies::split_undefined_and_nested(world()));
}
TEST(MpiComm, ReceivePendingAcrossAnotherCommunicatorsCollective) {
  EXPECT_NO_THROW(bodies::pending_across_communicators(world()));
}
TEST(MpiCartComm, SubRowsAndColumnsAndGridsOverASplit) {
  EXPECT_NO_THROW(bodies::cart_sub(world()));
}
TEST(MpiComm, TestWaitAnyWaitSome) { EXPECT_NO_THROW(bodies::test_wait_any_wait_some(world())); }
TEST(MpiComm, BarrierManyTimesAndWaitsForTheLastRank) {
  EXPECT_NO_THROW(bodies::barrier_many(world()));
}

// A blocking send takes the messages of this rank's queued irecvs while it waits: ranks 0
// and 1 each queue an irecv, then send 16 MiB to each other with blocking send().
TEST(MpiComm, BlockingSendsBothWaysWithQueuedIrecvsDoNotDeadlock) {
  if (world().size() < 2 || world().rank() > 1) return;
  const int r = world().rank();
  const std::size_t n = 16 * bodies::kMiB;
  std::vector<std::byte> in(n);
  Request req[1] = {world().irecv(1 - r, in)};
  world().send(1 - r, std::span<const std::byte>(bodies::make_message(r, 1 - r, n)));
  world().wait_all(req);
  EXPECT_EQ(bodies::first_wrong(in, 1 - r, r), n);
}

// The root's buffer must hold size() contributions: every rank learns it, nobody hangs.
TEST(MpiComm, GatherIntoAWrongSizedRootBufferIsInvalidArgumentOnEveryRank) {
  std::int32_t mine = world().rank();
  // One element too many on the root, whatever the rank count (with one rank, one element
  // would be right).
  std::vector<std::int32_t> all(world().rank() == 0 ? static_cast<std::size_t>(world().size()) + 1
                                                    : 0);
  try {
    world().gather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(all)), 0);
    ADD_FAILURE() << "gather did not throw";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument)) << e.what();
  }
}

// A receive request dropped without wait_all() is cancelled: the message goes to the next
// receive.
TEST(MpiComm, DroppedReceiveRequestIsCancelled) {
  if (world().size() < 2 || world().rank() > 1) return;
  std::int64_t v = 0;
  if (world().rank() == 1) {
    { Request dropped = world().irecv(0, std::as_writable_bytes(std::span(&v, 1))); }
    world().send(0, std::as_bytes(std::span(&v, 1)));
    world().recv(0, std::span(&v, 1));
    EXPECT_EQ(v, 77);
  } else {
    world().recv(1, std::span(&v, 1));
    v = 77;
    world().send(1, std::as_bytes(std::span(&v, 1)));
  }
}

TEST(MpiComm, WaitAllRejectsAnotherBackendsRequest) {
  struct Foreign : Request::State {};
  Request r[1] = {Request(std::make_unique<Foreign>())};
  try {
    world().wait_all(r);
    ADD_FAILURE() << "wait_all did not throw";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument)) << e.what();
  }
}

TEST(MpiComm, MpiErrorsBecomeIpckitErrors) {
  try {
    mpi::check(MPI_ERR_TRUNCATE, "MPI_Recv");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::size_mismatch));
    EXPECT_NE(std::string(e.what()).find("MPI_Recv failed: "), std::string::npos) << e.what();
  }
  try {
    mpi::check(MPI_ERR_RANK, "MPI_Send");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument));
  }
  try {
    mpi::check(MPI_ERR_INTERN, "MPI_Barrier");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(&e.code().category(), &mpi::error_category());
    EXPECT_EQ(e.code().value(), MPI_ERR_INTERN);
    EXPECT_EQ(std::string(e.code().category().name()), "ipckit.mpi");
    EXPECT_EQ(std::string(e.what()), "MPI_Barrier failed: " + mpi::error_string(MPI_ERR_INTERN));
  }
  // MPI_COMM_WORLD returns errors instead of aborting.
  MPI_Errhandler handler = MPI_ERRHANDLER_NULL;
  MPI_Comm_get_errhandler(MPI_COMM_WORLD, &handler);
  EXPECT_EQ(handler, MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&handler);
}

TEST(MpiComm, DataTypesAndOpsMapToMpi) {
  EXPECT_EQ(mpi::datatype_of(DataType::i32), MPI_INT32_T);
  EXPECT_EQ(mpi::datatype_of(DataType::i64), MPI_INT64_T);
  EXPECT_EQ(mpi::datatype_of(DataType::u32), MPI_UINT32_T);
  EXPECT_EQ(mpi::datatype_of(DataType::u64), MPI_UINT64_T);
  EXPECT_EQ(mpi::datatype_of(DataType::f32), MPI_FLOAT);
  EXPECT_EQ(mpi::datatype_of(DataType::f64), MPI_DOUBLE);
  EXPECT_EQ(mpi::op_of(ReduceOp::sum), MPI_SUM);
  EXPECT_EQ(mpi::op_of(ReduceOp::min), MPI_MIN);
  EXPECT_EQ(mpi::op_of(ReduceOp::max), MPI_MAX);
}

// A second Environment inside the first one leaves MPI alone.
TEST(MpiComm, NestedEnvironmentDoesNotOwnMpi) {
  mpi::Environment inner;
  EXPECT_FALSE(inner.owns_mpi());
  EXPECT_GE(inner.thread_level(), MPI_THREAD_FUNNELED);
}

// MpiComm over a communicator other than MPI_COMM_WORLD: the even and the odd ranks.
TEST(MpiComm, WorksOnASubCommunicator) {
  MPI_Comm half = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, world().rank() % 2, world().rank(), &half), MPI_SUCCESS);
  {
    MpiComm c(half);
    EXPECT_EQ(c.size(), (world().size() + 1 - world().rank() % 2) / 2);
    EXPECT_EQ(c.rank(), world().rank() / 2);
    EXPECT_NO_THROW(bodies::ring_every_pair(c));
    EXPECT_NO_THROW(bodies::allreduce_every_type_and_op(c));
    EXPECT_NO_THROW(bodies::gather_span_every_root(c));
  }
  MPI_Comm_free(&half);
}

// ---- CartComm over MpiComm --------------------------------------------------------------

// The 2-D grids of size() ranks the tests use: 1 x p, p x 1 and the balanced one, each
// periodic on no axis, on every axis, and on x only.
std::vector<std::vector<int>> grids_2d(int p) {
  std::vector<std::vector<int>> g = {{1, p}, {p, 1}};
  if (p == 4)
    g.push_back({2, 2});
  else if (CartComm::dims_for(p, 2) != std::vector<int>{p, 1})
    g.push_back(CartComm::dims_for(p, 2));
  return g;
}
const std::vector<std::vector<bool>> kPeriodic2d = {{false, false}, {true, true}, {true, false}};

TEST(MpiCartComm, DimsDirectionsAndArgumentChecks) {
  EXPECT_NO_THROW(bodies::cart_static(world()));
}

TEST(MpiCartComm, CoordinatesAndNeighborsMatchTheFormula) {
  for (const auto& dims : grids_2d(world().size())) {
    for (const auto& periodic : kPeriodic2d) {
      EXPECT_NO_THROW(bodies::cart_layout(world(), dims, periodic));
    }
  }
  if (world().size() == 4) {
    EXPECT_NO_THROW(bodies::cart_layout(world(), {1, 2, 2}, {true, false, true}));
    EXPECT_NO_THROW(bodies::cart_layout(world(), {2, 1, 2}, {false, false, false}));
  }
}

TEST(MpiCartComm, HaloExchangeDeliversEachNeighboursCells) {
  for (const auto& dims : grids_2d(world().size())) {
    for (const auto& periodic : kPeriodic2d) {
      EXPECT_NO_THROW(bodies::cart_halo(world(), dims, periodic, 100));
    }
  }
  if (world().size() == 4) {
    EXPECT_NO_THROW(bodies::cart_halo(world(), {2, 2, 1}, {true, true, true}, 10));
    EXPECT_NO_THROW(bodies::cart_halo(world(), {1, 2, 2}, {false, true, false}, 10));
  }
}

TEST(MpiCartComm, PeriodicGridExchangesFourMiBWithAllNeighboursAtOnce) {
  EXPECT_NO_THROW(bodies::cart_halo_large(world()));
}

}  // namespace

int main(int argc, char** argv) {
  ipckit::mpi::Environment env(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  ipckit::MpiComm comm;
  g_world = &comm;
  return ipckit::testing::run_mpi_tests("mpi_comm_test", kTestSeconds);
}
