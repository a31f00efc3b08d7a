// A tour of ipckit's channels: a typed Channel<T> between a parent and a forked child (shared
// memory or a Unix socket, in the wait mode of your choice), a zero-copy ByteRing, an SpscQueue
// timed for a ping-pong — and then the sender is killed with SIGKILL while the receiver waits, to
// show that the receiver gets every message sent before the kill, then errc::peer_dead.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ipckit/ipckit.hpp>
#include <map>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Tick {
  std::uint64_t seq;
  double price;
};

ipckit::WaitMode parse_mode(const std::string& m) {
  if (m == "spin") return ipckit::WaitMode::spin;
  if (m == "block") return ipckit::WaitMode::block;
  return ipckit::WaitMode::hybrid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipckit channel tour: Channel<T>, ByteRing, SpscQueue, and a killed sender"};
  std::string mode = "hybrid";
  std::string transport = "shm";
  unsigned rounds = 100000;
  app.add_option("-m,--mode", mode, "wait mode")->check(CLI::IsMember({"spin", "hybrid", "block"}));
  app.add_option("-t,--transport", transport, "Channel transport")
      ->check(CLI::IsMember({"shm", "socket"}));
  app.add_option("-r,--rounds", rounds, "SpscQueue ping-pong rounds")
      ->check(CLI::Range(1u, 100000000u));
  CLI11_PARSE(app, argc, argv);
  const ipckit::ChannelOptions opts{
      .transport = transport == "socket" ? ipckit::Transport::socket : ipckit::Transport::shm,
      .mode = parse_mode(mode)};

  // 1. Typed values of any codec-able type, both ways.
  std::printf("1. Channel<std::map<std::string, std::vector<int>>> over %s, %s mode\n",
              transport.c_str(), mode.c_str());
  ipckit::Channel<std::map<std::string, std::vector<int>>> requests(opts);
  ipckit::Channel<std::string> answers(opts);
  auto worker = ipckit::Process::spawn([&] {
    for (;;) {
      std::map<std::string, std::vector<int>> m;
      try {
        m = requests.recv();
      } catch (const ipckit::Error& e) {
        if (e.is(ipckit::errc::closed)) break;  // the parent is done: drain, then closed
        throw;
      }
      std::string summary;
      for (const auto& [k, v] : m) summary += k + "=" + std::to_string(v.size()) + " ";
      answers.send(summary);
    }
    answers.close();
  });
  requests.send({{"primes", {2, 3, 5, 7}}, {"evens", {2, 4}}});
  requests.send({{"empty", {}}});
  requests.close();
  for (;;) {
    try {
      std::printf("   child answered: %s\n", answers.recv().c_str());
    } catch (const ipckit::Error& e) {
      std::printf("   then: %s\n", e.what());
      break;
    }
  }
  worker.wait();

  // 2. Zero copy: the payload is written in place in shared memory and read in place.
  std::printf("2. ByteRing: a 1 MiB message built in place and summed in place\n");
  ipckit::ByteRing ring(std::uint64_t{4} << 20, ipckit::policy_for(parse_mode(mode)));
  auto summer = ipckit::Process::spawn([&] {
    const std::span<const std::byte> msg = ring.peek();
    unsigned long sum = 0;
    for (std::byte b : msg) sum += std::to_integer<unsigned>(b);
    std::printf("   child read %zu bytes in place, byte sum %lu\n", msg.size(), sum);
    ring.release();
  });
  std::span<std::byte> buf = ring.reserve(1 << 20);
  std::memset(buf.data(), 1, buf.size());
  ring.commit();
  summer.wait();

  // 3. The fast path: a queue pair, one cache line each way per round trip.
  std::printf("3. SpscQueue<Tick> ping-pong, %u rounds, %s mode\n", rounds, mode.c_str());
  ipckit::SpscQueue<Tick> ping(1024, ipckit::policy_for(parse_mode(mode)));
  ipckit::SpscQueue<Tick> pong(1024, ipckit::policy_for(parse_mode(mode)));
  auto echo = ipckit::Process::spawn([&] {
    for (unsigned i = 0; i < rounds; ++i) pong.push(ping.pop());
  });
  const auto t0 = Clock::now();
  for (unsigned i = 0; i < rounds; ++i) {
    ping.push(Tick{i, 1.5 * i});
    if (pong.pop().seq != i) std::printf("   out of order!\n");
  }
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  echo.wait();
  std::printf("   %.0f ns per round trip (unpinned; see `make bench` for pinned figures)\n",
              ns / rounds);

  // 4. Nobody hangs on a dead peer: the receiver gets what was sent, then peer_dead.
  std::printf("4. the sender sends 3 values and is killed with SIGKILL while the receiver waits\n");
  ipckit::Channel<int> doomed(opts);
  auto seg = ipckit::Segment::anonymous(1 << 16);
  auto& sent = seg.make<ipckit::Semaphore>(0u);
  auto victim = ipckit::Process::spawn([&] {
    doomed.attach_sender();
    for (int i = 1; i <= 3; ++i) doomed.send(i);
    sent.post();
    for (;;) ::pause();
  });
  doomed.attach_receiver();
  sent.wait();
  victim.kill(SIGKILL);
  const auto t1 = Clock::now();
  try {
    for (;;) std::printf("   received %d\n", doomed.recv());
  } catch (const ipckit::Error& e) {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
    std::printf("   then, %.1f ms after the kill: %s\n", ms, e.what());
  }
  std::printf("   the sender %s\n", victim.wait().describe().c_str());
  return 0;
}
