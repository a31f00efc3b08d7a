// Scenarios on named segments themselves: a creator killed at a random point of
// Segment::create (what it leaves must be reclaimable, and is reclaimed, never something a
// live process uses), and a process killed (or, with lock_timeout, stopped) while it works
// the heap and directory under the segment's lock (nobody else may block on it for long).
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "ipckit/shm/segment.hpp"
#include "scenarios.hpp"

namespace ipckit::chaos {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::size_t kSize = 1 << 16;

struct Board {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint64_t> ops{0};
  Party victim;
};

// The creator is killed somewhere inside Segment::create (or after it). A fresh create with
// reclaim_stale must then succeed at once, and nothing may be left over.
void creator_killed(Ctx& ctx, Board& b) {
  Row& row = *ctx.row;
  const std::string name = ctx.segment_name();
  const int sig = ctx.random_signal();
  auto kid = Process::spawn([&b, name] {
    b.victim.pid.store(::getpid());
    b.ready.store(1);
    wait_for_go(b.go);
    auto seg = Segment::create(name, kSize);
    for (std::uint64_t i = 0;; ++i) {  // then works the heap until killed
      void* p = seg.allocate(64 + i % 512);
      seg.deallocate(p);
      b.ops.fetch_add(1);
    }
    return 0;
  });
  if (!poll_until([&] { return b.ready.load() == 1; })) {
    kid.kill(SIGKILL);
    return row.fail(row.hangs, ctx.where() + ": the creator never got ready");
  }
  b.go.store(1);
  sleep_for(ctx.kill_delay(1'500));
  kid.kill(sig);
  const auto st = wait_or_kill(kid, now_ns() + 5000 * kMs);
  if (st && st->signaled() && st->value == sig) {
    row.count_kill(sig);
  } else {
    ++row.no_kill;
  }
  const std::int64_t t0 = now_ns();
  try {
    SegmentOptions o;
    o.reclaim_stale = true;
    auto again = Segment::create(name, kSize, o);
    void* p = again.allocate(100);
    again.deallocate(p);
    ++row.tasks;
  } catch (const Error& e) {
    row.fail(row.failures,
             ctx.where() + ": create with reclaim_stale after the creator died: " + e.what());
  }
  row.latency(now_ns() - t0);
  Segment::remove(name);  // in case the create above failed (it unlinks its own)
}

// Two lockers work one named segment's heap and directory; one is killed at random (possibly
// holding the lock, possibly mid-change). The survivor must keep going: every call returns,
// or fails with bad_layout (the victim died changing the heap) - never a hang.
void locker_killed(Ctx& ctx, Board& b) {
  Row& row = *ctx.row;
  const std::string name = ctx.segment_name();
  auto seg = Segment::create(name, kSize);
  const int sig = ctx.random_signal();
  const auto work = [&b, name](bool victim) {
    auto s = Segment::open(name);
    if (victim) b.victim.pid.store(::getpid());
    b.ready.fetch_add(1);
    wait_for_go(b.go);
    const std::string mine = victim ? "v" : "s";
    try {
      for (std::uint64_t i = 0; i < (victim ? UINT64_MAX : 2000); ++i) {
        const std::string key = mine + std::to_string(i % 8);
        if (!s.find_bytes(key)) (void)s.construct_bytes(key, 32 + i % 200, 8);
        if (i % 3 == 0) s.destroy_bytes(key);
        s.deallocate(s.allocate(16 + i % 300));
        b.ops.fetch_add(1);
      }
    } catch (const Error& e) {
      return e.is(errc::bad_layout) ? 3 : 2;
    }
    return 0;
  };
  auto victim = Process::spawn([&] { return work(true); });
  auto survivor = Process::spawn([&] { return work(false); });
  if (!poll_until([&] { return b.ready.load() == 2; })) {
    victim.kill(SIGKILL);
    survivor.kill(SIGKILL);
    return row.fail(row.hangs, ctx.where() + ": the lockers never got ready");
  }
  b.go.store(1);
  sleep_for(ctx.kill_delay(3'000));
  const std::int64_t kill_ns = now_ns();
  victim.kill(sig);
  const auto vst = wait_or_kill(victim, now_ns() + 5000 * kMs);
  if (vst && vst->signaled() && vst->value == sig) {
    row.count_kill(sig);
  } else {
    ++row.no_kill;
  }
  const auto st = wait_or_kill(survivor, kill_ns + 10'000 * kMs);
  if (!st) {
    return row.fail(row.hangs,
                    ctx.where() + ": the surviving locker blocked (" + last_hang_info() + ")");
  }
  if (st->exited() && st->value == 3) {
    ++row.reported_lost;  // the heap was marked broken (the victim died changing it)
  } else if (!st->success()) {
    row.fail(row.failures, ctx.where() + ": the surviving locker " + st->describe());
  }
  row.tasks += b.ops.load();
  // The last word: the creator's own handle answers too (or reports the broken heap).
  try {
    (void)seg.find_bytes("s0");
  } catch (const Error& e) {
    if (!e.is(errc::bad_layout)) row.fail(row.failures, ctx.where() + ": " + e.what());
  }
}

}  // namespace

void segment_scenario(Ctx& ctx) {
  auto mem = Segment::anonymous(1 << 16);
  Board& b = mem.make<Board>();
  if (ctx.chance(0.5)) {
    creator_killed(ctx, b);
  } else {
    locker_killed(ctx, b);
  }
}

}  // namespace ipckit::chaos
