#include "ipckit/channel/detail/control.hpp"

#include <sys/stat.h>

#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit::detail {

void PeerTable::attach(ProcessIdentity id, const char* who) {
  for (auto& slot : ids_) {
    if (slot.load(std::memory_order_acquire) == id) return;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& slot : ids_) {
      ProcessIdentity cur = slot.load(std::memory_order_acquire);
      // First pass: empty slots; second pass: slots of processes that have exited.
      if (pass == 0 ? cur != 0 : (cur == 0 || identity_alive(cur))) continue;
      if (slot.compare_exchange_strong(cur, id, std::memory_order_acq_rel)) return;
    }
  }
  throw_error(errc::invalid_argument, std::string(who) + ": more than " +
                                          std::to_string(kMaxPeers) +
                                          " live processes attached to one side");
}

void PeerTable::attach_pid(pid_t pid, const char* who) {
  if (pid <= 0) {
    throw_error(errc::invalid_argument, std::string(who) + ": pid " + std::to_string(pid));
  }
  const ProcessIdentity id = process_identity(pid);
  attach(id != 0 ? id : static_cast<std::uint32_t>(pid), who);
}

bool PeerTable::empty() const noexcept {
  for (const auto& slot : ids_) {
    if (slot.load(std::memory_order_acquire) != 0) return false;
  }
  return true;
}

bool PeerTable::all_dead() const noexcept {
  // The caller is not its own peer: a process that once pushed and now waits as a consumer
  // must still learn that the real producers died.
  const pid_t me = current_pid();
  bool any = false;
  for (const auto& slot : ids_) {
    const ProcessIdentity id = slot.load(std::memory_order_acquire);
    if (id == 0 || identity_pid(id) == me) continue;
    any = true;
    if (identity_alive(id)) return false;
  }
  return any;
}

Region Region::anonymous(std::size_t bytes) {
  Region r;
  r.map_ = Mapping::anonymous(bytes, "shared channel");
  r.data_ = r.map_.data();
  r.size_ = bytes;
  return r;
}

Region Region::in(Segment& seg, std::size_t bytes) {
  Region r(static_cast<std::byte*>(seg.allocate(bytes, kCacheLine)), bytes);
  r.file_ = seg.fd();
  r.file_end_ = seg.offset_of(r.data_) + bytes;
  if (!seg.is_anonymous()) r.seg_ = seg.impl();
  return r;
}

Region Region::create(Segment& seg, std::string_view name, std::size_t bytes) {
  const std::span<std::byte> s = seg.construct_bytes(name, bytes, kCacheLine);
  Region r(s.data(), s.size());
  r.file_ = seg.fd();
  r.file_end_ = seg.offset_of(r.data_) + bytes;
  if (!seg.is_anonymous()) r.seg_ = seg.impl();
  return r;
}

Region Region::open(Segment& seg, std::string_view name, const LayoutSpec& spec,
                    const Deadline& deadline, const char* what, std::uint64_t& capacity) {
  for (;;) {
    const std::optional<std::span<std::byte>> s = seg.find_bytes(name);
    if (s) {
      Region r(s->data(), s->size());
      r.file_ = seg.fd();
      r.file_end_ = seg.offset_of(r.data_) + s->size();
      if (!seg.is_anonymous()) r.seg_ = seg.impl();
      r.check_backing(what);
      const LayoutRead read = read_layout(spec, *s, what);
      if (read.state == LayoutState::ready) {
        capacity = read.capacity;
        return r;
      }
    }
    if (deadline.expired()) {
      if (!s) {
        throw_error(errc::not_found, std::string(what) + ": no object named \"" +
                                         std::string(name) + "\" in the segment");
      }
      throw_error(errc::timeout, std::string(what) + ": \"" + std::string(name) +
                                     "\" is still being created (or its creator died)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool Region::others_gone() const noexcept {
  return seg_ != nullptr && Segment::others_gone(static_cast<const Segment::Impl*>(seg_));
}

void Region::check_backing(const char* what) const {
  if (file_ < 0) return;
  struct stat st {};
  if (::fstat(file_, &st) == 0 && static_cast<std::size_t>(st.st_size) < file_end_) {
    throw_error(errc::bad_layout, std::string(what) + ": the segment was truncated to " +
                                      std::to_string(st.st_size) + " bytes by another process");
  }
}

void throw_bad_layout(const char* what, std::string_view detail) {
  throw_error(errc::bad_layout, std::string(what) + ": " + std::string(detail));
}

void throw_bad_frame(const char* what, std::string_view detail) {
  throw_error(errc::bad_frame, std::string(what) + ": " + std::string(detail));
}

void rethrow_as(const Error& e, const char* what) {
  const std::string m = e.what();
  const std::size_t colon = m.find(": ");
  const std::string_view head = std::string_view(m).substr(0, colon);
  const bool transport = head.starts_with("ByteRing") || head.starts_with("SocketChannel");
  if (colon == std::string::npos || !transport) throw;  // NOLINT: rethrows the active exception
  throw Error(e.code(), std::string(what) + m.substr(colon));
}

void throw_closed(const char* what) {
  throw_error(errc::closed, std::string(what) + ": the channel is closed");
}

void throw_peer_dead(const char* what) {
  throw_error(errc::peer_dead, std::string(what) + ": every process on the other side has exited");
}

}  // namespace ipckit::detail
