// Named segments over their whole life when processes misbehave: a lock holder killed or
// stopped, a /dev/shm too small, absurd sizes, opens racing create and destroy, creators
// killed half way, stale segments, consumers started before their producer, racing
// open_or_create, and the words of the errors they throw.
// Over 600 lines: one suite for the named segment's whole life, its cases share helpers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fork_helpers.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "proc_scan.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using Flag = std::atomic<std::uint32_t>;
using SegmentLifecycleTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;

constexpr std::size_t kSize = 1 << 20;

bool shm_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

// What is under /dev/shm/<name> now, for failure messages.
std::string describe_entry(const std::string& name) {
  struct stat st {};
  if (::stat(("/dev/shm/" + name).c_str(), &st) != 0) return "no entry";
  return "an entry of " + std::to_string(st.st_size) + " bytes";
}

// The exit code, -signal when killed, -1000 when it hung past `limit` (it is killed then).
int exit_code(Process& p, std::chrono::seconds limit = 10s) {
  auto st = p.wait_for(limit);
  if (!st) {
    p.kill(SIGKILL);
    (void)p.wait();
    return -1000;
  }
  return st->exited() ? st->value : -st->value;
}

// For a child's checks: prints what went wrong and returns `code`.
int fail(int code, const std::string& what) {
  std::fprintf(stderr, "%s\n", what.c_str());
  return code;
}

// ---- 5. the segment's lock held by a process that is killed or stopped ------------------------

// Exit codes of a probe: how a heap/directory call on a named segment ended.
enum Probe : int {
  kCompleted = 0,
  kHeapBroken = 1,   // errc::bad_layout: the victim died while changing the heap (allowed)
  kLockTimeout = 2,  // errc::timeout
  kOther = 3,
};

int probe_outcome(const char* call, const std::function<void()>& f) {
  try {
    f();
    return kCompleted;
  } catch (const Error& e) {
    if (e.is(errc::bad_layout)) return kHeapBroken;
    if (e.is(errc::timeout)) return kLockTimeout;
    return fail(kOther, std::string(call) + " threw: " + e.what());
  }
}

// A process that opens the segment and changes its heap and directory in a tight loop, so
// that it holds the segment's lock much of the time, until `stop` is raised.
Process spawn_heap_churner(const std::string& name, Flag& running, const Flag& stop) {
  return Process::spawn([&name, &running, &stop] {
    auto mine = Segment::open(name);
    running.store(1, std::memory_order_release);
    for (std::uint64_t i = 0; stop.load(std::memory_order_relaxed) == 0; ++i) {
      void* p = mine.allocate(64 + i % 512);
      (void)mine.find_bytes("churn");
      // Named per process: a churner killed mid-way leaves its entry behind.
      const std::string entry = "churn-" + std::to_string(::getpid()) + "-" + std::to_string(i % 4);
      (void)mine.construct_bytes(entry, 128, 8);
      (void)mine.destroy_bytes(entry);
      mine.deallocate(p);
    }
    return 0;
  });
}

// Kills a process that churns the heap at a random moment, many times: each time a fresh
// process then opens the segment, finds and constructs: it completes (the dead holder's lock
// is recovered) or, when the victim died mid-change, finds the heap marked broken.
TEST_F(SegmentLifecycleTest, KilledLockHolderNeverBlocksOpenFindOrConstruct) {
  auto flags = Segment::anonymous(1 << 16);
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_us(0, 1000);
  std::string name = shm_name();
  std::optional<Segment> seg(Segment::create(name, kSize));
  int broken = 0;
  for (int round = 0; round < 30; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto& running = flags.make<Flag>(0u);
    auto& stop = flags.make<Flag>(0u);
    auto victim = spawn_heap_churner(name, running, stop);
    ASSERT_TRUE(eventually([&] { return running.load(std::memory_order_acquire) == 1; }));
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    victim.kill(SIGKILL);
    ASSERT_TRUE(victim.wait().signaled());
    auto probe = Process::spawn([&] {
      return probe_outcome("open/find/construct", [&] {
        auto mine = Segment::open(name, {}, SegmentOptions{.lock_timeout = 1s});
        (void)mine.find_bytes("nothing");
        (void)mine.construct_bytes("probe", 64, 8);
        (void)mine.destroy_bytes("probe");
      });
    });
    const int code = exit_code(probe);
    ASSERT_TRUE(code == kCompleted || code == kHeapBroken)
        << "probe: " << code << " (" << kLockTimeout << ": the dead holder's lock was never "
        << "recovered; -1000: hung; other negative: killed by that signal)";
    if (code == kHeapBroken) {  // nothing more to learn from this one: a fresh segment
      ++broken;
      seg.reset();
      name = shm_name();
      seg.emplace(Segment::create(name, kSize));
    }
  }
  RecordProperty("rounds_with_broken_heap", broken);
}

// Stops a process that churns the heap at a random moment: a heap or directory call of
// another process then completes (the lock was free) or throws errc::timeout after
// lock_timeout; it never waits for the stopped holder for good.
TEST_F(SegmentLifecycleTest, StoppedLockHolderMakesOpenFindAndConstructTimeOutNotHang) {
  const std::string name = shm_name();
  const SegmentOptions impatient{.lock_timeout = 200ms};
  auto seg = Segment::create(name, kSize, impatient);
  auto flags = Segment::anonymous(1 << 16);
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_us(0, 500);
  const char* const calls[] = {"Segment::open", "find_bytes", "construct_bytes"};
  std::array<int, 3> timeouts{};
  // Enough rounds for a loaded machine, where a stop lands less often inside the lock; the
  // loop ends as soon as every call has met the held lock once.
  for (int round = 0; round < 300; ++round) {
    int call = 0;  // the first call that has not timed out yet
    while (call < 3 && timeouts[call] > 0) ++call;
    if (call == 3) break;
    SCOPED_TRACE(std::string("round ") + std::to_string(round) + ", " + calls[call]);
    auto& running = flags.make<Flag>(0u);
    auto& stop = flags.make<Flag>(0u);
    auto victim = spawn_heap_churner(name, running, stop);
    ASSERT_TRUE(eventually([&] { return running.load(std::memory_order_acquire) == 1; }));
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    victim.kill(SIGSTOP);
    ASSERT_TRUE(eventually([&] { return testing::process_state(victim.pid()) == 'T'; }));
    auto probe = Process::spawn([&] {
      const std::string entry = "probe-" + std::to_string(round);
      return probe_outcome(calls[call], [&] {
        switch (call) {
          case 0: (void)Segment::open(name, {}, impatient); break;
          case 1: (void)seg.find_bytes("nothing"); break;
          default: (void)seg.construct_bytes(entry, 64, 8); break;
        }
      });
    });
    const int code = exit_code(probe);
    stop.store(1, std::memory_order_relaxed);
    victim.kill(SIGCONT);
    EXPECT_EQ(exit_code(victim), 0) << "the churner failed once continued";
    ASSERT_TRUE(code == kCompleted || code == kLockTimeout)
        << "probe: " << code << " (" << kHeapBroken << ": bad_layout; -1000: hung behind "
        << "the stopped holder; other negative: killed by that signal)";
    if (code == kLockTimeout) ++timeouts[call];
  }
  for (int call = 0; call < 3; ++call) {
    EXPECT_GT(timeouts[call], 0) << calls[call] << " never found the lock held by the "
                                 << "stopped process: the test proved nothing for it";
  }
}

// ---- 6, 10. a /dev/shm too small for the segment -----------------------------------------------

// Exit codes of with_small_dev_shm()'s child when this machine cannot give it a /dev/shm of
// its own.
constexpr int kNoNamespace = 77;
constexpr int kNoMount = 78;

// Runs body() in a child process with a mount namespace of its own whose /dev/shm is a new
// 256 KiB tmpfs: /dev/shm fills up for real without touching the machine's. Returns body()'s
// exit code (0: passed), kNoNamespace / kNoMount when that cannot be set up here.
template <class Body>
int with_small_dev_shm(Body&& body) {
  auto child = Process::spawn([&]() -> int {
    if (::unshare(CLONE_NEWNS) != 0) {
      return fail(kNoNamespace, std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno));
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=256k") != 0) {
      return fail(kNoMount, std::string("mount of a tmpfs on /dev/shm: ") + std::strerror(errno));
    }
    return body();
  });
  return exit_code(child, 20s);
}

// Nothing in the (private, small) /dev/shm, and nothing under `name`.
int expect_dev_shm_empty(const std::string& name, int code) {
  const int fd = ::shm_open(("/" + name).c_str(), O_RDONLY, 0);
  if (fd >= 0) {
    ::close(fd);
    return fail(code, "the name " + name + " was left behind");
  }
  const auto left = testing::shm_entries("");
  if (!left.empty()) return fail(code + 1, "/dev/shm holds " + *left.begin());
  return 0;
}

TEST_F(SegmentLifecycleTest, CreateLargerThanDevShmIsOutOfMemoryNotSigbusAndLeavesNoName) {
  const std::string name = shm_name();
  const int code = with_small_dev_shm([&] {
    const auto err = error_of([&] { (void)Segment::create(name, 4 << 20); });
    if (err != errc::out_of_memory) return fail(1, "create(4 MiB) in 256 KiB: " + err.message());
    return expect_dev_shm_empty(name, 2);
  });
  if (code == kNoNamespace || code == kNoMount) {
    GTEST_SKIP() << "needs CAP_SYS_ADMIN for a mount namespace with its own /dev/shm";
  }
  EXPECT_EQ(code, 0) << "1: not out_of_memory; 2, 3: something was left in /dev/shm; "
                     << "-7: killed by SIGBUS";
}

TEST_F(SegmentLifecycleTest, CreateThatFailsOnAFullDevShmLeavesTheNameAndRoomForTheNext) {
  const std::string name = shm_name();
  const int code = with_small_dev_shm([&]() -> int {
    // Twice: a failed create must give back the pages it reserved as well as the name.
    for (int i = 0; i < 2; ++i) {
      const auto err = error_of([&] { (void)Segment::create(name, 200 << 10 << 1); });
      if (err != errc::out_of_memory) return fail(1, "create(400 KiB): " + err.message());
      if (const int rc = expect_dev_shm_empty(name, 2); rc != 0) return rc;
    }
    auto seg = Segment::create(name, 200 << 10);  // fits only if the failures freed their pages
    seg.construct<std::uint64_t>("v", 5u);
    const auto again = error_of([&] { (void)Segment::create(name, 16 << 10); });
    if (again != errc::already_exists) return fail(4, "second create: " + again.message());
    auto other = Segment::open(name);
    if (other.find<std::uint64_t>("v") != 5u) return fail(5, "the first segment lost its value");
    return 0;
  });
  if (code == kNoNamespace || code == kNoMount) {
    GTEST_SKIP() << "needs CAP_SYS_ADMIN for a mount namespace with its own /dev/shm";
  }
  EXPECT_EQ(code, 0) << "1: not out_of_memory; 2, 3: something was left; 4: the second create "
                     << "was not already_exists; 5: the first no longer worked; "
                     << Process::kExitException << ": an exception (see its message); "
                     << "-7: SIGBUS";
}

TEST_F(SegmentLifecycleTest, SecondCreateOfANameIsAlreadyExistsAndTheFirstKeepsWorking) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  auto& value = seg.construct<std::uint64_t>("v", 7u);
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize); }), errc::already_exists);
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, 2 * kSize); }), errc::already_exists);
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize, {.reclaim_stale = true}); }),
            errc::already_exists);
  ASSERT_TRUE(shm_exists(name));
  auto peer = Process::spawn([&] {
    auto mine = Segment::open(name, kSize);
    auto& v = mine.find<std::uint64_t>("v");
    if (v != 7u) return 1;
    v = 8;
    (void)mine.construct<std::uint64_t>("w", 9u);
    return 0;
  });
  EXPECT_EQ(exit_code(peer), 0);
  EXPECT_EQ(value, 8u);
  EXPECT_EQ(seg.find<std::uint64_t>("w"), 9u);
}

// ---- 7. sizes that overflow ------------------------------------------------------------

TEST_F(SegmentLifecycleTest, HugeSizesAreRefusedAndCreateNothing) {
  auto seg = Segment::anonymous(kSize);
  const std::size_t free_before = seg.free_memory();
  EXPECT_EQ(error_of([&] { (void)seg.allocate(SIZE_MAX); }), errc::out_of_memory);
  EXPECT_EQ(error_of([&] { (void)seg.allocate(SIZE_MAX, 4096); }), errc::out_of_memory);
  EXPECT_EQ(error_of([&] { (void)seg.allocate(SIZE_MAX - 4095); }), errc::out_of_memory);
  const auto huge = error_of([&] { (void)seg.construct_bytes("huge", SIZE_MAX, 8); });
  EXPECT_TRUE(huge == errc::out_of_memory || huge == errc::invalid_argument) << huge.message();
  EXPECT_FALSE(seg.find_bytes("huge").has_value());
  EXPECT_EQ(error_of([] { SharedArray<std::uint64_t> a(SIZE_MAX / 4); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { SharedArray<std::array<char, 3>> a(SIZE_MAX / 2); }),
            errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)SharedArray<std::uint64_t>::construct(seg, "a", SIZE_MAX / 4); }),
            errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)SharedArray<std::uint64_t>::construct(seg, "b", SIZE_MAX / 8); }),
            errc::invalid_argument);
  EXPECT_FALSE(seg.find_bytes("a").has_value());
  EXPECT_FALSE(seg.find_bytes("b").has_value());
  EXPECT_EQ(seg.free_memory(), free_before);
  // And the segment still works.
  EXPECT_EQ(seg.construct<std::uint64_t>("after", 3u), 3u);
}

// ---- 9. open racing create and destroy ------------------------------------------------------

TEST_F(SegmentLifecycleTest, OpenRacingCreateAndDestroyIsOnlyEverNotFoundOrTimeout) {
  const std::string name = shm_name();
  auto flags = Segment::anonymous(1 << 16);
  auto& cycles = flags.make<std::atomic<std::uint64_t>>(0u);
  auto& stop = flags.make<Flag>(0u);
  auto creator = Process::spawn([&] {
    while (stop.load(std::memory_order_relaxed) == 0) {
      auto seg = Segment::create(name, 64 << 10);
      (void)seg.construct<std::uint64_t>("v", 1u);
      cycles.fetch_add(1, std::memory_order_release);
    }
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return cycles.load(std::memory_order_acquire) > 0; }));
  std::uint64_t opened = 0;
  std::uint64_t not_found = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t other = 0;
  std::string first_other;
  for (int i = 0; i < 3000; ++i) {
    try {
      auto seg = Segment::open(name);
      ++opened;
    } catch (const Error& e) {
      if (e.is(errc::not_found)) {
        ++not_found;
      } else if (e.is(errc::timeout)) {
        ++timed_out;
      } else if (other++ == 0) {
        first_other = e.what();
      }
    }
  }
  stop.store(1, std::memory_order_relaxed);
  EXPECT_EQ(exit_code(creator), 0);
  RecordProperty("opened", static_cast<int>(opened));
  RecordProperty("not_found", static_cast<int>(not_found));
  RecordProperty("timed_out", static_cast<int>(timed_out));
  EXPECT_EQ(other, 0u) << "opens that failed otherwise (" << opened << " opened, " << not_found
                       << " not_found, " << timed_out << " timeout); the first: " << first_other;
  EXPECT_GT(opened, 0u) << "no open ever found the segment: the race was not run";
}

// ---- 12(a). a consumer started before its producer -------------------------------------------

TEST_F(SegmentLifecycleTest, ConsumerStartedFirstOpensSegmentAndChannelOnceTheyAppear) {
  const std::string name = shm_name();
  auto consumer = Process::spawn([&] {
    auto seg = Segment::open_for(name, 5s);
    auto ch = Channel<std::string>::open_for(seg, "ch", 5s, Side::receiver);
    const auto v = ch.recv_for(5s);
    return v && *v == "hello" ? 0 : 1;
  });
  std::this_thread::sleep_for(300ms);  // the consumer is waiting for the name by now
  auto seg = Segment::create(name, kSize);
  std::this_thread::sleep_for(100ms);  // and then for the channel in it
  ChannelOptions options;
  options.capacity = 4096;
  auto ch = Channel<std::string>::create(seg, "ch", options, Side::sender);
  ch.send("hello");
  EXPECT_EQ(exit_code(consumer), 0)
      << "1: no message or a wrong one; " << Process::kExitException << ": open_for threw";
}

TEST_F(SegmentLifecycleTest, OpenForANameNeverCreatedIsNotFoundAtTheDeadline) {
  const Deadline segment_deadline = Deadline::after(200ms);
  EXPECT_EQ(error_of([&] { (void)Segment::open_until(shm_name(), segment_deadline); }),
            errc::not_found);
  EXPECT_TRUE(segment_deadline.expired()) << "gave up before the deadline";
  auto seg = Segment::anonymous(1 << 16);
  const Deadline channel_deadline = Deadline::after(200ms);
  EXPECT_EQ(
      error_of([&] { (void)Channel<std::string>::open_until(seg, "never", channel_deadline); }),
      errc::not_found);
  EXPECT_TRUE(channel_deadline.expired()) << "gave up before the deadline";
}

// ---- 12(b), (c). creators that die, stale segments ------------------------------------------

// A creator killed at a random moment of Segment::create leaves nothing or a stale segment;
// create with reclaim_stale then succeeds at once.
TEST_F(SegmentLifecycleTest, CreatorKilledDuringCreateLeavesNothingOrAStaleSegment) {
  const std::string name = shm_name();
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_us(0, 2000);
  int leftovers = 0;        // sized by the creator
  int empty_leftovers = 0;  // killed between shm_open and ftruncate
  for (int round = 0; round < 100; ++round) {
    const int delay = delay_us(rng);
    SCOPED_TRACE("round " + std::to_string(round) + ", killed after " + std::to_string(delay) +
                 " us");
    auto creator = Process::spawn([&] {
      auto seg = Segment::create(name, kSize);
      for (;;) ::pause();
    });
    std::this_thread::sleep_for(std::chrono::microseconds(delay));
    creator.kill(SIGKILL);
    ASSERT_TRUE(creator.wait().signaled());
    struct stat st {};
    if (::stat(("/dev/shm/" + name).c_str(), &st) == 0) {
      ++(st.st_size == 0 ? empty_leftovers : leftovers);
      EXPECT_TRUE(Segment::is_stale(name)) << "left: " << describe_entry(name);
    }
    const std::string left = describe_entry(name);
    EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize, {.reclaim_stale = true}); }),
              std::error_code{})
        << "left by the killed creator: " << left;
    (void)Segment::remove(name);
  }
  RecordProperty("leftovers", leftovers);
  RecordProperty("empty_leftovers", empty_leftovers);
}

TEST_F(SegmentLifecycleTest, RemoveStaleRemovesSegmentsOfDeadCreatorsOnly) {
  auto flags = Segment::anonymous(1 << 16);
  std::vector<std::string> dead_names;
  for (int i = 0; i < 3; ++i) {
    dead_names.push_back(shm_name());
    auto& created = flags.make<Flag>(0u);
    auto creator = Process::spawn([&] {
      auto seg = Segment::create(dead_names.back(), kSize);
      created.store(1, std::memory_order_release);
      for (;;) ::pause();
    });
    ASSERT_TRUE(eventually([&] { return created.load(std::memory_order_acquire) == 1; }));
    creator.kill(SIGKILL);
    ASSERT_TRUE(creator.wait().signaled());
    EXPECT_TRUE(Segment::is_stale(dead_names.back()));
  }
  const std::string live_name = shm_name();
  auto live = Segment::create(live_name, kSize);
  EXPECT_FALSE(Segment::is_stale(live_name));
  EXPECT_EQ(Segment::remove_stale(shm_prefix()), dead_names.size());
  for (const auto& n : dead_names) EXPECT_FALSE(shm_exists(n)) << n;
  EXPECT_TRUE(shm_exists(live_name));
  EXPECT_EQ(Segment::remove_stale(shm_prefix()), 0u);
}

// The creator dies but another process still has the segment open: it is not stale, and
// neither create(reclaim_stale) nor remove_stale() takes it away; once the opener is gone
// too, it is.
TEST_F(SegmentLifecycleTest, SegmentALiveOpenerUsesIsNeverStaleAfterItsCreatorDied) {
  const std::string name = shm_name();
  auto flags = Segment::anonymous(1 << 16);
  auto& created = flags.make<Flag>(0u);
  auto& opened = flags.make<Flag>(0u);
  auto creator = Process::spawn([&] {
    auto seg = Segment::create(name, kSize);
    (void)seg.construct<std::uint64_t>("v", 11u);
    created.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return created.load(std::memory_order_acquire) == 1; }));
  auto opener = Process::spawn([&] {
    auto seg = Segment::open(name);
    opened.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return opened.load(std::memory_order_acquire) == 1; }));
  creator.kill(SIGKILL);
  ASSERT_TRUE(creator.wait().signaled());

  EXPECT_FALSE(Segment::is_stale(name));
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize, {.reclaim_stale = true}); }),
            errc::already_exists);
  EXPECT_EQ(Segment::remove_stale(shm_prefix()), 0u);
  ASSERT_TRUE(shm_exists(name));
  {
    auto seg = Segment::open(name);  // still the opener's segment, value and all
    EXPECT_EQ(seg.find<std::uint64_t>("v"), 11u);
  }

  opener.kill(SIGKILL);
  ASSERT_TRUE(opener.wait().signaled());
  EXPECT_TRUE(Segment::is_stale(name));
  EXPECT_EQ(Segment::remove_stale(shm_prefix()), 1u);
  EXPECT_FALSE(shm_exists(name));
}

// ---- 12(e). racing open_or_create -----------------------------------------------------------

TEST_F(SegmentLifecycleTest, ProcessesRacingOpenOrCreateShareOneSegment) {
  auto flags = Segment::anonymous(1 << 16);
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string name = shm_name();
    auto& go = flags.make<Flag>(0u);
    auto& written = flags.make<Flag>(0u);
    auto& owners = flags.make<Flag>(0u);
    const auto token = [round](int i) {
      return 0xC0FFEE'0000'0000ULL + static_cast<std::uint64_t>(round * 2 + i);
    };
    auto kids = testing::spawn_n(2, [&](int i) {
      testing::wait_for_start(go);
      auto seg = Segment::open_or_create(name, 64 << 10);
      if (seg.owns_name()) owners.fetch_add(1);
      (void)seg.construct<std::uint64_t>("from-" + std::to_string(i), token(i));
      written.fetch_add(1, std::memory_order_release);
      // Neither leaves (and the owner unlinks) before both wrote.
      if (!eventually([&] { return written.load(std::memory_order_acquire) == 2; })) return 1;
      const auto other = seg.find_bytes("from-" + std::to_string(1 - i));
      if (!other) return 2;  // each has a segment of its own
      std::uint64_t v = 0;
      std::memcpy(&v, other->data(), sizeof v);
      return v == token(1 - i) ? 0 : 3;
    });
    go.store(1, std::memory_order_release);
    EXPECT_TRUE(testing::all_succeed(kids, 10s))
        << "2: the two processes ended up in different segments";
    EXPECT_EQ(owners.load(), 1u) << "exactly one of them created it";
    EXPECT_FALSE(shm_exists(name));
  }
}

// ---- 12(f). error texts -----------------------------------------------------------------

// True when what() repeats itself across a ": " (the message, then the condition's name
// again): "x: already exists: already exists", "the channel is closed: closed".
bool repeats_a_phrase(const std::string& what) {
  for (std::size_t at = what.find(": "); at != std::string::npos; at = what.find(": ", at + 1)) {
    const std::size_t from = at + 2;
    const std::size_t end = what.find(": ", from);
    const std::string phrase = what.substr(from, end == std::string::npos ? end : end - from);
    if (phrase.empty() || phrase.size() > at) continue;
    const std::size_t start = at - phrase.size();
    const bool word_start =
        start == 0 || !std::isalnum(static_cast<unsigned char>(what[start - 1]));
    if (word_start && what.compare(start, phrase.size(), phrase) == 0) return true;
  }
  return false;
}

template <class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

TEST_F(SegmentLifecycleTest, ErrorTextsNeverRepeatAPhrase) {
  ASSERT_TRUE(repeats_a_phrase("Segment::create(\"x\"): already exists: already exists"));
  ASSERT_TRUE(repeats_a_phrase("ByteRing::send: the channel is closed: closed"));
  ASSERT_FALSE(repeats_a_phrase("Segment::create(\"x\"): the name exists: already exists"));

  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  std::vector<std::string> texts;
  texts.push_back(what_of([&] { (void)Segment::create(name, kSize); }));
  texts.push_back(what_of([&] { (void)Segment::create(name, kSize, {.reclaim_stale = true}); }));
  texts.push_back(what_of([&] { (void)Segment::open(shm_name()); }));

  ChannelOptions options;
  options.capacity = 4096;
  auto ch = Channel<std::string>::create(seg, "ch", options);
  ch.close();
  texts.push_back(what_of([&] { ch.send("x"); }));
  texts.push_back(what_of([&] { (void)ch.try_send("x"); }));
  texts.push_back(what_of([&] { (void)ch.recv(); }));
  auto ring = ByteRing::create(seg, "ring", 4096);
  ring.close();
  texts.push_back(what_of([&] { (void)ring.try_send({}); }));
  auto q = SpscQueue<std::uint64_t>::create(seg, "q", 8);
  q.close();
  texts.push_back(what_of([&] { (void)q.try_push(1); }));
  texts.push_back(what_of([&] { (void)q.pop(); }));
  for (const auto& t : texts) {
    EXPECT_NE(t, "(nothing thrown)");
    EXPECT_FALSE(repeats_a_phrase(t)) << t;
  }
}

}  // namespace
}  // namespace ipckit
