// A tour of ipckit::Pool: every call of the multiprocessing.Pool API, one line of output
// each, then what Python's Pool cannot do: a task that throws, a worker killed with SIGKILL
// in the middle of a task (only that task fails; the pool replaces the worker and goes on),
// and a result of 64 MiB.
//
//   pool_tour [--workers 4]
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cereal/types/string.hpp>
#include <chrono>
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <map>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
// Later inputs finish sooner.
double slow_half(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(10 * (6 - x % 6)));
  return x / 2.0;
}
int fails_on_13(int x) {
  if (x == 13) throw std::domain_error("13 is unlucky");
  return x;
}
// Tells the parent which worker runs it, then sleeps: the tour kills that worker.
int report_then_sleep(int fd) {
  const pid_t me = ::getpid();
  if (::write(fd, &me, sizeof me) != sizeof me) return -1;
  std::this_thread::sleep_for(std::chrono::seconds(30));
  return 0;
}
std::string big_result(std::size_t mib) { return std::string(mib << 20, 'x'); }

// A callable with state, sent to the workers through cereal.
struct Greeter {
  std::string greeting;
  std::string operator()(const std::string& name) const { return greeting + ", " + name; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(greeting);
  }
};

template <class T>
std::string show(const std::vector<T>& v, std::size_t max = 8) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size() && i < max; ++i) {
    if (i) s += ", ";
    if constexpr (std::is_same_v<T, std::string>) {
      s += v[i];
    } else {
      s += std::to_string(v[i]);
    }
  }
  return s + (v.size() > max ? ", ...]" : "]");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipckit pool tour: every Pool call, then failures Python's Pool cannot survive"};
  std::size_t workers = 4;
  app.add_option("-w,--workers", workers, "pool size")->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);

  std::vector<int> xs(20);
  std::iota(xs.begin(), xs.end(), 0);

  // Made before the pool, for the kill -9 demonstration below: workers forked from this
  // process inherit it (StartMethod::fork). Under the default, forkserver, workers come from
  // a fresh exec of the program and inherit only stdin, stdout and stderr.
  int fds[2];
  if (::pipe(fds) != 0) return 1;

  ipckit::PoolOptions options;
  options.processes = workers;
  options.task_retries = 0;
  options.start = ipckit::StartMethod::fork;
  ipckit::Pool pool{options};
  std::printf("Pool of %zu workers\n", pool.size());

  std::printf("map(square, 0..19)            -> %s\n", show(pool.map(square, xs)).c_str());
  std::printf("map(..., chunksize=5)         -> %s\n", show(pool.map(square, xs, 5)).c_str());

  auto ar = pool.map_async(square, xs,
                           {.chunksize = {},
                            .callback =
                                [](const std::vector<int>& v) {
                                  std::printf("  map_async callback: %zu results\n", v.size());
                                },
                            .error_callback = {},
                            .progress = {}});
  const std::string got = show(ar.get());
  std::printf("map_async(...).get()          -> %s (ready=%d, successful=%d)\n", got.c_str(),
              ar.ready(), ar.successful());

  std::printf("imap(slow_half, 0..5)         -> ");
  for (double r : pool.imap(slow_half, std::views::iota(0, 6))) std::printf("%.1f ", r);
  std::printf("(input order)\n");
  std::printf("imap_unordered(slow_half, 0..5) -> ");
  for (double r : pool.imap_unordered(slow_half, std::views::iota(0, 6))) std::printf("%.1f ", r);
  std::printf("(completion order)\n");

  const std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  std::printf("starmap(add, pairs)           -> %s\n", show(pool.starmap(add, pairs)).c_str());
  auto sm = pool.starmap_async(add, pairs);
  std::printf("starmap_async(add, pairs)     -> %s\n", show(sm.get()).c_str());
  std::printf("apply(add, 1, 2)              -> %d\n", pool.apply(add, 1, 2));
  auto f = pool.apply_async(add, 20, 22);
  std::printf("apply_async(add, 20, 22)      -> %d\n", f.get(std::chrono::seconds(10)));

  const int offset = 100;
  std::printf(
      "map(lambda capturing %d)     -> %s\n", offset,
      show(pool.map([offset](int x) { return x + offset; }, std::vector<int>{1, 2, 3})).c_str());
  const std::vector<std::string> names{"Ada", "Grace"};
  std::printf("map(Greeter{\"Hello\"}, names)  -> %s\n",
              show(pool.map(Greeter{"Hello"}, names)).c_str());
  std::map<std::string, int> counts{{"a", 1}, {"b", 2}};
  auto sizes = pool.apply([](const std::map<std::string, int>& m) { return m.size(); }, counts);
  std::printf("apply(size of a std::map)     -> %zu\n", sizes);

  std::printf("map with a progress bar (drawn when stdout is a terminal)\n");
  (void)pool.map(slow_half, xs,
                 {.chunksize = 1, .progress = ipckit::ProgressBar("  slow_half", stdout)});

  // ---- failures ----
  try {
    (void)pool.map(fails_on_13, xs);
  } catch (const ipckit::RemoteError& e) {
    std::printf("map(fails_on_13)              -> RemoteError: %s: %s\n", e.type_name().c_str(),
                e.message().c_str());
  }

  auto doomed = pool.apply_async(report_then_sleep, fds[1]);
  auto others = pool.map_async(
      square, xs, {.chunksize = 1, .callback = {}, .error_callback = {}, .progress = {}});
  pid_t victim = -1;
  if (::read(fds[0], &victim, sizeof victim) != sizeof victim) return 1;
  ::kill(victim, SIGKILL);
  try {
    (void)doomed.get();
  } catch (const ipckit::WorkerLost& e) {
    std::printf("kill -9 worker %d mid-task    -> WorkerLost: %s\n", static_cast<int>(victim),
                e.status().describe().c_str());
  }
  std::printf("  the other tasks still finish -> %s\n", show(others.get()).c_str());
  std::printf("  and the pool goes on        -> apply(add, 2, 2) = %d\n", pool.apply(add, 2, 2));
  ::close(fds[0]);
  ::close(fds[1]);

  const std::string big = pool.apply(big_result, std::size_t{64});
  std::printf("apply(big_result, 64)         -> a %zu MiB string\n", big.size() >> 20);

  std::printf("per-worker statistics:\n");
  for (const auto& s : pool.stats()) {
    std::printf("  slot %zu: pid %d, %llu tasks, %llu inputs, busy %.1f ms, %llu restarts\n",
                s.slot, static_cast<int>(s.pid), static_cast<unsigned long long>(s.tasks),
                static_cast<unsigned long long>(s.items),
                std::chrono::duration<double, std::milli>(s.busy).count(),
                static_cast<unsigned long long>(s.restarts));
  }

  pool.close();
  pool.join();
  try {
    (void)pool.map(square, xs);
  } catch (const ipckit::Error& e) {
    std::printf("map after close()             -> Error: %s\n", e.what());
  }
  return 0;
}
