// fuzz_link_frame: what a Link (Listener/Client, ipckit/channel/link.hpp) reads from a hostile
// peer, through a real SOCK_SEQPACKET socket pair. The input is a list of frames, each
// [u8 control][u16 size][bytes]: control's low two bits are how many descriptors ride with
// the frame (bit 2: a real memfd segment's, else a pipe's; bit 3: the frame header is made
// valid, with the kind from bits 4-5 and the length fixed up, so that deep paths are
// reached). The frames are sent, the raw end is closed, and the link is drained with
// recv_bytes_until / recv_segment_until (the kind the last error asked for) until it throws
// peer_dead. Allowed: values, bad_frame, bad_layout, size_mismatch, invalid_argument (a frame
// of the other kind, kept for the other call), peer_dead; and no descriptor may stay open.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "channel/link_frame.hpp"
#include "fuzz_support.hpp"
#include "ipckit/channel/link.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;

std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

// One real segment, made once: its descriptor is dup'ed into frames that pass a segment.
const ipckit::Segment& real_segment() {
  static const ipckit::Segment seg = ipckit::Segment::memfd(ipckit::Segment::kMinSize);
  return seg;
}

void send_frame(int fd, std::vector<std::byte> bytes, unsigned control) {
  std::vector<int> fds;
  for (unsigned i = 0; i < (control & 3U); ++i) {
    if ((control & 4U) != 0) {
      fds.push_back(::fcntl(real_segment().fd(), F_DUPFD_CLOEXEC, 0));
    } else {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) break;
      ::close(p[1]);
      fds.push_back(p[0]);
    }
  }
  if ((control & 8U) != 0) {
    const auto kind = static_cast<ipckit::detail::LinkKind>(1 + ((control >> 4) & 3U));
    const std::size_t payload = bytes.size() < 16 ? 0 : bytes.size() - 16;
    const std::uint64_t value = kind == ipckit::detail::LinkKind::message   ? payload
                                : kind == ipckit::detail::LinkKind::segment ? real_segment().size()
                                                                            : 0;
    const auto h = ipckit::detail::link_header(kind, value);
    bytes.resize(16 + payload);
    std::memcpy(bytes.data(), h.data(), h.size());
  }
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control_buf(CMSG_SPACE(sizeof(int) * 3));
  if (!fds.empty()) {
    msg.msg_control = control_buf.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  (void)::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);  // a full or refused frame: dropped
  for (int f : fds) ::close(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)real_segment();
  const std::size_t fds_before = open_fd_count();
  {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    ipckit::UniqueFd raw(sv[0]);
    ipckit::Link link = ipckit::Link::from_socket(ipckit::UniqueFd(sv[1]));
    ipckit::fuzz::Input in(data, size);
    for (int frames = 0; !in.empty() && frames < 32; ++frames) {
      const auto control = in.take<std::uint8_t>();
      const auto n = static_cast<std::size_t>(in.take<std::uint16_t>());
      const auto bytes = in.bytes(n);
      send_frame(raw.get(), {bytes.begin(), bytes.end()}, control);
    }
    raw.reset();
    bool want_segment = false;
    for (int i = 0; i < 200; ++i) {
      try {
        const auto deadline = ipckit::Deadline::after(std::chrono::seconds(0));
        if (want_segment) {
          auto seg = link.recv_segment_until(deadline);
          if (seg && seg->size() != real_segment().size()) ipckit::fuzz::fail("segment size");
        } else {
          auto bytes = link.recv_bytes_until(deadline);
          if (bytes && bytes->size() > ipckit::Link::kMaxMessage) ipckit::fuzz::fail("too long");
        }
      } catch (const Error& e) {
        expect(e, {errc::bad_frame, errc::bad_layout, errc::size_mismatch, errc::invalid_argument,
                   errc::peer_dead});
        if (e.is(errc::peer_dead)) break;
        if (e.is(errc::invalid_argument)) want_segment = !want_segment;
      }
    }
  }
  if (open_fd_count() != fds_before) ipckit::fuzz::fail("a descriptor from a frame stayed open");
  return 0;
}
