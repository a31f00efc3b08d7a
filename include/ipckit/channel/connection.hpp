/// @file
/// ipckit::pipe<T>(): Python's multiprocessing.Pipe() — two ends of a duplex connection, each
/// of which sends to and receives from the other. Made before fork; one end per process.
///
///     auto [parent_end, child_end] = ipckit::pipe<std::string>();
///     auto kid = ipckit::Process::spawn([&] { child_end.send(child_end.recv() + "!"); });
///     parent_end.send("hello");
///     std::string s = parent_end.recv();          // "hello!"
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "ipckit/channel/channel.hpp"
#include "ipckit/core/deadline.hpp"

namespace ipckit {

template <class T>
class Connection;

/// Two connected ends: what one sends, the other receives, both ways. Each way is a
/// Channel<T> made with `options` (shared memory by default; Transport::socket for a Unix
/// socket pair), so sends and receives block, time out, close and report a dead peer as a
/// Channel's do.
template <class T>
std::pair<Connection<T>, Connection<T>> pipe(ChannelOptions options = {});

/// One end of a pipe<T>(): send() to the other end, recv() what it sent, poll() to ask
/// whether a recv() would return at once. Move-only; use each end from one process.
template <class T>
class Connection {
 public:
  /// Sends `v` to the other end. Blocks while its way is full; throws what Channel::send
  /// throws (errc::closed after this end's close(), errc::peer_dead once the other end died).
  void send(const T& v) { out().send(v); }
  /// Like send(); false when there was still no room at the deadline.
  template <class Rep, class Period>
  [[nodiscard]] bool send_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return out().send_for(v, timeout);
  }

  /// The next value the other end sent. Blocks; throws errc::closed once the other end
  /// closed and everything it sent has been received, errc::peer_dead when it died.
  T recv() {
    if (pending_) return *std::exchange(pending_, std::nullopt);
    return in().recv();
  }
  /// Like recv(); nullopt when nothing came within `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> recv_for(std::chrono::duration<Rep, Period> timeout) {
    if (pending_) return std::exchange(pending_, std::nullopt);
    return in().recv_for(timeout);
  }
  /// True when a recv() would return a value at once, waiting up to `timeout` for one (as
  /// Python's Connection.poll): the value is taken and kept for that recv(). Throws what
  /// recv() throws.
  template <class Rep = long, class Period = std::ratio<1>>
  [[nodiscard]] bool poll(std::chrono::duration<Rep, Period> timeout = std::chrono::seconds(0)) {
    if (!pending_) pending_ = in().recv_for(timeout);
    return pending_.has_value();
  }

  /// No more sends from this end: the other end receives what was sent, then errc::closed.
  void close() noexcept { out().close(); }

  /// For a WaitSet (ipckit/sync/wait_set.hpp): ready when a recv() would not wait.
  friend WaitSource wait_source(Connection& c) {
    WaitSource s = wait_source(c.in());
    s.ready = [&c, inner = std::move(s.ready)](bool check) {
      return c.pending_.has_value() || inner(check);
    };
    return s;
  }

 private:
  template <class U>
  friend std::pair<Connection<U>, Connection<U>> pipe(ChannelOptions options);
  struct Ways {
    Channel<T> a;  // first end -> second end
    Channel<T> b;  // second end -> first end
    explicit Ways(const ChannelOptions& o) : a(o), b(o) {}
  };
  Connection(std::shared_ptr<Ways> ways, bool first) : ways_(std::move(ways)), first_(first) {}
  Channel<T>& out() { return first_ ? ways_->a : ways_->b; }
  Channel<T>& in() { return first_ ? ways_->b : ways_->a; }

  std::shared_ptr<Ways> ways_;
  bool first_;
  std::optional<T> pending_;  // taken by poll(), handed out by the next recv
};

template <class T>
std::pair<Connection<T>, Connection<T>> pipe(ChannelOptions options) {
  auto ways = std::make_shared<typename Connection<T>::Ways>(options);
  return {Connection<T>(ways, true), Connection<T>(ways, false)};
}

}  // namespace ipckit
