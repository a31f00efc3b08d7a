// Figures for the channel layer beside its anchors, all between two processes (parent pinned
// to CPU 0, a forked partner pinned to CPU 1) and all in this one binary:
//  - BM_RTT/<transport>/<mode>/<bytes>: round trips; every round is timed with the TSC and
//    the counters carry median, p99, p99.9 and max of that repetition, and the spin and
//    futex floors timed with the same partner in slices between its rounds.
//  - BM_Throughput/<transport>/<mode>/<bytes>: one way, the parent produces and the child
//    consumes; the clock stops when the child has consumed the last message.
//  - BM_IdleCPU/<transport>/<mode>: CPU a receiver burns blocked 0.5 s on an empty channel.
//  - BM_ZeroCopyLatency, BM_MemWrite, BM_MemCopy: what a 4 MiB message costs in place, and
//    the cost of writing 4 MiB once, which bounds it from below.
// Anchors: a raw cache-line spin ping-pong and a raw futex ping-pong (the floors), POSIX
// pipes, a Unix socketpair, Boost.Interprocess message_queue and boost::lockfree::spsc_queue
// in shared memory. Every child runs exactly as many rounds as its parent; the parent reaps
// it (Process kills it if the parent throws), and the message queues are unlinked as soon as
// both ends exist, so a run leaves no process and nothing in /dev/shm.
// Over 600 lines: every channel figure and its anchors in one binary, so that they are
// measured in one run on the same pinned CPUs.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench_util.hpp"
#include "ipckit/channel/boost_queue.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/socket_channel.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"

namespace {

namespace bip = boost::interprocess;
using benchmark::IterationCount;
using ipckit::ByteRing;
using ipckit::Channel;
using ipckit::ChannelOptions;
using ipckit::Process;
using ipckit::UniqueFd;
using ipckit::WaitMode;
using ipckit::WaitPolicy;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kLine = 64;
const auto kNever = ipckit::Deadline::never();

// ---- plumbing --------------------------------------------------------------------------

// A MAP_SHARED|MAP_ANONYMOUS mapping, faulted in at once, shared with children forked later.
class SharedMemory {
 public:
  explicit SharedMemory(std::size_t bytes) : size_(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
    data_ = static_cast<std::byte*>(p);
  }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  ~SharedMemory() { ::munmap(data_, size_); }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  // Objects made here are never destroyed: they are trivially destructible or own nothing
  // outside the mapping.
  template <class T, class... Args>
  T& make(std::size_t offset, Args&&... args) {
    return *::new (data_ + offset) T(std::forward<Args>(args)...);
  }

 private:
  std::size_t size_;
  std::byte* data_;
};

// Start/stop handshake between the parent and its partner, and the idle figures.
struct Control {
  alignas(kLine) std::atomic<std::uint32_t> ready{0};
  alignas(kLine) std::atomic<std::uint32_t> done{0};
  alignas(kLine) double cpu_s = 0;
  double wall_s = 0;
  long switches = 0;
};

void spin_until_set(const std::atomic<std::uint32_t>& flag) {
  while (flag.load(std::memory_order_acquire) == 0) ipckit::cpu_relax();
}

// Writes every byte of a payload, as a producer building its message in place does.
void write_payload(std::byte* p, std::size_t n, IterationCount i) {
  std::memset(p, static_cast<int>(i & 0x7f) + 1, n);
}
// Reads one word per cache line, as a consumer that looks at the whole message does.
std::uint64_t read_payload(const std::byte* p, std::size_t n) {
  std::uint64_t sum = 0;
  for (std::size_t off = 0; off + 8 <= n; off += kLine) {
    std::uint64_t w;
    std::memcpy(&w, p + off, 8);
    sum += w;
  }
  if (n < 8 && n > 0) sum += static_cast<std::uint64_t>(p[0]);
  return sum;
}

void write_all(int fd, const std::byte* p, std::size_t n) {
  while (n != 0) {
    const ssize_t r = ::write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write");
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}
void read_all(int fd, std::byte* p, std::size_t n) {
  while (n != 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "read");
    }
    if (r == 0) throw std::runtime_error("read: unexpected end of stream");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fd[2];
  if (::pipe(fd) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  return {UniqueFd(fd[0]), UniqueFd(fd[1])};
}
std::pair<UniqueFd, UniqueFd> make_socketpair() {
  int fd[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fd) != 0) {
    throw std::system_error(errno, std::generic_category(), "socketpair");
  }
  return {UniqueFd(fd[0]), UniqueFd(fd[1])};
}

// A Boost message_queue whose name is unlinked as soon as it is made: the mapping lives on
// in this process and the children it forks, /dev/shm keeps nothing.
std::unique_ptr<bip::message_queue> anonymous_message_queue(std::size_t max_msgs,
                                                            std::size_t msg_size) {
  static int serial = 0;
  const std::string name =
      "ipckit-bench-mq-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  bip::message_queue::remove(name.c_str());
  auto q = std::make_unique<bip::message_queue>(bip::create_only, name.c_str(), max_msgs, msg_size);
  bip::message_queue::remove(name.c_str());
  return q;
}

template <std::size_t N>
struct Msg {
  std::array<std::byte, N> b;
};

using Bytes = std::vector<std::byte>;

struct Point {
  std::string transport;
  std::string mode;
  std::size_t bytes;
};

std::string label_of(const Point& p) {
  return "transport=" + p.transport + " mode=" + p.mode + " bytes=" + std::to_string(p.bytes);
}

void check_child(benchmark::State& state, Process& child) {
  const ipckit::ExitStatus st = child.wait();
  if (!st.success()) state.SkipWithError(("partner " + st.describe()).c_str());
}

// A partner that fails would leave its parent spinning or blocked for ever (a raw spin loop,
// a Boost condition variable): end the whole run at once instead. Children die with us
// through their parent-death signal. Partners that exit with 0 are reaped by Process.
extern "C" void on_child_exit(int) {
  siginfo_t info{};
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
  if (info.si_code == CLD_EXITED && info.si_status == 0) return;
  static const char msg[] = "channel_bench: a partner process failed; stopping the run\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(3);
}

void stop_when_a_partner_fails() {
  struct sigaction sa {};
  sa.sa_handler = on_child_exit;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGCHLD, &sa, nullptr);
}

// ---- harnesses ---------------------------------------------------------------------------

// The floors again, inside every round-trip benchmark, with the same partner, in short
// slices between tenths of its timed rounds (and before and after them). On this VM both
// floors move during a run: the host moves the vCPUs (a line round trip is ~70 ns or
// ~350 ns), and the guest's haltpoll cpuidle governor learns to poll after a series of
// short sleeps (a futex round trip is then ~0.4 us instead of ~30-60 us, the cost of the
// host waking a halted vCPU). Slices spread over the benchmark sample the same states as
// its own rounds; counters x_floor_spin and x_floor_futex set the figure beside them.
struct Floors {
  alignas(kLine) std::atomic<std::uint64_t> line{0};
  alignas(kLine) std::atomic<std::uint32_t> ping{0};
  alignas(kLine) std::atomic<std::uint32_t> pong{0};
};

class FloorProbe {
 public:
  static constexpr int kSlices = 10;  // the timed rounds are cut into this many parts
  static constexpr int kSpinRounds = 500;
  static constexpr int kFutexRounds = 20;

  explicit FloorProbe(Floors& f) noexcept : f_(f) {}

  // Parent: times one slice of rounds, appending TSC samples.
  void measure(std::vector<std::uint64_t>& spin, std::vector<std::uint64_t>& futex) {
    std::uint64_t prev = bench::ticks();
    for (int k = 0; k < kSpinRounds; ++k) {
      ++line_;
      f_.line.store(2 * line_ - 1, std::memory_order_release);
      while (f_.line.load(std::memory_order_acquire) != 2 * line_) ipckit::cpu_relax();
      const std::uint64_t now = bench::ticks();
      spin.push_back(now - prev);
      prev = now;
    }
    prev = bench::ticks();
    for (int k = 0; k < kFutexRounds; ++k) {
      ++word_;
      f_.ping.store(word_, std::memory_order_release);
      ipckit::futex_wake(f_.ping, 1);
      while (f_.pong.load(std::memory_order_acquire) != word_) {
        ipckit::futex_wait(f_.pong, word_ - 1);
      }
      const std::uint64_t now = bench::ticks();
      futex.push_back(now - prev);
      prev = now;
    }
  }
  // Partner: answers one slice.
  void answer() {
    for (int k = 0; k < kSpinRounds; ++k) {
      ++line_;
      while (f_.line.load(std::memory_order_acquire) != 2 * line_ - 1) ipckit::cpu_relax();
      f_.line.store(2 * line_, std::memory_order_release);
    }
    for (int k = 0; k < kFutexRounds; ++k) {
      ++word_;
      while (f_.ping.load(std::memory_order_acquire) != word_) {
        ipckit::futex_wait(f_.ping, word_ - 1);
      }
      f_.pong.store(word_, std::memory_order_release);
      ipckit::futex_wake(f_.pong, 1);
    }
  }

 private:
  Floors& f_;
  std::uint64_t line_ = 0;
  std::uint32_t word_ = 0;
};

// Round trips. The child answers exactly warm + iterations messages through echo(count),
// called once per slice; the parent first runs warm rounds (warm(k): fills buffers and
// faults pages in), then times each of state.max_iterations calls of round(i) with the TSC.
// Floor slices run before, between tenths, and after (outside the clock).
template <class Echo, class Warm, class Round>
void rtt(benchmark::State& state, const Point& pt, IterationCount warm_rounds, Echo&& echo,
         Warm&& warm, Round&& round) {
  const IterationCount n = state.max_iterations;
  const IterationCount slice = (n + FloorProbe::kSlices - 1) / FloorProbe::kSlices;
  std::vector<std::uint64_t> samples(static_cast<std::size_t>(n));
  std::vector<std::uint64_t> spin_floor, futex_floor;
  spin_floor.reserve((FloorProbe::kSlices + 1) * FloorProbe::kSpinRounds);
  futex_floor.reserve((FloorProbe::kSlices + 1) * FloorProbe::kFutexRounds);
  SharedMemory mem(sizeof(Floors));
  FloorProbe probe(mem.make<Floors>(0));
  bench::pin(0);
  auto child = Process::spawn([&] {
    bench::pin(1);
    probe.answer();
    echo(warm_rounds);
    for (IterationCount done = 0; done < n; done += slice) {
      echo(std::min(slice, n - done));
      probe.answer();
    }
  });
  probe.measure(spin_floor, futex_floor);
  for (IterationCount k = 0; k < warm_rounds; ++k) warm(k);
  IterationCount i = 0;
  std::uint64_t prev = bench::ticks();
  for (auto _ : state) {
    round(i);
    const std::uint64_t now = bench::ticks();
    samples[static_cast<std::size_t>(i++)] = now - prev;
    prev = now;
    if (i % slice == 0 && i < n) {
      state.PauseTiming();
      probe.measure(spin_floor, futex_floor);
      state.ResumeTiming();
      prev = bench::ticks();
    }
  }
  probe.measure(spin_floor, futex_floor);  // the loop has stopped the clock
  check_child(state, child);
  bench::unpin();
  const bench::Percentiles p = bench::percentiles(samples);
  const double fs = bench::percentiles(spin_floor).median;
  const double ff = bench::percentiles(futex_floor).median;
  state.counters["median_ns"] = p.median;
  state.counters["p99_ns"] = p.p99;
  state.counters["p999_ns"] = p.p999;
  state.counters["max_ns"] = p.max;
  state.counters["floor_spin_ns"] = fs;
  state.counters["floor_futex_ns"] = ff;
  state.counters["x_floor_spin"] = p.median / fs;
  state.counters["x_floor_futex"] = p.median / ff;
  state.SetLabel(label_of(pt));
}

// One-way throughput. The child runs consume(k) for the warm-up units, raises `ready`, then
// consume(iterations) and raises `done`; the parent runs produce(i) once per iteration and
// waits for `done` inside the last one, so the time covers delivery, not just queueing.
// A floor slice before and after records the machine's state (counter floor_spin_ns).
// One iteration moves msgs_per_iter messages of pt.bytes.
template <class Consume, class Produce>
void throughput(benchmark::State& state, const Point& pt, std::size_t msgs_per_iter,
                IterationCount warm, Consume&& consume, Produce&& produce) {
  SharedMemory mem(sizeof(Control) + sizeof(Floors));
  auto& ctl = mem.make<Control>(0);
  FloorProbe probe(mem.make<Floors>(sizeof(Control)));
  std::vector<std::uint64_t> spin_floor, futex_floor;
  const IterationCount n = state.max_iterations;
  bench::pin(0);
  auto child = Process::spawn([&] {
    bench::pin(1);
    probe.answer();
    consume(warm);
    ctl.ready.store(1, std::memory_order_release);
    consume(n);
    ctl.done.store(1, std::memory_order_release);
    probe.answer();
  });
  // The line floor before and after: cross-core bandwidth moves with it on this VM.
  probe.measure(spin_floor, futex_floor);
  for (IterationCount k = 0; k < warm; ++k) produce(k);
  spin_until_set(ctl.ready);
  IterationCount i = 0;
  for (auto _ : state) {
    produce(i);
    if (++i == n) spin_until_set(ctl.done);
  }
  probe.measure(spin_floor, futex_floor);
  check_child(state, child);
  bench::unpin();
  const double msgs = static_cast<double>(n) * static_cast<double>(msgs_per_iter);
  state.counters["msgs_per_s"] = benchmark::Counter(msgs, benchmark::Counter::kIsRate);
  state.counters["gb_per_s"] =
      benchmark::Counter(msgs * static_cast<double>(pt.bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["floor_spin_ns"] = bench::percentiles(spin_floor).median;
  state.SetBytesProcessed(static_cast<std::int64_t>(msgs * static_cast<double>(pt.bytes)));
  state.SetLabel(label_of(pt));
}

// ---- round trips: floors -------------------------------------------------------------------

// One cache line moves back and forth; the 8-byte payload is the sequence number itself.
void rtt_floor_spin_line(benchmark::State& state, const Point& pt) {
  SharedMemory mem(4096);
  auto& line = mem.make<std::atomic<std::uint64_t>>(0);
  std::uint64_t seq = 0;
  const auto round = [&](IterationCount) {
    ++seq;
    line.store(2 * seq - 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * seq) ipckit::cpu_relax();
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {  // in the child: `seq` is the child's own copy
        for (IterationCount k = 0; k < count; ++k) {
          ++seq;
          while (line.load(std::memory_order_acquire) != 2 * seq - 1) ipckit::cpu_relax();
          line.store(2 * seq, std::memory_order_release);
        }
      },
      round, round);
}

// Payload floors: the parent writes n bytes into the next slot of a shared 1 MiB region and
// raises a flag; the child copies them into the next slot of the answer region and raises
// its flag; the parent reads the answer (a word per line). A ring without its bookkeeping:
// slots advance through the same footprint as the 1 MiB rings, so caches behave alike. With
// `sleep`, both sides wait on the flags with a raw futex (the blocking floor), otherwise
// they spin with PAUSE. At 8 B the payload is the flag itself (no slots): one line each way.
struct FloorShared {
  alignas(kLine) std::atomic<std::uint32_t> ping{0};
  alignas(kLine) std::atomic<std::uint32_t> pong{0};
};

void rtt_floor_payload(benchmark::State& state, const Point& pt, bool sleep) {
  const std::size_t n = pt.bytes;
  const std::size_t stride = (n + kLine - 1) / kLine * kLine;
  const std::size_t region = std::max(kMiB, 2 * stride);
  const std::size_t slots = region / stride;
  SharedMemory mem(sizeof(FloorShared) + 2 * region);
  auto& sh = mem.make<FloorShared>(0);
  std::byte* req = mem.data() + sizeof(FloorShared);
  std::byte* rep = req + region;
  const bool inline_payload = n <= 8;
  const auto wait_for = [sleep](std::atomic<std::uint32_t>& word, std::uint32_t v) {
    if (sleep) {
      while (word.load(std::memory_order_acquire) != v) ipckit::futex_wait(word, v - 1);
    } else {
      while (word.load(std::memory_order_acquire) != v) ipckit::cpu_relax();
    }
  };
  const auto raise = [sleep](std::atomic<std::uint32_t>& word, std::uint32_t v) {
    word.store(v, std::memory_order_release);
    if (sleep) ipckit::futex_wake(word, 1);
  };
  const auto slot = [&](std::uint32_t k) { return (k % slots) * stride; };
  std::uint32_t seq = 0;
  const auto round = [&](IterationCount i) {
    ++seq;
    if (!inline_payload) write_payload(req + slot(seq), n, i);
    raise(sh.ping, seq);
    wait_for(sh.pong, seq);
    if (!inline_payload) benchmark::DoNotOptimize(read_payload(rep + slot(seq), n));
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {  // in the child: `seq` is the child's own copy
        for (IterationCount k = 0; k < count; ++k) {
          ++seq;
          wait_for(sh.ping, seq);
          if (!inline_payload) std::memcpy(rep + slot(seq), req + slot(seq), n);
          raise(sh.pong, seq);
        }
      },
      round, round);
}

// ---- round trips: ipckit -----------------------------------------------------------------

// SpscQueue<T> and, through the same interface, ipckit::BoostSpscQueue<T, N> (Boost.Lockfree
// with its control block): the same blocking push/pop on both queue kinds.
template <std::size_t N, bool kBoost = false>
void rtt_spsc(benchmark::State& state, const Point& pt, WaitPolicy policy) {
  using M = Msg<N>;
  constexpr std::uint64_t cap = N >= 1024 ? 64 : 1024;
  using Q = std::conditional_t<kBoost, ipckit::BoostSpscQueue<M, cap>, ipckit::SpscQueue<M>>;
  auto make = [&] {
    if constexpr (kBoost) {
      return Q(policy);
    } else {
      return Q(cap, policy);
    }
  };
  Q req = make();
  Q rep = make();
  M msg{};
  const auto round = [&](IterationCount i) {
    msg.b[0] = static_cast<std::byte>(i);
    req.push(msg);
    benchmark::DoNotOptimize(rep.pop());
  };
  rtt(
      state, pt, static_cast<IterationCount>(cap + 100),
      [&](IterationCount count) {
        for (IterationCount k = 0; k < count; ++k) rep.push(req.pop());
      },
      round, round);
}

// A copying request/answer over any pair of ipckit channels with send(Bytes) and
// recv_until(Bytes&, Deadline): ByteRing, Channel<Bytes>, SocketChannel. The first two rounds of
// the parent's warm-up send a message of `big` bytes (when not 0), so that every page of a
// ring is touched before timing.
template <class Ch>
void rtt_echo(benchmark::State& state, const Point& pt, Ch& req, Ch& rep, std::size_t big) {
  Bytes msg(pt.bytes, std::byte{1});
  const Bytes large(big, std::byte{2});
  Bytes back;
  const auto round = [&](IterationCount i) {
    msg[0] = static_cast<std::byte>(i);
    req.send(msg);
    (void)rep.recv_until(back, kNever);
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {
        Bytes m;
        for (IterationCount k = 0; k < count; ++k) {
          (void)req.recv_until(m, kNever);
          rep.send(m);
        }
      },
      [&](IterationCount k) {
        if (k < 2 && big != 0) {
          req.send(large);
          (void)rep.recv_until(back, kNever);
        } else {
          round(k);
        }
      },
      round);
}

void rtt_byte_ring_copy(benchmark::State& state, const Point& pt) {
  ByteRing req(kMiB, WaitPolicy::spin_only());
  ByteRing rep(kMiB, WaitPolicy::spin_only());
  rtt_echo(state, pt, req, rep, req.max_message_size());
}

// Zero-copy: the parent builds the message in the ring, the child copies it from the peeked
// request straight into its reserved answer, the parent reads the answer in place.
void rtt_byte_ring_zc(benchmark::State& state, const Point& pt) {
  ByteRing req(kMiB, WaitPolicy::spin_only());
  ByteRing rep(kMiB, WaitPolicy::spin_only());
  const auto send_recv = [&](std::size_t n, IterationCount i) {
    auto out = req.reserve(n);
    write_payload(out.data(), n, i);
    req.commit();
    const auto in = rep.peek();
    benchmark::DoNotOptimize(read_payload(in.data(), in.size()));
    rep.release();
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {
        for (IterationCount k = 0; k < count; ++k) {
          const auto in = req.peek();
          auto out = rep.reserve(in.size());
          std::memcpy(out.data(), in.data(), in.size());
          rep.commit();
          req.release();
        }
      },
      [&](IterationCount k) { send_recv(k < 2 ? req.max_message_size() : pt.bytes, k); },
      [&](IterationCount i) { send_recv(pt.bytes, i); });
}

void rtt_channel(benchmark::State& state, const Point& pt, ChannelOptions opt) {
  Channel<Bytes> req(opt);
  Channel<Bytes> rep(opt);
  rtt_echo(state, pt, req, rep,
           opt.transport == ipckit::Transport::shm ? req.max_message_size() : 0);
}

void rtt_socket_channel(benchmark::State& state, const Point& pt) {
  ipckit::SocketChannel req;
  ipckit::SocketChannel rep;
  rtt_echo(state, pt, req, rep, 0);
}

// ---- round trips: kernel and Boost anchors -------------------------------------------------

// Two pipes, or both directions of one socketpair: `out`/`in` are the parent's ends.
void rtt_fds(benchmark::State& state, const Point& pt, int out, int in, int child_in,
             int child_out) {
  const std::size_t n = pt.bytes;
  Bytes msg(n, std::byte{1});
  Bytes back(n);
  const auto round = [&](IterationCount i) {
    msg[0] = static_cast<std::byte>(i);
    write_all(out, msg.data(), n);
    read_all(in, back.data(), n);
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {
        Bytes m(n);
        for (IterationCount k = 0; k < count; ++k) {
          read_all(child_in, m.data(), n);
          write_all(child_out, m.data(), n);
        }
      },
      round, round);
}

void rtt_pipe(benchmark::State& state, const Point& pt) {
  auto [a_read, a_write] = make_pipe();
  auto [b_read, b_write] = make_pipe();
  rtt_fds(state, pt, a_write.get(), b_read.get(), a_read.get(), b_write.get());
}

void rtt_socketpair(benchmark::State& state, const Point& pt) {
  auto [parent_end, child_end] = make_socketpair();
  rtt_fds(state, pt, parent_end.get(), parent_end.get(), child_end.get(), child_end.get());
}

void rtt_boost_mq(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  auto req = anonymous_message_queue(16, n);
  auto rep = anonymous_message_queue(16, n);
  Bytes msg(n, std::byte{1});
  Bytes back(n);
  const auto round = [&](IterationCount i) {
    msg[0] = static_cast<std::byte>(i);
    req->send(msg.data(), n, 0);
    bip::message_queue::size_type got;
    unsigned prio;
    rep->receive(back.data(), n, got, prio);
  };
  rtt(
      state, pt, 1000,
      [&](IterationCount count) {
        Bytes m(n);
        for (IterationCount k = 0; k < count; ++k) {
          bip::message_queue::size_type got;
          unsigned prio;
          req->receive(m.data(), n, got, prio);
          rep->send(m.data(), got, 0);
        }
      },
      round, round);
}

template <std::size_t N>
void rtt_boost_spsc(benchmark::State& state, const Point& pt) {
  using M = Msg<N>;
  using Q = boost::lockfree::spsc_queue<M, boost::lockfree::capacity<(N >= 1024 ? 64 : 1024)>>;
  const std::size_t slot = (sizeof(Q) + kLine - 1) / kLine * kLine;
  SharedMemory mem(2 * slot);
  auto& req = mem.make<Q>(0);
  auto& rep = mem.make<Q>(slot);
  M msg{};
  const auto round = [&](IterationCount i) {
    msg.b[0] = static_cast<std::byte>(i);
    while (!req.push(msg)) ipckit::cpu_relax();
    M back;
    while (!rep.pop(back)) ipckit::cpu_relax();
    benchmark::DoNotOptimize(back);
  };
  rtt(
      state, pt, 1100,
      [&](IterationCount count) {
        for (IterationCount k = 0; k < count; ++k) {
          M m;
          while (!req.pop(m)) ipckit::cpu_relax();
          while (!rep.push(m)) ipckit::cpu_relax();
        }
      },
      round, round);
}

// A 4 MiB message built in place in a ByteRing and answered with 64 bytes: what a zero-copy
// send of a large payload costs end to end. The child only peeks it (the payload is not read).
void zero_copy_latency(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  ByteRing req(std::bit_ceil(2 * n + 16), WaitPolicy::spin_only());
  ByteRing rep(64 * kKiB, WaitPolicy::spin_only());
  const auto round = [&](IterationCount i) {
    auto out = req.reserve(n);
    write_payload(out.data(), n, i);
    req.commit();
    const auto in = rep.peek();
    benchmark::DoNotOptimize(read_payload(in.data(), in.size()));
    rep.release();
  };
  rtt(
      state, pt, 8,
      [&](IterationCount count) {
        for (IterationCount k = 0; k < count; ++k) {
          const auto in = req.peek();
          auto out = rep.reserve(64);
          std::memcpy(out.data(), in.data(), 64);
          rep.commit();
          req.release();
        }
      },
      round, round);
}

// ---- one-way throughput ----------------------------------------------------------------------

// Single messages, one push() and one pop() each; kSingles of them per benchmark iteration,
// so that Google Benchmark's own per-iteration cost (a debug build on Debian) stays out of
// a figure of a few nanoseconds per message.
constexpr std::size_t kSingles = 64;

template <WaitMode Mode>
void tput_spsc(benchmark::State& state, const Point& pt) {
  using M = Msg<8>;
  ipckit::SpscQueue<M> q(4096, ipckit::policy_for(Mode));
  throughput(
      state, pt, kSingles, 4096 / kSingles + 4,
      [&](IterationCount k) {
        std::uint64_t sum = 0;
        const auto total = static_cast<std::uint64_t>(k) * kSingles;
        for (std::uint64_t j = 0; j < total; ++j) sum += static_cast<std::uint64_t>(q.pop().b[0]);
        benchmark::DoNotOptimize(sum);
      },
      [&, m = M{}](IterationCount i) mutable {
        m.b[0] = static_cast<std::byte>(i);
        for (std::size_t j = 0; j < kSingles; ++j) q.push(m);
      });
}

constexpr std::size_t kBatch = 64;

void tput_spsc_batch(benchmark::State& state, const Point& pt) {
  using M = Msg<8>;
  ipckit::SpscQueue<M> q(4096, WaitPolicy::spin_only());
  throughput(
      state, pt, kBatch, 4096 / kBatch + 4,
      [&](IterationCount k) {
        std::array<M, kBatch> in;
        std::uint64_t sum = 0;
        for (std::size_t left = static_cast<std::size_t>(k) * kBatch; left != 0;) {
          const std::size_t got = q.try_pop_n(std::span(in.data(), std::min(left, kBatch)));
          if (got == 0) ipckit::cpu_relax();
          for (std::size_t j = 0; j < got; ++j) sum += static_cast<std::uint64_t>(in[j].b[0]);
          left -= got;
        }
        benchmark::DoNotOptimize(sum);
      },
      [&, out = std::array<M, kBatch>{}](IterationCount i) mutable {
        for (auto& m : out) m.b[0] = static_cast<std::byte>(i);
        for (std::size_t sent = 0; sent < kBatch;) {
          const std::size_t put =
              q.try_push_n(std::span<const M>(out.data() + sent, kBatch - sent));
          if (put == 0) ipckit::cpu_relax();
          sent += put;
        }
      });
}

template <bool Batched>
void tput_boost_spsc(benchmark::State& state, const Point& pt) {
  using M = Msg<8>;
  using Q = boost::lockfree::spsc_queue<M, boost::lockfree::capacity<4096>>;
  SharedMemory mem(sizeof(Q) + kLine);
  auto& q = mem.make<Q>(0);
  const std::size_t per_iter = Batched ? kBatch : kSingles;
  throughput(
      state, pt, per_iter, static_cast<IterationCount>(4096 / per_iter + 4),
      [&](IterationCount k) {
        std::array<M, kBatch> in;
        std::uint64_t sum = 0;
        for (std::size_t left = static_cast<std::size_t>(k) * per_iter; left != 0;) {
          std::size_t got;
          if constexpr (Batched) {
            got = q.pop(in.data(), std::min(left, kBatch));
          } else {
            got = q.pop(in[0]) ? 1 : 0;
          }
          if (got == 0) ipckit::cpu_relax();
          for (std::size_t j = 0; j < got; ++j) sum += static_cast<std::uint64_t>(in[j].b[0]);
          left -= got;
        }
        benchmark::DoNotOptimize(sum);
      },
      [&, out = std::array<M, kBatch>{}](IterationCount i) mutable {
        if constexpr (Batched) {
          for (auto& m : out) m.b[0] = static_cast<std::byte>(i);
          for (std::size_t sent = 0; sent < kBatch;) {
            const std::size_t put = q.push(out.data() + sent, kBatch - sent);
            if (put == 0) ipckit::cpu_relax();
            sent += put;
          }
        } else {
          out[0].b[0] = static_cast<std::byte>(i);
          for (std::size_t j = 0; j < kSingles; ++j) {
            while (!q.push(out[0])) ipckit::cpu_relax();
          }
        }
      });
}

// A ring big enough for the message (at most half the ring) and at least 1 MiB, the Channel
// default; warm-up messages go round it once so that every page is faulted in before timing.
std::uint64_t ring_capacity(std::size_t n) {
  return std::max<std::uint64_t>(kMiB, std::bit_ceil(2 * n + 16));
}
IterationCount ring_warm(std::size_t n) {
  return static_cast<IterationCount>(ring_capacity(n) / (8 + (n + 7) / 8 * 8) + 4);
}

void tput_byte_ring_copy(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  ByteRing ring(ring_capacity(n), WaitPolicy::spin_only());
  throughput(
      state, pt, 1, ring_warm(n),
      [&](IterationCount k) {
        Bytes m;
        for (IterationCount j = 0; j < k; ++j) (void)ring.recv_until(m, kNever);
      },
      [&, msg = Bytes(n, std::byte{1})](IterationCount i) mutable {
        msg[0] = static_cast<std::byte>(i);
        ring.send(msg);
      });
}

void tput_byte_ring_zc(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  ByteRing ring(ring_capacity(n), WaitPolicy::spin_only());
  throughput(
      state, pt, 1, ring_warm(n),
      [&](IterationCount k) {
        std::uint64_t sum = 0;
        for (IterationCount j = 0; j < k; ++j) {
          const auto in = ring.peek();
          sum += read_payload(in.data(), in.size());
          ring.release();
        }
        benchmark::DoNotOptimize(sum);
      },
      [&](IterationCount i) {
        auto out = ring.reserve(n);
        write_payload(out.data(), n, i);
        ring.commit();
      });
}

void tput_fd(benchmark::State& state, const Point& pt, int out, int in) {
  const std::size_t n = pt.bytes;
  throughput(
      state, pt, 1, 16,
      [&, m = Bytes(n)](IterationCount k) mutable {
        for (IterationCount j = 0; j < k; ++j) read_all(in, m.data(), n);
      },
      [&, msg = Bytes(n, std::byte{1})](IterationCount i) mutable {
        msg[0] = static_cast<std::byte>(i);
        write_all(out, msg.data(), n);
      });
}

void tput_pipe(benchmark::State& state, const Point& pt) {
  auto [r, w] = make_pipe();
  tput_fd(state, pt, w.get(), r.get());
}

void tput_socketpair(benchmark::State& state, const Point& pt) {
  auto [a, b] = make_socketpair();
  tput_fd(state, pt, a.get(), b.get());
}

void tput_boost_mq(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  const std::size_t depth = std::clamp<std::size_t>(16 * kMiB / n, 4, 1024);
  auto q = anonymous_message_queue(depth, n);
  throughput(
      state, pt, 1, 16,
      [&, m = Bytes(n)](IterationCount k) mutable {
        for (IterationCount j = 0; j < k; ++j) {
          bip::message_queue::size_type got;
          unsigned prio;
          q->receive(m.data(), n, got, prio);
        }
      },
      [&, msg = Bytes(n, std::byte{1})](IterationCount i) mutable {
        msg[0] = static_cast<std::byte>(i);
        q->send(msg.data(), n, 0);
      });
}

// ---- idle receivers and memory bandwidth -------------------------------------------------

// The child waits 0.5 s on an empty channel whose sender (the parent) is alive, and reports
// the CPU time it used and how often it was switched out voluntarily (sleeps).
void idle_cpu(benchmark::State& state, const Point& pt, ChannelOptions opt) {
  SharedMemory mem(sizeof(Control));
  auto& ctl = mem.make<Control>(0);
  Channel<Bytes> ch(opt);
  ch.attach_sender();
  bench::pin(0);
  for (auto _ : state) {
    auto child = Process::spawn([&] {
      bench::pin(1);
      ch.attach_receiver();
      rusage r0{}, r1{};
      timespec c0{}, c1{};
      ::getrusage(RUSAGE_SELF, &r0);
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
      const std::uint64_t w0 = bench::monotonic_ns();
      const auto got = ch.recv_for(std::chrono::milliseconds(500));
      const std::uint64_t w1 = bench::monotonic_ns();
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
      ::getrusage(RUSAGE_SELF, &r1);
      ctl.cpu_s = static_cast<double>(c1.tv_sec - c0.tv_sec) +
                  static_cast<double>(c1.tv_nsec - c0.tv_nsec) * 1e-9;
      ctl.wall_s = static_cast<double>(w1 - w0) * 1e-9;
      ctl.switches = r1.ru_nvcsw - r0.ru_nvcsw;
      return got ? 1 : 0;
    });
    check_child(state, child);
  }
  bench::unpin();
  state.counters["cpu_pct"] = 100.0 * ctl.cpu_s / ctl.wall_s;
  state.counters["wakeups_per_s"] = static_cast<double>(ctl.switches) / ctl.wall_s;
  state.counters["wall_s"] = ctl.wall_s;
  state.SetLabel(label_of(pt));
}

// Writing (memset) or copying (memcpy from a private buffer) `n` bytes into a shared mapping
// four times larger, at successive offsets as a ring's producer would: the cost of producing
// a payload once, which no channel can beat.
template <bool Copy>
void mem_bandwidth(benchmark::State& state, const Point& pt) {
  const std::size_t n = pt.bytes;
  SharedMemory dst(4 * n);
  Bytes src(n, std::byte{3});
  std::size_t at = 0;
  IterationCount i = 0;
  for (auto _ : state) {
    if constexpr (Copy) {
      std::memcpy(dst.data() + at, src.data(), n);
    } else {
      write_payload(dst.data() + at, n, i++);
    }
    benchmark::ClobberMemory();
    at = (at + n) % (4 * n);
  }
  state.counters["gb_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(n) / 1e9,
                         benchmark::Counter::kIsRate);
  state.counters["msgs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetLabel(label_of(pt));
}

// ---- registration ---------------------------------------------------------------------------

template <class F>
benchmark::internal::Benchmark* add(const std::string& kind, Point pt, F fn) {
  const std::string name = kind + "/" + pt.transport + (pt.mode.empty() ? "" : "/" + pt.mode) +
                           "/" + std::to_string(pt.bytes);
  return benchmark::RegisterBenchmark(name.c_str(), [pt, fn](benchmark::State& s) { fn(s, pt); })
      ->UseRealTime();
}

// Round trips per repetition: enough for a p99.9 of at least 5 samples, within ~0.5 s.
IterationCount spin_rounds(std::size_t n) { return n >= 64 * kKiB ? 10000 : 100000; }
IterationCount kernel_rounds(std::size_t n) { return n >= 64 * kKiB ? 5000 : 10000; }

void register_rtt() {
  const std::size_t sizes[] = {8, 64, kKiB, 64 * kKiB};
  for (const std::size_t n : sizes) {
    if (n == 8) {
      add("BM_RTT", {"floor_spin", "spin", n}, rtt_floor_spin_line)->Iterations(spin_rounds(n));
      // One line per direction, as any pair of queues needs: the floor for a request/answer.
      add("BM_RTT", {"floor_spin_2line", "spin", n}, [](benchmark::State& s, const Point& p) {
        rtt_floor_payload(s, p, false);
      })->Iterations(spin_rounds(n));
    } else {
      add("BM_RTT", {"floor_spin", "spin", n}, [](benchmark::State& s, const Point& p) {
        rtt_floor_payload(s, p, false);
      })->Iterations(spin_rounds(n));
    }
    add("BM_RTT", {"floor_futex", "block", n}, [](benchmark::State& s, const Point& p) {
      rtt_floor_payload(s, p, true);
    })->Iterations(kernel_rounds(n));
  }
  add("BM_RTT", {"spsc_queue", "spin", 8}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<8>(s, p, WaitPolicy::spin_only());
  })->Iterations(spin_rounds(8));
  add("BM_RTT", {"spsc_queue", "hybrid", 8}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<8>(s, p, WaitPolicy::hybrid());
  })->Iterations(spin_rounds(8));
  add("BM_RTT", {"spsc_queue", "block", 8}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<8>(s, p, WaitPolicy::block());
  })->Iterations(kernel_rounds(8));
  add("BM_RTT", {"spsc_queue", "spin", 64}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<64>(s, p, WaitPolicy::spin_only());
  })->Iterations(spin_rounds(64));
  add("BM_RTT", {"spsc_queue", "spin", kKiB}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<kKiB>(s, p, WaitPolicy::spin_only());
  })->Iterations(spin_rounds(kKiB));
  add("BM_RTT", {"ipckit_boost_spsc", "spin", 8}, [](benchmark::State& s, const Point& p) {
    rtt_spsc<8, true>(s, p, WaitPolicy::spin_only());
  })->Iterations(spin_rounds(8));
  add("BM_RTT", {"boost_spsc", "spin", 8}, rtt_boost_spsc<8>)->Iterations(spin_rounds(8));
  add("BM_RTT", {"boost_spsc", "spin", 64}, rtt_boost_spsc<64>)->Iterations(spin_rounds(64));
  add("BM_RTT", {"boost_spsc", "spin", kKiB}, rtt_boost_spsc<kKiB>)->Iterations(spin_rounds(kKiB));

  for (const std::size_t n : sizes) {
    add("BM_RTT", {"byte_ring", "spin", n}, rtt_byte_ring_copy)->Iterations(spin_rounds(n));
    add("BM_RTT", {"byte_ring_zc", "spin", n}, rtt_byte_ring_zc)->Iterations(spin_rounds(n));
    for (const WaitMode m : {WaitMode::spin, WaitMode::hybrid, WaitMode::block}) {
      const char* mode = m == WaitMode::spin ? "spin" : m == WaitMode::hybrid ? "hybrid" : "block";
      add("BM_RTT", {"channel", mode, n}, [m](benchmark::State& s, const Point& p) {
        rtt_channel(s, p, ChannelOptions{.transport = ipckit::Transport::shm, .mode = m});
      })->Iterations(m == WaitMode::block ? kernel_rounds(n) : spin_rounds(n));
    }
    add("BM_RTT", {"channel_pipe", "kernel", n}, [](benchmark::State& s, const Point& p) {
      rtt_channel(s, p, ChannelOptions{.transport = ipckit::Transport::socket});
    })->Iterations(kernel_rounds(n));
    add("BM_RTT", {"socket_channel", "kernel", n}, rtt_socket_channel)
        ->Iterations(kernel_rounds(n));
    add("BM_RTT", {"pipe", "kernel", n}, rtt_pipe)->Iterations(kernel_rounds(n));
    add("BM_RTT", {"socketpair", "kernel", n}, rtt_socketpair)->Iterations(kernel_rounds(n));
    add("BM_RTT", {"boost_mq", "block", n}, rtt_boost_mq)->Iterations(kernel_rounds(n));
  }
}

void register_throughput() {
  // Queues of 8-byte messages swing between a near-empty regime (an index line crosses
  // cores per message) and a batching one: a longer run per repetition steadies the median.
  add("BM_Throughput", {"spsc_queue", "spin", 8}, tput_spsc<WaitMode::spin>)->MinTime(0.3);
  add("BM_Throughput", {"spsc_queue", "hybrid", 8}, tput_spsc<WaitMode::hybrid>)->MinTime(0.3);
  add("BM_Throughput", {"spsc_queue_batch", "spin", 8}, tput_spsc_batch)->MinTime(0.3);
  add("BM_Throughput", {"boost_spsc", "spin", 8}, tput_boost_spsc<false>)->MinTime(0.3);
  add("BM_Throughput", {"boost_spsc_batch", "spin", 8}, tput_boost_spsc<true>)->MinTime(0.3);
  const std::size_t sizes[] = {8, 64, 512, 4 * kKiB, 64 * kKiB, kMiB, 4 * kMiB};
  for (const std::size_t n : sizes) {
    // Large messages: a fixed count, so that no repetition runs for long on slow transports.
    const auto fixed = [n](benchmark::internal::Benchmark* b) {
      if (n >= 4 * kMiB) {
        b->Iterations(60);
      } else if (n >= kMiB) {
        b->Iterations(200);
      }
    };
    fixed(add("BM_Throughput", {"byte_ring", "spin", n}, tput_byte_ring_copy));
    fixed(add("BM_Throughput", {"byte_ring_zc", "spin", n}, tput_byte_ring_zc));
    fixed(add("BM_Throughput", {"pipe", "kernel", n}, tput_pipe));
    fixed(add("BM_Throughput", {"socketpair", "kernel", n}, tput_socketpair));
    fixed(add("BM_Throughput", {"boost_mq", "block", n}, tput_boost_mq));
  }
}

void register_other() {
  add("BM_ZeroCopyLatency", {"byte_ring_zc_ack", "spin", 4 * kMiB}, zero_copy_latency)
      ->Iterations(500);
  add("BM_MemWrite", {"memset", "local", 4 * kMiB}, mem_bandwidth<false>);
  add("BM_MemCopy", {"memcpy", "local", 4 * kMiB}, mem_bandwidth<true>);
  const auto idle = [](const char* transport, const char* mode, ChannelOptions opt) {
    benchmark::RegisterBenchmark((std::string("BM_IdleCPU/") + transport + "/" + mode).c_str(),
                                 [=](benchmark::State& s) {
                                   idle_cpu(s, {transport, mode, 0}, opt);
                                 })
        ->Iterations(1)
        ->UseRealTime();
  };
  idle("channel", "spin", {.mode = WaitMode::spin});
  idle("channel", "hybrid", {.mode = WaitMode::hybrid});
  idle("channel", "block", {.mode = WaitMode::block});
  idle("channel_pipe", "kernel", {.transport = ipckit::Transport::socket});
}

}  // namespace

int main(int argc, char** argv) {
  (void)bench::ns_per_tick();  // calibrate once, before anything is timed
  stop_when_a_partner_fails();
  register_rtt();
  register_other();
  register_throughput();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
