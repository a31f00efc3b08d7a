// Listener/Client/Link and memfd segments: unrelated processes (forked before anything is
// shared) meet at an address, check each other's uid and pass a segment by descriptor.
#include "ipckit/channel/link.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ipckit/channel/queue.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "leak_check.hpp"
#include "proc_scan.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using LinkTest = testing::LeakCheckedTest;
using testing::error_of;

constexpr uid_t kNobody = 65534;

std::string abstract_address() { return "@" + Segment::unique_name("ipckit-link-test"); }

// True when `f` threw Error(EACCES) whose text names `uid`.
template <class F>
bool refused_naming(F&& f, uid_t uid) {
  const auto e = testing::caught<Error>(std::forward<F>(f));
  return e && e->code() == std::errc::permission_denied &&
         std::string(e->what()).find("uid " + std::to_string(uid)) != std::string::npos;
}

// A client on a thread of this process connects to `listener` at `address`; true when the
// listener accepted it and a message crossed.
bool serves_one(Listener& listener, const std::string& address) {
  int got = 0;
  std::thread client([&] {
    try {
      Client c(address);
      got = c.recv<int>();
    } catch (const Error&) {
    }
  });
  if (auto link = listener.accept_for(10s)) link->send(11);
  client.join();
  return got == 11;
}

TEST_F(LinkTest, MemfdSegmentHasNoNameIsSealedAndHoldsObjects) {
  auto seg = Segment::memfd(1 << 16);
  EXPECT_TRUE(seg.name().empty());
  EXPECT_FALSE(seg.is_anonymous());
  ASSERT_GE(seg.fd(), 0);
  const int seals = ::fcntl(seg.fd(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(::ftruncate(seg.fd(), 8192), 0);  // nobody can shrink it under the others
  seg.construct<int>("x", 42);
  // A second mapping through the descriptor sees the same object.
  auto again = Segment::adopt(UniqueFd(::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0)), seg.size());
  EXPECT_EQ(again.find<int>("x"), 42);
}

TEST_F(LinkTest, AdoptRefusesWhatIsNotASegment) {
  EXPECT_EQ(error_of([] { Segment::adopt(UniqueFd()); }), errc::invalid_argument);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd w(p[1]);
  EXPECT_EQ(error_of([&] { Segment::adopt(UniqueFd(p[0])); }), errc::bad_layout);
  // A memfd of the right size holding garbage.
  UniqueFd junk(::memfd_create("junk", MFD_CLOEXEC));
  ASSERT_TRUE(junk);
  std::vector<char> bytes(16384, 'z');
  ASSERT_EQ(::write(junk.get(), bytes.data(), bytes.size()), 16384);
  EXPECT_EQ(error_of([&] { Segment::adopt(std::move(junk)); }), errc::bad_layout);
  auto seg = Segment::memfd(1 << 16);
  UniqueFd dup(::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0));
  EXPECT_EQ(error_of([&] { Segment::adopt(std::move(dup), 1 << 17); }), errc::size_mismatch);
}

// The server forks the client before it makes anything, so the client shares nothing but
// the address: it gets the segment over the socket and puts into the queue found in it.
TEST_F(LinkTest, UnrelatedProcessesShareAQueueThroughAPassedSegment) {
  const std::string address = abstract_address();
  auto client = Process::spawn([&] {
    Client link = Client::connect_for(address, 10s);
    if (link.peer().pid != ::getppid()) return 2;
    Segment seg = link.recv_segment();
    auto q = Queue<std::string>::find(seg, link.recv<std::string>());
    for (int i = 0; i < 1000; ++i) q.put("item " + std::to_string(i));
    return link.recv<int>() == 7 ? 0 : 3;
  });
  Listener listener(address);
  auto seg = Segment::memfd(1 << 20);
  auto q = Queue<std::string>::construct(seg, "jobs", 1 << 16);
  Link peer = listener.accept();
  EXPECT_EQ(peer.peer().pid, client.pid());
  EXPECT_EQ(peer.peer().uid, ::geteuid());
  peer.send_segment(seg);
  peer.send(std::string("jobs"));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(q.get(), "item " + std::to_string(i));
  peer.send(7);
  const auto st = client.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(LinkTest, PathAddressIsPrivateRemovedAfterwardsAndAStaleOneIsReplaced) {
  const std::string path = "/tmp/" + Segment::unique_name("ipckit-link") + ".sock";
  {
    Listener listener(path);
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // A second listener at a live address is refused, and leaves the first one's file.
    EXPECT_EQ(error_of([&] { Listener again(path); }), errc::already_exists);
    EXPECT_TRUE(serves_one(listener, path));
  }
  struct stat st {};
  EXPECT_NE(::lstat(path.c_str(), &st), 0);
  // A listener killed at once leaves its socket file: the next one replaces it.
  auto kid = Process::spawn([&] {
    Listener l(path);
    ::kill(::getpid(), SIGKILL);
    return 1;
  });
  (void)kid.wait_for(10s);
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  {
    Listener listener(path);
    EXPECT_TRUE(serves_one(listener, path));
  }
  EXPECT_NE(::lstat(path.c_str(), &st), 0);
  // A file that is not a socket is never removed.
  { UniqueFd f(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)); }
  EXPECT_EQ(error_of([&] { Listener l(path); }), errc::already_exists);
  EXPECT_EQ(::lstat(path.c_str(), &st), 0);
  ::unlink(path.c_str());
}

TEST_F(LinkTest, BadAddressesAndAbsentListeners) {
  EXPECT_EQ(error_of([] { Listener l(""); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Listener l("@"); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Listener l(std::string(200, 'a')); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Client c("@" + Segment::unique_name("nobody-here")); }), errc::not_found);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of([] { Client::connect_for("@" + Segment::unique_name("nobody"), 50ms); }),
            errc::not_found);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
}

TEST_F(LinkTest, ClientStartedFirstWaitsForTheListener) {
  const std::string address = abstract_address();
  auto client = Process::spawn([&] {
    Client link = Client::connect_for(address, 20s);
    return link.recv<std::string>() == "late" ? 0 : 1;
  });
  std::this_thread::sleep_for(100ms);
  Listener listener(address);
  listener.accept().send(std::string("late"));
  const auto st = client.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(LinkTest, AListenerRefusesAnotherUidAndGoesOn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  const std::string address = abstract_address();
  Listener listener(address);
  auto stranger = Process::spawn([&] {
    if (::setresuid(kNobody, kNobody, kNobody) != 0) return 2;
    const bool first = refused_naming([&] { Client c(address); }, kNobody);
    const bool second = refused_naming([&] { Client c(address); }, kNobody);
    return first && second ? 0 : 1;
  });
  for (int i = 0; i < 2; ++i) {  // the stranger tries twice
    EXPECT_TRUE(refused_naming([&] { (void)listener.accept_for(20s); }, kNobody));
  }
  auto st = stranger.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
  EXPECT_TRUE(serves_one(listener, address));  // and still serves its own user
}

TEST_F(LinkTest, AnAllowListLetsAnotherUidIn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  const std::string address = abstract_address();
  Listener listener(address, {.allowed_uids = {kNobody}});
  auto stranger = Process::spawn([&] {
    if (::setresuid(kNobody, kNobody, kNobody) != 0) return 2;
    // The listener runs as root: this client must allow that uid in turn.
    if (!refused_naming([&] { Client c(address); }, 0)) return 3;
    Client c(address, {.allowed_uids = {0}});
    c.send(std::string("real"));
    return c.recv<int>() == 5 ? 0 : 1;
  });
  // The first connection is the client that refused us: it hangs up without a word.
  for (int i = 0; i < 2; ++i) {
    Link peer = listener.accept_for(20s).value();
    EXPECT_EQ(peer.peer().uid, kNobody);
    std::optional<std::string> hello;
    if (error_of([&] { hello = peer.recv_for<std::string>(20s); }) == errc::peer_dead) continue;
    ASSERT_EQ(hello, "real");
    peer.send(5);
    break;
  }
  auto st = stranger.wait_for(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->success()) << st->describe();
}

TEST_F(LinkTest, AClientRefusesAListenerOfAnotherUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a listener as another uid";
  const std::string address = abstract_address();
  auto seg = Segment::anonymous(1 << 16);
  auto& up = seg.make<std::atomic<std::uint32_t>>(0);
  auto squatter = Process::spawn([&] {
    if (::setresuid(kNobody, kNobody, kNobody) != 0) return 2;
    Listener l(address);
    up.store(1);
    for (;;) (void)l.accept_for(5s);
  });
  ASSERT_TRUE(testing::eventually([&] { return up.load() == 1; }));
  EXPECT_TRUE(refused_naming([&] { Client c(address); }, kNobody));
  squatter.kill(SIGKILL);
  (void)squatter.wait();
}

TEST_F(LinkTest, MessagesKeepOrderAndAFrameOfTheOtherKindWaits) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  Link a = Link::from_socket(UniqueFd(sv[0]));
  Link b = Link::from_socket(UniqueFd(sv[1]));
  EXPECT_EQ(a.peer().pid, ::getpid());
  EXPECT_FALSE(b.recv_for<int>(10ms).has_value());
  auto seg = Segment::memfd(1 << 16);
  seg.construct<int>("v", 9);
  a.send(std::string("first"));
  a.send_segment(seg);
  a.send(std::vector<int>{1, 2, 3});
  EXPECT_EQ(error_of([&] { b.recv_segment(); }), errc::invalid_argument);
  EXPECT_EQ(b.recv<std::string>(), "first");
  EXPECT_EQ(error_of([&] { b.recv<int>(); }), errc::invalid_argument);
  EXPECT_EQ(b.recv_segment().find<int>("v"), 9);
  EXPECT_EQ(b.recv<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(error_of([&] { a.send(std::string(Link::kMaxMessage + 1, 'x')); }),
            errc::message_too_large);
  EXPECT_EQ(error_of([&] { a.send_segment(Segment::anonymous(1 << 16)); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { Link::from_socket(UniqueFd(::memfd_create("x", MFD_CLOEXEC))); }),
            errc::invalid_argument);
  a.close();
  EXPECT_EQ(error_of([&] { b.recv<int>(); }), errc::peer_dead);
  EXPECT_EQ(error_of([&] { b.send(1); }), errc::peer_dead);
}

TEST_F(LinkTest, AKilledPeerIsPeerDeadNotAHang) {
  const std::string address = abstract_address();
  Listener listener(address);
  auto client = Process::spawn([&] {
    Client c(address);
    ::pause();
    return 0;
  });
  Link peer = listener.accept_for(20s).value();
  client.kill(SIGKILL);
  (void)client.wait();
  EXPECT_EQ(error_of([&] { (void)peer.recv_for<int>(10s); }), errc::peer_dead);
  EXPECT_EQ(error_of([&] { peer.send(1); }), errc::peer_dead);
}

// Raw frames a hostile peer writes: each is refused with bad_frame (or, for a descriptor that
// is no segment, bad_layout), descriptors that came with it are closed, and the link goes on.
TEST_F(LinkTest, HostileFramesAreRefusedAndTheirDescriptorsClosed) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd raw(sv[0]);
  Link b = Link::from_socket(UniqueFd(sv[1]));
  const auto fds_before = testing::open_fds().size();
  // Sends `bytes` with `fds` (closed here afterwards: only the receiver's copies remain).
  const auto send_raw = [&](std::vector<std::byte> bytes, std::vector<int> fds) {
    iovec iov{bytes.data(), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * 8));
    if (!fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    EXPECT_GE(::sendmsg(raw.get(), &msg, 0), 0);
    for (int fd : fds) ::close(fd);
  };
  const auto header = [](std::uint32_t magic, std::uint16_t kind, std::uint64_t value) {
    std::vector<std::byte> h(16);
    const std::uint16_t version = 1;
    std::memcpy(h.data(), &magic, 4);
    std::memcpy(h.data() + 4, &version, 2);
    std::memcpy(h.data() + 6, &kind, 2);
    std::memcpy(h.data() + 8, &value, 8);
    return h;
  };
  constexpr std::uint32_t kMagic = 0x4c4b5049;
  send_raw({std::byte{1}, std::byte{2}}, {});                  // short
  send_raw(header(0xdeadbeef, 4, 0), {});                      // bad magic
  send_raw(header(kMagic, 99, 0), {});                         // unknown kind
  send_raw(header(kMagic, 4, 1000), {});                       // length is not the payload's
  send_raw(header(kMagic, 4, 0), {::dup(2), ::dup(2)});        // a message with descriptors
  send_raw(header(kMagic, 3, 1 << 16), {});                    // a segment without one
  send_raw(header(kMagic, 3, 1 << 16), {::dup(2), ::dup(2)});  // ... with two
  std::vector<int> six;
  for (int i = 0; i < 6; ++i) six.push_back(::dup(2));
  send_raw(header(kMagic, 3, 1 << 16), six);  // more descriptors than a frame may bring
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(error_of([&] { (void)b.recv_for<int>(5s); }), errc::bad_frame) << "frame " << i;
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::close(p[1]);
  send_raw(header(kMagic, 3, 1 << 16), {p[0]});  // one descriptor, but no segment
  EXPECT_EQ(error_of([&] { b.recv_segment(); }), errc::bad_layout);
  auto payload = header(kMagic, 4, 4);
  const int v = 77;
  payload.resize(20);
  std::memcpy(payload.data() + 16, &v, 4);
  send_raw(payload, {});
  EXPECT_EQ(b.recv<int>(), 77);                       // the link went on
  EXPECT_EQ(testing::open_fds().size(), fds_before);  // every descriptor that came was closed
}

TEST_F(LinkTest, SendsHaveADeadlineAndAnEmptyFrameIsBadNotAHangUp) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  Link a = Link::from_socket(UniqueFd(sv[0]));
  Link b = Link::from_socket(UniqueFd(sv[1]));
  const std::string block(4000, 'x');
  int sent = 0;
  while (a.send_for(block, 10ms)) ++sent;  // b does not read: the buffer fills
  EXPECT_GT(sent, 0);
  EXPECT_EQ(b.recv<std::string>(), block);
  EXPECT_TRUE(a.send_for(std::string("after"), 5s));  // room again
  for (int i = 1; i < sent; ++i) (void)b.recv<std::string>();
  EXPECT_EQ(b.recv<std::string>(), "after");
  // An empty frame from a live peer is a bad frame, not the peer's end.
  int raw[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, raw), 0);
  UniqueFd peer(raw[0]);
  Link c = Link::from_socket(UniqueFd(raw[1]));
  ASSERT_EQ(::send(peer.get(), "", 0, 0), 0);
  EXPECT_EQ(error_of([&] { (void)c.recv_for<int>(5s); }), errc::bad_frame);
  peer.reset();
  EXPECT_EQ(error_of([&] { (void)c.recv_for<int>(5s); }), errc::peer_dead);
}

TEST_F(LinkTest, AListenerThatNeverAcceptsTimesAClientOutInsteadOfHangingIt) {
  const std::string address = abstract_address();
  // A socket that listens (a backlog of one) and never accepts, filled by two connections.
  UniqueFd squatter(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path + 1, address.data() + 1, address.size() - 1);
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  ASSERT_EQ(::bind(squatter.get(), reinterpret_cast<sockaddr*>(&sun), len), 0);
  ASSERT_EQ(::listen(squatter.get(), 0), 0);
  std::vector<UniqueFd> fillers;
  for (int i = 0; i < 4; ++i) {
    UniqueFd f(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    (void)::connect(f.get(), reinterpret_cast<sockaddr*>(&sun), len);
    fillers.push_back(std::move(f));
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of([&] { Client c(address, {.allowed_uids = {}, .handshake_timeout = 200ms}); }),
            errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

}  // namespace
}  // namespace ipckit
