// Links ipckit::containers (find_package(ipckit COMPONENTS containers)): a SharedMap in an
// anonymous segment, filled by a forked child and read here.
#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <ipckit/shm/containers.hpp>

int main() {
  auto seg = ipckit::Segment::anonymous(1 << 20);
  auto squares = ipckit::SharedMap<int, long>::construct(seg, "squares");
  auto child = ipckit::Process::spawn([&] {
    auto g = squares.lock();
    for (int i = 1; i <= 100; ++i) (*g)[i] = long{i} * i;
  });
  const bool exited = child.wait().success();
  long sum = 0;
  {
    auto g = squares.read();
    for (const auto& [k, v] : *g) sum += v;
  }
  const bool ok = exited && sum == 338350;
  std::puts(ok ? "consumer_containers ok" : "consumer_containers FAILED");
  return ok ? 0 : 1;
}
