// Shared containers (SharedMap, SharedVector, SharedString) in a Segment: exact counts from
// several processes, the same container seen through a second mapping at another address,
// death of a lock holder reported and repaired, bad names and types refused.
#include "ipckit/shm/containers.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ContainersTest = testing::LeakCheckedTest;
using testing::error_of;

TEST_F(ContainersTest, AMapCountsExactlyAcrossProcesses) {
  auto seg = Segment::anonymous(1 << 20);
  auto counts = SharedMap<int, long>::construct(seg, "counts");
  constexpr int kProcs = 4;
  constexpr int kEach = 2000;
  auto kids = testing::spawn_n(kProcs, [&](int p) {
    for (int i = 0; i < kEach; ++i) {
      auto g = counts.lock();
      (*g)[(i * kProcs + p) % 16] += 1;
    }
    return 0;
  });
  ASSERT_TRUE(testing::all_succeed(kids));
  auto g = counts.read();
  ASSERT_EQ(g->size(), 16u);
  long total = 0;
  for (const auto& [k, v] : *g) {
    EXPECT_EQ(v, kProcs * kEach / 16) << "key " << k;
    total += v;
  }
  EXPECT_EQ(total, kProcs * kEach);
}

TEST_F(ContainersTest, TheSameVectorThroughASecondMappingAtAnotherAddress) {
  auto seg = Segment::memfd(1 << 20);
  auto names = SharedVector<SharedString>::construct(seg, "names");
  {
    auto g = names.lock();
    for (const char* s : {"ada", "grace", "a name longer than any small-string buffer holds"}) {
      g->emplace_back(s, names.allocator<char>());
    }
  }
  auto other = Segment::adopt(UniqueFd(::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_NE(other.base(), seg.base());
  auto there = SharedVector<SharedString>::find(other, "names");
  {
    auto g = there.lock();
    ASSERT_EQ(g->size(), 3u);
    EXPECT_EQ(std::string((*g)[0].c_str()), "ada");
    EXPECT_EQ(std::string((*g)[2].c_str()), "a name longer than any small-string buffer holds");
    g->emplace_back("from the other mapping", there.allocator<char>());
  }
  auto g = names.read();
  ASSERT_EQ(g->size(), 4u);
  EXPECT_EQ(std::string((*g)[3].c_str()), "from the other mapping");
}

TEST_F(ContainersTest, AWriterKilledHoldingTheLockIsReportedAndResetRepairs) {
  auto seg = Segment::anonymous(1 << 20);
  auto m = SharedMap<int, int>::construct(seg, "m");
  {
    auto g = m.lock();
    (*g)[1] = 10;
  }
  // A reader that dies leaves nothing to repair.
  auto reader = Process::spawn([&] {
    auto g = m.read();
    ::kill(::getpid(), SIGKILL);
    return 1;
  });
  (void)reader.wait();
  {
    auto g = m.lock();
    EXPECT_FALSE(g.owner_died());
    EXPECT_EQ(g->at(1), 10);
  }
  auto writer = Process::spawn([&] {
    auto g = m.lock();
    (*g)[2] = 20;
    ::kill(::getpid(), SIGKILL);
    return 1;
  });
  (void)writer.wait();
  {  // a reader comes first: it is told, and so is every guard until a reset()
    auto g = m.read();
    EXPECT_TRUE(g.owner_died());
  }
  {
    auto g = m.lock();
    EXPECT_TRUE(g.owner_died());
  }
  {
    auto g = m.lock();
    EXPECT_TRUE(g.owner_died());
    g.reset();
    EXPECT_TRUE(g->empty());
    (*g)[3] = 30;
  }
  auto g = m.lock();
  EXPECT_FALSE(g.owner_died());
  EXPECT_EQ(g->size(), 1u);
  EXPECT_EQ(g->at(3), 30);
}

TEST_F(ContainersTest, NamesAndTypesAreCheckedAndDestroyGivesMemoryBack) {
  auto seg = Segment::anonymous(1 << 20);
  EXPECT_EQ(error_of([&] { SharedMap<int, int>::find(seg, "none"); }), errc::not_found);
  // A constructor that throws leaves nothing under the name.
  EXPECT_EQ(error_of([&] { SharedVector<int>::construct(seg, "huge", std::size_t{1} << 20); }),
            errc::out_of_memory);
  EXPECT_FALSE(seg.find_bytes("huge").has_value());
  const std::size_t free_before = seg.free_memory();
  {
    auto v = SharedVector<int>::construct(seg, "v");
    EXPECT_EQ(error_of([&] { SharedVector<int>::construct(seg, "v"); }), errc::already_exists);
    auto g = v.lock();
    for (int i = 0; i < 10000; ++i) g->push_back(i);
  }
  seg.construct<std::uint64_t>("plain", 1);
  EXPECT_EQ(error_of([&] { SharedMap<int, int>::find(seg, "plain"); }), errc::size_mismatch);
  EXPECT_LT(seg.free_memory(), free_before - 40000);
  EXPECT_TRUE(SharedVector<int>::destroy(seg, "v"));
  EXPECT_FALSE(SharedVector<int>::destroy(seg, "v"));
  EXPECT_GT(seg.free_memory() + 256, free_before);  // all back but the small "plain"
}

TEST_F(ContainersTest, AFullSegmentThrowsOutOfMemoryAndLeavesTheContainerWhole) {
  auto seg = Segment::anonymous(64 * 1024);
  auto v = SharedVector<std::uint64_t>::construct(seg, "v");
  auto g = v.lock();
  std::size_t pushed = 0;
  const auto ec = error_of([&] {
    for (;; ++pushed) g->push_back(pushed);
  });
  EXPECT_EQ(ec, errc::out_of_memory);
  ASSERT_EQ(g->size(), pushed);
  for (std::size_t i = 0; i < pushed; ++i) ASSERT_EQ((*g)[i], i);
}

}  // namespace
}  // namespace ipckit
