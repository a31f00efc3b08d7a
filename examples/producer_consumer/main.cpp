// Producers and consumers as separate processes over a JoinableQueue, in the style of Python's
// multiprocessing tutorial: producers put jobs, consumers get them, work, put the result on a
// second queue and mark the job done; the parent joins the job queue, then collects. With
// --kill-one, a consumer is killed with SIGKILL halfway: join() still returns (its job in
// hand is released, abandoned() counts it) and the other consumers finish the rest.
//
// Then the same between two separately started programs that share no memory and no name:
// this program starts itself twice (posix_spawn, so nothing is inherited), as a server that
// listens at an abstract Unix-socket address, makes the queues in a memfd Segment and hands
// it to the client through ipckit::Listener, and as a client (ipckit::Client) that checks the
// server runs as its own user, maps the segment and consumes. Either mode runs alone too, in
// two terminals:
//
//   producer_consumer [--producers 2] [--consumers 3] [--jobs 1000] [--kill-one]
//   producer_consumer --serve @jobs [--jobs N]      producer_consumer --connect @jobs
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
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

// Counts the results in `done` by job id: true when none is missing beyond `may_miss` (jobs
// held by consumers that died) and none came twice.
bool ledger_ok(ipckit::Queue<Result>& done, int jobs, std::uint64_t may_miss, const char* who,
               double took) {
  std::vector<int> seen(static_cast<std::size_t>(jobs), 0);
  int results = 0;
  while (auto r = done.try_get()) {
    if (r->id < 0 || r->id >= jobs) return false;
    ++seen[static_cast<std::size_t>(r->id)];
    ++results;
  }
  int missing = 0, twice = 0;
  for (int n : seen) {
    missing += n == 0 ? 1 : 0;
    twice += n > 1 ? 1 : 0;
  }
  std::printf("%s: %d jobs, %d results in %.3f s; %d missing, %d twice, %llu abandoned\n", who,
              jobs, results, took, missing, twice, static_cast<unsigned long long>(may_miss));
  return twice == 0 && static_cast<std::uint64_t>(missing) <= may_miss;
}

// The consumer loop: get a job, do it, put the result, mark it done; 0 once closed.
int consume(ipckit::JoinableQueue<Job>& todo, ipckit::Queue<Result>& done) {
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
}

// --serve: this program produces; the consumer is another program, which connects.
int serve(const std::string& address, int jobs) {
  ipckit::Listener listener(address);
  auto seg = ipckit::Segment::memfd(std::size_t{4} << 20);
  auto todo = ipckit::JoinableQueue<Job>::construct(seg, "todo", 1 << 20);
  auto done = ipckit::Queue<Result>::construct(seg, "done", 1 << 20);
  auto peer = listener.accept_for(std::chrono::seconds(30));
  if (!peer) {
    std::fprintf(stderr, "serve: no client came to %s\n", address.c_str());
    return 1;
  }
  std::printf("serve: client pid %d (uid %u) connected; passing the segment\n",
              static_cast<int>(peer->peer().pid), static_cast<unsigned>(peer->peer().uid));
  peer->send_segment(seg);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < jobs; ++i) todo.put({i, "job-" + std::to_string(i)});
  if (!todo.join_for(std::chrono::seconds(60))) {
    std::fprintf(stderr, "serve: the jobs were not done within a minute\n");
    return 1;
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  todo.close();
  try {
    (void)peer->recv_for<int>(std::chrono::seconds(30));  // the client's word that it stopped
  } catch (const ipckit::Error&) {                        // or its hang-up
  }
  return ledger_ok(done, jobs, todo.abandoned(), "two programs", took) ? 0 : 1;
}

// --connect: the consuming program.
int connect(const std::string& address) {
  ipckit::Client link = ipckit::Client::connect_for(address, std::chrono::seconds(30));
  ipckit::Segment seg = link.recv_segment();
  auto todo = ipckit::JoinableQueue<Job>::find(seg, "todo");
  auto done = ipckit::Queue<Result>::find(seg, "done");
  const int rc = consume(todo, done);
  link.send(rc);
  return rc;
}

// Starts this program again with `args`: a separate program, which inherits nothing but the
// standard streams.
pid_t start_self(const char* self, std::vector<std::string> args) {
  std::vector<char*> argv{const_cast<char*>(self)};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    return -1;
  }
  return pid;
}

bool exited_ok(pid_t pid) {
  int status = 0;
  return pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

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
  std::string serve_at, connect_to;
  app.add_option("--serve", serve_at, "only serve jobs at this address (path or @name)");
  app.add_option("--connect", connect_to, "only consume from the server at this address");
  CLI11_PARSE(app, argc, argv);
  if (!serve_at.empty()) return serve(serve_at, jobs);
  if (!connect_to.empty()) return connect(connect_to);

  ipckit::JoinableQueue<Job> todo(1 << 20);
  ipckit::Queue<Result> done(1 << 20);

  std::vector<ipckit::Process> workers;
  for (int c = 0; c < consumers; ++c) {
    workers.push_back(ipckit::Process::spawn([&] { return consume(todo, done); }));
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
  std::printf("%d producers, %d consumers (one process tree)\n", producers, consumers);
  const bool first = ledger_ok(done, jobs, todo.abandoned(), "one program", took);
  for (auto& w : workers) (void)w.wait();

  // The second half: two programs started separately, meeting at an address.
  std::fflush(stdout);
  const std::string address = "@" + ipckit::Segment::unique_name("producer-consumer");
  const pid_t server = start_self(argv[0], {"--serve", address, "--jobs", std::to_string(jobs)});
  const pid_t client = start_self(argv[0], {"--connect", address});
  const bool second = exited_ok(server) && exited_ok(client);
  if (!second) std::printf("two programs: FAILED\n");
  return first && second ? 0 : 1;
}
