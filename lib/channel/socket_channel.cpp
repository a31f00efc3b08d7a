#include "ipckit/channel/socket_channel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "../core/fd_wait.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit {
namespace {

constexpr std::uint32_t kFrameMagic = 0x49504631;  // "IPF1"
constexpr std::uint32_t kKindData = 1;
constexpr std::uint32_t kKindClose = 2;
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
// A frame's payload up to this size is allocated in one go, before its bytes arrive.
constexpr std::size_t kTrustBytes = std::size_t{16} << 20;

struct FrameHeader {
  std::uint32_t magic;
  std::uint32_t kind;
  std::uint64_t length;
};
static_assert(sizeof(FrameHeader) == SocketChannel::kFrameHeader);

void set_nonblocking(int fd) {
  if (fd < 0) return;
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw_errno("SocketChannel: fcntl(O_NONBLOCK)");
  }
}

// writev() on a pipe(2) whose reader is gone raises SIGPIPE, which kills the process by
// default. Blocks SIGPIPE for the call and takes back a SIGPIPE the call raised (one that
// was pending before stays pending), so the caller sees EPIPE instead.
ssize_t writev_nosignal(int fd, const iovec* iov, int count) {
  sigset_t pipe_set, old_mask, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  const ssize_t n = ::writev(fd, iov, count);
  const int err = errno;
  if (n < 0 && err == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = err;
  return n;
}

}  // namespace

SocketChannel::SocketChannel(Options options) : options_(options) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    throw_errno("SocketChannel: socketpair(AF_UNIX, SOCK_STREAM)");
  }
  read_.reset(sv[0]);
  write_.reset(sv[1]);
  ::shutdown(read_.get(), SHUT_WR);  // one-way: the reader never writes
  set_nonblocking(read_.get());
  set_nonblocking(write_.get());
}

SocketChannel::SocketChannel(UniqueFd r, UniqueFd w, Options options) noexcept
    : options_(options), read_(std::move(r)), write_(std::move(w)) {}

SocketChannel SocketChannel::from_fds(UniqueFd read_end, UniqueFd write_end, Options options) {
  set_nonblocking(read_end.get());
  set_nonblocking(write_end.get());
  return SocketChannel(std::move(read_end), std::move(write_end), options);
}

void SocketChannel::become_sender() {
  const int me = current_pid();
  if (role_pid_send_ == me) return;
  role_pid_send_ = me;
  if (role_pid_recv_ != me) read_.reset();
}

void SocketChannel::become_receiver() {
  const int me = current_pid();
  if (role_pid_recv_ == me) return;
  role_pid_recv_ = me;
  if (role_pid_send_ != me) write_.reset();
}

bool SocketChannel::try_send(std::span<const std::byte> msg) {
  return send_until(msg, Deadline::after(std::chrono::seconds(0)));
}

bool SocketChannel::send_until(std::span<const std::byte> msg, const Deadline& deadline) {
  if (msg.size() > options_.max_message) {
    throw_error(errc::message_too_large,
                "SocketChannel::send: a message of " + std::to_string(msg.size()) +
                    " bytes exceeds max_message " + std::to_string(options_.max_message));
  }
  become_sender();
  if (sent_close_) throw_error(errc::closed, "SocketChannel::send: the channel is closed");
  if (!write_) throw_error(errc::closed, "SocketChannel::send: this process holds no sending end");
  return write_frame(kKindData, msg, deadline);
}

bool SocketChannel::write_frame(std::uint32_t kind, std::span<const std::byte> payload,
                                const Deadline& deadline) {
  const FrameHeader h{kFrameMagic, kind, payload.size()};
  iovec iov[2] = {{const_cast<FrameHeader*>(&h), sizeof h},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  int first = 0;
  const int count = payload.empty() ? 1 : 2;
  std::size_t written = 0;
  for (;;) {
    msghdr m{};
    m.msg_iov = iov + first;
    m.msg_iovlen = static_cast<std::size_t>(count - first);
    ssize_t n = ::sendmsg(write_.get(), &m, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = writev_nosignal(write_.get(), iov + first, count - first);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // A started frame is always finished: giving up halfway would corrupt the stream.
        const Deadline& d = written == 0 ? deadline : Deadline::never();
        if (!detail::wait_fd(write_.get(), POLLOUT, d, "SocketChannel")) return false;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        throw_error(errc::peer_dead, "SocketChannel::send: the receiver has exited");
      }
      throw_errno("SocketChannel::send: sendmsg()");
    }
    written += static_cast<std::size_t>(n);
    auto left = static_cast<std::size_t>(n);
    while (first < count && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first == count) return true;
    iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
    iov[first].iov_len -= left;
  }
}

bool SocketChannel::fill(std::size_t n, const Deadline& deadline, bool frame_started) {
  while (rend_ - rbeg_ < n) {
    if (rbuf_.size() - rbeg_ < n) {  // make room: move the unread part to the front, grow
      if (rend_ > rbeg_) std::memmove(rbuf_.data(), rbuf_.data() + rbeg_, rend_ - rbeg_);
      rend_ -= rbeg_;
      rbeg_ = 0;
      if (rbuf_.size() < n) rbuf_.resize(std::max(n, kReadChunk));
    }
    const ssize_t r = ::read(read_.get(), rbuf_.data() + rend_, rbuf_.size() - rend_);
    if (r > 0) {
      rend_ += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) {
      if (!frame_started && rend_ == rbeg_) {
        throw_error(errc::peer_dead,
                    "SocketChannel::recv: the sender exited without closing the channel");
      }
      fail_frame("the stream ended in the middle of a frame (truncated frame)");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) throw_errno("SocketChannel::recv: read()");
    const bool empty = rend_ == rbeg_;
    if (!detail::wait_fd(read_.get(), POLLIN,
                         (frame_started || !empty) ? Deadline::never() : deadline,
                         "SocketChannel")) {
      return false;
    }
  }
  return true;
}

WaitSource SocketChannel::wait_source() {
  WaitSource s;
  s.fd = read_.get();
  s.events = POLLIN;
  s.ready = [this](bool) {
    if (broken_ || got_close_ || !read_) return true;
    if (rend_ - rbeg_ >= kFrameHeader) {
      FrameHeader h{};
      std::memcpy(&h, rbuf_.data() + rbeg_, sizeof h);
      if (h.magic != kFrameMagic || h.length > options_.max_message ||
          rend_ - rbeg_ >= kFrameHeader + h.length) {
        return true;  // a whole frame, or a bad one (recv() throws at once)
      }
    }
    pollfd p{read_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  };
  return s;
}

bool SocketChannel::try_recv(std::vector<std::byte>& out) {
  return recv_until(out, Deadline::after(std::chrono::seconds(0)));
}

std::vector<std::byte> SocketChannel::recv() {
  std::vector<std::byte> out;
  (void)recv_until(out, Deadline::never());
  return out;
}

bool SocketChannel::recv_until(std::vector<std::byte>& out, const Deadline& deadline) {
  become_receiver();
  if (broken_) throw_error(errc::bad_frame, "SocketChannel::recv: the channel saw a bad frame");
  if (got_close_) throw_error(errc::closed, "SocketChannel::recv: the channel is closed");
  if (!read_) throw_error(errc::closed, "SocketChannel::recv: this process holds no receiving end");
  if (!fill(kFrameHeader, deadline, false)) return false;
  FrameHeader h{};
  std::memcpy(&h, rbuf_.data() + rbeg_, sizeof h);
  if (h.magic != kFrameMagic) fail_frame("bad magic word");
  if (h.kind == kKindClose) {
    if (h.length != 0) fail_frame("a close frame with a payload");
    rbeg_ += kFrameHeader;
    got_close_ = true;
    throw_error(errc::closed, "SocketChannel::recv: the channel is closed");
  }
  if (h.kind != kKindData) fail_frame("unknown frame kind");
  if (h.length > options_.max_message) fail_frame("frame length exceeds max_message");
  const auto len = static_cast<std::size_t>(h.length);
  rbeg_ += kFrameHeader;
  if (len <= kReadChunk) {
    fill(len, Deadline::never(), true);
    out.assign(rbuf_.data() + rbeg_, rbuf_.data() + rbeg_ + len);
    rbeg_ += len;
    return true;
  }
  // Large payloads go straight into `out`, not through the read-ahead buffer. Past
  // kTrustBytes, `out` grows (doubling) as the bytes arrive: a header that lies about its
  // length costs kTrustBytes or twice what was actually sent, not max_message.
  const std::size_t have = std::min(len, rend_ - rbeg_);
  out.resize(std::min(len, std::max(have, kTrustBytes)));
  std::memcpy(out.data(), rbuf_.data() + rbeg_, have);
  rbeg_ += have;
  std::size_t got = have;
  while (got < len) {
    if (got == out.size()) out.resize(std::min(len, 2 * out.size()));
    const ssize_t r = ::read(read_.get(), out.data() + got, out.size() - got);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r == 0) {
      fail_frame("the stream ended in the middle of a frame (truncated frame)");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      detail::wait_fd(read_.get(), POLLIN, Deadline::never(), "SocketChannel");
    } else if (errno != EINTR) {
      throw_errno("SocketChannel::recv: read()");
    }
  }
  return true;
}

void SocketChannel::fail_frame(const char* why) {
  broken_ = true;
  throw_error(errc::bad_frame, std::string("SocketChannel::recv: ") + why);
}

void SocketChannel::close() noexcept {
  const int me = current_pid();
  if (role_pid_recv_ == me && role_pid_send_ != me) {
    read_.reset();
    return;
  }
  // A process that has sent, or holds nothing but a sending end, is the sender; any other
  // is a bystander and must not end the real sender's stream.
  const bool sender = role_pid_send_ == me || (write_ && !read_);
  if (!sender) {
    disown();
    return;
  }
  if (write_ && !sent_close_) {
    sent_close_ = true;
    try {
      // Bounded: a receiver that stopped reading must not hang the closer.
      (void)write_frame(kKindClose, {}, Deadline::after(std::chrono::seconds(1)));
    } catch (...) {  // the receiver is gone: nothing to tell it
    }
    ::shutdown(write_.get(), SHUT_WR);
  }
  sent_close_ = true;
  write_.reset();
  if (role_pid_recv_ != me) read_.reset();
}

void SocketChannel::disown() noexcept {
  read_.reset();
  write_.reset();
}

}  // namespace ipckit
