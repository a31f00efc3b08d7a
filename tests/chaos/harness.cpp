#include "harness.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "ipckit/pool/errors.hpp"
#include "proc_scan.hpp"

namespace ipckit::chaos {

std::string planted;

int signal_index(int sig) noexcept {
  for (std::size_t i = 0; i < kSignals.size(); ++i) {
    if (kSignals[i] == sig) return static_cast<int>(i);
  }
  return 0;
}

void Row::fail(std::uint64_t& counter, std::string note) {
  ++counter;
  if (notes.size() < 8) notes.push_back(std::move(note));
}

std::string Ctx::segment_name() const {
  static int counter = 0;
  return run_prefix() + "-" + std::to_string(counter++);
}

std::chrono::microseconds Ctx::kill_delay(std::uint64_t max_us) {
  // A third at once (the victim has barely started), the rest spread over the range.
  if (chance(1.0 / 3)) return std::chrono::microseconds(uniform(0, 200));
  return std::chrono::microseconds(uniform(0, max_us));
}

std::string Ctx::where() const {
  return "iteration " + std::to_string(iteration) + " (iteration seed " + std::to_string(seed) +
         ")";
}

std::int64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

const char* outcome_name(std::int32_t o) noexcept {
  switch (o) {
    case kRunning: return "running";
    case kReturned: return "returned";
    case kPeerDead: return "peer_dead";
    case kClosed: return "closed";
    case kBadFrame: return "bad_frame";
    case kBroken: return "barrier_broken";
    case kWorkerLost: return "worker_lost";
    default: return "other error";
  }
}

std::int32_t outcome_of(const Error& e) noexcept {
  if (e.is(errc::peer_dead)) return kPeerDead;
  if (e.is(errc::closed)) return kClosed;
  if (e.is(errc::bad_frame)) return kBadFrame;
  if (e.is(errc::barrier_broken)) return kBroken;
  if (e.is(errc::worker_lost)) return kWorkerLost;
  return kOtherError;
}

void Party::finish(std::int32_t o, const char* what) noexcept {
  end_ns.store(now_ns(), std::memory_order_relaxed);
  if (what) {
    std::strncpy(error, what, sizeof error - 1);
  }
  outcome.store(o, std::memory_order_release);
}

void SelfRaise::maybe(std::int32_t my_role, std::uint64_t index, std::int32_t here) noexcept {
  if (role.load(std::memory_order_relaxed) == my_role &&
      at.load(std::memory_order_relaxed) == index &&
      point.load(std::memory_order_relaxed) == here) {
    now();
  }
}

void SelfRaise::now() noexcept {
  const int s = sig.load(std::memory_order_relaxed);
  raised_ns.store(now_ns(), std::memory_order_release);
  ::raise(s);
  ::_exit(99);  // not reached: the signal's default action ends the process
}

std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::size_t message_size(std::uint64_t seed, std::uint64_t seq, std::size_t max) noexcept {
  const std::uint64_t r = mix64(seed ^ (seq * 0x9e3779b97f4a7c15ULL));
  std::size_t hi = 0;
  switch (r & 7) {
    case 0: return kMsgHeader;  // header only
    case 1: return max;         // the largest
    case 2:
    case 3: hi = max; break;  // anything, mostly large
    default: hi = std::min<std::size_t>(max, 512); break;
  }
  return kMsgHeader + static_cast<std::size_t>((r >> 8) % (hi - kMsgHeader + 1));
}

namespace {

std::uint64_t body_word(std::uint64_t key, std::size_t i) noexcept { return mix64(key + i); }

// Over the body: a cheap hash that depends on every byte and its place.
std::uint64_t checksum(std::span<const std::byte> body) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  std::size_t i = 0;
  for (; i + 8 <= body.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, body.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < body.size(); ++i) h = (h ^ static_cast<std::uint8_t>(body[i])) * 0x100000001b3ULL;
  return h;
}

}  // namespace

void fill_message(std::span<std::byte> out, std::uint64_t seed, std::uint64_t seq,
                  std::optional<std::size_t> partial) noexcept {
  const std::size_t n = out.size();
  const std::size_t upto = partial ? std::min(*partial, n) : n;
  const std::uint64_t key = mix64(seed ^ seq);
  // The body first (the header's checksum covers it), in the ring's memory directly.
  std::byte* body = out.data() + kMsgHeader;
  const std::size_t body_n = n - kMsgHeader;
  const std::size_t body_upto = upto > kMsgHeader ? upto - kMsgHeader : 0;
  std::size_t i = 0;
  for (; i + 8 <= body_upto; i += 8) {
    const std::uint64_t w = body_word(key, i / 8);
    std::memcpy(body + i, &w, 8);
  }
  for (; i < body_upto; ++i) body[i] = static_cast<std::byte>(body_word(key, i / 8) >> (i % 8 * 8));
  if (partial) return;
  const std::uint64_t header[3] = {seq, n, checksum({body, body_n})};
  std::memcpy(out.data(), header, kMsgHeader);
}

void Ledger::check(std::span<const std::byte> msg, std::uint64_t seed,
                   const SizeRule& sizes) noexcept {
  const std::uint64_t expected = received.load(std::memory_order_relaxed);
  if (msg.size() < kMsgHeader) {
    corrupt.fetch_add(1, std::memory_order_relaxed);
    received.store(expected + 1, std::memory_order_release);
    return;
  }
  std::uint64_t header[3];
  std::memcpy(header, msg.data(), kMsgHeader);
  const std::uint64_t seq = header[0];
  // Read after the message: the producer raised `attempted` before it began the message.
  if (seq >= attempted.load(std::memory_order_acquire)) {
    phantoms.fetch_add(1, std::memory_order_relaxed);
  } else if (header[1] != msg.size() || msg.size() != sizes.of(seed, seq) ||
             header[2] != checksum(msg.subspan(kMsgHeader))) {
    corrupt.fetch_add(1, std::memory_order_relaxed);
  }
  if (seq < expected) {
    duplicates.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (seq > expected) gaps.fetch_add(seq - expected, std::memory_order_relaxed);
  received.store(seq + 1, std::memory_order_release);
}

std::string Ledger::describe() const {
  return "attempted " + std::to_string(attempted.load()) + ", acked " +
         std::to_string(acked.load()) + ", received " + std::to_string(received.load()) +
         ", duplicates " + std::to_string(duplicates.load()) + ", gaps " +
         std::to_string(gaps.load()) + ", corrupt " + std::to_string(corrupt.load()) +
         ", phantoms " + std::to_string(phantoms.load());
}

namespace {
std::string hang_info;

// What a hung process is doing: its state, the system call it is in, where in the kernel.
std::string describe_blocked(pid_t pid) {
  std::string out = "state ";
  out += testing::process_state(pid);
  for (const char* what : {"syscall", "wchan"}) {
    const std::string path = "/proc/" + std::to_string(pid) + "/" + what;
    if (FILE* f = std::fopen(path.c_str(), "re")) {
      char buf[256] = {};
      const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      std::string s(buf, n);
      while (!s.empty() && s.back() == '\n') s.pop_back();
      out += std::string(", ") + what + " " + s;
    }
  }
  return out;
}
}  // namespace

const std::string& last_hang_info() { return hang_info; }

std::optional<ExitStatus> wait_or_kill(Process& p, std::int64_t deadline_ns) {
  const std::int64_t left = std::max<std::int64_t>(deadline_ns - now_ns(), 0);
  if (auto st = p.wait_for(std::chrono::nanoseconds(left))) return st;
  hang_info = describe_blocked(p.pid());
  p.kill(SIGKILL);
  p.wait();
  return std::nullopt;
}

void wait_for_go(const std::atomic<std::uint32_t>& go) noexcept {
  while (go.load(std::memory_order_acquire) == 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

void sleep_for(std::chrono::microseconds d) noexcept {
  if (d.count() > 0) std::this_thread::sleep_for(d);
}

bool process_gone(pid_t pid) noexcept {
  const char s = testing::process_state(pid);
  return s == 0 || s == 'Z' || s == 'X';
}

void make_signals_fatal() noexcept {
  for (int s : {SIGSEGV, SIGABRT, SIGBUS}) ::signal(s, SIG_DFL);
  const rlimit none{0, 0};
  (void)::setrlimit(RLIMIT_CORE, &none);
  // Orphaned grandchildren (a killed pool's workers) come to us: a leak shows as our child.
  (void)::prctl(PR_SET_CHILD_SUBREAPER, 1);
}

const std::string& run_prefix() {
  static const std::string prefix = "ipckit-chaos-" + std::to_string(::getpid());
  return prefix;
}

std::set<std::string> watched_shm_entries() {
  std::set<std::string> out;
  for (const auto& n : testing::shm_entries("ipckit")) {
    if (!n.starts_with("ipckit-test-")) out.insert(n);
  }
  return out;
}

LeakGuard::LeakGuard() : fds_(testing::open_fds()), shm_(watched_shm_entries()) {}

void LeakGuard::check(Row& row, const Ctx& ctx) {
  // Children: zombies are orphans that died (reaped here); a live one gets a grace period.
  std::set<pid_t> alive;
  const std::int64_t grace_end = now_ns() + 1'000'000'000;
  for (;;) {
    alive.clear();
    for (pid_t k : testing::child_pids()) {
      if (process_gone(k)) {
        ::waitpid(k, nullptr, WNOHANG);
      } else {
        alive.insert(k);
      }
    }
    if (alive.empty() || now_ns() > grace_end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (pid_t k : alive) {
    row.fail(row.leaks, ctx.where() + ": child process " + std::to_string(k) + " left running");
    ::kill(k, SIGKILL);
    ::waitpid(k, nullptr, 0);
  }
  for (int fd : testing::open_fds()) {
    if (!fds_.count(fd)) {
      row.fail(row.leaks, ctx.where() + ": file descriptor " + std::to_string(fd) + " left open");
      ::close(fd);
    }
  }
  for (const auto& n : watched_shm_entries()) {
    if (!shm_.count(n)) {
      row.fail(row.leaks, ctx.where() + ": /dev/shm/" + n + " left behind");
      ::unlink(("/dev/shm/" + n).c_str());
    }
  }
}

}  // namespace ipckit::chaos
