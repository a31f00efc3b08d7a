#include "ipckit/channel/socket_channel.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "channel_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using SocketChannelTest = testing::LeakCheckedTest;
using testing::error_of;
using testing::eventually;
using testing::exit_code;
using testing::Flag;
using testing::outcome_of;
using testing::Payloads;
using testing::wait_for_start;

constexpr std::uint32_t kMagic = 0x49504631;  // "IPF1"
constexpr std::uint32_t kData = 1;
constexpr std::uint32_t kClose = 2;

// A pipe(2) whose ends the test holds; `size` sets its capacity (F_SETPIPE_SZ) when not 0.
struct RawPipe {
  UniqueFd read;
  UniqueFd write;
};
RawPipe make_pipe(int size = 0) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  RawPipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
  if (size != 0 && ::fcntl(p.write.get(), F_SETPIPE_SZ, size) < size) throw_errno("F_SETPIPE_SZ");
  return p;
}

// The 16-byte frame header, little-endian: magic, kind, length.
std::vector<std::byte> header(std::uint32_t magic, std::uint32_t kind, std::uint64_t length) {
  std::vector<std::byte> h(16);
  for (int i = 0; i < 4; ++i) h[i] = std::byte(magic >> (8 * i));
  for (int i = 0; i < 4; ++i) h[4 + i] = std::byte(kind >> (8 * i));
  for (int i = 0; i < 8; ++i) h[8 + i] = std::byte(length >> (8 * i));
  return h;
}

void put(int fd, std::span<const std::byte> b) {
  while (!b.empty()) {
    const ssize_t n = ::write(fd, b.data(), b.size());
    if (n < 0) throw_errno("write");
    b = b.subspan(static_cast<std::size_t>(n));
  }
}

std::vector<std::byte> take(int fd, std::size_t n) {
  std::vector<std::byte> b(n);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, b.data() + got, n - got);
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  b.resize(got);
  return b;
}

int bytes_waiting(int fd) {
  int n = -1;
  ::ioctl(fd, FIONREAD, &n);
  return n;
}

std::vector<std::byte> bytes(std::size_t n, std::uint8_t fill) {
  return std::vector<std::byte>(n, std::byte{fill});
}
std::vector<std::byte> bytes(const std::string& s) {
  const auto b = std::as_bytes(std::span(s.data(), s.size()));
  return {b.begin(), b.end()};
}
std::vector<std::byte> concat(std::initializer_list<std::vector<std::byte>> parts) {
  std::vector<std::byte> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// ---- the frame format ---------------------------------------------------------------------

TEST_F(SocketChannelTest, SendWritesLittleEndianHeaderThenPayloadAndCloseWritesACloseFrame) {
  auto p = make_pipe();
  auto ch = SocketChannel::from_fds(UniqueFd(), std::move(p.write));
  ch.send(bytes("hello"));
  ch.send({});
  ch.close();
  const auto want = concat({header(kMagic, kData, 5), bytes("hello"), header(kMagic, kData, 0),
                            header(kMagic, kClose, 0)});
  EXPECT_EQ(take(p.read.get(), want.size() + 1), want) << "and then end of stream";
}

TEST_F(SocketChannelTest, RecvReadsFramesWrittenByHandThenCloseFrameGivesClosed) {
  auto p = make_pipe(1 << 20);
  const auto large = bytes(70'000, 0x3c);  // more than one read-ahead chunk
  put(p.write.get(),
      concat({header(kMagic, kData, 5), bytes("hello"), header(kMagic, kData, 0),
              header(kMagic, kData, large.size()), large, header(kMagic, kClose, 0)}));
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(ch.recv(), bytes("hello"));
  EXPECT_EQ(ch.recv(), std::vector<std::byte>{});
  EXPECT_EQ(ch.recv(), large);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::closed) << "and stays closed";
  std::vector<std::byte> out;
  EXPECT_EQ(error_of([&] { (void)ch.try_recv(out); }), errc::closed);
}

// ---- broken streams -----------------------------------------------------------------------

TEST_F(SocketChannelTest, TruncatedFrameIsBadFrameAndTheChannelStaysUnusable) {
  auto p = make_pipe();
  put(p.write.get(), concat({header(kMagic, kData, 100), bytes(40, 1)}));
  p.write.reset();
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  std::vector<std::byte> out;
  EXPECT_EQ(error_of([&] { (void)ch.try_recv(out); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(out, 10ms); }), errc::bad_frame);
}

TEST_F(SocketChannelTest, TruncatedLargeFrameIsBadFrameAndTheChannelStaysUnusable) {
  auto p = make_pipe(1 << 20);
  put(p.write.get(), concat({header(kMagic, kData, 200'000), bytes(70'000, 2)}));
  p.write.reset();
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
}

TEST_F(SocketChannelTest, TruncatedHeaderIsBadFrame) {
  auto p = make_pipe();
  const auto h = header(kMagic, kData, 4);
  put(p.write.get(), std::span(h).first(10));
  p.write.reset();
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
}

TEST_F(SocketChannelTest, CorruptMagicIsBadFrameEvenIfGoodFramesFollow) {
  auto p = make_pipe();
  put(p.write.get(),
      concat({header(0x49504632, kData, 3), bytes("abc"), header(kMagic, kData, 3), bytes("def")}));
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame) << "no resynchronisation";
}

TEST_F(SocketChannelTest, UnknownKindOrCloseFrameWithPayloadIsBadFrame) {
  for (const auto& h : {header(kMagic, 3, 0), header(kMagic, 0, 0), header(kMagic, kClose, 1)}) {
    auto p = make_pipe();
    put(p.write.get(), concat({h, bytes(1, 0)}));
    auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
    EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
  }
}

// The length is checked before anything is allocated: announcing 1 TiB (more than the 1 GiB
// default max_message) must be bad_frame, not std::bad_alloc or an allocation of that size.
TEST_F(SocketChannelTest, LengthAboveMaxMessageIsBadFrameWithoutAllocating) {
  for (const std::uint64_t length : {std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    auto p = make_pipe();
    put(p.write.get(), header(kMagic, kData, length));
    auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
    EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame) << length;
  }
  auto p = make_pipe();
  put(p.write.get(),
      concat({header(kMagic, kData, 64), bytes(64, 1), header(kMagic, kData, 65), bytes(65, 1)}));
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd(), SocketOptions{64});
  EXPECT_EQ(ch.recv(), bytes(64, 1)) << "max_message itself is fine";
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::bad_frame);
}

TEST_F(SocketChannelTest, EndOfStreamWithoutCloseFrameIsPeerDead) {
  auto p = make_pipe();
  put(p.write.get(), concat({header(kMagic, kData, 2), bytes("ok")}));
  p.write.reset();
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  EXPECT_EQ(ch.recv(), bytes("ok")) << "what was sent is still delivered";
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::peer_dead);
  std::vector<std::byte> out;
  EXPECT_EQ(error_of([&] { (void)ch.try_recv(out); }), errc::peer_dead);
}

// ---- bad input and close on the sending side ----------------------------------------------

TEST_F(SocketChannelTest, MessageAboveMaxMessageIsRejectedBySendAndNothingIsWritten) {
  auto p = make_pipe();
  auto ch = SocketChannel::from_fds(UniqueFd(), std::move(p.write), SocketOptions{16});
  EXPECT_EQ(ch.max_message_size(), 16u);
  EXPECT_EQ(error_of([&] { ch.send(bytes(17, 1)); }), errc::message_too_large);
  EXPECT_EQ(error_of([&] { (void)ch.try_send(bytes(17, 1)); }), errc::message_too_large);
  EXPECT_EQ(error_of([&] { (void)ch.send_for(bytes(1000, 1), 10ms); }), errc::message_too_large);
  EXPECT_EQ(bytes_waiting(p.read.get()), 0);
  ch.send(bytes(16, 2));
  EXPECT_EQ(take(p.read.get(), 32), concat({header(kMagic, kData, 16), bytes(16, 2)}));
}

TEST_F(SocketChannelTest, SendAfterCloseThrowsClosed) {
  auto p = make_pipe();
  auto ch = SocketChannel::from_fds(UniqueFd(), std::move(p.write));
  ch.close();
  ch.close();  // idempotent
  EXPECT_EQ(error_of([&] { ch.send(bytes("x")); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.try_send(bytes("x")); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.send_for(bytes("x"), 10ms); }), errc::closed);
  EXPECT_EQ(take(p.read.get(), 17), header(kMagic, kClose, 0)) << "one close frame, then EOF";
}

TEST_F(SocketChannelTest, FirstSendAndFirstRecvDropTheEndThisProcessDoesNotUse) {
  SocketChannel sender;
  // The only receiving end was this process's own: nobody can ever read what it sends.
  EXPECT_EQ(error_of([&] { sender.send(bytes("x")); }), errc::peer_dead);
  EXPECT_EQ(sender.read_fd(), -1);
  EXPECT_NE(sender.write_fd(), -1);
  EXPECT_EQ(error_of([&] { (void)sender.recv(); }), errc::closed) << "no receiving end here";

  SocketChannel receiver;
  std::vector<std::byte> out;
  // The only sending end was this process's: dropping it ends the stream.
  EXPECT_EQ(error_of([&] { (void)receiver.try_recv(out); }), errc::peer_dead);
  EXPECT_EQ(receiver.write_fd(), -1);
  EXPECT_NE(receiver.read_fd(), -1);
}

// A sender on a pipe(2) whose reader is gone must get errc::peer_dead, not die of SIGPIPE.
TEST_F(SocketChannelTest, SenderOnPipeWithoutReaderGetsPeerDeadNotSigpipe) {
  auto p = make_pipe();
  p.read.reset();
  auto child = Process::spawn([&] {
    auto ch = SocketChannel::from_fds(UniqueFd(), std::move(p.write));
    return outcome_of([&] { ch.send(bytes("anyone?")); });
  });
  p.write.reset();
  const int code = exit_code(child);
  EXPECT_EQ(code, testing::kPeerDead) << (code == -SIGPIPE ? "killed by SIGPIPE" : "");
}

// ---- timeouts -----------------------------------------------------------------------------

TEST_F(SocketChannelTest, TryRecvAndRecvForOnEmptyReturnFalseAndChangeNothing) {
  auto p = make_pipe();
  auto ch = SocketChannel::from_fds(std::move(p.read), UniqueFd());
  std::vector<std::byte> out = bytes("untouched");
  EXPECT_FALSE(ch.try_recv(out));
  const Deadline deadline = Deadline::after(30ms);
  EXPECT_FALSE(ch.recv_until(out, deadline));
  EXPECT_TRUE(deadline.expired()) << "recv gave up before its deadline";
  EXPECT_FALSE(ch.recv_for(out, 5ms));
  EXPECT_EQ(out, bytes("untouched"));
  put(p.write.get(), concat({header(kMagic, kData, 3), bytes("now")}));
  EXPECT_TRUE(ch.recv_for(out, 10s));
  EXPECT_EQ(out, bytes("now"));
}

TEST_F(SocketChannelTest, TrySendAndSendForOnFullReturnFalseAndWriteNothing) {
  auto p = make_pipe(4096);
  auto ch = SocketChannel::from_fds(UniqueFd(), std::move(p.write));
  const auto m = bytes(48, 0x77);  // 64-byte frames: atomic pipe writes, never half a frame
  int sent = 0;
  while (ch.try_send(m)) ++sent;
  ASSERT_GT(sent, 0);
  const int queued = bytes_waiting(p.read.get());
  EXPECT_EQ(queued, sent * 64);
  const Deadline deadline = Deadline::after(30ms);
  EXPECT_FALSE(ch.send_until(m, deadline));
  EXPECT_TRUE(deadline.expired()) << "send gave up before its deadline";
  EXPECT_FALSE(ch.send_for(m, 5ms));
  EXPECT_FALSE(ch.try_send(m));
  EXPECT_EQ(bytes_waiting(p.read.get()), queued);
  const auto frame = concat({header(kMagic, kData, 48), m});
  for (int i = 0; i < sent; ++i) ASSERT_EQ(take(p.read.get(), 64), frame) << i;
  EXPECT_TRUE(ch.try_send(m)) << "room again once read";
}

// ---- between processes --------------------------------------------------------------------

TEST_F(SocketChannelTest, MessagesOfRandomSizesArriveIntactThenClosed) {
  SocketChannel ch;
  const Payloads small(2000, 21);
  const Payloads large(300'000, 22);
  const std::uint64_t kSmall = testing::scaled(50'000);
  const std::uint64_t kLarge = testing::scaled(400);
  auto sender = Process::spawn([&] {
    for (std::uint64_t i = 0; i < kSmall; ++i) ch.send(small.of(i));
    for (std::uint64_t i = 0; i < kLarge; ++i) ch.send(large.of(i));
    ch.close();
    return 0;
  });
  std::vector<std::byte> m;
  for (std::uint64_t i = 0; i < kSmall; ++i) {
    ASSERT_EQ(error_of([&] { m = ch.recv(); }), std::error_code{}) << "message " << i;
    ASSERT_TRUE(small.matches(i, m)) << "message " << i;
  }
  for (std::uint64_t i = 0; i < kLarge; ++i) {
    ASSERT_TRUE(ch.recv_for(m, 10s)) << "large message " << i;
    ASSERT_TRUE(large.matches(i, m)) << "large message " << i;
  }
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::closed);
  EXPECT_EQ(error_of([&] { (void)ch.recv(); }), errc::closed);
  EXPECT_EQ(exit_code(sender), 0);
}

TEST_F(SocketChannelTest, TryRecvWhileTheSenderIsAliveButQuietIsFalse) {
  SocketChannel ch;
  auto seg = Segment::anonymous(1 << 16);
  auto& go = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    wait_for_start(go);
    ch.send(bytes("late"));
    ch.close();
    return 0;
  });
  std::vector<std::byte> out;
  EXPECT_FALSE(ch.try_recv(out));
  EXPECT_FALSE(ch.recv_for(out, 20ms));
  go.store(1, std::memory_order_release);
  EXPECT_TRUE(ch.recv_for(out, 10s));
  EXPECT_EQ(out, bytes("late"));
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(out, 10s); }), errc::closed);
  EXPECT_EQ(exit_code(sender), 0);
}

// ---- peer death ---------------------------------------------------------------------------

TEST_F(SocketChannelTest, ReceiverBlockedInRecvGetsPeerDeadWhenSenderIsKilled) {
  SocketChannel ch;
  auto seg = Segment::anonymous(1 << 16);
  auto& waiting = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    ch.send(bytes("one"));
    ch.send(bytes("two"));
    for (;;) ::pause();
  });
  auto receiver = Process::spawn([&] {
    std::vector<std::byte> m;
    if (!ch.recv_for(m, 10s) || m != bytes("one")) return 1;
    if (!ch.recv_for(m, 10s) || m != bytes("two")) return 2;
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return ch.recv_for(m, 10s); });
  });
  ch.disown();  // this process neither sends nor receives
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);  // most likely inside recv now; either way is fine
  sender.kill(SIGKILL);
  EXPECT_EQ(exit_code(receiver), testing::kPeerDead) << "1, 2: a message was lost";
  EXPECT_TRUE(sender.wait().signaled());
}

TEST_F(SocketChannelTest, MessagesSentBeforeSenderDiedAreDeliveredBeforePeerDead) {
  SocketChannel ch;
  auto seg = Segment::anonymous(1 << 16);
  auto& sent = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    for (int i = 0; i < 3; ++i) ch.send(bytes(static_cast<std::size_t>(100 * i), 0x40 + i));
    sent.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  ASSERT_TRUE(eventually([&] { return sent.load(std::memory_order_acquire) == 1; }));
  sender.kill(SIGKILL);
  EXPECT_TRUE(sender.wait().signaled());
  std::vector<std::byte> m;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(error_of([&] { EXPECT_TRUE(ch.recv_for(m, 10s)); }), std::error_code{});
    EXPECT_EQ(m, bytes(static_cast<std::size_t>(100 * i), 0x40 + i));
  }
  EXPECT_EQ(error_of([&] { (void)ch.recv_for(m, 10s); }), errc::peer_dead);
}

TEST_F(SocketChannelTest, SenderBlockedOnFullSocketGetsPeerDeadWhenReceiverIsKilled) {
  SocketChannel ch;
  auto seg = Segment::anonymous(1 << 16);
  auto& received = seg.make<Flag>(0u);
  auto& waiting = seg.make<Flag>(0u);
  auto receiver = Process::spawn([&] {
    std::vector<std::byte> m;
    if (!ch.recv_for(m, 10s)) return 1;
    received.store(1, std::memory_order_release);
    for (;;) ::pause();
  });
  auto sender = Process::spawn([&] {
    const auto m = bytes(1000, 5);
    ch.send(m);
    wait_for_start(received);
    while (ch.try_send(m)) {
    }
    waiting.store(1, std::memory_order_release);
    return outcome_of([&] { return ch.send_for(m, 10s); });
  });
  ch.disown();  // or the receiving end stays open here and the sender never learns
  ASSERT_TRUE(eventually([&] { return waiting.load(std::memory_order_acquire) == 1; }));
  std::this_thread::sleep_for(10ms);
  receiver.kill(SIGKILL);
  EXPECT_EQ(exit_code(sender), testing::kPeerDead) << "11: timed out, the receiver looked alive";
  EXPECT_TRUE(receiver.wait().signaled());
}

// The parent forked both ends and then calls close(): it only drops its own ends; the
// stream between the two children is untouched.
TEST_F(SocketChannelTest, CloseByAProcessThatNeitherSentNorReceivedDoesNotEndTheStream) {
  SocketChannel ch;
  auto seg = Segment::anonymous(1 << 16);
  auto& go = seg.make<Flag>(0u);
  auto sender = Process::spawn([&] {
    wait_for_start(go);
    for (int i = 0; i < 100; ++i) ch.send(bytes(16, static_cast<std::uint8_t>(i)));
    ch.close();
    return 0;
  });
  auto receiver = Process::spawn([&] {
    for (int i = 0; i < 100; ++i) {
      if (ch.recv() != bytes(16, static_cast<std::uint8_t>(i))) return 1;
    }
    return outcome_of([&] { (void)ch.recv(); });
  });
  ch.close();  // a bystander
  go.store(1, std::memory_order_release);
  EXPECT_EQ(exit_code(sender), 0);
  EXPECT_EQ(exit_code(receiver), testing::kClosed);
}

}  // namespace
}  // namespace ipckit
