// The frames of a Link (ipckit/channel/link.hpp): what a Listener and a Client say to each
// other over their SOCK_SEQPACKET socket, and the checks a received one passes before it is
// used (the fuzz target fuzz_link_frame drives parse_link_frame()).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace ipckit::detail {

constexpr std::uint32_t kLinkMagic = 0x4c4b5049;  // "IPKL"
constexpr std::uint16_t kLinkVersion = 1;
constexpr std::size_t kLinkHeader = 16;

// value is: kWelcome the listener's uid, kRefused the refused client's uid, kSegmentFrame the
// passed segment's size (one descriptor rides with the frame), kMessage the payload's length.
enum class LinkKind : std::uint16_t { welcome = 1, refused = 2, segment = 3, message = 4 };

struct LinkFrame {
  LinkKind kind;
  std::uint64_t value;
  std::span<const std::byte> payload;
};

// The header of a frame of `kind` carrying `value`.
std::array<std::byte, kLinkHeader> link_header(LinkKind kind, std::uint64_t value) noexcept;

// Checks one received frame: `bytes` as recvmsg() returned them, `fds` descriptors came with
// it, `truncated` when the kernel cut the frame or its descriptors (MSG_TRUNC / MSG_CTRUNC).
// Throws Error(errc::bad_frame) saying what is wrong: short, truncated, bad magic or version,
// unknown kind, a length that is not the payload's or is over `max_message`, a uid out of
// range, a segment size no segment has, or a descriptor count other than the kind's.
LinkFrame parse_link_frame(std::span<const std::byte> bytes, std::size_t fds, bool truncated,
                           std::size_t max_message);

}  // namespace ipckit::detail
