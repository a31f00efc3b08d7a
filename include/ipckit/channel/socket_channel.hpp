/// @class ipckit::SocketChannel
/// SocketChannel: one-way messages between two processes over a Unix stream socket pair, each
/// message a length-prefixed frame (16-byte header: magic, kind, length). For where shared
/// memory is not wanted, and as the kernel baseline the shared-memory channels are measured
/// against. Every wait is a poll() on the descriptor, so it costs no CPU while idle.
///
/// Make it before fork. The first send() in a process drops that process's receiving end and
/// the first recv() drops its sending end, so that a dead peer shows: a receiver whose sender
/// exited without close() gets errc::peer_dead (end of stream without a close frame), a
/// sender whose receiver exited gets errc::peer_dead (EPIPE). A process that holds the
/// channel but neither sends nor receives (a parent that forked both ends) calls disown().
///
///     ipckit::SocketChannel ch;
///     auto child = ipckit::Process::spawn([&] { ch.send(bytes); ch.close(); });
///     std::vector<std::byte> msg = ch.recv();
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/sync/wait_source.hpp"

namespace ipckit {

/// How a SocketChannel is made (SocketChannel::Options).
struct SocketOptions {
  /// The longest payload. Frames announcing a longer payload are rejected: by send() with
  /// message_too_large, by recv() with bad_frame (a reader never allocates what it has not
  /// checked).
  std::size_t max_message = std::size_t{1} << 30;
};

class SocketChannel {
 public:
  using Options = SocketOptions;  ///< the options (SocketOptions)
  /// Bytes of the header in front of each frame's payload.
  static constexpr std::size_t kFrameHeader = 16;

  /// A channel with the default Options.
  SocketChannel() : SocketChannel(Options{}) {}
  /// A new Unix stream socket pair, non-blocking and close-on-exec: make it before fork.
  /// Throws Error with the errno when socketpair() fails.
  explicit SocketChannel(Options options);
  /// A channel over descriptors made elsewhere: `read_end` is read by recv(), `write_end`
  /// written by send() (either may be empty). For pipes from pipe(2) and for tests.
  static SocketChannel from_fds(UniqueFd read_end, UniqueFd write_end, Options options = {});

  /// Moves the descriptors and the channel's state.
  SocketChannel(SocketChannel&&) noexcept = default;
  /// Moves the descriptors and the channel's state (closing the descriptors held before).
  SocketChannel& operator=(SocketChannel&&) noexcept = default;

  ///@{
  /// Writes one frame. try_send returns false when the frame could not start without
  /// blocking, send_until()/send_for() when it could not start by the deadline; once started,
  /// a frame is always finished (so a frame larger than the socket buffer may block until the
  /// receiver reads it). Throws Error(errc::message_too_large) (nothing written),
  /// errc::closed after close(), errc::peer_dead when the receiver is gone.
  [[nodiscard]] bool try_send(std::span<const std::byte> msg);
  void send(std::span<const std::byte> msg) { (void)send_until(msg, Deadline::never()); }
  [[nodiscard]] bool send_until(std::span<const std::byte> msg, const Deadline& deadline);
  template <class Rep, class Period>
  [[nodiscard]] bool send_for(std::span<const std::byte> msg,
                              std::chrono::duration<Rep, Period> timeout) {
    return send_until(msg, Deadline::after(timeout));
  }
  ///@}

  ///@{
  /// Reads one frame into `out` (recv() returns it). try_recv returns false when no frame has
  /// started arriving, recv_until()/recv_for() when none has by the deadline; a frame that
  /// has started is read whole. Throws errc::closed after the sender's close(),
  /// errc::peer_dead when the stream ends without one, errc::bad_frame (and stays unusable)
  /// on a truncated or corrupt frame.
  [[nodiscard]] bool try_recv(std::vector<std::byte>& out);
  std::vector<std::byte> recv();
  [[nodiscard]] bool recv_until(std::vector<std::byte>& out, const Deadline& deadline);
  template <class Rep, class Period>
  [[nodiscard]] bool recv_for(std::vector<std::byte>& out,
                              std::chrono::duration<Rep, Period> timeout) {
    return recv_until(out, Deadline::after(timeout));
  }
  ///@}

  /// Sender (a process that has sent, or holds only a sending end): writes a close frame and
  /// shuts the stream; the receiver drains, then gets errc::closed. Receiver: drops its end
  /// (the sender then gets peer_dead). A process that did neither only drops its ends
  /// (disown()). Idempotent.
  void close() noexcept;
  /// Drops both ends in this process (for a process that only forked the two sides).
  void disown() noexcept;
  ///@{
  /// Takes the sending / receiving role now (drops the other end in this process), as the
  /// first send() / recv() would. A sender that may close() without sending anything calls
  /// attach_sender() first, or its close() counts as a bystander's.
  void attach_sender() { become_sender(); }
  void attach_receiver() { become_receiver(); }
  ///@}
  ///@{
  /// The descriptor recv() reads / send() writes in this process (-1 once dropped).
  [[nodiscard]] int read_fd() const noexcept { return read_.get(); }
  [[nodiscard]] int write_fd() const noexcept { return write_.get(); }
  ///@}
  /// For a WaitSet: ready when a recv() would not wait (a whole frame is buffered, the
  /// descriptor is readable, or the channel is closed, broken or has no receiving end here).
  WaitSource wait_source();
  /// The longest payload accepted (Options::max_message).
  [[nodiscard]] std::size_t max_message_size() const noexcept { return options_.max_message; }

 private:
  SocketChannel(UniqueFd r, UniqueFd w, Options options) noexcept;
  void become_sender();
  void become_receiver();
  // Writes one frame (header, then `payload`) by the deadline; false if nothing of it was
  // written when the deadline passed. A frame begun is always finished (a half frame would
  // corrupt the stream).
  bool write_frame(std::uint32_t kind, std::span<const std::byte> payload,
                   const Deadline& deadline);
  // Makes `n` buffered bytes available; false on timeout before anything of a new frame.
  bool fill(std::size_t n, const Deadline& deadline, bool frame_started);
  [[noreturn]] void fail_frame(const char* why);

  Options options_;
  UniqueFd read_;
  UniqueFd write_;
  int role_pid_send_ = 0;
  int role_pid_recv_ = 0;
  bool sent_close_ = false;
  bool got_close_ = false;
  bool broken_ = false;
  std::vector<std::byte> rbuf_;  // bytes read ahead of the frame being parsed
  std::size_t rbeg_ = 0;
  std::size_t rend_ = 0;
};

}  // namespace ipckit
