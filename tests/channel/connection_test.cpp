// pipe<T>(): duplex connections between a parent and a child, both transports.
#include "ipckit/channel/connection.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using ConnectionTest = testing::LeakCheckedTest;

void echo_round_trips(ChannelOptions options) {
  auto [mine, theirs] = pipe<std::string>(options);
  auto kid = Process::spawn([&, &theirs = theirs] {
    for (;;) {
      std::string s;
      try {
        s = theirs.recv();
      } catch (const Error& e) {
        return e.is(errc::closed) ? 0 : 1;
      }
      theirs.send(s + "!");
    }
  });
  for (int i = 0; i < 500; ++i) {
    const std::string s(static_cast<std::size_t>(i % 50), static_cast<char>('a' + i % 26));
    mine.send(s);
    ASSERT_EQ(mine.recv(), s + "!");
  }
  mine.close();
  const auto st = kid.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(ConnectionTest, EchoBothWaysOverSharedMemory) { echo_round_trips({}); }

TEST_F(ConnectionTest, EchoBothWaysOverASocket) {
  ChannelOptions o;
  o.transport = Transport::socket;
  echo_round_trips(o);
}

TEST_F(ConnectionTest, PollSaysWhetherARecvWouldReturnAndKeepsTheValue) {
  auto [a, b] = pipe<int>();
  EXPECT_FALSE(a.poll());
  EXPECT_FALSE(a.recv_for(5ms).has_value());
  auto kid = Process::spawn([&, &b = b] {
    b.send(41);
    b.send(42);
    return 0;
  });
  EXPECT_TRUE(a.poll(30s));
  EXPECT_TRUE(a.poll());  // still there: poll does not consume
  EXPECT_EQ(a.recv(), 41);
  EXPECT_EQ(a.recv_for(30s), 42);
  ASSERT_TRUE(kid.wait_for(30s));
}

TEST_F(ConnectionTest, ADeadPeerEndsTheWait) {
  auto [a, b] = pipe<int>(ChannelOptions{.mode = WaitMode::block});
  auto kid = Process::spawn([&, &b = b] {
    b.send(1);  // counts as the sender of its way
    ::pause();
    return 0;
  });
  EXPECT_EQ(a.recv(), 1);
  kid.kill(SIGKILL);
  (void)kid.wait();
  const auto e = testing::caught<Error>([&, &a = a] { (void)a.recv(); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is(errc::peer_dead)) << e->what();
}

}  // namespace
}  // namespace ipckit
