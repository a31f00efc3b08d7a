// Helpers for the channel tests: how a child reports how a channel call ended (its exit
// code), message counts scaled down under the sanitizers, and messages whose size and bytes
// follow from their sequence number, so that a consumer in another process can check every
// message it gets without being told what was sent.
#pragma once

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include <thread>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "test_util.hpp"

namespace ipckit::testing {

// Message counts of the stress tests are divided by this in the sanitizer build, which runs
// the same tests several times slower.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr std::uint64_t kStressDivisor = 8;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr std::uint64_t kStressDivisor = 8;
#else
inline constexpr std::uint64_t kStressDivisor = 1;
#endif
#else
inline constexpr std::uint64_t kStressDivisor = 1;
#endif

constexpr std::uint64_t scaled(std::uint64_t n) noexcept {
  return std::max<std::uint64_t>(n / kStressDivisor, 1);
}

// splitmix64: a cheap, well-mixed function of a counter.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Exit codes a child reports for how a channel call ended.
enum Outcome : int {
  kReturned = 10,  // the call succeeded (or returned true)
  kTimedOut = 11,  // a _for/_until call returned false / nullopt
  kClosed = 12,    // errc::closed
  kPeerDead = 13,  // errc::peer_dead
  kBadFrame = 14,  // errc::bad_frame
  kOtherError = 15,
};

template <class F>
int outcome_of(F&& f) {
  try {
    if constexpr (std::is_same_v<std::invoke_result_t<F&>, bool>) {
      return f() ? kReturned : kTimedOut;
    } else {
      f();
      return kReturned;
    }
  } catch (const Error& e) {
    if (e.is(errc::closed)) return kClosed;
    if (e.is(errc::peer_dead)) return kPeerDead;
    if (e.is(errc::bad_frame)) return kBadFrame;
    return kOtherError;
  }
}

// Waits for `p` (the limit is generous: it only turns a hang into a failure) and returns its
// exit code, -signal when it was killed, or -1000 when it hung (it is then killed).
inline int exit_code(Process& p, std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto st = p.wait_for(limit);
  if (!st) {
    p.kill(SIGKILL);
    p.wait();
    return -1000;
  }
  return st->exited() ? st->value : -st->value;
}

// Messages of pseudo-random size in [0, max_size] whose bytes are a window of a fixed random
// pattern; both size and window follow from the sequence number and the seed. About one in
// sixteen messages is empty and one in sixteen has the largest size.
class Payloads {
 public:
  Payloads(std::size_t max_size, std::uint64_t seed) : max_(max_size), seed_(seed) {
    pattern_.resize((kPeriod + max_size + 7) / 8 * 8);  // whole 8-byte words
    for (std::size_t i = 0; i < pattern_.size(); i += 8) {
      const std::uint64_t w = mix64(seed ^ (i * 0x51ed27u));
      std::memcpy(pattern_.data() + i, &w, 8);
    }
  }

  [[nodiscard]] std::size_t max_size() const noexcept { return max_; }
  [[nodiscard]] std::size_t size_of(std::uint64_t seq) const noexcept {
    const std::uint64_t r = mix64(seed_ + seq);
    switch (r & 15) {
      case 0: return 0;
      case 1: return max_;
      default: return static_cast<std::size_t>((r >> 4) % (max_ + 1));
    }
  }
  // The bytes of message `seq`.
  [[nodiscard]] std::span<const std::byte> of(std::uint64_t seq) const noexcept {
    const std::size_t at = static_cast<std::size_t>(mix64(~seed_ ^ seq) % kPeriod);
    return {pattern_.data() + at, size_of(seq)};
  }
  [[nodiscard]] bool matches(std::uint64_t seq, std::span<const std::byte> got) const noexcept {
    const auto want = of(seq);
    return got.size() == want.size() &&
           (want.empty() || std::memcmp(got.data(), want.data(), want.size()) == 0);
  }

 private:
  static constexpr std::size_t kPeriod = 8191;
  std::size_t max_;
  std::uint64_t seed_;
  std::vector<std::byte> pattern_;
};

// A flag in shared memory that a child raises and the parent waits for.
using Flag = std::atomic<std::uint32_t>;

// The peer-death scenario every channel is tested with: a child runs `attach()` (it joins
// one side of the channel) and then idles; a second child runs `blocked()`, a call that
// waits for that side (a bool-returning call with a long deadline, or a void one). Once the
// waiter is in its call, the first child is killed with SIGKILL. Returns the waiter's
// Outcome (kPeerDead is what the tests expect), -1000 if either child hung.
template <class Attach, class Blocked>
int outcome_when_peer_is_killed(Attach&& attach, Blocked&& blocked) {
  auto seg = Segment::anonymous(1 << 16);
  auto& attached = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto peer = Process::spawn([&] {
    attach();
    attached.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  if (!eventually([&] { return attached.load(std::memory_order_acquire) == 1; })) return -1000;
  auto waiter = Process::spawn([&] {
    waiting.store(1, std::memory_order_release);
    return outcome_of(blocked);
  });
  if (!eventually([&] { return waiting.load(std::memory_order_acquire) == 1; })) return -1000;
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // most likely asleep by now
  peer.kill(SIGKILL);
  const int code = exit_code(waiter);
  return peer.wait().signaled() ? code : -1000;
}

}  // namespace ipckit::testing
