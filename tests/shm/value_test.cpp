// Value<T> and Array<T>: shared values with their own robust lock, between real processes.
#include "ipckit/shm/value.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>

#include "fork_helpers.hpp"
#include "ipckit/core/process.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ValueTest = testing::LeakCheckedTest;

struct Stats {
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
};

TEST_F(ValueTest, LockedIncrementsFromManyProcessesAreExact) {
  Value<Stats> v;
  constexpr int kProcs = 4;
  constexpr int kIters = 20000;
  auto kids = testing::spawn_n(kProcs, [&](int p) {
    for (int i = 0; i < kIters; ++i) {
      auto g = v.lock();
      g->count += 1;
      g->sum += static_cast<std::uint64_t>(p);
    }
    return 0;
  });
  ASSERT_TRUE(testing::all_succeed(kids, 60s));
  const Stats s = v.load();
  EXPECT_EQ(s.count, std::uint64_t{kProcs} * kIters);
  EXPECT_EQ(s.sum, std::uint64_t{kIters} * (0 + 1 + 2 + 3));
}

TEST_F(ValueTest, AHolderKilledWhileHoldingTheLockIsReportedToTheNext) {
  Value<std::int64_t> v(7);
  auto holder = Process::spawn([&] {
    auto g = v.lock();
    *g = 8;
    ::raise(SIGKILL);
    return 0;
  });
  (void)holder.wait();
  auto g = v.lock();
  EXPECT_TRUE(g.owner_died());
  EXPECT_EQ(*g, 8);  // the dead holder's write is there to repair
}

TEST_F(ValueTest, ArrayElementsAreSharedAndBoundsChecked) {
  Array<double> a(100, 1.5);
  EXPECT_EQ(a.size(), 100u);
  auto kid = Process::spawn([&] {
    auto g = a.lock();
    for (std::size_t i = 0; i < 100; ++i) g[i] = static_cast<double>(i);
    return 0;
  });
  ASSERT_TRUE(kid.wait_for(30s));
  double sum = 0;
  for (double x : a.lock().span()) sum += x;
  EXPECT_EQ(sum, 4950.0);
  EXPECT_EQ(a.load(99), 99.0);
  a.store(0, -1.0);
  EXPECT_EQ(a.load(0), -1.0);
  const auto e = testing::caught<Error>([&] { (void)a.load(100); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::invalid_argument));
  EXPECT_TRUE(testing::caught<Error>([] { Array<int> none(0); }).has_value());
}

TEST_F(ValueTest, NamedValueAndArrayAreFoundByAnotherProcess) {
  auto seg = Segment::anonymous(1 << 16);
  auto v = Value<Stats>::construct(seg, "stats", Stats{1, 2});
  auto a = Array<int>::construct(seg, "arr", 10, 3);
  auto kid = Process::spawn([&] {
    auto mine = Value<Stats>::find(seg, "stats");
    auto arr = Array<int>::find(seg, "arr");
    if (arr.size() != 10 || arr.load(9) != 3) return 1;
    auto g = mine.lock();
    g->count = 42;
    return 0;
  });
  const auto st = kid.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success());
  EXPECT_EQ(v.load().count, 42u);
  const auto e = testing::caught<Error>([&] { (void)Value<Stats>::find(seg, "arr"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::size_mismatch)) << e->what();
}

}  // namespace
}  // namespace ipckit
