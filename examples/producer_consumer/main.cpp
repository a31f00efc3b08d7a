// Producers and consumers as separate processes over a JoinableQueue, in the style of Python's
// multiprocessing tutorial: producers put jobs, consumers get them, work, put the result on a
// second queue and mark the job done; the parent joins the job queue, then collects. With
// --kill-one, a consumer is killed with SIGKILL halfway: join() still returns (its job in
// hand is released, abandoned() counts it) and the other consumers finish the rest.
//
//   producer_consumer [--producers 2] [--consumers 3] [--jobs 1000] [--kill-one]
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Job {
  int id = 0;
  std::string text;  // strings cross as bytes: the queue takes any codec type
  template <class Ar>
  void serialize(Ar& ar) {
    ar(id, text);
  }
};

struct Result {
  int id = 0;
  std::size_t length = 0;
  pid_t worker = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipckit producer_consumer: JoinableQueue between processes"};
  int producers = 2;
  int consumers = 3;
  int jobs = 1000;
  bool kill_one = false;
  app.add_option("--producers", producers)->check(CLI::Range(1, 32));
  app.add_option("--consumers", consumers)->check(CLI::Range(1, 32));
  app.add_option("--jobs", jobs)->check(CLI::Range(0, 1000000));
  app.add_flag("--kill-one", kill_one, "SIGKILL one consumer halfway");
  CLI11_PARSE(app, argc, argv);

  ipckit::JoinableQueue<Job> todo(1 << 20);
  ipckit::Queue<Result> done(1 << 20);

  std::vector<ipckit::Process> workers;
  for (int c = 0; c < consumers; ++c) {
    workers.push_back(ipckit::Process::spawn([&] {
      for (;;) {
        Job j;
        try {
          j = todo.get();
        } catch (const ipckit::Error& e) {
          return e.is(ipckit::errc::closed) ? 0 : 1;  // closed: no more jobs
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));  // the work
        done.put({j.id, j.text.size(), ::getpid()});
        todo.task_done();
      }
    }));
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ipckit::Process> makers;
  for (int p = 0; p < producers; ++p) {
    makers.push_back(ipckit::Process::spawn([&, p] {
      for (int i = p; i < jobs; i += producers) todo.put({i, "job-" + std::to_string(i)});
      return 0;
    }));
  }
  if (kill_one && consumers > 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    workers[0].kill(SIGKILL);
    std::printf("killed consumer %d\n", static_cast<int>(workers[0].pid()));
  }
  for (auto& m : makers) (void)m.wait();
  todo.join();  // every job put is done (or was held by a consumer that died)
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  todo.close();
  std::vector<int> seen(static_cast<std::size_t>(jobs), 0);
  int results = 0;
  while (auto r = done.try_get()) {
    ++seen[static_cast<std::size_t>(r->id)];
    ++results;
  }
  int missing = 0, twice = 0;
  for (int n : seen) {
    missing += n == 0 ? 1 : 0;
    twice += n > 1 ? 1 : 0;
  }
  for (auto& w : workers) (void)w.wait();
  std::printf(
      "%d jobs by %d producers, %d consumers: %d results in %.3f s; %d missing, %d "
      "twice, %llu abandoned by dead consumers\n",
      jobs, producers, consumers, results, took, missing, twice,
      static_cast<unsigned long long>(todo.abandoned()));
  return twice == 0 && static_cast<std::uint64_t>(missing) <= todo.abandoned() ? 0 : 1;
}
