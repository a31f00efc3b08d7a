// ipckit_chaos: kills a random process of a running ipckit setup (a channel's producer or
// consumer, a pool worker or the pool's owner, a barrier party, a mutex owner, an SPMD rank)
// with SIGKILL, SIGSEGV or SIGABRT at a random moment, over many iterations, and checks that
// every survivor returned or raised the documented error within a bound, that no acked
// message was lost, duplicated or corrupted, and that no process, fd or /dev/shm entry was
// left behind. Exits non-zero on any hang, loss, bad message or leak.
//
//   ipckit_chaos --iterations 10000                  # prints the seed it drew
//   ipckit_chaos --seed 1234 --scenario byte_ring    # the same run again, one scenario
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "scenarios.hpp"

namespace ipckit::chaos {

namespace {

constexpr Scenario kScenarios[] = {
    {"spsc_queue", spsc_queue_scenario, "SpscQueue producer or consumer killed"},
    {"byte_ring", byte_ring_scenario,
     "ByteRing producer or consumer killed (also between reserve and commit; named segments)"},
    {"socket_channel", socket_channel_scenario, "SocketChannel sender or receiver killed"},
    {"mpmc_queue", mpmc_queue_scenario, "MpmcQueue (1 producer, 1 consumer) side killed"},
    {"channel", channel_scenario, "Channel<vector> (shm or pipe) sender or receiver killed"},
    {"queue", queue_scenario, "Queue<vector> or JoinableQueue<vector> producer or consumer killed"},
    {"pool_worker", pool_worker_scenario, "a Pool worker killed during imap"},
    {"pool_parent", pool_parent_scenario, "the process that owns a running Pool killed"},
    {"barrier", barrier_scenario, "a Barrier party killed"},
    {"mutex", mutex_scenario,
     "a robust Mutex or RecursiveMutex owner killed (also while holding it, at depth 2)"},
    {"shared_mutex", shared_mutex_scenario,
     "a SharedMutex reader or writer killed (also holding it shared, or mid-write)"},
    {"condition", condition_scenario,
     "a party of a Condition turn ring killed (waiting, or holding the Mutex mid-update)"},
    {"event", event_scenario, "an Event's driver or a waiter killed (set, clear, woken)"},
    {"spmd", spmd_scenario, "a rank of spmd::run killed"},
    {"segment", segment_scenario,
     "a named segment's creator killed inside create, or a process killed using its heap"},
};

// --plant fd / child / shm: leaves one of each behind in the first iteration.
void plant_leak() {
  if (planted == "fd") {
    (void)::dup(0);
  } else if (planted == "child") {
    if (::fork() == 0) {
      ::sleep(5);
      ::_exit(0);
    }
  } else if (planted == "shm") {
    const std::string path = "/dev/shm/" + run_prefix() + "-planted";
    ::close(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  }
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out;
}

void print_table(const std::vector<Row>& rows, std::FILE* f) {
  std::fprintf(f, "%-13s %6s %7s %7s %7s %7s %9s %9s %8s %5s %8s %5s %5s %5s %5s %9s\n", "scenario",
               "iters", "SIGKILL", "SIGSEGV", "SIGABRT", "no-kill", "acked", "received", "rep-lost",
               "LOST", "tasks", "hangs", "leaks", "fails", "", "max-lat");
  for (const Row& r : rows) {
    if (r.iterations == 0) continue;
    std::fprintf(
        f,
        "%-13s %6llu %7llu %7llu %7llu %7llu %9llu %9llu %8llu %5llu %8llu %5llu %5llu "
        "%5llu %5s %7.1fms\n",
        r.name.c_str(), static_cast<unsigned long long>(r.iterations),
        static_cast<unsigned long long>(r.kills[0]), static_cast<unsigned long long>(r.kills[1]),
        static_cast<unsigned long long>(r.kills[2]), static_cast<unsigned long long>(r.no_kill),
        static_cast<unsigned long long>(r.acked), static_cast<unsigned long long>(r.received),
        static_cast<unsigned long long>(r.reported_lost), static_cast<unsigned long long>(r.lost),
        static_cast<unsigned long long>(r.tasks), static_cast<unsigned long long>(r.hangs),
        static_cast<unsigned long long>(r.leaks), static_cast<unsigned long long>(r.failures), "",
        r.max_latency_ms);
  }
}

void write_json(const std::string& path, const std::vector<Row>& rows, std::uint64_t seed,
                std::uint64_t iterations, double seconds) {
  std::ofstream out(path);
  out << "{\n  \"seed\": " << seed << ",\n  \"iterations\": " << iterations
      << ",\n  \"seconds\": " << seconds << ",\n  \"scenarios\": [\n";
  bool first = true;
  for (const Row& r : rows) {
    if (r.iterations == 0) continue;
    out << (first ? "" : ",\n") << "    {\"name\": \"" << r.name
        << "\", \"iterations\": " << r.iterations << ", \"kills\": {\"SIGKILL\": " << r.kills[0]
        << ", \"SIGSEGV\": " << r.kills[1] << ", \"SIGABRT\": " << r.kills[2]
        << "}, \"no_kill\": " << r.no_kill << ", \"acked\": " << r.acked
        << ", \"received\": " << r.received << ", \"reported_lost\": " << r.reported_lost
        << ", \"lost\": " << r.lost << ", \"tasks\": " << r.tasks << ", \"hangs\": " << r.hangs
        << ", \"leaks\": " << r.leaks << ", \"failures\": " << r.failures
        << ", \"max_latency_ms\": " << r.max_latency_ms << ", \"notes\": [";
    for (std::size_t i = 0; i < r.notes.size(); ++i) {
      out << (i ? ", " : "") << '"' << json_escape(r.notes[i]) << '"';
    }
    out << "]}";
    first = false;
  }
  out << "\n  ]\n}\n";
}

}  // namespace

std::span<const Scenario> all_scenarios() { return kScenarios; }

}  // namespace ipckit::chaos

int main(int argc, char** argv) {
  using namespace ipckit::chaos;
  CLI::App app{"ipckit chaos test: kill processes at random, check what survivors see"};
  std::uint64_t seed = 0;
  std::uint64_t iterations = 1000;
  std::vector<std::string> only;
  double time_limit = 0;
  std::string json;
  bool verbose = false;
  bool list = false;
  auto* seed_opt = app.add_option("--seed", seed, "seed of the run (default: random)");
  app.add_option("--iterations,-n", iterations, "iterations, spread over the scenarios")
      ->check(CLI::PositiveNumber);
  app.add_option("--scenario", only, "run only these scenarios (repeatable; see --list)");
  app.add_option("--time-limit", time_limit,
                 "stop starting iterations after this many seconds (0: no limit)");
  app.add_option("--json", json, "also write the numbers to this JSON file");
  app.add_flag("--verbose,-v", verbose, "one line per channel iteration");
  app.add_flag("--list", list, "list the scenarios and exit");
  app.add_option("--plant", planted,
                 "plant a fault to see the checks catch it: fd, child, shm, lose, hang")
      ->check(CLI::IsMember({"fd", "child", "shm", "lose", "hang"}));
  CLI11_PARSE(app, argc, argv);

  std::vector<const Scenario*> chosen;
  for (const Scenario& s : all_scenarios()) {
    if (list) std::printf("%-13s %s\n", s.name, s.what);
    if (only.empty() || std::find(only.begin(), only.end(), s.name) != only.end()) {
      chosen.push_back(&s);
    }
  }
  if (list) return 0;
  if (chosen.size() != (only.empty() ? all_scenarios().size() : only.size())) {
    std::fprintf(stderr, "chaos: unknown scenario (see --list)\n");
    return 2;
  }
  if (seed_opt->count() == 0)
    seed = std::random_device{}() * 0x100000001ULL ^ std::random_device{}();

  make_signals_fatal();
  std::printf("chaos: seed %llu, %llu iterations over %zu scenarios (reproduce: --seed %llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(iterations),
              chosen.size(), static_cast<unsigned long long>(seed));
  std::fflush(stdout);

  std::vector<Row> rows(chosen.size());
  for (std::size_t i = 0; i < chosen.size(); ++i) rows[i].name = chosen[i]->name;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::uint64_t done = 0;
  for (std::uint64_t it = 0; it < iterations; ++it) {
    if (time_limit > 0 && elapsed() > time_limit) {
      std::printf("chaos: time limit reached after %llu iterations\n",
                  static_cast<unsigned long long>(done));
      break;
    }
    const std::size_t which = it % chosen.size();
    Row& row = rows[which];
    Ctx ctx;
    ctx.iteration = it;
    ctx.seed = mix64(seed ^ mix64(it + 1));
    ctx.rng.seed(ctx.seed);
    ctx.row = &row;
    ctx.verbose = verbose;
    LeakGuard guard;
    try {
      if (it == 0) plant_leak();
      chosen[which]->run(ctx);
    } catch (const std::exception& e) {
      row.fail(row.failures, ctx.where() + ": the chaos process caught: " + e.what());
    }
    guard.check(row, ctx);
    ++row.iterations;
    ++done;
    if (done % 1000 == 0) {
      std::printf("chaos: %llu iterations, %.0f s\n", static_cast<unsigned long long>(done),
                  elapsed());
      std::fflush(stdout);
    }
  }
  const double seconds = elapsed();

  std::printf("\n");
  print_table(rows, stdout);
  std::uint64_t hangs = 0, lost = 0, leaks = 0, failures = 0;
  double pool_parent_ms = 0;
  for (const Row& r : rows) {
    hangs += r.hangs;
    lost += r.lost;
    leaks += r.leaks;
    failures += r.failures;
    pool_parent_ms = std::max(pool_parent_ms, r.max_extra_ms);
    for (const auto& n : r.notes) std::printf("  %s: %s\n", r.name.c_str(), n.c_str());
  }
  std::printf(
      "max-lat: from the kill to the survivor's documented error (pool_parent: until "
      "every worker was gone, worst %.1f ms); %.1f s in all\n",
      pool_parent_ms, seconds);
  if (!json.empty()) write_json(json, rows, seed, done, seconds);
  std::printf(
      "chaos: %llu iterations, seed %llu, %llu hangs, %llu lost, %llu leaks, %llu "
      "failures\n",
      static_cast<unsigned long long>(done), static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(hangs), static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(leaks), static_cast<unsigned long long>(failures));
  return hangs + lost + leaks + failures == 0 ? 0 : 1;
}
