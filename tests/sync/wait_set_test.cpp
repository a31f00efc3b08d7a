// WaitSet: waiting for the first of queues, channels, connections, events, process exits,
// links, pool results and timers, with real processes on the other side.
#include "ipckit/sync/wait_set.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/connection.hpp"
#include "ipckit/channel/link.hpp"
#include "ipckit/channel/queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/pool/pool.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/event.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using WaitSetTest = testing::LeakCheckedTest;
using testing::error_of;
using Keys = std::vector<WaitSet::Key>;

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

TEST_F(WaitSetTest, AnEmptySetOrANothingReadySetSaysSo) {
  WaitSet ws;
  EXPECT_EQ(error_of([&] { (void)ws.wait_for(0s); }), errc::invalid_argument);
  Queue<int> q(4096);
  const auto k = ws.add(q);
  EXPECT_TRUE(ws.wait_for(0s).empty());
  EXPECT_TRUE(ws.wait_for(20ms).empty());
  q.put(1);
  EXPECT_EQ(ws.wait_for(0s), Keys{k});
  EXPECT_EQ(ws.wait(), Keys{k});  // level-triggered: still there
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(ws.wait_for(0s).empty());
  EXPECT_TRUE(ws.remove(k));
  EXPECT_FALSE(ws.remove(k));
  EXPECT_EQ(ws.size(), 0u);
}

TEST_F(WaitSetTest, APutInAnotherProcessWakesTheSetAndTimersFire) {
  Queue<std::string> q(1 << 16);
  Queue<std::string> other(1 << 16);
  WaitSet ws;
  const auto kq = ws.add(q);
  const auto ko = ws.add(other);
  const auto kt = ws.add_timer(30ms);
  EXPECT_EQ(ws.wait_for(10s), Keys{kt});
  ws.remove(kt);
  auto kid = Process::spawn([&] {
    std::this_thread::sleep_for(50ms);
    other.put("hello");
    std::this_thread::sleep_for(30s);  // alive: an empty queue whose producers died is ready
    return 0;
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ws.wait_for(30s), Keys{ko});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);  // woken by the put, not the deadline
  EXPECT_EQ(other.get(), "hello");
  EXPECT_TRUE(ws.wait_for(0s).empty());
  (void)kq;
  kid.kill(SIGKILL);
  (void)kid.wait();
  EXPECT_EQ(ws.wait_for(10s), Keys{ko});  // now a get() would throw peer_dead
}

TEST_F(WaitSetTest, ProcessExitsEventsAndChannelsEachWakeIt) {
  auto seg = Segment::anonymous(1 << 16);
  Event& ev = seg.make<Event>();
  Channel<int> ch;
  ChannelOptions so;
  so.transport = Transport::socket;
  Channel<int> sock(so);
  // Ints: a Connection<std::string> here trips GCC 12's -Wmaybe-uninitialized under TSan (-O1).
  auto [near, far] = pipe<int>();
  auto quick = Process::spawn([] { return 0; });
  auto slow = Process::spawn([&, &far = far] {
    std::this_thread::sleep_for(100ms);
    ev.set();
    ch.send(5);
    sock.send(6);
    far.send(7);
    std::this_thread::sleep_for(30s);
    return 0;
  });
  WaitSet ws;
  const auto k_quick = ws.add(quick);
  const auto k_slow = ws.add(slow);
  const auto k_ev = ws.add(ev);
  const auto k_ch = ws.add(ch);
  const auto k_sock = ws.add(sock);
  const auto k_conn = ws.add(near);
  EXPECT_EQ(ws.wait_for(10s), Keys{k_quick});
  ws.remove(k_quick);
  Keys all;
  const Deadline d = Deadline::after(20s);
  while (all.size() < 4 && !d.expired()) {
    all = ws.wait_until(d);
  }
  EXPECT_EQ(all, (Keys{k_ev, k_ch, k_sock, k_conn}));
  EXPECT_EQ(ch.recv(), 5);
  EXPECT_EQ(sock.recv(), 6);
  EXPECT_EQ(near.recv(), 7);
  ev.clear();
  EXPECT_TRUE(ws.wait_for(0s).empty());
  slow.kill(SIGKILL);
  // Its exit comes (the socket's hang-up, closed as it exits, may come a moment before).
  const Deadline d2 = Deadline::after(10s);
  Keys after;
  while (std::find(after.begin(), after.end(), k_slow) == after.end() && !d2.expired()) {
    after = ws.wait_until(d2);
  }
  EXPECT_NE(std::find(after.begin(), after.end(), k_slow), after.end());
  (void)quick.wait();
  (void)slow.wait();
}

TEST_F(WaitSetTest, ADeadProducerMakesAQueueReadySoItsGetThrows) {
  Queue<int> q(4096);
  auto kid = Process::spawn([&] {
    q.put(1);
    std::this_thread::sleep_for(30s);
    return 0;
  });
  WaitSet ws;
  const auto k = ws.add(q);
  EXPECT_EQ(ws.wait_for(10s), Keys{k});
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(ws.wait_for(50ms).empty());
  kid.kill(SIGKILL);
  (void)kid.wait();
  EXPECT_EQ(ws.wait_for(10s), Keys{k});  // found by the set's own look for dead peers
  EXPECT_EQ(error_of([&] { (void)q.get(); }), errc::peer_dead);
}

TEST_F(WaitSetTest, SharedMemoryAndDescriptorsTogether) {
  const std::string address = "@" + Segment::unique_name("ipckit-waitset");
  Listener listener(address);
  Queue<int> q(4096);
  WaitSet ws;
  const auto kl = ws.add(listener);
  const auto kq = ws.add(q);
  auto kid = Process::spawn([&] {
    std::this_thread::sleep_for(50ms);
    q.put(7);
    std::this_thread::sleep_for(50ms);
    Client c(address);
    return c.recv<int>() == 8 ? 0 : 1;
  });
  EXPECT_EQ(ws.wait_for(20s), Keys{kq});
  EXPECT_EQ(q.get(), 7);
  EXPECT_EQ(ws.wait_for(20s), Keys{kl});
  Link link = listener.accept();
  const auto kk = ws.add(link);
  EXPECT_TRUE(ws.wait_for(0s).empty());
  link.send(8);
  // The client hung up (and, once it has exited, the queue it put to is ready too: a get
  // would throw peer_dead).
  const Keys hung = ws.wait_for(20s);
  EXPECT_NE(std::find(hung.begin(), hung.end(), kk), hung.end());
  EXPECT_EQ(error_of([&] { (void)link.recv<int>(); }), errc::peer_dead);
  const auto st = kid.wait_for(20s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(WaitSetTest, APoolResultWakesTheSet) {
  Pool pool{1};
  auto slow = pool.apply_async(sleep_ms, 100);
  Queue<int> q(4096);
  WaitSet ws;
  const auto kq = ws.add(q);
  const auto kr = ws.add(slow);
  (void)kq;
  EXPECT_EQ(ws.wait_for(20s), Keys{kr});
  EXPECT_EQ(slow.get(), 100);
}

TEST_F(WaitSetTest, ItsDescriptorPlugsIntoAnOuterPollLoop) {
  Queue<int> q(4096);
  WaitSet ws;
  const auto k = ws.add(q);
  const int fd = ws.fd();
  EXPECT_TRUE(readable(fd));  // "look now": the first evaluation is the caller's
  EXPECT_TRUE(ws.wait_for(0s).empty());
  EXPECT_FALSE(readable(fd));
  auto kid = Process::spawn([&] {
    std::this_thread::sleep_for(50ms);
    q.put(3);
    std::this_thread::sleep_for(30s);
    return 0;
  });
  // The outer loop also wakes every kPeerCheck (dead peers are looked for then): poll until
  // the set reports the item.
  Keys got;
  const Deadline d = Deadline::after(20s);
  while (got.empty() && !d.expired()) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_GE(::poll(&p, 1, 1000), 0);
    got = ws.wait_for(0s);
  }
  EXPECT_EQ(got, Keys{k});
  EXPECT_TRUE(readable(fd));  // level-triggered while the item is there
  EXPECT_EQ(q.get(), 3);
  EXPECT_TRUE(ws.wait_for(0s).empty());
  EXPECT_FALSE(readable(fd));
  kid.kill(SIGKILL);
  (void)kid.wait();
}

TEST_F(WaitSetTest, ADescriptorClosedAndReusedBeforeItsRemoveDoesNotTakeTheNewOneOut) {
  int a[2];
  ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
  UniqueFd a_write(a[1]);
  WaitSet ws;
  const auto ka = ws.add_fd(a[0]);
  ::close(a[0]);  // closed before its remove(); the number is free again
  int b[2];
  ASSERT_EQ(::pipe2(b, O_CLOEXEC), 0);
  UniqueFd b_read(b[0]);
  UniqueFd b_write(b[1]);
  ASSERT_EQ(b[0], a[0]);  // the lowest free number: the same one
  const auto kb = ws.add_fd(b[0]);
  EXPECT_TRUE(ws.remove(ka));
  auto kid = Process::spawn([&] {
    std::this_thread::sleep_for(50ms);
    return ::write(b_write.get(), "x", 1) == 1 ? 0 : 1;
  });
  EXPECT_EQ(ws.wait_for(20s), Keys{kb});  // still in the epoll: woken, not the deadline
  ASSERT_TRUE(kid.wait_for(10s));
}

}  // namespace
}  // namespace ipckit
