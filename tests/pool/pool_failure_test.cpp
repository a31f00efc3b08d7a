// Pool under failure, with real processes: workers killed with SIGKILL mid-task, tasks that
// abort, segfault or _exit, messages far larger than a ring, the pool's own process killed
// or interrupted with SIGINT, and a stress run that checks no result is lost or duplicated.
// Tasks report what the test needs (their pid, that they started) through SharedArrays made
// before the pool: workers are forks, so they share those mappings.
// Over 600 lines: one suite for every way a pool can fail, sharing its kill helpers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/pool/pool.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "nproc_limit.hpp"
#include "pool_options.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using PoolFailureTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::mix64;
using testing::scaled;

int square(int x) { return x * x; }
std::uint64_t mixed(std::uint64_t x) { return mix64(x); }
// Long enough that a test only sees it finish if the pool failed to stop it.
int sleep_30s(int x) {
  std::this_thread::sleep_for(30s);
  return x;
}
// A worker about to crash on purpose should not write a core file.
void no_core_dump() {
  const rlimit none{0, 0};
  (void)::setrlimit(RLIMIT_CORE, &none);
}

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

template <class F>
std::optional<WorkerLost> worker_lost_of(F&& f) {
  try {
    f();
  } catch (const WorkerLost& e) {
    return e;
  }
  return std::nullopt;
}

pid_t load_pid(const pid_t& p) { return __atomic_load_n(&p, __ATOMIC_ACQUIRE); }
void store_pid(pid_t* p, pid_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

std::vector<pid_t> worker_pids(const Pool& pool) {
  std::vector<pid_t> pids;
  for (const auto& s : pool.stats()) pids.push_back(s.pid);
  return pids;
}
std::uint64_t total_restarts(const Pool& pool) {
  std::uint64_t n = 0;
  for (const auto& s : pool.stats()) n += s.restarts;
  return n;
}
// Orphaned workers are killed by their parent-death signal; how soon is the kernel's affair,
// so this is a hang guard (the requirement is well under a second), not a timing check.
bool all_gone(const std::vector<pid_t>& pids) {
  return eventually(
      [&] {
        return std::none_of(pids.begin(), pids.end(), [](pid_t p) { return process_alive(p); });
      },
      5s);
}

// Whether process `pid` has a handler installed for SIGINT (SigCgt in /proc/<pid>/status):
// the pool installs one while a thread waits in a pool call.
bool catches_sigint(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("SigCgt:", 0) == 0) {
      const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
      return ((mask >> (SIGINT - 1)) & 1) != 0;
    }
  }
  return false;
}

// /dev/shm entries named as the library names its segments ("ipckit-<hex>"); the tests'
// own "ipckit-test-<pid>-<n>" names are left out (other test processes may be running).
std::set<std::string> library_shm_entries() {
  std::set<std::string> out;
  for (const auto& n : testing::shm_entries("ipckit")) {
    if (!n.starts_with("ipckit-test-")) out.insert(n);
  }
  return out;
}

// Bytes that follow from (seed, index), so a receiver can check every one.
void fill_pattern(std::span<std::byte> out, std::uint64_t seed) {
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    const std::uint64_t w = mix64(seed + i);
    std::memcpy(out.data() + i, &w, 8);
  }
  const std::uint64_t w = mix64(seed + i);
  std::memcpy(out.data() + i, &w, out.size() - i);
}
std::uint64_t digest(std::span<const std::byte> in) {
  std::uint64_t h = in.size();
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, in.data() + i, 8);
    h = mix64(h ^ w);
  }
  for (; i < in.size(); ++i) h = mix64(h ^ static_cast<std::uint64_t>(in[i]));
  return h;
}

// ---- a worker dies --------------------------------------------------------------------------

TEST_F(PoolFailureTest, WorkerKilledMidTaskFailsOnlyThatTask) {
  SharedArray<pid_t> victim(1);
  Pool pool{testing::forked(2)};
  auto lost = pool.apply_async(
      [victim = victim.data()](int x) {
        store_pid(victim, ::getpid());
        return sleep_30s(x);
      },
      7);
  // Some of these queue behind the sleeping task on its worker: they move on when it dies.
  std::vector<AsyncResult<int>> others;
  for (int i = 0; i < 40; ++i) others.push_back(pool.apply_async(square, i));
  ASSERT_TRUE(eventually([&] { return load_pid(victim[0]) != 0; }));
  const pid_t pid = victim[0];
  ASSERT_EQ(::kill(pid, SIGKILL), 0);

  const auto err = worker_lost_of([&] { lost.get(); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), make_error_code(errc::worker_lost));
  EXPECT_EQ(err->worker_pid(), pid);
  EXPECT_TRUE(err->status().signaled());
  EXPECT_EQ(err->status().value, SIGKILL);
  EXPECT_EQ(err->attempts(), 1);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(others[static_cast<std::size_t>(i)].get(), i * i);

  const auto after = pool.map(square, iota_vec(100));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(after[static_cast<std::size_t>(i)], i * i);
  EXPECT_EQ(pool.apply(square, 12), 144);
  EXPECT_GE(total_restarts(pool), 1u);
  for (pid_t p : worker_pids(pool)) {
    EXPECT_NE(p, pid);
    EXPECT_TRUE(process_alive(p)) << p;
  }
}

TEST_F(PoolFailureTest, ImapRaisesWorkerLostAtTheKilledTaskAndGoesOn) {
  SharedArray<pid_t> victim(1);
  Pool pool{testing::forked(2)};
  auto it = pool.imap(
      [victim = victim.data()](int x) {
        if (x == 5) {
          store_pid(victim, ::getpid());
          return sleep_30s(x);
        }
        return x * x;
      },
      iota_vec(30));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(it.next(), i * i);
  ASSERT_TRUE(eventually([&] { return load_pid(victim[0]) != 0; }));
  ASSERT_EQ(::kill(victim[0], SIGKILL), 0);
  const auto err = worker_lost_of([&] { it.next(); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->worker_pid(), victim[0]);
  EXPECT_TRUE(err->status().signaled());
  EXPECT_EQ(err->status().value, SIGKILL);
  for (int i = 6; i < 30; ++i) EXPECT_EQ(it.next(), i * i);
  EXPECT_EQ(it.next(), std::nullopt);
  EXPECT_EQ(pool.apply(square, 2), 4);
  EXPECT_EQ(total_restarts(pool), 1u);
}

TEST_F(PoolFailureTest, MapAsyncFailsWithWorkerLostWhenItsWorkerIsKilled) {
  SharedArray<pid_t> victim(1);
  Pool pool{testing::forked(2)};
  auto ar = pool.map_async(
      [victim = victim.data()](int x) {
        if (x == 3) {
          store_pid(victim, ::getpid());
          return sleep_30s(x);
        }
        return x;
      },
      iota_vec(10), {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
  ASSERT_TRUE(eventually([&] { return load_pid(victim[0]) != 0; }));
  ASSERT_EQ(::kill(victim[0], SIGKILL), 0);
  EXPECT_EQ(error_of([&] { ar.get(); }), make_error_code(errc::worker_lost));
  EXPECT_FALSE(ar.successful());
  EXPECT_EQ(pool.map(square, iota_vec(10)).back(), 81);
}

// A worker that cannot make room for a large task message (its address space is capped by
// the initializer) dies with the chunk counted as begun: the call fails with WorkerLost after
// its attempts, never loops forever through replacement workers; small tasks go on.
std::size_t size_of_bytes(const std::vector<char>& v) { return v.size(); }
void cap_address_space() {
  std::ifstream status("/proc/self/status");
  std::string line;
  long vm_kb = 0;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) vm_kb = std::atol(line.c_str() + 7);
  }
  const rlim_t cap = static_cast<rlim_t>(vm_kb + 16 * 1024) * 1024;  // 16 MiB to spare
  const rlimit r{cap, cap};
  if (::setrlimit(RLIMIT_AS, &r) != 0) std::abort();
}

TEST_F(PoolFailureTest, ATaskMessageAWorkerCannotHoldFailsWithWorkerLost) {
  if (testing::kStressDivisor != 1) GTEST_SKIP() << "RLIMIT_AS and the sanitizers' shadow memory";
  PoolOptions opts;
  opts.processes = 1;
  opts.task_retries = 1;
  opts.initializer = cap_address_space;
  Pool pool{opts};
  const std::vector<char> big(64u << 20, 'x');  // 64 MiB: more than a worker may map
  auto ar = pool.apply_async(size_of_bytes, big);
  ASSERT_TRUE(ar.wait_for(std::chrono::seconds(60))) << "the chunk loops through new workers";
  try {
    (void)ar.get();
    FAIL() << "a 64 MiB message reached a worker capped at 16 MiB spare";
  } catch (const WorkerLost& e) {
    EXPECT_EQ(e.attempts(), 2) << e.what();
  }
  EXPECT_EQ(pool.apply(size_of_bytes, std::vector<char>(1000)), 1000u);
}

TEST_F(PoolFailureTest, KilledIdleWorkerIsReplaced) {
  Pool pool{2};
  const pid_t first = pool.stats()[0].pid;
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return pool.stats()[0].restarts == 1; }));
  const pid_t second = pool.stats()[0].pid;
  EXPECT_NE(second, first);
  EXPECT_TRUE(process_alive(second));
  EXPECT_EQ(pool.map(square, iota_vec(50), 1).back(), 49 * 49);
}

TEST_F(PoolFailureTest, KilledTaskIsRetriedWithTaskRetries) {
  SharedArray<pid_t> victim(1);
  SharedArray<std::uint32_t> attempts(1);
  PoolOptions opts;
  opts.processes = 2;
  opts.task_retries = 1;
  opts.start = StartMethod::fork;
  Pool pool{opts};
  auto ar = pool.apply_async(
      [victim = victim.data(), attempts = attempts.data()](int x) {
        if (__atomic_fetch_add(attempts, 1u, __ATOMIC_ACQ_REL) == 0) {
          store_pid(victim, ::getpid());
          return sleep_30s(x);  // the first attempt is killed here
        }
        return x * 2;
      },
      21);
  ASSERT_TRUE(eventually([&] { return load_pid(victim[0]) != 0; }));
  ASSERT_EQ(::kill(victim[0], SIGKILL), 0);
  EXPECT_EQ(ar.get(), 42);
  EXPECT_EQ(attempts[0], 2u);
  EXPECT_GE(total_restarts(pool), 1u);
}

TEST_F(PoolFailureTest, TaskThatKeepsKillingItsWorkerFailsAfterItsRetries) {
  const auto suicide = [](int) -> int {
    ::raise(SIGKILL);
    return 0;
  };
  for (int retries : {0, 2}) {
    PoolOptions opts;
    opts.processes = 2;
    opts.task_retries = retries;
    Pool pool{opts};
    const auto err = worker_lost_of([&] { pool.apply(suicide, 1); });
    ASSERT_TRUE(err.has_value()) << "retries " << retries;
    EXPECT_EQ(err->attempts(), retries + 1);
    EXPECT_TRUE(err->status().signaled());
    EXPECT_EQ(err->status().value, SIGKILL);
    EXPECT_NE(std::string(err->what()).find("signal 9"), std::string::npos) << err->what();
    EXPECT_EQ(pool.apply(square, 3), 9);  // handled after the last death was
    EXPECT_EQ(total_restarts(pool), static_cast<std::uint64_t>(retries + 1));
  }
}

TEST_F(PoolFailureTest, TaskThatAbortsIsWorkerLost) {
  Pool pool{2};
  const auto err = worker_lost_of([&] {
    pool.apply(
        [](int) -> int {
          no_core_dump();
          std::abort();
        },
        1);
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->status().signaled());
  EXPECT_EQ(err->status().value, SIGABRT);
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST_F(PoolFailureTest, TaskThatSegfaultsIsWorkerLost) {
  Pool pool{2};
  const auto err = worker_lost_of([&] {
    pool.apply(
        [](int) -> int {
          no_core_dump();
          ::signal(SIGSEGV, SIG_DFL);  // past a sanitizer's handler, which would abort instead
          ::raise(SIGSEGV);
          return 0;
        },
        1);
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->status().signaled());
  EXPECT_EQ(err->status().value, SIGSEGV);
  EXPECT_EQ(pool.apply(square, 5), 25);
}

TEST_F(PoolFailureTest, TaskThatExitsIsWorkerLostWithItsExitCode) {
  Pool pool{2};
  const auto err = worker_lost_of([&] { pool.apply([](int) -> int { ::_exit(3); }, 1); });
  ASSERT_TRUE(err.has_value());
  EXPECT_TRUE(err->status().exited());
  EXPECT_EQ(err->status().value, 3);
  EXPECT_NE(std::string(err->what()).find("exited with code 3"), std::string::npos) << err->what();
  EXPECT_EQ(pool.apply(square, 6), 36);
}

// ---- messages larger than a ring -------------------------------------------------------------

TEST_F(PoolFailureTest, ResultOf64MiBCrossesWhole) {
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  Pool pool{2};
  // A std::vector<std::byte> and a std::string, each 64 MiB (256 fragments of the ring).
  const auto bytes = pool.apply(
      [](std::uint64_t seed) {
        std::vector<std::byte> v(kBytes);
        fill_pattern(v, seed);
        return v;
      },
      std::uint64_t{76});
  std::vector<std::byte> want_bytes(kBytes);
  fill_pattern(want_bytes, 76);
  ASSERT_EQ(bytes.size(), kBytes);
  EXPECT_EQ(digest(bytes), digest(want_bytes));
  const auto got = pool.apply(
      [](std::uint64_t seed) {
        std::string s(kBytes, '\0');
        fill_pattern(std::as_writable_bytes(std::span(s)), seed);
        return s;
      },
      std::uint64_t{77});
  std::string want(kBytes, '\0');
  fill_pattern(std::as_writable_bytes(std::span(want)), 77);
  ASSERT_EQ(got.size(), kBytes);
  EXPECT_EQ(digest(std::as_bytes(std::span(got))), digest(std::as_bytes(std::span(want))));
  EXPECT_TRUE(got == want);

  // Several results of a few fragments each at once, from both workers.
  constexpr std::size_t kSmaller = std::size_t{1} << 20;
  const auto blobs = pool.map(
      [](int i) {
        std::vector<std::byte> v(kSmaller);
        fill_pattern(v, static_cast<std::uint64_t>(i));
        return v;
      },
      iota_vec(4), 1);
  ASSERT_EQ(blobs.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    std::vector<std::byte> w(kSmaller);
    fill_pattern(w, static_cast<std::uint64_t>(i));
    EXPECT_TRUE(blobs[static_cast<std::size_t>(i)] == w) << "result " << i;
  }
  EXPECT_EQ(pool.apply(square, 7), 49) << "the rings are still in step";
}

TEST_F(PoolFailureTest, InputOf20MiBCrossesWhole) {
  constexpr std::size_t kBytes = std::size_t{20} << 20;
  Pool pool{2};
  std::string big(kBytes, '\0');
  fill_pattern(std::as_writable_bytes(std::span(big)), 5);
  const auto [size, hash] = pool.apply(
      [](const std::string& s) {
        return std::pair<std::size_t, std::uint64_t>(s.size(), digest(std::as_bytes(std::span(s))));
      },
      big);
  EXPECT_EQ(size, kBytes);
  EXPECT_EQ(hash, digest(std::as_bytes(std::span(big))));

  // Several large inputs in one map, one per chunk.
  std::vector<std::vector<std::uint64_t>> inputs(3,
                                                 std::vector<std::uint64_t>(std::size_t{1} << 20));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    fill_pattern(std::as_writable_bytes(std::span(inputs[i])), 100 + i);
  }
  const auto hashes = pool.map(
      [](const std::vector<std::uint64_t>& v) { return digest(std::as_bytes(std::span(v))); },
      inputs, 1);
  ASSERT_EQ(hashes.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(hashes[i], digest(std::as_bytes(std::span(inputs[i])))) << i;
  }
  EXPECT_EQ(pool.apply(square, 8), 64);
}

// ---- the pool's process dies or is interrupted -----------------------------------------------

TEST_F(PoolFailureTest, WorkersDieWithTheirParent) {
  SharedArray<pid_t> info(3);  // two worker pids, then "a task is running"
  const auto shm_before = library_shm_entries();
  auto parent = Process::spawn([&] {
    Pool pool{testing::forked(2)};
    const auto pids = worker_pids(pool);
    // One worker busy in a task, the other idle in its ring: both must go.
    auto busy = pool.map_async(
        [info = info.data()](int x) {
          store_pid(info + 2, 1);
          return sleep_30s(x);
        },
        std::vector<int>{1});
    store_pid(info.data(), pids[0]);
    store_pid(info.data() + 1, pids[1]);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return load_pid(info[2]) != 0 && load_pid(info[1]) != 0; }));
  const std::vector<pid_t> workers{info[0], info[1]};
  for (pid_t p : workers) ASSERT_TRUE(process_alive(p)) << p;
  parent.kill(SIGKILL);
  EXPECT_TRUE(parent.wait().signaled());
  EXPECT_TRUE(all_gone(workers)) << "workers " << workers[0] << ", " << workers[1];
  EXPECT_EQ(library_shm_entries(), shm_before);
}

constexpr int kInterrupted = 42;

// Runs `call(pool, task)` in a child process, where `task` blocks for 10 s, and sends the
// child SIGINT once a task runs and the pool's handler is installed (the call waits). The
// child exits with kInterrupted when the call threw Error(errc::interrupted), or with what
// `call` returned. Expects kInterrupted, and that the child's workers are gone.
template <class Call>
void expect_sigint_interrupts(Call call) {
  SharedArray<pid_t> info(3);
  auto child = Process::spawn([&]() -> int {
    ::signal(SIGINT, SIG_DFL);  // whatever the test runner set up
    Pool pool{testing::forked(2)};
    const auto pids = worker_pids(pool);
    store_pid(info.data(), pids[0]);
    store_pid(info.data() + 1, pids[1]);
    const auto task = [info = info.data()](int x) {
      store_pid(info + 2, 1);
      std::this_thread::sleep_for(10s);
      return x;
    };
    try {
      return call(pool, task);
    } catch (const Error& e) {
      return e.is(errc::interrupted) ? kInterrupted : 2;
    }
  });
  ASSERT_TRUE(eventually([&] { return load_pid(info[2]) != 0; }));
  ASSERT_TRUE(eventually([&] { return catches_sigint(child.pid()); }));
  const std::vector<pid_t> workers{info[0], info[1]};
  ASSERT_EQ(::kill(child.pid(), SIGINT), 0);
  EXPECT_EQ(exit_code(child), kInterrupted);
  EXPECT_TRUE(all_gone(workers));
}

TEST_F(PoolFailureTest, SigintInterruptsMap) {
  expect_sigint_interrupts([](Pool& pool, auto task) {
    pool.map(task, std::vector<int>{0, 1, 2, 3}, 1);
    return 1;
  });
}

TEST_F(PoolFailureTest, SigintInterruptsGetAndFailsEveryPendingResult) {
  expect_sigint_interrupts([](Pool& pool, auto task) {
    auto first =
        pool.map_async(task, std::vector<int>{0, 1},
                       {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
    auto second = pool.apply_async(task, 2);
    try {
      first.get();
      return 1;
    } catch (const Error& e) {
      if (!e.is(errc::interrupted)) return 3;
    }
    if (error_of([&] { second.get(); }) != make_error_code(errc::interrupted)) return 4;
    if (error_of([&] { pool.apply(square, 1); }) != make_error_code(errc::closed)) return 5;
    return kInterrupted;
  });
}

TEST_F(PoolFailureTest, SigintInterruptsJoin) {
  expect_sigint_interrupts([](Pool& pool, auto task) {
    auto pending =
        pool.map_async(task, std::vector<int>{0, 1, 2, 3},
                       {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
    pool.close();
    pool.join();
    return 1;
  });
}

TEST_F(PoolFailureTest, SigintInterruptsImapNext) {
  expect_sigint_interrupts([](Pool& pool, auto task) {
    auto it = pool.imap(task, std::vector<int>{0, 1, 2, 3});
    it.next();
    return 1;
  });
}

TEST_F(PoolFailureTest, SigintOutsidePoolCallsKeepsItsDefaultAction) {
  SharedArray<pid_t> info(3);
  auto child = Process::spawn([&]() -> int {
    ::signal(SIGINT, SIG_DFL);
    Pool pool{testing::forked(2)};
    const auto pids = worker_pids(pool);
    if (pool.map(square, iota_vec(10)).back() != 81) return 1;  // a call that has returned
    store_pid(info.data(), pids[0]);
    store_pid(info.data() + 1, pids[1]);
    store_pid(info.data() + 2, 1);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return load_pid(info[2]) != 0; }));
  EXPECT_FALSE(catches_sigint(child.pid())) << "the handler outlived the pool call";
  const std::vector<pid_t> workers{info[0], info[1]};
  ASSERT_EQ(::kill(child.pid(), SIGINT), 0);
  const auto st = child.wait_for(60s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->signaled());
  EXPECT_EQ(st->value, SIGINT);
  EXPECT_TRUE(all_gone(workers));
}

TEST_F(PoolFailureTest, SigintWithHandleSigintOffKeepsItsDefaultActionInMap) {
  SharedArray<pid_t> info(3);
  auto child = Process::spawn([&]() -> int {
    ::signal(SIGINT, SIG_DFL);
    PoolOptions opts;
    opts.processes = 2;
    opts.handle_sigint = false;
    opts.start = StartMethod::fork;
    Pool pool{opts};
    const auto pids = worker_pids(pool);
    store_pid(info.data(), pids[0]);
    store_pid(info.data() + 1, pids[1]);
    try {
      pool.map(
          [info = info.data()](int) {
            store_pid(info + 2, 1);
            std::this_thread::sleep_for(10s);
            return 0;
          },
          std::vector<int>{0, 1}, 1);
      return 1;
    } catch (const Error&) {
      return 2;
    }
  });
  ASSERT_TRUE(eventually([&] { return load_pid(info[2]) != 0; }));
  EXPECT_FALSE(catches_sigint(child.pid()));
  const std::vector<pid_t> workers{info[0], info[1]};
  ASSERT_EQ(::kill(child.pid(), SIGINT), 0);
  const auto st = child.wait_for(60s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->signaled());
  EXPECT_EQ(st->value, SIGINT);
  EXPECT_TRUE(all_gone(workers));
}

// ---- stress ------------------------------------------------------------------------------------

TEST_F(PoolFailureTest, ManySmallTasksLoseNothingAndDuplicateNothing) {
  const auto n = scaled(20000);
  Pool pool{4};

  std::vector<AsyncResult<std::uint64_t>> rs;
  rs.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) rs.push_back(pool.apply_async(mixed, i));
  std::uint64_t wrong = 0, sum = 0, want_sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t v = rs[i].get();
    wrong += v != mix64(i);
    sum += v;
    want_sum += mix64(i);
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(sum, want_sum);

  std::vector<std::uint64_t> in(n);
  std::iota(in.begin(), in.end(), std::uint64_t{0});
  std::uint64_t at = 0;
  wrong = 0;
  for (std::uint64_t v : pool.imap(mixed, in)) wrong += v != mix64(at++);
  EXPECT_EQ(at, n);
  EXPECT_EQ(wrong, 0u);

  std::vector<std::uint8_t> seen(n);
  std::uint64_t got = 0;
  sum = 0;
  for (std::uint64_t v : pool.imap_unordered([](std::uint64_t x) { return x; }, in, 3)) {
    ASSERT_LT(v, n);
    ++seen[v];
    sum += v;
    ++got;
  }
  EXPECT_EQ(got, n);
  EXPECT_EQ(sum, n * (n - 1) / 2);
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](std::uint8_t c) { return c == 1; }));
  std::uint64_t tasks = 0;
  for (const auto& s : pool.stats()) tasks += s.tasks;
  EXPECT_EQ(tasks, n + n + (n + 2) / 3);
}

TEST_F(PoolFailureTest, KillingWorkersDuringImapLosesNothingWithRetries) {
  constexpr int kKills = 8;
  const int n = static_cast<int>(scaled(4000));
  PoolOptions opts;
  opts.processes = 2;
  opts.task_retries = kKills;  // each kill costs at most one chunk one attempt
  Pool pool{opts};
  std::vector<int> got;
  std::string error;
  int kills = 0;
  try {
    for (int v : pool.imap(
             [](int x) {
               std::this_thread::sleep_for(100us);
               return 3 * x;
             },
             iota_vec(n), 3)) {
      got.push_back(v);
      // Every n / 9 results, SIGKILL a worker (most likely in the middle of a chunk) and
      // wait for its replacement, so that the next kill finds a fresh one.
      if (kills < kKills && got.size() % static_cast<std::size_t>(n / (kKills + 1)) == 0) {
        const std::size_t slot = static_cast<std::size_t>(kills) % pool.size();
        const WorkerStats before = pool.stats()[slot];
        ASSERT_EQ(::kill(before.pid, SIGKILL), 0);
        ++kills;
        ASSERT_TRUE(eventually([&] { return pool.stats()[slot].restarts > before.restarts; }));
      }
    }
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_EQ(error, "");
  EXPECT_EQ(kills, kKills);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[static_cast<std::size_t>(i)], 3 * i) << i;
  EXPECT_EQ(total_restarts(pool), static_cast<std::uint64_t>(kKills));
}

// ---- found in review ----------------------------------------------------------------------

int abort_at_500(int x) {
  if (x == 500) {
    no_core_dump();
    std::abort();
  }
  return x;
}

// Tiny tasks fill each worker's queue deep; when one worker dies, the chunks queued behind
// the fatal one are moved to the other worker although their job has failed. They must not
// run from freed inputs (ASan sees a use after free if they do) and the pool goes on.
TEST_F(PoolFailureTest, ChunksOfAFailedMapQueuedOnADeadWorkerAreDroppedSafely) {
  Pool pool{2};
  for (int round = 0; round < 3; ++round) {
    EXPECT_TRUE(worker_lost_of([&] { (void)pool.map(abort_at_500, iota_vec(4000), 1); }))
        << "round " << round;
    EXPECT_EQ(pool.map(square, iota_vec(100), 1)[99], 99 * 99);
  }
}

std::size_t byte_sum(const std::vector<std::uint8_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::size_t{0});
}

// An input of several ring capacities goes to an idle worker in fragments; the driver waits
// for room that only the worker's consumption makes. Repeated, to meet the interleavings.
TEST_F(PoolFailureTest, LargeInputsToAnIdlePoolNeverStall) {
  Pool pool{2};
  std::vector<std::uint8_t> big(std::size_t{3} << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 31);
  const std::size_t want = byte_sum(big);
  for (int i = 0; i < static_cast<int>(scaled(24)); ++i) {
    auto r = pool.apply_async(byte_sum, big);
    ASSERT_TRUE(r.wait_for(30s)) << "stalled at round " << i;
    EXPECT_EQ(r.get(), want);
  }
}

// Python's pattern: imap, then close() and join() before the results are read. join() must
// not wait for the consumer; the results are all there afterwards.
TEST_F(PoolFailureTest, CloseAndJoinWithAnUnreadImapFinish) {
  const int n = static_cast<int>(scaled(50'000));
  Pool pool{2};
  auto results = pool.imap(square, std::views::iota(0, n));
  pool.close();
  ASSERT_TRUE(pool.join_for(60s)) << "join waited for the imap consumer";
  int i = 0;
  for (int r : results) {
    ASSERT_EQ(r, i * i) << i;
    ++i;
  }
  EXPECT_EQ(i, n);
}

TEST_F(PoolFailureTest, DroppingAnImapAfterCloseLetsJoinFinish) {
  Pool pool{2};
  {
    auto results = pool.imap(square, std::views::iota(0, 1'000'000));
    EXPECT_EQ(results.next(), 0);
    pool.close();
  }
  EXPECT_TRUE(pool.join_for(60s));
}

TEST_F(PoolFailureTest, JoinForTimesOutWhileWorkRemains) {
  Pool pool{1};
  auto slow = pool.apply_async(sleep_30s, 1);
  pool.close();
  EXPECT_FALSE(pool.join_for(50ms));
  pool.terminate();
  EXPECT_EQ(error_of([&] { (void)slow.get(); }), errc::closed);
}

// A callback may destroy the pool that runs it: the driver finishes its pass and ends.
TEST_F(PoolFailureTest, ACallbackThatDestroysItsPoolDoesNotCrash) {
  std::optional<Pool> pool;
  pool.emplace(2);
  AsyncOptions<int> opts;
  opts.callback = [&pool](const int&) { pool.reset(); };
  auto r = pool->apply_async(square, std::tuple{7}, std::move(opts));
  EXPECT_EQ(r.get(), 49);
  EXPECT_TRUE(eventually([&] { return testing::child_pids().empty(); }))
      << "the workers outlived their pool";
}

// In a forked copy of the process a Pool has no driver and no workers: its calls and waits
// fail at once instead of waiting forever, and dropping it leaves the parent's pool alone.
TEST_F(PoolFailureTest, AForkedCopyOfAPoolRefusesCallsAndLeavesTheParentsPoolAlone) {
  std::optional<Pool> pool;
  pool.emplace(2);
  auto pending = pool->apply_async(sleep_30s, 1);
  Process child = Process::spawn([&] {
    if (error_of([&] { (void)pool->map(square, iota_vec(3)); }) != errc::invalid_argument) return 1;
    if (error_of([&] { (void)pending.get(); }) != errc::invalid_argument) return 2;
    if (error_of([&] { pool->close(); }) != errc::invalid_argument) return 3;
    pool.reset();  // must not touch the parent's workers
    return 0;
  });
  EXPECT_EQ(exit_code(child), 0);
  EXPECT_EQ(pool->apply(square, 5), 25) << "the parent's pool still works";
  pool->terminate();
  EXPECT_EQ(error_of([&] { (void)pending.get(); }), errc::closed);
}

// An input range that throws in the middle of a chunk: the inputs read before it still run,
// then the exception comes, at its place.
TEST_F(PoolFailureTest, ImapInputThatThrowsMidChunkKeepsTheInputsBeforeIt) {
  Pool pool{2};
  auto throwing = std::views::iota(0, 100) | std::views::transform([](int i) {
                    if (i == 6) throw std::out_of_range("input 6");
                    return i;
                  });
  auto it = pool.imap(square, std::move(throwing), 4);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(it.next(), i * i) << i;
  EXPECT_THROW((void)it.next(), std::out_of_range);
  EXPECT_EQ(it.next(), std::nullopt);
}

void exit_in_initializer() { ::_exit(5); }

// An initializer that exits (rather than throws) kills every new worker: after a few in a
// row the pool is broken with child_failed instead of forking forever.
TEST_F(PoolFailureTest, InitializerThatExitsBreaksThePoolInsteadOfRespawningForever) {
  PoolOptions o;
  o.processes = 2;
  o.initializer = exit_in_initializer;
  Pool pool{o};
  // The workers may all have died before the first call: then the call itself is refused,
  // otherwise its result fails. Either way with child_failed, and nothing waits forever.
  const auto outcome = error_of([&] {
    auto r = pool.apply_async(square, 3);
    if (!r.wait_for(30s)) throw std::runtime_error("the result never came");
    (void)r.get();
  });
  EXPECT_EQ(outcome, errc::child_failed);
  EXPECT_EQ(error_of([&] { (void)pool.apply_async(square, 4); }), errc::child_failed);
}

// ---- a pool that cannot start (RLIMIT_NPROC) ---------------------------------------------

// In the limited child: Pool(4) must throw an ipckit::Error with errno EAGAIN whose message
// contains every piece of `expect`, and leave no child, descriptor or shared mapping behind.
int pool_start_fails(const std::vector<std::string>& expect) {
  const auto fds = testing::open_fds();
  const std::size_t maps = testing::shared_mappings();
  try {
    Pool pool{testing::forked(4)};
    std::fprintf(stderr, "Pool(4) started under the limit\n");
    return 1;
  } catch (const Error& e) {
    const std::string what = e.what();
    if (e.code() != std::error_code(EAGAIN, std::system_category())) {
      std::fprintf(stderr, "code %s, not EAGAIN: %s\n", e.code().message().c_str(), e.what());
      return 2;
    }
    for (const auto& piece : expect) {
      if (what.find(piece) == std::string::npos) {
        std::fprintf(stderr, "no \"%s\" in: %s\n", piece.c_str(), e.what());
        return 3;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "not an ipckit::Error: %s\n", e.what());
    return 4;
  }
  if (!testing::no_children()) {
    std::fprintf(stderr, "a worker was left behind\n");
    return 5;
  }
  if (testing::open_fds() != fds) {
    std::fprintf(stderr, "a descriptor was left open\n");
    return 6;
  }
  if (testing::shared_mappings() != maps) {
    std::fprintf(stderr, "a shared mapping was left behind\n");
    return 7;
  }
  return 0;
}

// Room for the driver thread and one worker: the second worker's fork fails.
TEST_F(PoolFailureTest, PoolThatCannotForkAWorkerThrowsErrorAndStopsTheOthers) {
  const int rc = testing::run_under_nproc_limit(2, [] {
    return pool_start_fails({"Pool: could not start worker 2 of 4", "fork() failed", "RLIMIT_NPROC",
                             "Resource temporarily unavailable"});
  });
  if (rc == testing::kNprocUnavailable) GTEST_SKIP() << "RLIMIT_NPROC cannot be applied here";
  EXPECT_EQ(rc, 0) << "see the child's stderr above";
}

// No room even for the driver thread: std::thread's bare std::system_error becomes an Error.
TEST_F(PoolFailureTest, PoolThatCannotStartItsDriverThreadThrowsError) {
  const int rc = testing::run_under_nproc_limit(0, [] {
    return pool_start_fails({"Pool: could not start its driver thread", "RLIMIT_NPROC"});
  });
  if (rc == testing::kNprocUnavailable) GTEST_SKIP() << "RLIMIT_NPROC cannot be applied here";
  EXPECT_EQ(rc, 0) << "see the child's stderr above";
}

}  // namespace
}  // namespace ipckit
