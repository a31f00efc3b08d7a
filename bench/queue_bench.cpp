// Queue<T>'s figures, on the workloads bench/queue_python.py runs on Python's
// multiprocessing.Queue, beside Boost.Interprocess message_queue and ipckit's one-to-one
// Channel<T> measured in the same run (bench/run.sh). Writes JSON
//   {"context": {...}, "benchmarks": [{"name", "median", "unit", "values"}]}
// Usage: queue_bench out.json [--reps 5] [--items 200000]
// Workloads (the Python side uses the same names for what it has):
//   tput_1to1_int64, tput_1to1_str100   one producer process, one consumer   items/s
//   tput_2to2_int64, tput_2to2_str100   two producers, two consumers          items/s
//   boost_tput_1to1_int64, boost_tput_1to1_str100   Boost message_queue, 1 -> 1  items/s
//   rtt_int64           a round trip over two Queue<int64_t> (hybrid)      us
//   channel_rtt_int64   the same over two Channel<int64_t> (hybrid)         us
#include <unistd.h>
#include <boost/interprocess/ipc/message_queue.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench_json.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/queue.hpp"
#include "ipckit/core/process.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace bip = boost::interprocess;

using ipckit::bench::Result;

template <class T>
T make_value(std::int64_t i) {
  if constexpr (std::is_same_v<T, std::string>) {
    std::string s(100, 'x');
    std::memcpy(s.data(), &i, sizeof i);
    return s;
  } else {
    return i;
  }
}

// Items per second through one Queue<T>, `producers` processes putting and `consumers`
// processes getting n items in all (timed from the start to the last get).
template <class T>
double queue_throughput(int producers, int consumers, std::int64_t n) {
  ipckit::Queue<T> q(std::size_t{1} << 20);
  const auto t0 = Clock::now();
  std::vector<ipckit::Process> kids;
  for (int p = 0; p < producers; ++p) {
    kids.push_back(ipckit::Process::spawn([&, p] {
      for (std::int64_t i = p; i < n; i += producers) q.put(make_value<T>(i));
      return 0;
    }));
  }
  for (int c = 0; c < consumers; ++c) {
    kids.push_back(ipckit::Process::spawn([&, c] {
      const std::int64_t mine = n / consumers + (c < n % consumers ? 1 : 0);
      for (std::int64_t i = 0; i < mine; ++i) (void)q.get();
      return 0;
    }));
  }
  for (auto& k : kids) (void)k.wait();
  return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - t0).count();
}

template <class T>
double boost_throughput(std::int64_t n) {
  const std::string name = "ipckit-bench-mq-" + std::to_string(::getpid());
  bip::message_queue::remove(name.c_str());
  const std::size_t size = std::is_same_v<T, std::string> ? 100 : sizeof(std::int64_t);
  // 1 MiB of slots, as the Queue has.
  bip::message_queue mq(bip::create_only, name.c_str(), (std::size_t{1} << 20) / size, size);
  const auto t0 = Clock::now();
  auto producer = ipckit::Process::spawn([&] {
    bip::message_queue out(bip::open_only, name.c_str());
    for (std::int64_t i = 0; i < n; ++i) {
      const T v = make_value<T>(i);
      if constexpr (std::is_same_v<T, std::string>) {
        out.send(v.data(), v.size(), 0);
      } else {
        out.send(&v, sizeof v, 0);
      }
    }
    return 0;
  });
  std::vector<char> buf(size);
  for (std::int64_t i = 0; i < n; ++i) {
    std::size_t got = 0;
    unsigned prio = 0;
    mq.receive(buf.data(), buf.size(), got, prio);
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  (void)producer.wait();
  bip::message_queue::remove(name.c_str());
  return static_cast<double>(n) / s;
}

// Microseconds per round trip: the parent puts i on `a`, the child echoes it on `b`.
template <class Q, class Put, class Get>
double round_trip(Q& a, Q& b, std::int64_t n, Put put, Get get) {
  auto echo = ipckit::Process::spawn([&] {
    for (std::int64_t i = 0; i < n; ++i) put(b, get(a));
    return 0;
  });
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < n; ++i) {
    put(a, i);
    (void)get(b);
  }
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  (void)echo.wait();
  return us / static_cast<double>(n);
}

template <class F>
Result repeat(const char* name, const char* unit, int reps, F&& f) {
  Result r{name, {}, unit};
  for (int i = 0; i < reps; ++i) {
    r.values.push_back(f());
    std::printf("  %-24s rep %d: %.4g %s\n", name, i + 1, r.values.back(), unit);
    std::fflush(stdout);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  int reps = 5;
  std::int64_t items = 200000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--items") == 0 && i + 1 < argc) {
      items = std::atol(argv[++i]);
    } else {
      out = argv[i];
    }
  }
  const std::int64_t rtts = items / 10;
  std::vector<Result> rs;
  rs.push_back(repeat("tput_1to1_int64", "items/s", reps,
                      [&] { return queue_throughput<std::int64_t>(1, 1, items); }));
  rs.push_back(repeat("tput_1to1_str100", "items/s", reps,
                      [&] { return queue_throughput<std::string>(1, 1, items); }));
  rs.push_back(repeat("tput_2to2_int64", "items/s", reps,
                      [&] { return queue_throughput<std::int64_t>(2, 2, items); }));
  rs.push_back(repeat("tput_2to2_str100", "items/s", reps,
                      [&] { return queue_throughput<std::string>(2, 2, items); }));
  rs.push_back(repeat("boost_tput_1to1_int64", "items/s", reps,
                      [&] { return boost_throughput<std::int64_t>(items); }));
  rs.push_back(repeat("boost_tput_1to1_str100", "items/s", reps,
                      [&] { return boost_throughput<std::string>(items); }));
  rs.push_back(repeat("rtt_int64", "us", reps, [&] {
    ipckit::Queue<std::int64_t> a(1 << 16), b(1 << 16);
    return round_trip(
        a, b, rtts, [](auto& q, std::int64_t v) { q.put(v); }, [](auto& q) { return q.get(); });
  }));
  rs.push_back(repeat("channel_rtt_int64", "us", reps, [&] {
    ipckit::Channel<std::int64_t> a, b;
    return round_trip(
        a, b, rtts, [](auto& c, std::int64_t v) { c.send(v); }, [](auto& c) { return c.recv(); });
  }));

  const std::string json = ipckit::bench::to_json(
      "\"library\": \"ipckit::Queue\", \"items\": " + std::to_string(items) +
          ", \"round_trips\": " + std::to_string(rtts) + ", \"reps\": " + std::to_string(reps),
      rs);
  ipckit::bench::write_json(out, json);
  return 0;
}
