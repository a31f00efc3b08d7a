// fuzz_pipe_frame: the SocketChannel frame parser, fed through a real descriptor. The input's
// first byte picks the channel (a byte-vector SocketChannel over pipe(2), or a Channel<T> with
// the pipe transport for one of three T) and its max_message; the rest is written, as the
// bytes a sending process put on the stream, before the write end is closed. recv() then runs
// until it throws: messages, errc::closed, errc::peer_dead and errc::bad_frame (and, for a
// Channel<T>, bad_frame from decoding, after which the channel goes on) are the only outcomes.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/socket_channel.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;

// Bytes the stream may hold: what one write into an empty pipe or socket takes at once.
constexpr std::size_t kMaxStream = 60000;

// Writes all of `bytes` to a non-blocking fd; false when it would block (input dropped).
bool write_all(int fd, std::span<const std::byte> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

void drain_bytes(std::span<const std::byte> stream, std::size_t max_message) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return;
  ipckit::UniqueFd r(fds[0]);
  ipckit::UniqueFd w(fds[1]);
  if (!write_all(w.get(), stream)) return;
  w.reset();
  auto ch = ipckit::SocketChannel::from_fds(std::move(r), {}, {max_message});
  for (std::size_t i = 0; i <= stream.size() / ipckit::SocketChannel::kFrameHeader + 1; ++i) {
    try {
      const std::vector<std::byte> msg = ch.recv();
      if (msg.size() > max_message) ipckit::fuzz::fail("a message longer than max_message");
    } catch (const Error& e) {
      expect(e, {errc::closed, errc::peer_dead, errc::bad_frame});
      if (e.is(errc::bad_frame)) {  // the channel stays unusable
        try {
          (void)ch.recv();
          ipckit::fuzz::fail("a message after bad_frame");
        } catch (const Error& again) {
          expect(again, {errc::bad_frame});
        }
      }
      return;
    }
  }
  ipckit::fuzz::fail("more messages than the stream has frames");
}

template <class T>
void drain_typed(std::span<const std::byte> stream, std::size_t max_message) {
  ipckit::ChannelOptions o;
  o.transport = ipckit::Transport::socket;
  o.max_message = max_message;
  ipckit::Channel<T> ch(o);
  const int wfd = ch.socket()->write_fd();
  if (!write_all(wfd, stream)) return;
  ch.attach_receiver();  // drops the write end: the stream ends after these bytes
  bool pipe_broken = false;
  for (std::size_t i = 0; i <= stream.size() / ipckit::SocketChannel::kFrameHeader + 1; ++i) {
    try {
      (void)ch.recv();
    } catch (const Error& e) {
      expect(e, {errc::closed, errc::peer_dead, errc::bad_frame});
      if (!e.is(errc::bad_frame) || pipe_broken) return;
      // A value that does not decode drops one message; a bad frame breaks the pipe for
      // good (the next recv says so again). Either way one more recv is fine.
      // (Channel names its transport's errors after itself; a decoding error says "codec".)
      pipe_broken = std::string_view(e.what()).starts_with("Channel::recv");
    }
  }
  ipckit::fuzz::fail("more messages than the stream has frames");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size - 1 > kMaxStream) return -1;  // -1: not added to the corpus
  const std::uint8_t mode = data[0];
  const std::span<const std::byte> stream(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  // Half the inputs run with a small limit, so that "longer than max_message" is reachable.
  const std::size_t max_message = (mode & 0x80) != 0 ? 4096 : ipckit::SocketOptions{}.max_message;
  switch (mode & 3) {
    case 0: drain_bytes(stream, max_message); break;
    case 1: drain_typed<std::vector<std::uint32_t>>(stream, max_message); break;
    case 2: drain_typed<std::string>(stream, max_message); break;
    default: drain_typed<std::map<std::uint16_t, std::string>>(stream, max_message); break;
  }
  return 0;
}
