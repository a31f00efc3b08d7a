#include "link_frame.hpp"

#include <cstring>
#include <limits>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit::detail {

namespace {
struct Header {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t kind;
  std::uint64_t value;
};
static_assert(sizeof(Header) == kLinkHeader);

[[noreturn]] void bad(const std::string& why) {
  throw_error(errc::bad_frame, "Link: a frame from the peer " + why);
}
}  // namespace

std::array<std::byte, kLinkHeader> link_header(LinkKind kind, std::uint64_t value) noexcept {
  const Header h{kLinkMagic, kLinkVersion, static_cast<std::uint16_t>(kind), value};
  std::array<std::byte, kLinkHeader> out{};
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

LinkFrame parse_link_frame(std::span<const std::byte> bytes, std::size_t fds, bool truncated,
                           std::size_t max_message) {
  if (truncated) bad("was cut short (longer than any frame, or too many descriptors)");
  if (bytes.size() < kLinkHeader) {
    bad("is " + std::to_string(bytes.size()) + " bytes, shorter than a frame's header");
  }
  Header h{};
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.magic != kLinkMagic) bad("does not start with the link's magic word");
  if (h.version != kLinkVersion) bad("has version " + std::to_string(h.version));
  const std::span<const std::byte> payload = bytes.subspan(kLinkHeader);
  const auto want_fds = [&](std::size_t n) {
    if (fds != n) {
      bad("carries " + std::to_string(fds) + " descriptors, not " + std::to_string(n));
    }
  };
  const auto no_payload = [&] {
    if (!payload.empty()) bad("has " + std::to_string(payload.size()) + " unexpected bytes");
  };
  switch (static_cast<LinkKind>(h.kind)) {
    case LinkKind::welcome:
    case LinkKind::refused:
      want_fds(0);
      no_payload();
      if (h.value > std::numeric_limits<std::uint32_t>::max()) bad("names no valid uid");
      break;
    case LinkKind::segment:
      want_fds(1);
      no_payload();
      if (h.value < Segment::kMinSize || h.value > Segment::kMaxSize) {
        bad("passes a segment of " + std::to_string(h.value) + " bytes, which no segment has");
      }
      break;
    case LinkKind::message:
      want_fds(0);
      if (h.value != payload.size() || h.value > max_message) {
        bad("says " + std::to_string(h.value) + " bytes but holds " +
            std::to_string(payload.size()) + " (at most " + std::to_string(max_message) + ")");
      }
      break;
    default: bad("has unknown kind " + std::to_string(h.kind));
  }
  return {static_cast<LinkKind>(h.kind), h.value, payload};
}

}  // namespace ipckit::detail
