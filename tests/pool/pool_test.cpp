// Pool's API, call by call: what each returns, in what order, what it throws and when, and
// what each PoolOptions / MapOptions / AsyncOptions field does. Workers are real forked
// processes; tasks report back through their results or through SharedArrays made before
// the pool (a worker is a fork, so it shares those mappings).
// Over 600 lines: one suite for the Pool API, call by call, sharing its task functions.
#include "ipckit/pool/pool.hpp"
#include "ipckit/core/cpu_count.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/pool/progress.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "pool_options.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using PoolTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::scaled;

int square(int x) { return x * x; }
int cube(int x) { return x * x * x; }
int add(int a, int b) { return a + b; }
int add3(int a, int b, int c) { return a + b + c; }
pid_t pid_of_worker(int) { return ::getpid(); }
int boom_at_13(int x) {
  if (x == 13) throw std::runtime_error("boom");
  return x;
}
// Long enough that a test only sees it finish if the pool failed to stop it.
int sleep_30s(int x) {
  std::this_thread::sleep_for(30s);
  return x;
}

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}
std::vector<int> squares_of(const std::vector<int>& in) {
  std::vector<int> out;
  for (int x : in) out.push_back(x * x);
  return out;
}

// A user type that crosses through its cereal serialize().
struct Sample {
  std::string name;
  std::vector<double> values;
  std::map<std::string, int> tags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, tags);
  }
  bool operator==(const Sample&) const = default;
};
Sample doubled(const Sample& s) {
  Sample r{s.name + s.name, {}, s.tags};
  for (double v : s.values) r.values.push_back(2 * v);
  r.tags["doubled"] = 1;
  return r;
}

// A functor that is not trivially copyable: it crosses through cereal.
struct Prefixer {
  std::string prefix;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(prefix);
  }
  std::string operator()(int x) const { return prefix + std::to_string(x); }
};

// A trivially copyable functor with state: it crosses as bytes.
struct Affine {
  int a;
  int b;
  int operator()(int x) const { return a * x + b; }
};

// The error a call throws, as the RemoteError it must be.
template <class F>
std::optional<RemoteError> remote_error_of(F&& f) {
  try {
    f();
  } catch (const RemoteError& e) {
    return e;
  }
  return std::nullopt;
}

std::uint64_t sum_tasks(const std::vector<WorkerStats>& st) {
  std::uint64_t n = 0;
  for (const auto& s : st) n += s.tasks;
  return n;
}

// ---- map ---------------------------------------------------------------------------------

TEST_F(PoolTest, MapReturnsResultsInInputOrder) {
  Pool pool{2};
  EXPECT_EQ(pool.size(), 2u);
  const auto in = iota_vec(1000);
  EXPECT_EQ(pool.map(square, in), squares_of(in));
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  std::vector<int> got;
  for (int r : pool.imap(square, in, 3)) got.push_back(r);
  EXPECT_EQ(got, squares_of(in));
  pool.close();
  pool.join();
}

TEST_F(PoolTest, MapCarriesStringsVectorsMapsTuplesAndCerealTypes) {
  Pool pool{2};
  auto strings = pool.map([](const std::string& s) { return s + "!"; },
                          std::vector<std::string>{"a", "", "long string with spaces"});
  EXPECT_EQ(strings, (std::vector<std::string>{"a!", "!", "long string with spaces!"}));

  auto sums =
      pool.map([](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0L); },
               std::vector<std::vector<int>>{{}, {1}, {1, 2, 3}, iota_vec(1000)});
  EXPECT_EQ(sums, (std::vector<long>{0, 1, 6, 499500}));

  using Dict = std::map<std::string, int>;
  auto dicts = pool.map(
      [](const Dict& d) {
        Dict r;
        for (const auto& [k, v] : d) r[k + k] = v * 10;
        return r;
      },
      std::vector<Dict>{{}, {{"a", 1}, {"b", 2}}});
  EXPECT_EQ(dicts, (std::vector<Dict>{{}, {{"aa", 10}, {"bb", 20}}}));

  using In = std::tuple<int, std::string>;
  auto tuples = pool.map(
      [](const In& t) { return std::tuple<std::string, int>(std::get<1>(t), std::get<0>(t)); },
      std::vector<In>{{1, "one"}, {2, "two"}});
  EXPECT_EQ(tuples, (std::vector<std::tuple<std::string, int>>{{"one", 1}, {"two", 2}}));

  const std::vector<Sample> samples{{"x", {1.5, -2}, {{"k", 3}}}, {"", {}, {}}};
  auto out = pool.map(doubled, samples);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], doubled(samples[0]));
  EXPECT_EQ(out[1], doubled(samples[1]));
}

TEST_F(PoolTest, ChunksizeZeroIsRejectedBeforeAnythingRuns) {
  SharedArray<std::uint32_t> runs(1);
  Pool pool{testing::forked(2)};
  const auto counted = [runs = runs.data()](int x) {
    __atomic_fetch_add(runs, 1u, __ATOMIC_RELAXED);
    return x;
  };
  EXPECT_EQ(error_of([&] { pool.map(counted, iota_vec(10), 0); }),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(error_of([&] {
              (void)pool.map_async(
                  counted, iota_vec(10),
                  {.chunksize = 0, .callback = {}, .error_callback = {}, .progress = {}});
            }),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(error_of([&] { (void)pool.imap(counted, iota_vec(10), 0); }),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(error_of([&] { (void)pool.imap_unordered(counted, iota_vec(10), 0); }),
            make_error_code(errc::invalid_argument));
  pool.close();
  pool.join();  // anything that had been queued has run by now
  EXPECT_EQ(runs[0], 0u);
}

// Arguments and results far larger than a ring record (256 KiB) travel in fragments, whole:
// a checksum of every byte on both sides, in both directions, and through map's chunks.
std::uint64_t fnv(const std::vector<char>& v) {
  std::uint64_t h = 1469598103934665603u;
  for (char c : v) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211u;
  return h;
}
std::vector<char> pattern(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>((i * 131) ^ (i >> 9));
  return v;
}
std::uint64_t fnv_of(const std::vector<char>& v) { return fnv(v); }
std::vector<double> ramp(int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i * 0.5;
  return v;
}

TEST_F(PoolTest, LargeArgumentsAndResultsArriveWhole) {
  Pool pool{2};
  const auto big = pattern(20'000'003);
  EXPECT_EQ(pool.apply(fnv_of, big), fnv(big));
  const auto back = pool.apply(pattern, std::size_t{20'000'003});
  EXPECT_EQ(back.size(), big.size());
  EXPECT_EQ(fnv(back), fnv(big));
  // Several large results in one map, in order, next to small ones.
  const auto ramps = pool.map(ramp, std::vector<int>{1, 3'000'000, 0, 700'000, 2}, 1);
  ASSERT_EQ(ramps.size(), 5u);
  for (std::size_t i = 0; i < ramps.size(); ++i)
    EXPECT_EQ(ramps[i], ramp(std::vector<int>{1, 3'000'000, 0, 700'000, 2}[i]));
  // The pool goes on with small tasks afterwards.
  EXPECT_EQ(pool.apply(add, 1, 2), 3);
}

TEST_F(PoolTest, ChunksizeLargerThanInputMakesOneChunk) {
  Pool pool{2};
  const auto in = iota_vec(10);
  EXPECT_EQ(pool.map(square, in, 100), squares_of(in));
  EXPECT_EQ(sum_tasks(pool.stats()), 1u);
}

TEST_F(PoolTest, ChunksizeOneMakesOneChunkPerInput) {
  Pool pool{2};
  const auto in = iota_vec(50);
  EXPECT_EQ(pool.map(square, in, 1), squares_of(in));
  EXPECT_EQ(sum_tasks(pool.stats()), 50u);
}

TEST_F(PoolTest, DefaultChunksizeFollowsPythonsRule) {
  // n / (4 * workers) rounded up: 100 / 8 -> 13 per chunk -> 8 chunks.
  Pool pool{2};
  const auto in = iota_vec(100);
  EXPECT_EQ(pool.map(square, in), squares_of(in));
  EXPECT_EQ(sum_tasks(pool.stats()), 8u);
}

TEST_F(PoolTest, MapOfEmptyInputIsEmpty) {
  Pool pool{2};
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  EXPECT_TRUE(pool.map(square, std::vector<int>{}, 5).empty());
  auto ar = pool.map_async(square, std::vector<int>{});
  EXPECT_TRUE(ar.get().empty());
  EXPECT_TRUE(ar.successful());
  EXPECT_FALSE(pool.imap(square, std::vector<int>{}).next().has_value());
  EXPECT_EQ(sum_tasks(pool.stats()), 0u);
}

TEST_F(PoolTest, MapOfVoidFunctionRunsEveryInput) {
  SharedArray<int> seen(100);
  Pool pool{testing::forked(2)};
  pool.map([seen = seen.data()](int i) { seen[i] = i + 1; }, iota_vec(100), 7);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], i + 1) << i;

  auto ar = pool.map_async([seen = seen.data()](int i) { seen[i] = -i; }, iota_vec(100));
  ar.get();
  EXPECT_TRUE(ar.successful());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], -i) << i;
}

TEST_F(PoolTest, MapAcceptsRangesThatAreNotSized) {
  Pool pool{2};
  auto evens = std::views::iota(0, 50) | std::views::filter([](int x) { return x % 2 == 0; });
  std::vector<int> want;
  for (int x : evens) want.push_back(x * x);
  EXPECT_EQ(pool.map(square, evens), want);

  std::istringstream text("3 1 4 1 5");
  EXPECT_EQ(pool.map(square, std::views::istream<int>(text)), (std::vector<int>{9, 1, 16, 1, 25}));
}

// ---- map_async ---------------------------------------------------------------------------

TEST_F(PoolTest, MapAsyncGetWaitAndReady) {
  Pool pool{2};
  const auto in = iota_vec(200);
  auto ar = pool.map_async(square, in);
  ar.wait();
  EXPECT_TRUE(ar.ready());
  EXPECT_TRUE(ar.wait_for(0s));
  EXPECT_TRUE(ar.successful());
  EXPECT_EQ(ar.get(), squares_of(in));
  EXPECT_EQ(ar.get(), squares_of(in)) << "get() may be called again";
  auto copy = ar;  // copies share the result
  EXPECT_EQ(std::move(copy).get(), squares_of(in));
  EXPECT_EQ(ar.get(30s), squares_of(in));
}

TEST_F(PoolTest, MapAsyncOnSlowTaskIsNotReadyAndGetTimesOut) {
  Pool pool{2};
  auto ar = pool.map_async(sleep_30s, std::vector<int>{1});
  EXPECT_FALSE(ar.ready());
  EXPECT_FALSE(ar.wait_for(50ms));
  EXPECT_EQ(error_of([&] { (void)ar.successful(); }), make_error_code(errc::invalid_argument));
  EXPECT_EQ(error_of([&] { ar.get(50ms); }), make_error_code(errc::timeout));
  EXPECT_EQ(error_of([&] { std::move(ar).get(1ms); }), make_error_code(errc::timeout));
  EXPECT_FALSE(ar.ready());
}  // the destructor kills the sleeping worker

TEST_F(PoolTest, MapAsyncCallbackRunsOnceWithTheValue) {
  std::mutex mu;
  int calls = 0;
  int error_calls = 0;
  std::vector<int> value;
  Pool pool{2};
  const auto in = iota_vec(100);
  auto ar = pool.map_async(square, in,
                           {.chunksize = 3,
                            .callback =
                                [&](const std::vector<int>& v) {
                                  std::lock_guard lk(mu);
                                  ++calls;
                                  value = v;
                                },
                            .error_callback =
                                [&](const Error&) {
                                  std::lock_guard lk(mu);
                                  ++error_calls;
                                },
                            .progress = {}});
  EXPECT_EQ(ar.get(), squares_of(in));
  pool.close();
  pool.join();  // the driver thread, which runs callbacks, is gone: the counts are final
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(error_calls, 0);
  EXPECT_EQ(value, squares_of(in));
}

TEST_F(PoolTest, MapAsyncErrorCallbackRunsOnceWithTheError) {
  std::mutex mu;
  int calls = 0;
  int error_calls = 0;
  std::string type, message;
  std::error_code code;
  Pool pool{2};
  auto ar = pool.map_async(boom_at_13, iota_vec(100),
                           {.chunksize = 1,
                            .callback =
                                [&](const std::vector<int>&) {
                                  std::lock_guard lk(mu);
                                  ++calls;
                                },
                            .error_callback =
                                [&](const Error& e) {
                                  std::lock_guard lk(mu);
                                  ++error_calls;
                                  code = e.code();
                                  if (auto* r = dynamic_cast<const RemoteError*>(&e)) {
                                    type = r->type_name();
                                    message = r->message();
                                  }
                                },
                            .progress = {}});
  EXPECT_EQ(error_of([&] { ar.get(); }), make_error_code(errc::remote_error));
  EXPECT_TRUE(ar.ready());
  EXPECT_FALSE(ar.successful());
  pool.close();
  pool.join();
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(error_calls, 1);
  EXPECT_EQ(code, make_error_code(errc::remote_error));
  EXPECT_EQ(type, "std::runtime_error");
  EXPECT_EQ(message, "boom");
}

// ---- imap --------------------------------------------------------------------------------

TEST_F(PoolTest, ImapYieldsResultsInInputOrder) {
  Pool pool{2};
  const auto in = iota_vec(500);
  for (std::size_t cs : {1u, 3u, 64u, 1000u}) {
    std::vector<int> got;
    for (int r : pool.imap(square, in, cs)) got.push_back(r);
    EXPECT_EQ(got, squares_of(in)) << "chunksize " << cs;
  }
  auto it = pool.imap(cube, std::vector<int>{1, 2, 3});
  EXPECT_EQ(it.next(), 1);
  EXPECT_EQ(it.next(), 8);
  EXPECT_EQ(it.next(), 27);
  EXPECT_EQ(it.next(), std::nullopt);
  EXPECT_EQ(it.next(), std::nullopt) << "stays at the end";
}

// An input view that counts how many inputs were read from it.
auto counted_iota(int n, std::atomic<int>& pulled) {
  return std::views::iota(0, n) | std::views::transform([&pulled](int i) {
           pulled.fetch_add(1, std::memory_order_relaxed);
           return i;
         });
}

TEST_F(PoolTest, ImapReadsItsInputLazily) {
  const int n = static_cast<int>(scaled(20000));
  std::atomic<int> pulled{0};
  Pool pool{2};
  auto results = pool.imap(square, counted_iota(n, pulled));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(results.next(), i * i);
  // Give an eager implementation time to run ahead; a lazy one stops at its backlog: 512
  // chunks per worker past what the consumer has taken, and the consumer takes every ready
  // result at once, so at most twice that (2 x 1024 here) past what it has used.
  std::this_thread::sleep_for(200ms);
  const int ahead = pulled.load();
  EXPECT_GE(ahead, 3);
  EXPECT_LE(ahead, 2 * 1024 + 16) << "read far beyond what the consumer took";
  // Taking the rest resumes the reading (the backlog drains and refills to the end).
  for (int i = 3; i < n; ++i) ASSERT_EQ(results.next(), i * i);
  EXPECT_EQ(results.next(), std::nullopt);
  EXPECT_EQ(pulled.load(), n);
}

TEST_F(PoolTest, DestroyingImapResultStopsReadingInput) {
  std::atomic<int> pulled{0};
  Pool pool{2};
  {
    auto results = pool.imap(square, counted_iota(1'000'000, pulled));
    for (int i = 0; i < 3; ++i) EXPECT_EQ(results.next(), i * i);
  }
  const int at_destroy = pulled.load();
  EXPECT_LE(at_destroy, 2 * 1024 + 16);
  std::this_thread::sleep_for(100ms);  // time to read on, if it were going to
  EXPECT_EQ(pulled.load(), at_destroy);
  EXPECT_EQ(pool.map(square, iota_vec(10)), squares_of(iota_vec(10))) << "the pool goes on";
  pool.close();
  pool.join();  // the abandoned job does not keep the pool busy
}

// Assigning over an ImapResult stops the job it held, as destroying it does: an endless
// input range stops being read, and close() + join() return.
TEST_F(PoolTest, MoveAssigningOverAnImapResultStopsItsJob) {
  Pool pool{2};
  std::atomic<int> pulled{0};
  auto endless = std::views::iota(0) | std::views::transform([&pulled](int i) {
                   pulled.fetch_add(1);
                   return i % 1000;
                 });
  auto results = pool.imap(square, endless);
  ASSERT_EQ(results.next(), std::optional<int>(0));
  results = pool.imap(square, std::vector<int>{5});
  EXPECT_EQ(results.next(), std::optional<int>(25));
  EXPECT_FALSE(results.next().has_value());
  const int after = pulled.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(pulled.load(), after) << "the replaced job still reads its endless input";
  pool.close();
  EXPECT_TRUE(pool.join_for(std::chrono::seconds(20))) << "join waited for the replaced job";
}

TEST_F(PoolTest, ImapRaisesTheInputRangesExceptionAfterTheInputsBeforeIt) {
  Pool pool{2};
  auto throwing = std::views::iota(0, 100) | std::views::transform([](int i) {
                    if (i == 5) throw std::out_of_range("input 5");
                    return i;
                  });
  auto it = pool.imap(square, std::move(throwing));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(it.next(), i * i);
  try {
    it.next();
    ADD_FAILURE() << "the input's exception was not raised";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "input 5");
  }
  EXPECT_EQ(it.next(), std::nullopt) << "the job ends at the failed input";
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST_F(PoolTest, ImapUnorderedYieldsEachResultExactlyOnce) {
  const int n = static_cast<int>(scaled(10000));
  Pool pool{2};
  for (std::size_t cs : {1u, 7u}) {
    std::vector<int> count(static_cast<std::size_t>(n));
    std::uint64_t sum = 0;
    std::size_t results = 0;
    for (int r : pool.imap_unordered([](int x) { return 2 * x + 1; }, iota_vec(n), cs)) {
      ASSERT_TRUE(r >= 1 && r < 2 * n + 1 && r % 2 == 1) << r;
      ++count[static_cast<std::size_t>((r - 1) / 2)];
      sum += static_cast<std::uint64_t>(r);
      ++results;
    }
    EXPECT_EQ(results, static_cast<std::size_t>(n)) << "chunksize " << cs;
    EXPECT_EQ(sum, static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(n));
    EXPECT_TRUE(std::all_of(count.begin(), count.end(), [](int c) { return c == 1; }))
        << "chunksize " << cs;
  }
}

TEST_F(PoolTest, ImapNextForTimesOutWhileNoResultIsReady) {
  Pool pool{2};
  auto fast = pool.imap(square, std::vector<int>{4});
  EXPECT_EQ(fast.next_for(30s), 16);
  EXPECT_EQ(fast.next_for(30s), std::nullopt);

  auto slow = pool.imap(sleep_30s, std::vector<int>{1, 2});
  EXPECT_EQ(error_of([&] { slow.next_for(50ms); }), make_error_code(errc::timeout));
  EXPECT_EQ(error_of([&] { slow.next_for(1ms); }), make_error_code(errc::timeout));
}

TEST_F(PoolTest, ImapRaisesATaskErrorAtItsPlaceAndGoesOn) {
  Pool pool{2};
  auto it = pool.imap(boom_at_13, iota_vec(20));
  for (int i = 0; i < 13; ++i) EXPECT_EQ(it.next(), i);
  const auto err = remote_error_of([&] { it.next(); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->type_name(), "std::runtime_error");
  EXPECT_EQ(err->message(), "boom");
  for (int i = 14; i < 20; ++i) EXPECT_EQ(it.next(), i);
  EXPECT_EQ(it.next(), std::nullopt);
}

// ---- starmap, apply ------------------------------------------------------------------------

TEST_F(PoolTest, StarmapUnpacksPairsAndTuples) {
  Pool pool{2};
  EXPECT_EQ(pool.starmap(add, std::vector<std::pair<int, int>>{{1, 2}, {3, 4}, {-5, 5}}),
            (std::vector<int>{3, 7, 0}));
  const auto repeat = [](const std::string& s, int n, char sep) {
    std::string r;
    for (int i = 0; i < n; ++i) r += (i ? std::string(1, sep) : "") + s;
    return r;
  };
  using Args = std::tuple<std::string, int, char>;
  EXPECT_EQ(pool.starmap(repeat, std::vector<Args>{{"ab", 3, '-'}, {"x", 0, '+'}}, {}),
            (std::vector<std::string>{"ab-ab-ab", ""}));

  std::vector<std::tuple<int, int, int>> triples;
  for (int i = 0; i < 50; ++i) triples.emplace_back(i, 2 * i, 3 * i);
  int calls = 0;
  auto ar = pool.starmap_async(add3, triples,
                               {.chunksize = 4,
                                .callback = [&](const std::vector<int>&) { ++calls; },
                                .error_callback = {},
                                .progress = {}});
  const auto sums = ar.get();
  ASSERT_EQ(sums.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sums[static_cast<std::size_t>(i)], 6 * i);
  pool.close();
  pool.join();
  EXPECT_EQ(calls, 1);
}

TEST_F(PoolTest, ApplyPassesVariadicArguments) {
  SharedArray<int> cell(1);  // before the pool: its workers are forks that share it
  Pool pool{testing::forked(2)};
  EXPECT_EQ(pool.apply(add3, 1, 2, 3), 6);
  EXPECT_EQ(pool.apply([] { return 7; }), 7);
  EXPECT_EQ(pool.apply(
                [](const std::string& s, double d, std::vector<int> v) {
                  return s + std::to_string(static_cast<int>(d)) + std::to_string(v.size());
                },
                std::string("n="), 2.5, std::vector<int>{1, 2, 3}),
            "n=23");
  auto ar = pool.apply_async(square, 9);
  EXPECT_EQ(ar.get(), 81);
  EXPECT_TRUE(ar.successful());

  auto done = pool.apply_async([cell = cell.data()](int v) { *cell = v; }, 41);
  done.get();
  EXPECT_EQ(cell[0], 41);
}

TEST_F(PoolTest, ApplyAsyncWithOptionsRunsItsCallbacks) {
  std::mutex mu;
  std::vector<int> values;
  std::vector<std::string> errors;
  Pool pool{2};
  auto ok = pool.apply_async(add, std::tuple{20, 22}, {.callback = [&](const int& v) {
                               std::lock_guard lk(mu);
                               values.push_back(v);
                             }});
  auto bad = pool.apply_async(boom_at_13, std::tuple{13}, {.error_callback = [&](const Error& e) {
                                std::lock_guard lk(mu);
                                errors.push_back(dynamic_cast<const RemoteError&>(e).message());
                              }});
  EXPECT_EQ(ok.get(), 42);
  EXPECT_EQ(error_of([&] { bad.get(); }), make_error_code(errc::remote_error));
  pool.close();
  pool.join();
  EXPECT_EQ(values, std::vector<int>{42});
  EXPECT_EQ(errors, std::vector<std::string>{"boom"});
}

// ---- callables -----------------------------------------------------------------------------

TEST_F(PoolTest, AcceptsEveryKindOfPortableCallable) {
  Pool pool{2};
  const auto in = iota_vec(20);
  // Values decided after the workers were forked: they must travel with the task.
  volatile bool use_cube = true;
  int (*const fp)(int) = use_cube ? &cube : &square;
  const int k = static_cast<int>(in.size()) + 3;
  const Prefixer prefixer{"item-" + std::to_string(k) + ":"};

  std::vector<int> cubes, scaled_by_k, affine;
  std::vector<std::string> labels;
  for (int x : in) {
    cubes.push_back(x * x * x);
    scaled_by_k.push_back(x * k);
    affine.push_back(3 * x + k);
    labels.push_back(prefixer.prefix + std::to_string(x));
  }
  EXPECT_EQ(pool.map(fp, in), cubes) << "function pointer";
  EXPECT_EQ(pool.map(square, in), squares_of(in)) << "function";
  EXPECT_EQ(pool.map([](int x) { return x * x; }, in), squares_of(in)) << "captureless lambda";
  EXPECT_EQ(pool.map([k](int x) { return x * k; }, in), scaled_by_k) << "capture by value";
  EXPECT_EQ(pool.map(Affine{3, k}, in), affine) << "trivially copyable functor";
  EXPECT_EQ(pool.map(prefixer, in), labels) << "functor with serialize()";
  EXPECT_EQ(pool.apply(prefixer, 5), prefixer.prefix + "5");
}

// ---- errors from tasks ---------------------------------------------------------------------

TEST_F(PoolTest, TaskExceptionBecomesRemoteErrorAndThePoolGoesOn) {
  Pool pool{2};
  std::set<pid_t> workers;
  for (const auto& s : pool.stats()) workers.insert(s.pid);
  const auto err = remote_error_of([&] { pool.map(boom_at_13, iota_vec(100)); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), make_error_code(errc::remote_error));
  EXPECT_TRUE(err->is(errc::remote_error));
  EXPECT_EQ(err->type_name(), "std::runtime_error");
  EXPECT_EQ(err->message(), "boom");
  EXPECT_TRUE(workers.count(err->worker_pid())) << "pid " << err->worker_pid();
  EXPECT_NE(std::string(err->what()).find("boom"), std::string::npos) << err->what();

  EXPECT_EQ(pool.map(square, iota_vec(100)), squares_of(iota_vec(100)));
  EXPECT_EQ(pool.apply(add, 1, 1), 2);
  for (const auto& s : pool.stats()) EXPECT_EQ(s.restarts, 0u) << "a throw is not a death";
}

TEST_F(PoolTest, NonStandardExceptionKeepsItsTypeName) {
  Pool pool{1};
  const auto err = remote_error_of([&] { pool.apply([](int x) -> int { throw x; }, 5); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->type_name(), "int");
  EXPECT_EQ(err->message(), "");
  const auto err2 =
      remote_error_of([&] { pool.apply([]() -> int { throw std::invalid_argument("bad arg"); }); });
  ASSERT_TRUE(err2.has_value());
  EXPECT_EQ(err2->type_name(), "std::invalid_argument");
  EXPECT_EQ(err2->message(), "bad arg");
}

// ---- lifetime ------------------------------------------------------------------------------

TEST_F(PoolTest, ClosedPoolRejectsNewWork) {
  Pool pool{2};
  pool.close();
  const auto closed = make_error_code(errc::closed);
  EXPECT_EQ(error_of([&] { pool.map(square, iota_vec(3)); }), closed);
  EXPECT_EQ(error_of([&] { (void)pool.map_async(square, iota_vec(3)); }), closed);
  EXPECT_EQ(error_of([&] { (void)pool.apply_async(square, 3); }), closed);
  EXPECT_EQ(error_of([&] { (void)pool.imap(square, iota_vec(3)); }), closed);
  EXPECT_EQ(error_of([&] { pool.starmap(add, std::vector<std::pair<int, int>>{{1, 2}}); }), closed);
  pool.join();
  EXPECT_EQ(error_of([&] { pool.apply(square, 3); }), closed);
}

TEST_F(PoolTest, JoinBeforeCloseIsInvalidArgument) {
  Pool pool{2};
  EXPECT_EQ(error_of([&] { pool.join(); }), make_error_code(errc::invalid_argument));
  EXPECT_EQ(pool.apply(add, 1, 2), 3) << "still running";
}

TEST_F(PoolTest, CloseThenJoinFinishesQueuedWork) {
  SharedArray<std::uint32_t> ran(1);
  Pool pool{testing::forked(2)};
  const auto slow = [ran = ran.data()](int x) {
    std::this_thread::sleep_for(5ms);
    __atomic_fetch_add(ran, 1u, __ATOMIC_RELAXED);
    return x + 1;
  };
  std::vector<AsyncResult<std::vector<int>>> maps;
  for (int j = 0; j < 4; ++j)
    maps.push_back(
        pool.map_async(slow, iota_vec(10),
                       {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}}));
  auto one = pool.apply_async(slow, 100);
  std::vector<pid_t> pids;
  for (const auto& s : pool.stats()) pids.push_back(s.pid);
  pool.close();
  pool.join();
  EXPECT_EQ(ran[0], 41u);
  for (auto& m : maps) {
    ASSERT_TRUE(m.ready());
    const auto v = m.get();
    ASSERT_EQ(v.size(), 10u);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(v[static_cast<std::size_t>(i)], i + 1);
  }
  ASSERT_TRUE(one.ready());
  EXPECT_EQ(one.get(), 101);
  for (pid_t p : pids) EXPECT_FALSE(process_alive(p)) << "worker " << p << " still running";
  for (const auto& s : pool.stats()) EXPECT_EQ(s.pid, -1);
}

TEST_F(PoolTest, TerminateFailsPendingWorkWithClosed) {
  SharedArray<std::uint32_t> started(1);
  Pool pool{testing::forked(2)};
  std::vector<pid_t> pids;
  for (const auto& s : pool.stats()) pids.push_back(s.pid);
  auto ar = pool.map_async(
      [started = started.data()](int x) {
        __atomic_store_n(started, 1u, __ATOMIC_RELEASE);
        return sleep_30s(x);
      },
      iota_vec(8), {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
  ASSERT_TRUE(eventually([&] { return __atomic_load_n(&started[0], __ATOMIC_ACQUIRE) != 0; }));
  pool.terminate();
  EXPECT_TRUE(ar.ready());
  EXPECT_EQ(error_of([&] { ar.get(); }), make_error_code(errc::closed));
  EXPECT_FALSE(ar.successful());
  for (pid_t p : pids) EXPECT_FALSE(process_alive(p)) << "worker " << p << " still running";
  EXPECT_EQ(error_of([&] { pool.apply(add, 1, 2); }), make_error_code(errc::closed));
  pool.join();  // allowed after terminate()
}

TEST_F(PoolTest, DestructorWithPendingWorkStopsIt) {
  SharedArray<std::uint32_t> started(1);
  std::vector<pid_t> pids;
  AsyncResult<std::vector<int>> ar;
  std::optional<ImapResult<int>> it;
  {
    Pool pool{testing::forked(2)};
    for (const auto& s : pool.stats()) pids.push_back(s.pid);
    ar = pool.map_async(
        [started = started.data()](int x) {
          __atomic_store_n(started, 1u, __ATOMIC_RELEASE);
          return sleep_30s(x);
        },
        iota_vec(8), {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
    it.emplace(pool.imap(sleep_30s, iota_vec(4)));
    ASSERT_TRUE(eventually([&] { return __atomic_load_n(&started[0], __ATOMIC_ACQUIRE) != 0; }));
  }
  EXPECT_EQ(error_of([&] { ar.get(); }), make_error_code(errc::closed));
  EXPECT_EQ(error_of([&] { it->next(); }), make_error_code(errc::closed));
  for (pid_t p : pids) EXPECT_FALSE(process_alive(p)) << "worker " << p << " still running";
}

TEST_F(PoolTest, MoveAssignmentTerminatesTheReplacedPool) {
  Pool a{1};
  const pid_t old_worker = a.stats()[0].pid;
  a = Pool{2};
  EXPECT_FALSE(process_alive(old_worker));
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(a.apply(add, 2, 2), 4);
}

TEST_F(PoolTest, DefaultSizeIsCpuCount) {
  Pool pool;
  EXPECT_EQ(pool.size(), cpu_count());
  EXPECT_EQ(pool.stats().size(), pool.size());
}

// ---- stats, progress -----------------------------------------------------------------------

TEST_F(PoolTest, StatsCountChunksItemsAndTimePerSlot) {
  Pool pool{2};
  const auto napping = [](int x) {
    std::this_thread::sleep_for(1ms);
    return x;
  };
  EXPECT_EQ(pool.map(napping, iota_vec(20), 5), iota_vec(20));
  const auto st = pool.stats();
  ASSERT_EQ(st.size(), 2u);
  std::uint64_t items = 0;
  std::chrono::nanoseconds busy{0};
  for (std::size_t i = 0; i < st.size(); ++i) {
    EXPECT_EQ(st[i].slot, i);
    EXPECT_TRUE(process_alive(st[i].pid)) << "slot " << i << " pid " << st[i].pid;
    EXPECT_EQ(st[i].restarts, 0u);
    items += st[i].items;
    busy += st[i].busy;
  }
  EXPECT_NE(st[0].pid, st[1].pid);
  EXPECT_EQ(sum_tasks(st), 4u);
  EXPECT_EQ(items, 20u);
  // Each input sleeps at least 1 ms, so the chunks were busy at least 20 ms in all.
  EXPECT_GE(busy, 20ms);
}

TEST_F(PoolTest, ProgressBarRendersLabelBarPercentAndCounts) {
  EXPECT_EQ(ProgressBar::render("work", 450, 1000),
            "work [#############.................]  45%  450/1000");
  EXPECT_EQ(ProgressBar::render("", 0, 10, 10), "[..........]   0%  0/10");
  EXPECT_EQ(ProgressBar::render("x", 10, 10, 4), "x [####] 100%  10/10");
  EXPECT_EQ(ProgressBar::render("x", 12, 10, 4), "x [####] 100%  12/10") << "clamped bar";
  EXPECT_EQ(ProgressBar::render("x", 1, 3, 3), "x [#..]  33%  1/3");
  EXPECT_EQ(ProgressBar::render("imap", 7, 0), "imap 7 done") << "unknown total";
  EXPECT_EQ(ProgressBar::render("", 7, 0), "7 done");
}

TEST_F(PoolTest, ProgressBarDrawsTheFinalLineWhenForced) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Pool pool{2};
    EXPECT_EQ(
        pool.map(square, iota_vec(100), {.chunksize = 10, .progress = ProgressBar("sq", f, true)}),
        squares_of(iota_vec(100)));
  }
  std::rewind(f);
  std::string text;
  char buf[256];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  std::fclose(f);
  const std::string last = "\r" + ProgressBar::render("sq", 100, 100) + "\n";
  ASSERT_GE(text.size(), last.size());
  EXPECT_EQ(text.substr(text.size() - last.size()), last) << text;
  EXPECT_EQ(text.front(), '\r');
}

TEST_F(PoolTest, ProgressCallbackCountsUpToTheTotal) {
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  Pool pool{2};
  EXPECT_EQ(pool.map(square, iota_vec(100),
                     {.chunksize = 10,
                      .progress = [&](std::size_t done,
                                      std::size_t total) { calls.emplace_back(done, total); }}),
            squares_of(iota_vec(100)));
  ASSERT_EQ(calls.size(), 10u);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].first, 10 * (i + 1));
    EXPECT_EQ(calls[i].second, 100u);
  }

  std::vector<std::pair<std::size_t, std::size_t>> async_calls;
  auto ar = pool.map_async(
      square, iota_vec(30),
      {.chunksize = 7,
       .callback = {},
       .error_callback = {},
       .progress = [&](std::size_t d, std::size_t t) { async_calls.emplace_back(d, t); }});
  ar.get();
  ASSERT_EQ(async_calls.size(), 5u);
  EXPECT_EQ(async_calls.back(), std::make_pair(std::size_t{30}, std::size_t{30}));

  std::vector<std::size_t> imap_done;
  std::size_t imap_total = 99;
  {
    auto it = pool.imap(square, iota_vec(25),
                        {.chunksize = 5, .progress = [&](std::size_t d, std::size_t t) {
                           imap_done.push_back(d);
                           imap_total = t;
                         }});
    while (it.next()) {
    }
  }
  pool.close();
  pool.join();  // the driver thread, which reports progress, is gone
  EXPECT_EQ(imap_done, (std::vector<std::size_t>{5, 10, 15, 20, 25}));
  EXPECT_EQ(imap_total, 0u) << "imap does not know its total";
}

// ---- PoolOptions ---------------------------------------------------------------------------

TEST_F(PoolTest, InitializerRunsOncePerWorkerBeforeItsTasks) {
  SharedArray<pid_t> inits(64);
  SharedArray<std::uint32_t> count(1);
  PoolOptions opts;
  opts.processes = 3;
  opts.initializer = [inits = inits.data(), count = count.data()] {
    inits[__atomic_fetch_add(count, 1u, __ATOMIC_RELAXED)] = ::getpid();
  };
  opts.start = StartMethod::fork;
  Pool pool{opts};
  std::set<pid_t> workers;
  for (const auto& s : pool.stats()) workers.insert(s.pid);
  const auto task_pids = pool.map(pid_of_worker, iota_vec(300), 1);
  pool.close();
  pool.join();
  ASSERT_EQ(count[0], 3u);
  const std::multiset<pid_t> ran(inits.begin(), inits.begin() + 3);
  EXPECT_EQ(std::set<pid_t>(ran.begin(), ran.end()), workers);
  for (pid_t p : task_pids) EXPECT_EQ(ran.count(p), 1u) << "task ran in pid " << p;
}

TEST_F(PoolTest, MaxTasksPerChildReplacesWorkers) {
  SharedArray<pid_t> inits(64);
  SharedArray<std::uint32_t> count(1);
  PoolOptions opts;
  opts.processes = 2;
  opts.maxtasksperchild = 2;
  opts.initializer = [inits = inits.data(), count = count.data()] {
    const auto i = __atomic_fetch_add(count, 1u, __ATOMIC_RELAXED);
    if (i < 64) inits[i] = ::getpid();
  };
  opts.start = StartMethod::fork;
  Pool pool{opts};
  const auto results =
      pool.map([](int x) { return std::pair<int, pid_t>(x * x, ::getpid()); }, iota_vec(20), 1);
  ASSERT_EQ(results.size(), 20u);
  std::map<pid_t, int> chunks_per_pid;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(results[static_cast<std::size_t>(i)].first, i * i);
    ++chunks_per_pid[results[static_cast<std::size_t>(i)].second];
  }
  EXPECT_GE(chunks_per_pid.size(), 10u) << "20 chunks, at most 2 per worker";
  for (const auto& [pid, n] : chunks_per_pid) EXPECT_LE(n, 2) << "pid " << pid;
  std::uint64_t restarts = 0;
  for (const auto& s : pool.stats()) restarts += s.restarts;
  EXPECT_GE(restarts, 8u);
  EXPECT_EQ(sum_tasks(pool.stats()), 20u);
  pool.close();
  pool.join();
  // Every process that ran tasks ran the initializer exactly once.
  const std::uint32_t n = std::min(count[0], 64u);
  const std::multiset<pid_t> ran(inits.begin(), inits.begin() + n);
  for (const auto& [pid, c] : chunks_per_pid) EXPECT_EQ(ran.count(pid), 1u) << "pid " << pid;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

TEST_F(PoolTest, CpuAffinityPinsWorkers) {
  const auto cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs to tell pinned from unpinned";
  for (int cpu : {cpus.front(), cpus.back()}) {
    PoolOptions opts;
    opts.processes = 2;
    opts.cpu_affinity = {cpu};
    Pool pool{opts};
    const auto where = pool.map([](int) { return ::sched_getcpu(); }, iota_vec(50), 1);
    for (int c : where) EXPECT_EQ(c, cpu);
  }
}

TEST_F(PoolTest, BadOptionsAreInvalidArgument) {
  PoolOptions opts;
  opts.processes = 1;
  opts.cpu_affinity = {0, 100000};
  EXPECT_EQ(error_of([&] { Pool pool{opts}; }), make_error_code(errc::invalid_argument));
  opts.cpu_affinity = {-1};
  EXPECT_EQ(error_of([&] { Pool pool{opts}; }), make_error_code(errc::invalid_argument));
  opts.cpu_affinity = {};
  opts.task_retries = -1;
  EXPECT_EQ(error_of([&] { Pool pool{opts}; }), make_error_code(errc::invalid_argument));
}

TEST_F(PoolTest, ThrowingInitializerBreaksThePool) {
  PoolOptions opts;
  opts.processes = 2;
  opts.initializer = [] { throw std::runtime_error("init boom"); };
  Pool pool{opts};
  for (int round = 0; round < 2; ++round) {
    try {
      pool.map(square, iota_vec(10));
      ADD_FAILURE() << "map on a broken pool returned";
    } catch (const Error& e) {
      EXPECT_TRUE(e.is(errc::child_failed)) << e.what();
      EXPECT_NE(std::string(e.what()).find("init boom"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(error_of([&] { pool.apply(add, 1, 2); }), make_error_code(errc::child_failed));
}

TEST_F(PoolTest, BlockingCallInsideACallbackFailsAndThePoolGoesOn) {
  Pool pool{2};
  // Never ready while the test runs. From another pool, so that no chunk of `pool` waits
  // behind it on a worker.
  Pool other{1};
  auto slow = other.apply_async(sleep_30s, 1);
  std::error_code inner;
  ::testing::internal::CaptureStderr();
  auto caught = pool.map_async(square, iota_vec(10),
                               {.chunksize = {},
                                .callback =
                                    [&](const std::vector<int>&) {
                                      try {
                                        slow.get();
                                      } catch (const Error& e) {
                                        inner = e.code();
                                      }
                                    },
                                .error_callback = {},
                                .progress = {}});
  auto escaped = pool.map_async(
      square, iota_vec(10),
      {.chunksize = {},
       .callback = [&](const std::vector<int>&) { (void)slow.wait_for(1s); },  // throws
       .error_callback = {},
       .progress = {}});
  const auto want = squares_of(iota_vec(10));
  EXPECT_EQ(caught.get(), want);
  EXPECT_EQ(escaped.get(), want) << "a throwing callback does not fail the result";
  EXPECT_EQ(pool.map(square, iota_vec(10)), want) << "the pool goes on";
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(inner, make_error_code(errc::invalid_argument));
  EXPECT_NE(err.find("callback threw"), std::string::npos) << err;
}

}  // namespace
}  // namespace ipckit
