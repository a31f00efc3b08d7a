// Uses ipckit.hpp the way the README does, options as designated initializers: the consumer
// test builds it with -Wall -Wextra -Werror (an option member without a default initializer
// would be -Wmissing-field-initializers) and runs it.
#include <csignal>
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }

bool channel_between_processes() {
  auto seg = ipckit::Segment::anonymous(1 << 16, {.lock_timeout = 2s});
  auto& sem = seg.make<ipckit::Semaphore>(0);
  ipckit::Channel<std::string> ch({.mode = ipckit::WaitMode::block, .capacity = 1 << 16});
  auto child = ipckit::Process::spawn(
      [&] {
        ch.send("hello from the child");
        sem.post();
      },
      {.death_signal = SIGKILL});
  sem.wait();
  return ch.recv() == "hello from the child" && child.wait().success();
}

bool pool_maps() {
  ipckit::Pool pool{ipckit::PoolOptions{.processes = 2}};
  const std::vector<int> inputs{1, 2, 3, 4};
  const std::vector<int> sq = pool.map(square, inputs, {.chunksize = 1});
  std::vector<int> seen;  // by the callback, on the pool's driver thread (joined below)
  auto remember = [&](const std::vector<int>& v) { seen = v; };
  auto ar = pool.map_async(square, inputs, {.callback = remember});
  const std::vector<int> again = ar.get(30s);
  pool.close();
  pool.join();
  const std::vector<int> expect{1, 4, 9, 16};
  return sq == expect && again == expect && seen == expect;
}

void count_ranks(ipckit::Comm& comm) {
  if (comm.allreduce(1, ipckit::ReduceOp::sum) != comm.size()) {
    throw ipckit::Error(ipckit::errc::invalid_argument, "allreduce gave a wrong sum");
  }
}

}  // namespace

int main() {
  const bool channel_ok = channel_between_processes();
  const bool pool_ok = pool_maps();
  ipckit::spmd::run(2, count_ranks, {.pin = false, .timeout = 30s, .call_timeout = 10s});
  const bool ok = channel_ok && pool_ok;
  std::puts(ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
