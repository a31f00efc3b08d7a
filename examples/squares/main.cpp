// The classic multiprocessing tutorial case, in C++: a job that takes a fixed second, run
// sequentially over [1, 2, 3, 4, 5], then over range(12) on a pool of 6 workers. Twelve
// one-second jobs on six workers take about two seconds.
//
//   squares [--workers 6] [--seconds 1.0] [--count 12]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// The job: a fixed time, then the square. The time crosses to the workers with the callable
// (its bytes): under the default start method they do not see this process's globals as main()
// left them.
struct JobWithFixedExecutionTime {
  double seconds = 1.0;
  int operator()(int x) const {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    return x * x;
  }
};

std::string list(const std::vector<int>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipckit squares: sequential versus Pool::map, as in Python's tutorial"};
  std::size_t workers = 6;
  int count = 12;
  app.add_option("-w,--workers", workers, "pool size")->check(CLI::Range(1, 256));
  double seconds = 1.0;
  app.add_option("-s,--seconds", seconds, "seconds each job takes")->check(CLI::Range(0.0, 60.0));
  app.add_option("-n,--count", count, "jobs on the pool: range(count)")
      ->check(CLI::Range(0, 100000));
  CLI11_PARSE(app, argc, argv);

  const std::vector<int> first{1, 2, 3, 4, 5};
  std::printf("Input: %s\n", list(first).c_str());
  auto t0 = Clock::now();
  std::vector<int> seq;
  const JobWithFixedExecutionTime job{seconds};
  for (int x : first) seq.push_back(job(x));
  std::printf("Output: %s\n", list(seq).c_str());
  std::printf("Sequential execution took %.3f s\n\n", since(t0));

  std::vector<int> inputs(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) inputs[static_cast<std::size_t>(i)] = i;
  std::printf("Input: %s\n", list(inputs).c_str());
  t0 = Clock::now();
  ipckit::Pool pool{workers};
  const std::vector<int> out = pool.map(job, inputs);
  std::printf("Output: %s\n", list(out).c_str());
  std::printf("map execution took %.3f s on %zu workers (%d jobs of %.2f s)\n", since(t0),
              pool.size(), count, seconds);
  pool.close();
  pool.join();
  return 0;
}
