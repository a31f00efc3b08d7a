#include "ipckit/shm/shared_array.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using SharedArrayTest = testing::LeakCheckedTest;
using testing::error_of;

struct Point {
  double x;
  std::int32_t id;
};

TEST_F(SharedArrayTest, StartsZeroFilled) {
  SharedArray<std::uint64_t> a(100'000);
  EXPECT_EQ(a.size(), 100'000u);
  EXPECT_FALSE(a.empty());
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](std::uint64_t v) { return v == 0; }));
}

TEST_F(SharedArrayTest, ChildrenWriteDisjointSlotsAndParentSeesAll) {
  constexpr int kProcs = 4;
  constexpr std::size_t kPerProc = 1000;
  SharedArray<Point> a(kProcs * kPerProc);
  auto kids = testing::spawn_n(kProcs, [&](int rank) {
    for (std::size_t i = 0; i < kPerProc; ++i) {
      const std::size_t slot = static_cast<std::size_t>(rank) * kPerProc + i;
      a[slot] = Point{static_cast<double>(slot) * 0.5, rank};
    }
    return 0;
  });
  ASSERT_TRUE(testing::all_succeed(kids, 10s));
  for (std::size_t slot = 0; slot < a.size(); ++slot) {
    ASSERT_EQ(a[slot].x, static_cast<double>(slot) * 0.5) << "slot " << slot;
    ASSERT_EQ(a[slot].id, static_cast<std::int32_t>(slot / kPerProc)) << "slot " << slot;
  }
}

TEST_F(SharedArrayTest, SpanViewsTheSameElements) {
  SharedArray<int> a(16);
  std::span<int> s = a;  // implicit view
  EXPECT_EQ(s.data(), a.data());
  EXPECT_EQ(s.size(), a.size());
  std::iota(s.begin(), s.end(), 1);
  EXPECT_EQ(a[0], 1);
  EXPECT_EQ(a[15], 16);
  EXPECT_EQ(a.span().data(), a.data());
  EXPECT_EQ(a.span().size(), 16u);
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0), 136);
  auto child = Process::spawn([&] {
    std::span<int> cs = a.span();
    for (int& v : cs) v *= 2;
    return 0;
  });
  ASSERT_TRUE(child.wait().success());
  EXPECT_EQ(std::accumulate(s.begin(), s.end(), 0), 272);
}

TEST_F(SharedArrayTest, ChildFindsArrayInNamedSegmentOpenedByName) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, 1 << 20);
  auto a = SharedArray<std::uint32_t>::construct(seg, "values", 64);
  EXPECT_EQ(a.size(), 64u);
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](std::uint32_t v) { return v == 0; }));
  a[0] = 1;
  auto child = Process::spawn([&] {
    // Only the name crosses: the child maps the segment itself.
    auto mine = Segment::open(name);
    auto b = SharedArray<std::uint32_t>::find(mine, "values");
    if (b.size() != 64 || b[0] != 1) return 1;
    if (b.data() == a.data()) return 2;  // a mapping of its own, not the inherited one
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint32_t>(i * i);
    return 0;
  });
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success()) << st->describe();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], i * i) << "slot " << i;
  auto again = SharedArray<std::uint32_t>::find(seg, "values");
  EXPECT_EQ(again.data(), a.data());
}

TEST_F(SharedArrayTest, ConstructValueInitialisesElementsAndRejectsDuplicateName) {
  auto seg = Segment::anonymous(1 << 20);
  auto* junk = static_cast<unsigned char*>(seg.allocate(4096));
  std::fill(junk, junk + 4096, 0xee);
  seg.deallocate(junk);  // leave garbage behind in the heap
  auto a = SharedArray<std::uint64_t>::construct(seg, "arr", 256);
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](std::uint64_t v) { return v == 0; }));
  EXPECT_EQ(error_of([&] { (void)SharedArray<std::uint64_t>::construct(seg, "arr", 4); }),
            errc::already_exists);
}

TEST_F(SharedArrayTest, FindWithSizeNotAMultipleOfElementIsSizeMismatch) {
  auto seg = Segment::anonymous(1 << 20);
  (void)seg.construct_bytes("odd", 10, 8);
  EXPECT_EQ(error_of([&] { (void)SharedArray<std::uint32_t>::find(seg, "odd"); }),
            errc::size_mismatch);
  EXPECT_EQ(SharedArray<std::uint16_t>::find(seg, "odd").size(), 5u);
  EXPECT_EQ(error_of([&] { (void)SharedArray<std::uint32_t>::find(seg, "missing"); }),
            errc::not_found);
}

TEST_F(SharedArrayTest, MoveTransfersTheMapping) {
  SharedArray<int> a(8);
  a[3] = 33;
  int* const data = a.data();
  SharedArray<int> b(std::move(a));
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(b.size(), 8u);
  EXPECT_EQ(b[3], 33);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state
  EXPECT_EQ(a.size(), 0u);
  EXPECT_TRUE(a.empty());

  SharedArray<int> c(4);
  c = std::move(b);  // releases c's own mapping
  EXPECT_EQ(c.data(), data);
  EXPECT_EQ(c[3], 33);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)

  auto& self = c;
  c = std::move(self);
  EXPECT_EQ(c.data(), data) << "self-move leaves the array intact";
  EXPECT_EQ(c[3], 33);

  // The moved array is still shared with children forked afterwards.
  auto child = Process::spawn([&] {
    c[3] = 44;
    return 0;
  });
  ASSERT_TRUE(child.wait().success());
  EXPECT_EQ(c[3], 44);
}

TEST_F(SharedArrayTest, MovedViewOfSegmentStorageDoesNotUnmap) {
  auto seg = Segment::anonymous(1 << 20);
  int* data = nullptr;
  {
    auto a = SharedArray<int>::construct(seg, "v", 4);
    SharedArray<int> b(std::move(a));
    data = b.data();
    b[0] = 5;
  }  // views of segment storage own nothing
  EXPECT_EQ(SharedArray<int>::find(seg, "v").data(), data);
  EXPECT_EQ(SharedArray<int>::find(seg, "v")[0], 5);
}

TEST_F(SharedArrayTest, SizeZeroIsEmpty) {
  SharedArray<double> a(0);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.begin(), a.end());
  EXPECT_TRUE(a.span().empty());
  SharedArray<double> b(std::move(a));
  EXPECT_TRUE(b.empty());

  auto seg = Segment::anonymous(1 << 16);
  auto z = SharedArray<double>::construct(seg, "zero", 0);
  EXPECT_TRUE(z.empty());
  EXPECT_TRUE(SharedArray<double>::find(seg, "zero").empty());
}

}  // namespace
}  // namespace ipckit
