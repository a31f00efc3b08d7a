#include "ipckit/channel/link.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "../core/fd_wait.hpp"
#include "ipckit/core/error.hpp"
#include "link_frame.hpp"

namespace ipckit {

using detail::LinkKind;

namespace {

// Descriptors a received frame may bring (more are a bad frame, and all are closed).
constexpr std::size_t kMaxFds = 4;
constexpr std::chrono::milliseconds kConnectPoll{2};

struct Address {
  sockaddr_un sun{};
  socklen_t len = 0;
  bool abstract = false;
};

// "@name" → the abstract namespace; anything else is a path.
Address parse_address(std::string_view address, const std::string& what) {
  Address a;
  a.sun.sun_family = AF_UNIX;
  a.abstract = !address.empty() && address.front() == '@';
  const std::size_t room = sizeof(a.sun.sun_path) - (a.abstract ? 0 : 1);
  if (address.empty() || (a.abstract && address.size() == 1) || address.size() > room) {
    throw_error(errc::invalid_argument, what + ": an address is a path or \"@name\" of 1.." +
                                            std::to_string(room) + " bytes");
  }
  if (address.find('\0') != std::string_view::npos) {
    throw_error(errc::invalid_argument, what + ": the address holds a NUL byte");
  }
  std::memcpy(a.sun.sun_path, address.data(), address.size());
  if (a.abstract) a.sun.sun_path[0] = '\0';
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() +
                                 (a.abstract ? 0 : 1));
  return a;
}

UniqueFd seqpacket_socket(const std::string& what, bool nonblocking = false) {
  UniqueFd fd(
      ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) throw_errno(what + ": socket()");
  return fd;
}

void set_blocking(int fd, bool blocking, const std::string& what) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 ||
      ::fcntl(fd, F_SETFL, blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK)) != 0) {
    throw_errno(what + ": fcntl(O_NONBLOCK)");
  }
}

// A path made absolute (a relative one would mean another file after a chdir); "@name" as is.
std::string absolute_address(std::string_view address) {
  if (address.empty() || address.front() == '@' || address.front() == '/') {
    return std::string(address);
  }
  std::string cwd(4096, '\0');
  if (::getcwd(cwd.data(), cwd.size()) == nullptr) return std::string(address);
  cwd.resize(std::strlen(cwd.c_str()));
  return cwd + "/" + std::string(address);
}

PeerCredentials peer_of(int fd, const std::string& what) {
  ucred c{};
  socklen_t len = sizeof c;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) {
    throw_errno(what + ": SO_PEERCRED");
  }
  return {c.pid, c.uid, c.gid};
}

bool allowed(uid_t uid, const std::vector<uid_t>& list) {
  return uid == ::geteuid() || std::find(list.begin(), list.end(), uid) != list.end();
}

[[noreturn]] void throw_peer_dead(const std::string& what) {
  throw_error(errc::peer_dead, what + ": the peer hung up (exited, was killed, or closed)");
}

enum class Sent { ok, gone, timeout };

// Sends one frame (and `pass_fd` with it when >= 0) by the deadline: the socket's buffer may
// be full while the peer does not read.
Sent send_frame(int fd, LinkKind kind, std::uint64_t value, std::span<const std::byte> payload,
                int pass_fd, const Deadline& deadline, const std::string& what) {
  if (fd < 0) throw_error(errc::closed, what + ": the link was closed");
  auto header = detail::link_header(kind, value);
  std::array<iovec, 2> iov{
      {{header.data(), header.size()}, {const_cast<std::byte*>(payload.data()), payload.size()}}};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = payload.empty() ? 1 : 2;
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  if (pass_fd >= 0) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  for (;;) {
    if (::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) return Sent::ok;
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return Sent::gone;
    if (errno == EAGAIN) {
      if (!detail::wait_fd(fd, POLLOUT, deadline, "Link")) return Sent::timeout;
      continue;
    }
    if (errno == EMSGSIZE) {
      throw_error(errc::message_too_large, what + ": a frame of " +
                                               std::to_string(header.size() + payload.size()) +
                                               " bytes does not fit the socket");
    }
    throw_errno(what + ": sendmsg()");
  }
}

// A handshake frame: sent at once or not at all (the peer just connected; its buffer is empty).
bool send_now(int fd, LinkKind kind, std::uint64_t value, const std::string& what) {
  return send_frame(fd, kind, value, {}, -1, Deadline::after(std::chrono::seconds(1)), what) ==
         Sent::ok;
}

}  // namespace

struct Link::Frame {
  LinkKind kind{};
  std::uint64_t value = 0;
  std::vector<std::byte> payload;
  UniqueFd fd;
};

Link Link::from_socket(UniqueFd socket) {
  const std::string what = "Link::from_socket";
  int type = 0;
  int domain = 0;
  socklen_t len = sizeof type;
  if (!socket || ::getsockopt(socket.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      (len = sizeof domain, ::getsockopt(socket.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len)) !=
          0 ||
      type != SOCK_SEQPACKET || domain != AF_UNIX) {
    throw_error(errc::invalid_argument, what + ": not a Unix SOCK_SEQPACKET socket");
  }
  ucred c{};
  len = sizeof c;
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_PEERCRED, &c, &len) != 0 || c.pid <= 0) {
    throw_error(errc::invalid_argument, what + ": the socket is not connected");
  }
  return Link(std::move(socket), {c.pid, c.uid, c.gid});
}

bool Link::next_frame(const Deadline& deadline, Frame& out) {
  const std::string what = "Link (peer pid " + std::to_string(peer_.pid) + ")";
  if (stash_kind_ != 0) {
    out.kind = static_cast<LinkKind>(std::exchange(stash_kind_, 0));
    out.value = stash_value_;
    out.payload = std::move(stash_);
    out.fd = std::move(stash_fd_);
    return true;
  }
  if (!fd_) throw_error(errc::closed, what + ": the link was closed");
  std::vector<std::byte> buf(detail::kLinkHeader + kMaxMessage);
  for (;;) {
    if (!detail::wait_fd(fd_.get(), POLLIN, deadline, "Link")) return false;
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      if (errno == ECONNRESET) throw_peer_dead(what);
      throw_errno(what + ": recvmsg()");
    }
    // Every descriptor that came is owned (and closed unless used) before anything is checked.
    std::vector<UniqueFd> fds;
    fds.reserve(kMaxFds);  // no allocation can fail between taking descriptors
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    }
    if (n == 0 && fds.empty()) {  // end of stream, or an empty frame from a live peer
      pollfd p{fd_.get(), POLLRDHUP, 0};
      if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP)) != 0) {
        throw_peer_dead(what);
      }
    }
    const bool truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    const detail::LinkFrame f = detail::parse_link_frame(
        std::span(buf.data(), static_cast<std::size_t>(n)), fds.size(), truncated, kMaxMessage);
    out.kind = f.kind;
    out.value = f.value;
    out.payload.assign(f.payload.begin(), f.payload.end());
    out.fd = fds.empty() ? UniqueFd() : std::move(fds.front());
    return true;
  }
}

void Link::send_segment(const Segment& seg) {
  const std::string what = "Link::send_segment";
  if (seg.fd() < 0) {
    throw_error(errc::invalid_argument,
                what + ": an anonymous segment has no descriptor to pass (use Segment::memfd)");
  }
  if (send_frame(fd_.get(), LinkKind::segment, seg.size(), {}, seg.fd(), Deadline::never(), what) ==
      Sent::gone) {
    throw_peer_dead(what);
  }
}

std::optional<Segment> Link::recv_segment_until(const Deadline& deadline) {
  Frame f;
  if (!next_frame(deadline, f)) return std::nullopt;
  if (f.kind == LinkKind::message) {
    stash_kind_ = static_cast<int>(f.kind);
    stash_value_ = f.value;
    stash_ = std::move(f.payload);
    throw_error(errc::invalid_argument,
                "Link::recv_segment: the next frame is a message, not a segment (recv() takes it)");
  }
  if (f.kind != LinkKind::segment) {
    throw_error(errc::bad_frame, "Link::recv_segment: a handshake frame after the handshake");
  }
  return Segment::adopt(std::move(f.fd), f.value);
}

bool Link::send_bytes_until(std::span<const std::byte> bytes, const Deadline& deadline) {
  const std::string what = "Link::send";
  if (bytes.size() > kMaxMessage) {
    throw_error(errc::message_too_large, what + ": " + std::to_string(bytes.size()) +
                                             " encoded bytes, over " + std::to_string(kMaxMessage));
  }
  const Sent r = send_frame(fd_.get(), LinkKind::message, bytes.size(), bytes, -1, deadline, what);
  if (r == Sent::gone) throw_peer_dead(what);
  return r == Sent::ok;
}

std::optional<std::vector<std::byte>> Link::recv_bytes_until(const Deadline& deadline) {
  Frame f;
  if (!next_frame(deadline, f)) return std::nullopt;
  if (f.kind != LinkKind::message) {
    const bool segment = f.kind == LinkKind::segment;
    if (segment) {
      stash_kind_ = static_cast<int>(f.kind);
      stash_value_ = f.value;
      stash_fd_ = std::move(f.fd);
    }
    throw_error(segment ? errc::invalid_argument : errc::bad_frame,
                segment ? "Link::recv: the next frame is a segment (recv_segment() takes it)"
                        : "Link::recv: a handshake frame after the handshake");
  }
  return std::move(f.payload);
}

WaitSource wait_source(Link& link) {
  WaitSource s;
  s.fd = link.fd_.get();
  s.events = POLLIN;
  s.ready = [&link](bool) {
    if (link.stash_kind_ != 0 || !link.fd_) return true;
    pollfd p{link.fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  };
  return s;
}

// ---- Listener ------------------------------------------------------------------------------

Listener::Listener(std::string_view address, ListenerOptions options)
    : address_(absolute_address(address)), options_(std::move(options)) {
  const std::string what = "Listener(\"" + address_ + "\")";
  const Address a = parse_address(address_, what);
  const int backlog = std::max(1, options_.backlog);
  for (int attempt = 0;; ++attempt) {
    fd_ = seqpacket_socket(what);
    // listen() at once: a socket bound but not listening refuses connections, which is how a
    // stale one looks to another Listener's probe below.
    if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&a.sun), a.len) == 0) {
      if (::listen(fd_.get(), backlog) != 0) {
        const int err = errno;
        if (!a.abstract) ::unlink(address_.c_str());
        throw_errno(err, what + ": listen()");
      }
      break;
    }
    if (errno != EADDRINUSE) throw_errno(what + ": bind()");
    // A path nobody listens on any more (its listener was killed) is replaced; a live one is
    // not (a busy one answers EAGAIN), nor anything that is not our socket.
    struct stat st {};
    bool stale = false;
    if (!a.abstract && attempt == 0 && ::lstat(address_.c_str(), &st) == 0 &&
        S_ISSOCK(st.st_mode) && st.st_uid == ::geteuid()) {
      UniqueFd probe = seqpacket_socket(what, true);
      stale = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a.sun), a.len) != 0 &&
              errno == ECONNREFUSED;
    }
    if (!stale) throw_error(errc::already_exists, what + ": the address is in use");
    ::unlink(address_.c_str());
  }
  if (!a.abstract) {
    creator_ = ::getpid();
    struct stat st {};
    const mode_t mode = options_.allowed_uids.empty() ? 0600 : 0666;
    // The file we bound (dev, inode): only that one is chmod'ed now and unlinked at the end.
    if (::lstat(address_.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
        ::fchmodat(AT_FDCWD, address_.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno != 0 ? errno : EEXIST;
      fd_.reset();
      throw_errno(err, what + ": setting the socket file's mode");
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  set_blocking(fd_.get(), false, what);
}

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    release();
    address_ = std::move(o.address_);
    options_ = std::move(o.options_);
    fd_ = std::move(o.fd_);
    creator_ = std::exchange(o.creator_, 0);
    dev_ = o.dev_;
    ino_ = o.ino_;
  }
  return *this;
}

Listener::~Listener() { release(); }

void Listener::release() noexcept {
  struct stat st {};
  if (fd_ && creator_ == ::getpid() && ::lstat(address_.c_str(), &st) == 0 && st.st_dev == dev_ &&
      st.st_ino == ino_) {
    ::unlink(address_.c_str());  // ours still: not a file somebody put there since
  }
  creator_ = 0;
  fd_.reset();
}

std::optional<Link> Listener::accept_until(const Deadline& deadline) {
  const std::string what = "Listener(\"" + address_ + "\")::accept";
  if (!fd_) throw_error(errc::closed, what + ": the listener was moved from");
  for (;;) {
    if (!detail::wait_fd(fd_.get(), POLLIN, deadline, "Listener")) return std::nullopt;
    UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
      throw_errno(what + ": accept4()");
    }
    const PeerCredentials peer = peer_of(conn.get(), what);
    if (!allowed(peer.uid, options_.allowed_uids)) {
      (void)send_now(conn.get(), LinkKind::refused, peer.uid, what);
      throw_errno(EACCES, what + ": refused pid " + std::to_string(peer.pid) + ", uid " +
                              std::to_string(peer.uid) + " (not the listener's uid " +
                              std::to_string(::geteuid()) + " nor allowed)");
    }
    if (!send_now(conn.get(), LinkKind::welcome, ::geteuid(), what)) continue;
    return Link(std::move(conn), peer);
  }
}

WaitSource wait_source(Listener& listener) {
  WaitSource s;
  s.fd = listener.fd_.get();
  s.events = POLLIN;
  return s;
}

// ---- Client --------------------------------------------------------------------------------

Client::Client(std::string_view address, const Deadline& appear, const ClientOptions& options)
    : Link(UniqueFd(), {}) {
  const std::string what = "Client(\"" + std::string(address) + "\")";
  const Address a = parse_address(address, what);
  // Non-blocking: a listener whose backlog is full (or one that never accepts) must not hold
  // the caller past its deadlines; EAGAIN is retried until handshake_timeout.
  const Deadline busy = Deadline::after(options.handshake_timeout);
  UniqueFd fd;
  for (;;) {
    fd = seqpacket_socket(what, true);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.sun), a.len) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (busy.expired()) {
        throw_error(errc::timeout, what + ": the listener's backlog stayed full for " +
                                       std::to_string(options.handshake_timeout.count()) + " ms");
      }
    } else if (errno == ENOENT || errno == ECONNREFUSED) {
      if (appear.expired()) throw_error(errc::not_found, what + ": no listener there");
    } else {
      throw_errno(what + ": connect()");
    }
    std::this_thread::sleep_for(kConnectPoll);
  }
  set_blocking(fd.get(), true, what);
  const PeerCredentials server = peer_of(fd.get(), what);
  if (!allowed(server.uid, options.allowed_uids)) {
    throw_errno(EACCES, what + ": the listener (pid " + std::to_string(server.pid) +
                            ") runs as uid " + std::to_string(server.uid) +
                            ", not this process's uid " + std::to_string(::geteuid()) +
                            " nor allowed");
  }
  Link link(std::move(fd), server);
  Frame f;
  if (!link.next_frame(Deadline::after(options.handshake_timeout), f)) {
    throw_error(errc::timeout, what + ": the listener did not accept within " +
                                   std::to_string(options.handshake_timeout.count()) + " ms");
  }
  if (f.kind == LinkKind::refused) {
    throw_errno(EACCES, what + ": the listener refused this process (uid " +
                            std::to_string(::geteuid()) + ")");
  }
  if (f.kind != LinkKind::welcome) {
    throw_error(errc::bad_frame, what + ": the listener's first frame is not a welcome");
  }
  static_cast<Link&>(*this) = std::move(link);
}

}  // namespace ipckit
