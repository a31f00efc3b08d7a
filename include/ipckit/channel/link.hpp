/// @file
/// ipckit::Listener and ipckit::Client: Python's multiprocessing.connection.Listener/Client for
/// unrelated programs, over a Unix socket, handing shared memory over as a descriptor.
///
///     // program A                                  // program B, started separately
///     ipckit::Listener listener("@jobs");            ipckit::Client link("@jobs");
///     auto seg = ipckit::Segment::memfd(1 << 20);    ipckit::Segment seg = link.recv_segment();
///     auto q = ipckit::JoinableQueue<std::string>    auto q = ipckit::JoinableQueue<std::string>
///         ::construct(seg, "q");                         ::find(seg, link.recv<std::string>());
///     ipckit::Link peer = listener.accept();
///     peer.send_segment(seg);
///     peer.send(std::string("q"));
///
/// Who may connect: the listener reads each peer's credentials from the kernel (SO_PEERCRED,
/// which a peer cannot forge) and refuses a uid other than its own unless an allow-list names
/// it; a refused client gets EACCES naming its uid. The client checks the listener the same
/// way, so a process that squats on the address as another user is refused too. Stronger than
/// Python's authkey, and with no secret to hand around.
///
/// What crosses: a Segment's file descriptor (SCM_RIGHTS), so two programs share a segment,
/// and every queue, channel or lock in it, with no name in /dev/shm to leak or guess; and
/// small typed messages (anything the codec handles, up to Link::kMaxMessage bytes encoded).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ipckit/channel/codec.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/wait_source.hpp"

namespace ipckit {

/// A peer's identity as the kernel recorded it when the connection was made.
struct PeerCredentials {
  pid_t pid = 0;  ///< its process
  uid_t uid = 0;  ///< its user
  gid_t gid = 0;  ///< its group
};

/// One end of a connection made by Listener::accept() or Client: a SOCK_SEQPACKET Unix socket
/// carrying whole frames. Move-only; one process uses it. A frame from the peer that is not
/// well formed throws Error(errc::bad_frame) and is dropped; the link goes on with the next.
class Link {
 public:
  /// Largest encoded message send() takes (errc::message_too_large above it).
  static constexpr std::size_t kMaxMessage = std::size_t{64} * 1024;

  /// A link over a connected SOCK_SEQPACKET Unix socket (one end of socketpair(), say), with
  /// no handshake; the peer is who SO_PEERCRED names. Throws errc::invalid_argument when
  /// `socket` is not a connected Unix SOCK_SEQPACKET socket.
  static Link from_socket(UniqueFd socket);

  /// The process at the other end (pid as of the connection: it may have exited since).
  [[nodiscard]] const PeerCredentials& peer() const noexcept { return peer_; }
  /// The socket, for poll/epoll (readable: a frame or the peer's hang-up is waiting).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// Passes `seg`'s descriptor to the peer (the segment made by Segment::memfd() or a named
  /// one; Error(errc::invalid_argument) for an anonymous segment, which has none).
  /// errc::peer_dead when the peer has gone.
  void send_segment(const Segment& seg);
  /// The next segment the peer passed, mapped here (Segment::adopt: errc::bad_layout when the
  /// descriptor is not a ready segment). errc::peer_dead once the peer has gone;
  /// errc::invalid_argument when the next frame is a message (it stays for recv()).
  Segment recv_segment() { return *recv_segment_until(Deadline::never()); }
  /// As recv_segment(); nullopt when none came within `timeout`.
  template <class Rep, class Period>
  std::optional<Segment> recv_segment_for(std::chrono::duration<Rep, Period> timeout) {
    return recv_segment_until(Deadline::after(timeout));
  }
  /// As recv_segment_for(), until `deadline`.
  std::optional<Segment> recv_segment_until(const Deadline& deadline);

  /// Sends one value (anything the codec encodes). errc::message_too_large above kMaxMessage
  /// encoded bytes, errc::peer_dead when the peer has gone.
  template <class T>
  void send(const T& v) {
    (void)send_bytes_until(codec::encode(v), Deadline::never());
  }
  /// As send(); false (nothing sent) when the peer's socket buffer stayed full for `timeout`
  /// (a live peer that does not read).
  template <class T, class Rep, class Period>
  bool send_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return send_bytes_until(codec::encode(v), Deadline::after(timeout));
  }
  /// The next value the peer sent, decoded as T (errc::bad_frame when it is not a T's
  /// encoding). errc::peer_dead once the peer has gone; errc::invalid_argument when the next
  /// frame is a segment (it stays for recv_segment()).
  template <class T>
  T recv() {
    return codec::decode<T>(*recv_bytes_until(Deadline::never()));
  }
  /// As recv(); nullopt when nothing came within `timeout`.
  template <class T, class Rep, class Period>
  std::optional<T> recv_for(std::chrono::duration<Rep, Period> timeout) {
    auto bytes = recv_bytes_until(Deadline::after(timeout));
    if (!bytes) return std::nullopt;
    return codec::decode<T>(*bytes);
  }
  /// Sends one message of raw bytes; false when `deadline` passed first.
  bool send_bytes_until(std::span<const std::byte> bytes, const Deadline& deadline);
  /// Receives one message as raw bytes; nullopt when `deadline` passed first.
  std::optional<std::vector<std::byte>> recv_bytes_until(const Deadline& deadline);

  /// Hangs up: the peer's receives then throw errc::peer_dead.
  void close() noexcept { fd_.reset(); }

  /// For a WaitSet (ipckit/sync/wait_set.hpp): ready when a receive would not wait (a frame
  /// is waiting or kept back, or the peer hung up).
  friend WaitSource wait_source(Link& link);

 private:
  friend class Listener;
  friend class Client;
  struct Frame;
  Link(UniqueFd fd, PeerCredentials peer) : fd_(std::move(fd)), peer_(peer) {}
  // The next frame (the stashed one first); false at the deadline.
  bool next_frame(const Deadline& deadline, Frame& out);

  UniqueFd fd_;
  PeerCredentials peer_;
  // A frame of the other kind than a receive asked for, kept for the receive that wants it.
  int stash_kind_ = 0;  // 0: none
  std::uint64_t stash_value_ = 0;
  std::vector<std::byte> stash_;
  UniqueFd stash_fd_;
};

/// Options of a Listener.
struct ListenerOptions {
  /// uids allowed to connect besides the listener's own effective uid (which always is).
  std::vector<uid_t> allowed_uids;
  /// listen() backlog.
  int backlog = 16;
};

/// A listening Unix socket. The address is a path in the filesystem (made absolute), or
/// "@name" for Linux's abstract namespace (no file at all, gone with the last descriptor). A
/// path's socket file is made mode 0600 (0666 with an allow-list: the uid check is the gate),
/// and removed by the process that made it when the Listener is destroyed (if it is still the
/// same file); a leftover socket file nobody listens on (its listener was killed) is replaced.
/// (Two Listeners started at the same instant on one stale path may both replace it; the
/// later one is then the one clients reach.) Move-only.
class Listener {
 public:
  /// Binds and listens. Throws Error(errc::invalid_argument) for an empty address or one over
  /// 107 bytes, errc::already_exists when a listener is already there, or the OS error.
  explicit Listener(std::string_view address, ListenerOptions options = {});
  ///@{
  /// Moves the listening socket (the moved-from listener holds none).
  Listener(Listener&&) noexcept = default;
  Listener& operator=(Listener&&) noexcept;
  ///@}
  ~Listener();

  /// Waits for the next connection and checks who made it: a peer whose uid is not allowed
  /// is told so and hung up on, and the call throws Error(EACCES) naming its pid and uid (the
  /// listener goes on: call accept() again). A peer that hung up before it was checked is
  /// skipped.
  Link accept() { return *accept_until(Deadline::never()); }
  /// As accept(); nullopt when nobody connected within `timeout`.
  template <class Rep, class Period>
  std::optional<Link> accept_for(std::chrono::duration<Rep, Period> timeout) {
    return accept_until(Deadline::after(timeout));
  }
  /// As accept(); nullopt when nobody connected before `deadline`.
  std::optional<Link> accept_until(const Deadline& deadline);

  /// For a WaitSet: ready when a connection is waiting to be accepted.
  friend WaitSource wait_source(Listener& listener);

  /// The address as given.
  [[nodiscard]] const std::string& address() const noexcept { return address_; }
  /// The listening socket, for poll/epoll (readable: a connection is waiting).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

 private:
  void release() noexcept;
  std::string address_;
  ListenerOptions options_;
  UniqueFd fd_;
  pid_t creator_ = 0;  // the process that bound a path (and removes it)
  dev_t dev_ = 0;      // the socket file it bound
  ino_t ino_ = 0;
};

/// Options of a Client.
struct ClientOptions {
  /// uids the listener may run as besides the client's own effective uid.
  std::vector<uid_t> allowed_uids;
  /// How long to wait for the listener's answer once connected.
  std::chrono::milliseconds handshake_timeout{5000};
};

/// The connecting end: a Link to the Listener at an address.
class Client : public Link {
 public:
  /// Connects to the listener at `address` and waits for it to accept. Throws
  /// Error(errc::not_found) when nobody listens there, EACCES when the listener refused this
  /// process (naming its uid) or runs as a uid not allowed (naming that uid),
  /// errc::timeout when it did not answer (or its backlog stayed full) within
  /// handshake_timeout.
  explicit Client(std::string_view address, const ClientOptions& options = {})
      : Client(address, Deadline::after(std::chrono::seconds(0)), options) {}
  /// As Client(address), but waits up to `timeout` for a listener to appear (a client started
  /// before its server).
  template <class Rep, class Period>
  static Client connect_for(std::string_view address, std::chrono::duration<Rep, Period> timeout,
                            const ClientOptions& options = {}) {
    return Client(address, Deadline::after(timeout), options);
  }

 private:
  Client(std::string_view address, const Deadline& appear, const ClientOptions& options);
};

}  // namespace ipckit
