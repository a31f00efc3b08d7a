// Links ipckit::boost_lockfree (find_package(ipckit COMPONENTS boost_lockfree)): a
// Boost.Lockfree queue in shared memory, between this process and a forked child.
#include <cstdio>
#include <ipckit/channel/boost_queue.hpp>
#include <ipckit/ipckit.hpp>

using namespace std::chrono_literals;

int main() {
  ipckit::BoostSpscQueue<int, 1024> q(ipckit::WaitPolicy{.spin = 10us, .sleep = true});
  auto child = ipckit::Process::spawn([&] {
    for (int i = 1; i <= 100; ++i) q.push(i);
  });
  long sum = 0;
  for (int i = 0; i < 100; ++i) sum += q.pop();
  const bool ok = sum == 5050 && child.wait().success();
  std::puts(ok ? "consumer_lockfree ok" : "consumer_lockfree FAILED");
  return ok ? 0 : 1;
}
