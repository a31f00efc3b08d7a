// Deadlines, cancel and futures: a chunk past its timeout has its worker killed and fails
// with TaskTimeout; cancel() drops work not begun (and kills running work when asked);
// as_completed / wait_any / wait_all never hang on failed or cancelled work; submit() is
// apply_async; max_worker_rss replaces a worker that grew. Real worker processes throughout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ipckit/core/process.hpp"
#include "ipckit/pool/pool.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using PoolControlTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int square(int x) { return x * x; }
int throw_on_7(int x) {
  if (x == 7) throw std::runtime_error("seven");
  return x;
}
// Grows the worker by `mib` MiB that stay (a leak).
int leak_mib(int mib) {
  static std::vector<std::vector<char>> kept;
  kept.emplace_back(static_cast<std::size_t>(mib) << 20, 'x');
  return mib;
}

std::vector<int> repeat(int value, int n) {
  return std::vector<int>(static_cast<std::size_t>(n), value);
}

std::uint64_t restarts(const Pool& pool) {
  std::uint64_t n = 0;
  for (const auto& s : pool.stats()) n += s.restarts;
  return n;
}

template <class F>
std::optional<TaskTimeout> timeout_of(F&& f) {
  return testing::caught<TaskTimeout>(std::forward<F>(f));
}

// ---- timeouts ----------------------------------------------------------------------------

TEST_F(PoolControlTest, AChunkPastItsTimeoutFailsWithTaskTimeoutAndItsWorkerIsReplaced) {
  Pool pool{2};
  auto ar = pool.map_async(sleep_ms, std::vector<int>{10, 10, 30000, 10},
                           {.chunksize = 1, .timeout = 300ms});
  const auto err = timeout_of([&] { (void)ar.get(); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), make_error_code(errc::timeout));
  EXPECT_EQ(err->limit(), std::chrono::nanoseconds(300ms));
  EXPECT_TRUE(eventually([&] { return !process_alive(err->worker_pid()); }));
  // The pool goes on, with a replacement.
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  EXPECT_TRUE(eventually([&] { return restarts(pool) == 1; }));
}

TEST_F(PoolControlTest, ImapReportsTheChunkThatTimedOutAtItsPlaceAndGoesOn) {
  Pool pool{2};
  auto it = pool.imap(sleep_ms, std::vector<int>{1, 30000, 2}, {.chunksize = 1, .timeout = 300ms});
  EXPECT_EQ(it.next(), 1);
  EXPECT_EQ(error_of([&] { (void)it.next(); }), make_error_code(errc::timeout));
  EXPECT_EQ(it.next(), 2);
  EXPECT_EQ(it.next(), std::nullopt);
}

TEST_F(PoolControlTest, ThePoolWideTimeoutAppliesUnlessACallSetsItsOwn) {
  PoolOptions o;
  o.processes = 1;
  o.task_timeout = 200ms;
  Pool pool{o};
  EXPECT_TRUE(timeout_of([&] { (void)pool.apply(sleep_ms, 30000); }).has_value());
  auto ar = pool.apply_async(sleep_ms, std::tuple{400}, {.timeout = 30s});
  EXPECT_EQ(ar.get(), 400);
  EXPECT_EQ(pool.apply(sleep_ms, 1), 1);
}

TEST_F(PoolControlTest, ATimeoutThatIsNotPositiveIsInvalidArgument) {
  Pool pool{1};
  EXPECT_EQ(error_of([&] { (void)pool.map(square, std::vector<int>{1}, {.timeout = 0ms}); }),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(error_of([&] { (void)pool.imap(square, std::vector<int>{1}, {.timeout = -1s}); }),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(pool.apply(square, 5), 25);
}

// ---- cancel --------------------------------------------------------------------------------

TEST_F(PoolControlTest, CancelDropsTheChunksNotYetBegun) {
  Pool pool{1};
  auto ar = pool.map_async(sleep_ms, repeat(20, 100), {.chunksize = 1});
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(ar.cancel());
  EXPECT_TRUE(ar.ready());
  EXPECT_EQ(error_of([&] { (void)ar.get(); }), make_error_code(errc::cancelled));
  // The rest never runs: the next call is served after at most the chunks already queued.
  EXPECT_EQ(pool.apply(square, 3), 9);
  std::this_thread::sleep_for(100ms);
  std::uint64_t tasks = 0;
  for (const auto& s : pool.stats()) tasks += s.tasks;
  EXPECT_LT(tasks, 50u);
  EXPECT_EQ(restarts(pool), 0u);
}

TEST_F(PoolControlTest, CancelWithRunningKillsTheWorkerRunningIt) {
  Pool pool{1};
  auto ar = pool.apply_async(sleep_ms, 30000);
  std::this_thread::sleep_for(100ms);
  const pid_t worker = pool.stats()[0].pid;
  EXPECT_TRUE(ar.cancel({.running = true}));
  EXPECT_EQ(error_of([&] { (void)ar.get(); }), make_error_code(errc::cancelled));
  EXPECT_EQ(pool.apply(square, 4), 16);  // served by the replacement, not after 30 s
  EXPECT_TRUE(eventually([&] { return !process_alive(worker); }));
  EXPECT_EQ(restarts(pool), 1u);
}

TEST_F(PoolControlTest, CancelOfAReadyResultReturnsFalseAndChangesNothing) {
  Pool pool{1};
  auto ar = pool.apply_async(square, 2);
  ar.wait();
  EXPECT_FALSE(ar.cancel());
  EXPECT_EQ(ar.get(), 4);
  AsyncResult<int> empty;
  EXPECT_FALSE(empty.cancel());
}

TEST_F(PoolControlTest, ACancelledCallRunsNeitherCallback) {
  Pool pool{1};
  std::atomic<int> called{0};
  auto blocker = pool.apply_async(sleep_ms, 200);
  auto ar = pool.map_async(square, std::vector<int>{1, 2, 3},
                           {.callback = [&](const std::vector<int>&) { ++called; },
                            .error_callback = [&](const Error&) { ++called; }});
  EXPECT_TRUE(ar.cancel());
  EXPECT_EQ(blocker.get(), 200);
  EXPECT_EQ(pool.apply(square, 1), 1);  // the driver has long passed the cancelled job
  EXPECT_EQ(called.load(), 0);
}

TEST_F(PoolControlTest, CancellingAnImapStopsItAndNextThrowsCancelled) {
  Pool pool{2};
  auto it = pool.imap(square, std::views::iota(0));  // endless
  EXPECT_EQ(it.next(), 0);
  EXPECT_EQ(it.next(), 1);
  it.cancel();
  EXPECT_EQ(error_of([&] { (void)it.next(); }), make_error_code(errc::cancelled));
  EXPECT_EQ(pool.apply(square, 6), 36);
  pool.close();
  pool.join();  // nothing of the endless range is left to run
}

// ---- as_completed, wait_any, wait_all, submit ------------------------------------------------

TEST_F(PoolControlTest, AsCompletedYieldsResultsAsTheyFinish) {
  Pool pool{3};
  std::vector<AsyncResult<int>> rs;
  rs.push_back(pool.submit(sleep_ms, 900));
  rs.push_back(pool.submit(sleep_ms, 1));
  rs.push_back(pool.submit(sleep_ms, 400));
  std::vector<int> order;
  for (AsyncResult<int>& r : as_completed(rs)) order.push_back(r.get());
  EXPECT_EQ(order, (std::vector<int>{1, 400, 900}));
}

TEST_F(PoolControlTest, AsCompletedYieldsFailedAndCancelledResultsToo) {
  Pool pool{2};
  std::vector<AsyncResult<int>> rs;
  rs.push_back(pool.submit(throw_on_7, 7));
  rs.push_back(pool.submit(sleep_ms, 30000));
  rs.push_back(pool.submit(square, 3));
  EXPECT_TRUE(rs[1].cancel({.running = true}));
  std::set<std::error_code> codes;
  int seen = 0;
  for (AsyncResult<int>& r : as_completed(rs)) {
    ++seen;
    codes.insert(error_of([&] { (void)r.get(); }));
  }
  EXPECT_EQ(seen, 3);
  EXPECT_EQ(codes, (std::set<std::error_code>{
                       make_error_code(errc::remote_error), make_error_code(errc::cancelled), {}}));
}

TEST_F(PoolControlTest, AsCompletedThrowsTimeoutAtItsDeadline) {
  Pool pool{2};
  std::vector<AsyncResult<int>> rs;
  rs.push_back(pool.submit(sleep_ms, 30000));
  rs.push_back(pool.submit(square, 5));
  auto c = as_completed(rs, 300ms);
  AsyncResult<int>* first = c.next();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->get(), 25);
  EXPECT_EQ(error_of([&] { (void)c.next(); }), make_error_code(errc::timeout));
  EXPECT_FALSE(rs[0].ready());
  EXPECT_TRUE(rs[0].cancel({.running = true}));
}

TEST_F(PoolControlTest, WaitAnyAndWaitAllHonourTheirTimeouts) {
  Pool pool{2};
  std::vector<AsyncResult<int>> rs;
  rs.push_back(pool.submit(sleep_ms, 30000));
  rs.push_back(pool.submit(sleep_ms, 30000));
  EXPECT_EQ(wait_any(rs, 100ms), std::nullopt);
  EXPECT_FALSE(wait_all(rs, 100ms));
  rs.push_back(pool.submit(square, 2));  // queued behind the sleepers
  EXPECT_TRUE(rs[1].cancel({.running = true}));
  EXPECT_EQ(wait_any(rs, 30s), std::optional<std::size_t>(1));  // the cancelled one is ready
  EXPECT_TRUE(rs[0].cancel({.running = true}));
  EXPECT_TRUE(wait_all(rs, 30s));
  EXPECT_EQ(rs[2].get(), 4);
  std::vector<AsyncResult<int>> none;
  EXPECT_EQ(wait_any(none, 10ms), std::nullopt);
  EXPECT_TRUE(wait_all(none, 10ms));
}

TEST_F(PoolControlTest, WaitingOnResultsOfAStoppedPoolReturns) {
  std::vector<AsyncResult<int>> rs;
  {
    Pool pool{1};
    rs.push_back(pool.submit(sleep_ms, 30000));
    rs.push_back(pool.submit(sleep_ms, 30000));
    pool.terminate();
  }
  EXPECT_TRUE(wait_all(rs, 30s));
  for (auto& r : rs) EXPECT_EQ(error_of([&] { (void)r.get(); }), make_error_code(errc::closed));
}

// ---- max_worker_rss ----------------------------------------------------------------------------

TEST_F(PoolControlTest, AWorkerThatGrowsPastMaxWorkerRssIsReplacedAfterItsResult) {
  PoolOptions o;
  o.processes = 1;
  o.max_worker_rss = std::size_t{96} << 20;
  Pool pool{o};
  // Small tasks never reach it.
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}, 1), (std::vector<int>{1, 4, 9}));
  EXPECT_EQ(restarts(pool), 0u);
  // Each task leaves 64 MiB behind: every second one passes the limit.
  EXPECT_EQ(pool.map(leak_mib, repeat(64, 6), 1), repeat(64, 6));
  EXPECT_TRUE(eventually([&] { return restarts(pool) >= 3; }));
  EXPECT_EQ(pool.apply(square, 9), 81);
}

}  // namespace
}  // namespace ipckit
