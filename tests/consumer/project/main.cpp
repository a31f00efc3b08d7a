#include <cstdio>
#include <ipckit/ipckit.hpp>

int main() {
  auto seg = ipckit::Segment::anonymous(1 << 16);
  auto& sem = seg.make<ipckit::Semaphore>(0);
  auto child = ipckit::Process::spawn([&] { sem.post(); });
  sem.wait();
  const bool ok = child.wait().success();
  std::puts(ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
