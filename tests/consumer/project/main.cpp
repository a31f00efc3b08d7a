#include <cstdio>
#include <ipckit/ipckit.hpp>
#include <string>

int main() {
  auto seg = ipckit::Segment::anonymous(1 << 16);
  auto& sem = seg.make<ipckit::Semaphore>(0);
  ipckit::Channel<std::string> ch;
  auto child = ipckit::Process::spawn([&] {
    ch.send("hello from the child");
    sem.post();
  });
  sem.wait();
  const bool ok = ch.recv() == "hello from the child" && child.wait().success();
  std::puts(ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
