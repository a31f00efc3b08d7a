/// @class ipckit::Channel
/// Channel<T>: the typed one-way channel most code wants. Values go through codec (raw bytes
/// for trivially copyable T and vectors/strings of them, cereal for the rest) over one of two
/// transports chosen at creation: a shared-memory ByteRing (default; raw values are written
/// straight into the ring) or a SocketChannel (kernel socket). Make it before fork; one
/// process sends, one receives.
///  - send blocks while the ring is full, recv while it is empty, following the wait mode:
///    spin (poll, lowest latency, burns a core), hybrid (default: poll ~50 µs, then sleep on a
///    futex), block (sleep at once). The socket transport always sleeps in poll().
///  - close(): no more sends (errc::closed); recv drains what was sent, then throws
///    errc::closed.
///  - a peer that died: the waiting side gets errc::peer_dead (checked between bounded
///    sleeps, every WaitPolicy::check_interval, 20 ms by default).
///
/// A child sends a string to its parent:
///
///     ipckit::Channel<std::string> ch;                      // shm ring, hybrid
///     auto kid = ipckit::Process::spawn([&] { ch.send("hello"); ch.close(); });
///     std::string s = ch.recv();
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/codec.hpp"
#include "ipckit/channel/socket_channel.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

/// The transport under a Channel (ChannelOptions::transport).
enum class Transport {
  shm,    ///< a ByteRing in shared memory (the default)
  socket  ///< a SocketChannel: a Unix socket pair, no shared memory
};
/// How a shm Channel waits (ChannelOptions::mode); policy_for() gives its WaitPolicy.
enum class WaitMode {
  spin,    ///< poll, never sleep (lowest latency, burns a core)
  hybrid,  ///< poll ~50 µs, then sleep on a futex (the default)
  block    ///< sleep on a futex at once
};

/// The WaitPolicy of a named mode.
constexpr WaitPolicy policy_for(WaitMode m) noexcept {
  switch (m) {
    case WaitMode::spin: return WaitPolicy::spin_only();
    case WaitMode::block: return WaitPolicy::block();
    case WaitMode::hybrid: break;
  }
  return WaitPolicy::hybrid();
}

/// How a Channel is made.
struct ChannelOptions {
  Transport transport = Transport::shm;  ///< the transport (create() always makes shm)
  WaitMode mode = WaitMode::hybrid;      ///< shm: how blocking calls wait
  /// shm: ring bytes, a power of two >= 64; a message may take up to half (minus 16 bytes).
  std::uint64_t capacity = std::uint64_t{1} << 20;
  /// socket: the longest message accepted.
  std::size_t max_message = std::size_t{1} << 30;
};

template <class T>
class Channel {
  static_assert(codec::is_encodable_v<T>,
                "Channel<T>: T is neither trivially copyable, a vector/string of trivially "
                "copyable elements, nor serialisable by cereal (give it a serialize() member)");

 public:
  /// A channel of its own, to make before fork. Throws Error(errc::invalid_argument) for a
  /// bad capacity.
  explicit Channel(ChannelOptions options = {}) : options_(options) {
    if (options.transport == Transport::shm) {
      ring_.emplace(options.capacity, policy_for(options.mode));
    } else {
      socket_ = std::make_unique<SocketChannel>(SocketChannel::Options{options.max_message});
    }
  }
  ///@{
  /// A shm channel stored under `name` in `seg` for unrelated processes, and its lookup. The
  /// caller takes `side` at once: a receiver then learns of a sender's death even when it
  /// died before its first send (see Side). create() uses options.mode and
  /// options.capacity (the transport is always shm). open() throws errc::not_found,
  /// errc::timeout (its creator has not finished it) or errc::bad_layout;
  /// open_for()/open_until() wait for the name and its creator until the deadline (for a
  /// receiver started first).
  static Channel create(Segment& seg, std::string_view name, ChannelOptions options = {},
                        Side side = Side::none) {
    return Channel(ByteRing::create(seg, name, options.capacity, policy_for(options.mode), side));
  }
  static Channel open(Segment& seg, std::string_view name, Side side = Side::none) {
    return Channel(ByteRing::open(seg, name, side));
  }
  static Channel open_until(Segment& seg, std::string_view name, const Deadline& deadline,
                            Side side = Side::none) {
    return Channel(ByteRing::open_until(seg, name, deadline, side));
  }
  template <class Rep, class Period>
  static Channel open_for(Segment& seg, std::string_view name,
                          std::chrono::duration<Rep, Period> timeout, Side side = Side::none) {
    return Channel(ByteRing::open_until(seg, name, Deadline::after(timeout), side));
  }
  ///@}

  /// The transport underneath.
  [[nodiscard]] Transport transport() const noexcept { return options_.transport; }
  /// The longest encoded message this channel carries.
  [[nodiscard]] std::size_t max_message_size() const noexcept {
    return ring_ ? ring_->max_message_size() : socket_->max_message_size();
  }

  /// Blocks while full. Throws errc::message_too_large (nothing sent), errc::closed,
  /// errc::peer_dead.
  void send(const T& v) { (void)send_until(v, Deadline::never()); }
  /// False when there is no room now (nothing sent). Throws as send() does.
  [[nodiscard]] bool try_send(const T& v) {
    return send_until(v, Deadline::after(std::chrono::seconds(0)));
  }
  ///@{
  /// Like send(); false when there is still no room at the deadline (nothing sent).
  template <class Rep, class Period>
  [[nodiscard]] bool send_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return send_until(v, Deadline::after(timeout));
  }
  [[nodiscard]] bool send_until(const T& v, const Deadline& deadline) {
    try {
      return send_on_transport(v, deadline);
    } catch (const Error& e) {
      detail::rethrow_as(e, "Channel::send");
    }
  }
  ///@}

  /// Blocks while empty. Throws errc::closed once closed and drained, errc::peer_dead,
  /// errc::bad_frame when a message does not decode as a T (the message is dropped).
  T recv() {
    T v{};
    (void)recv_until(v, Deadline::never());
    return v;
  }
  /// The next value, or nullopt when there is none now. Throws as recv() does.
  [[nodiscard]] std::optional<T> try_recv() { return recv_for(std::chrono::seconds(0)); }
  /// Like recv(); nullopt when there is still no value at the deadline.
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> recv_for(std::chrono::duration<Rep, Period> timeout) {
    T v{};
    if (!recv_until(v, Deadline::after(timeout))) return std::nullopt;
    return v;
  }
  /// Like recv(), into `out`; false when there is still no value at the deadline.
  [[nodiscard]] bool recv_until(T& out, const Deadline& deadline) {
    try {
      return recv_on_transport(out, deadline);
    } catch (const Error& e) {
      detail::rethrow_as(e, "Channel::recv");
    }
  }

  /// No more sends; the receiver drains, then gets errc::closed. (socket: see
  /// SocketChannel::close() for who may close.)
  void close() noexcept {
    if (ring_) {
      ring_->close();
    } else {
      socket_->close();
    }
  }
  ///@{
  /// Registers the caller's side now, so the other side can tell when it dies before its
  /// first send/recv (shm), or so that a sender that sends nothing can still close() (socket).
  void attach_sender() {
    if (ring_) {
      ring_->attach_producer();
    } else {
      socket_->attach_sender();
    }
  }
  void attach_receiver() {
    if (ring_) {
      ring_->attach_consumer();
    } else {
      socket_->attach_receiver();
    }
  }
  ///@}
  ///@{
  /// shm: registers process `pid` as the sender/receiver now, from the process that forked
  /// it, so that its death is seen even before its first operation:
  ///
  ///     auto kid = ipckit::Process::spawn([&] { ch.send(work()); });
  ///     ch.attach_sender(kid.pid());            // then ch.recv() can never wait on a dead kid
  ///
  /// Throws errc::invalid_argument for the socket transport (it sees a dead peer by itself).
  void attach_sender(pid_t pid) {
    if (!ring_) throw Error(errc::invalid_argument, "Channel::attach_sender(pid): socket channel");
    ring_->attach_producer(pid);
  }
  void attach_receiver(pid_t pid) {
    if (!ring_)
      throw Error(errc::invalid_argument, "Channel::attach_receiver(pid): socket channel");
    ring_->attach_consumer(pid);
  }
  ///@}
  ///@{
  /// The transports underneath, for batching and zero-copy use (null for the other kind).
  [[nodiscard]] ByteRing* ring() noexcept { return ring_ ? &*ring_ : nullptr; }
  [[nodiscard]] SocketChannel* socket() noexcept { return socket_.get(); }
  ///@}
  /// For a WaitSet (ipckit/sync/wait_set.hpp): ready when a recv() would not wait.
  friend WaitSource wait_source(Channel& c) {
    return c.ring_ ? c.ring_->wait_source() : c.socket_->wait_source();
  }

 private:
  explicit Channel(ByteRing ring) : ring_(std::move(ring)) {}

  bool send_on_transport(const T& v, const Deadline& deadline) {
    if (ring_) {
      // try_reserve()/reserve_until() throw errc::closed themselves.
      if constexpr (codec::is_trivial_v<T> || codec::is_raw_range_v<T>) {
        const std::size_t n = codec::raw_size(v);
        auto buf = ring_->try_reserve(n);
        if (!buf && !(buf = ring_->reserve_until(n, deadline))) return false;
        codec::encode_raw(v, *buf);
        ring_->commit();
        return true;
      } else {
        codec::encode(v, scratch_);
        return ring_->send_until(scratch_, deadline);
      }
    }
    codec::encode(v, scratch_);
    return socket_->send_until(scratch_, deadline);
  }

  bool recv_on_transport(T& out, const Deadline& deadline) {
    if (ring_) {
      auto msg = ring_->try_peek();
      if (!msg && !(msg = ring_->peek_until(deadline))) return false;
      try {
        codec::decode_into(*msg, out);
      } catch (...) {
        ring_->release();
        throw;
      }
      ring_->release();
      return true;
    }
    if (!socket_->recv_until(scratch_, deadline)) return false;
    codec::decode_into(std::span<const std::byte>(scratch_), out);
    return true;
  }

  ChannelOptions options_;
  std::optional<ByteRing> ring_;
  std::unique_ptr<SocketChannel> socket_;  // (not an optional: GCC 12 warns falsely about one)
  std::vector<std::byte> scratch_;
};

}  // namespace ipckit
