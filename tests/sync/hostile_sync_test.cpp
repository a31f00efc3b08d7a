// Barrier and Semaphore in shared memory whose words a peer rewrote: a garbage party count
// is errc::bad_layout, and a garbage wait policy neither stops a waiter from noticing a dead
// party nor from honouring its deadline. Never a crash, never an endless wait.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/semaphore.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using Flag = std::atomic<std::uint32_t>;
using HostileSyncTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;

// Exit codes a child reports for how its call ended.
enum Outcome : int {
  kPassed = 10,     // returned (a barrier phase completed, a semaphore unit was taken)
  kBroken = 11,     // errc::barrier_broken
  kTimeout = 12,    // errc::timeout, or a timed wait that returned false
  kBadLayout = 13,  // errc::bad_layout
  kOtherError = 14,
};

template <class F>
int outcome_of(F&& f) {
  try {
    if constexpr (std::is_same_v<std::invoke_result_t<F&>, bool>) {
      return f() ? kPassed : kTimeout;
    } else {
      f();
      return kPassed;
    }
  } catch (const Error& e) {
    if (e.is(errc::barrier_broken)) return kBroken;
    if (e.is(errc::timeout)) return kTimeout;
    if (e.is(errc::bad_layout)) return kBadLayout;
    std::fprintf(stderr, "unexpected error: %s\n", e.what());
    return kOtherError;
  }
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

// Runs `write` in a peer process that shares the memory, and waits for it.
template <class Write>
void as_peer(Write&& write) {
  auto peer = Process::spawn([&] { write(); });
  ASSERT_EQ(exit_code(peer), 0) << "the scribbling peer itself failed";
}

// Offsets of the 8-byte-aligned words of `object` equal to `value`.
std::vector<std::size_t> offsets_of(const void* object, std::size_t size, std::int64_t value) {
  std::vector<std::size_t> at;
  for (std::size_t off = 0; off + 8 <= size; off += 8) {
    std::int64_t w = 0;
    std::memcpy(&w, static_cast<const std::byte*>(object) + off, 8);
    if (w == value) at.push_back(off);
  }
  return at;
}

// A policy with values found nowhere else in the object, so that its words can be located.
constexpr std::int64_t kMarkerSpinNs = 31'337;
constexpr std::int64_t kMarkerCheckMs = 4'242;
constexpr WaitPolicy kMarkerPolicy{std::chrono::nanoseconds{kMarkerSpinNs}, true,
                                   std::chrono::milliseconds{kMarkerCheckMs}};

// Where the WaitPolicy made with kMarkerPolicy lies inside `object` (checked).
std::size_t policy_offset(const void* object, std::size_t size) {
  const auto spin = offsets_of(object, size, kMarkerSpinNs);
  const auto check = offsets_of(object, size, kMarkerCheckMs);
  EXPECT_EQ(spin.size(), 1u);
  EXPECT_EQ(check.size(), 1u);
  if (spin.size() != 1 || check.size() != 1) return SIZE_MAX;
  const std::size_t at = spin.front() - offsetof(WaitPolicy, spin);
  EXPECT_EQ(check.front(), at + offsetof(WaitPolicy, check_interval));
  return check.front() == at + offsetof(WaitPolicy, check_interval) ? at : SIZE_MAX;
}

// The garbage a peer writes over a WaitPolicy.
struct GarbagePolicy {
  const char* name;
  std::int64_t spin_ns;
  unsigned char sleep;  // the bool's byte
  std::int64_t check_ms;
};
void PrintTo(const GarbagePolicy& g, std::ostream* os) { *os << g.name; }

void write_policy(std::byte* policy, const GarbagePolicy& g) {
  std::memcpy(policy + offsetof(WaitPolicy, spin), &g.spin_ns, 8);
  std::memcpy(policy + offsetof(WaitPolicy, sleep), &g.sleep, 1);
  std::memcpy(policy + offsetof(WaitPolicy, check_interval), &g.check_ms, 8);
}

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

class GarbagePolicyTest : public testing::LeakCheckedTest,
                          public ::testing::WithParamInterface<GarbagePolicy> {};

INSTANTIATE_TEST_SUITE_P(HostileSync, GarbagePolicyTest,
                         ::testing::Values(GarbagePolicy{"huge", kMax, 1, kMax},
                                           GarbagePolicy{"huge_spin_only", kMax, 0, kMax},
                                           GarbagePolicy{"negative", kMin, 0xff, kMin},
                                           GarbagePolicy{"zero_interval", 0, 2, 0}),
                         [](const ::testing::TestParamInfo<GarbagePolicy>& info) {
                           return std::string(info.param.name);
                         });

// ---- Barrier ------------------------------------------------------------------------------

constexpr std::uint32_t kBarrierMagic = 0x49424131;  // "IBA1": the Barrier's first word
constexpr std::size_t kPartiesOffset = 4;            // the party count follows it

TEST_F(HostileSyncTest, BarrierPartyCountAPeerOverwroteIsBadLayoutForEveryCall) {
  for (const std::uint32_t garbage : {0xFFFF'FFFFu, 0u, Barrier::kMaxParties + 1}) {
    SCOPED_TRACE("party count " + std::to_string(garbage));
    auto seg = Segment::anonymous(1 << 16);
    auto& barrier = seg.make<Barrier>(3u);
    auto* raw = reinterpret_cast<std::byte*>(&barrier);
    std::uint32_t magic = 0;
    std::uint32_t parties = 0;
    std::memcpy(&magic, raw, 4);
    std::memcpy(&parties, raw + kPartiesOffset, 4);
    ASSERT_EQ(magic, kBarrierMagic);
    ASSERT_EQ(parties, 3u);
    as_peer([&] {
      __atomic_store_n(reinterpret_cast<std::uint32_t*>(raw + kPartiesOffset), garbage,
                       __ATOMIC_RELEASE);
    });
    auto waiter =
        Process::spawn([&] { return outcome_of([&] { (void)barrier.arrive_and_wait_for(1s); }); });
    EXPECT_EQ(exit_code(waiter), kBadLayout) << "negative: killed by that signal";
    auto attacher = Process::spawn([&] { return outcome_of([&] { barrier.attach(); }); });
    EXPECT_EQ(exit_code(attacher), kBadLayout) << "negative: killed by that signal";
    EXPECT_EQ(error_of([&] { (void)barrier.parties(); }), errc::bad_layout);
  }
}

// An attached party is killed while another waits, after a peer wrote garbage over the
// barrier's wait policy: the waiter still learns of the death (the interval between its
// liveness checks is clamped), and gets barrier_broken.
TEST_P(GarbagePolicyTest, BarrierWaiterStillNoticesADeadParty) {
  auto seg = Segment::anonymous(1 << 16);
  auto& barrier = seg.make<Barrier>(2u, kMarkerPolicy);
  const std::size_t at = policy_offset(&barrier, sizeof(Barrier));
  ASSERT_NE(at, SIZE_MAX);
  auto* policy = reinterpret_cast<std::byte*>(&barrier) + at;
  auto& attached = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto victim = Process::spawn([&] {
    barrier.attach();
    attached.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return attached.load(std::memory_order_acquire) == 1; }));
  as_peer([&] { write_policy(policy, GetParam()); });
  auto waiter = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { (void)barrier.arrive_and_wait_for(60s); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);  // most likely inside arrive_and_wait now; either is fine
  victim.kill(SIGKILL);
  EXPECT_TRUE(victim.wait().signaled());
  EXPECT_EQ(exit_code(waiter, 10s), kBroken) << "-1000: the waiter never noticed the death";
}

// ---- Semaphore ----------------------------------------------------------------------------

// A garbage wait policy in a semaphore: a timed wait still ends at its deadline, and a post
// from another process still wakes a waiter.
TEST_P(GarbagePolicyTest, SemaphoreWaiterStillHonoursItsDeadlineAndWakesOnPost) {
  auto seg = Segment::anonymous(1 << 16);
  auto& sem = seg.make<Semaphore>(0u, kMarkerPolicy);
  const std::size_t at = policy_offset(&sem, sizeof(Semaphore));
  ASSERT_NE(at, SIZE_MAX);
  auto* policy = reinterpret_cast<std::byte*>(&sem) + at;
  as_peer([&] { write_policy(policy, GetParam()); });

  auto impatient = Process::spawn([&] { return outcome_of([&] { return sem.wait_for(100ms); }); });
  EXPECT_EQ(exit_code(impatient, 10s), kTimeout) << "-1000: the wait outlived its deadline";

  auto& waiting = seg.make<Flag>(0u);
  auto waiter = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return sem.wait_for(60s); });
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);  // most likely waiting now; either is fine
  auto poster = Process::spawn([&] { sem.post(); });
  EXPECT_EQ(exit_code(poster), 0);
  EXPECT_EQ(exit_code(waiter, 10s), kPassed) << "-1000: the post never woke the waiter";
  EXPECT_EQ(sem.value(), 0u);
}

}  // namespace
}  // namespace ipckit
