#include "ipckit/channel/detail/control.hpp"

#include <sys/mman.h>

#include <string>
#include <utility>

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"

namespace ipckit::detail {

void PeerTable::attach(pid_t pid, const char* who) {
  for (auto& slot : pids_) {
    if (slot.load(std::memory_order_acquire) == pid) return;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& slot : pids_) {
      pid_t cur = slot.load(std::memory_order_acquire);
      // First pass: empty slots; second pass: slots of processes that have exited.
      if (pass == 0 ? cur != 0 : (cur == 0 || process_alive(cur))) continue;
      if (slot.compare_exchange_strong(cur, pid, std::memory_order_acq_rel)) return;
    }
  }
  throw_error(errc::invalid_argument, std::string(who) + ": more than " +
                                          std::to_string(kMaxPeers) +
                                          " live processes attached to one side");
}

bool PeerTable::any_attached() const noexcept {
  for (const auto& slot : pids_) {
    if (slot.load(std::memory_order_acquire) != 0) return true;
  }
  return false;
}

bool PeerTable::all_dead() const noexcept {
  // The caller is not its own peer: a process that once pushed and now waits as a consumer
  // must still learn that the real producers died.
  const pid_t me = current_pid();
  bool any = false;
  for (const auto& slot : pids_) {
    const pid_t p = slot.load(std::memory_order_acquire);
    if (p == 0 || p == me) continue;
    any = true;
    if (process_alive(p)) return false;
  }
  return any;
}

Region Region::anonymous(std::size_t bytes) {
  return Region(static_cast<std::byte*>(map_shared_anonymous(bytes)), bytes, true);
}

Region Region::in(Segment& seg, std::size_t bytes) {
  return Region(static_cast<std::byte*>(seg.allocate(bytes, kCacheLine)), bytes, false);
}

Region Region::create(Segment& seg, std::string_view name, std::size_t bytes) {
  const std::span<std::byte> s = seg.construct_bytes(name, bytes, kCacheLine);
  return Region(s.data(), s.size(), false);
}

Region Region::find(Segment& seg, std::string_view name) {
  const std::span<std::byte> s = seg.lookup_bytes(name);
  return Region(s.data(), s.size(), false);
}

Region::Region(Region&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      owned_(std::exchange(o.owned_, false)) {}

Region& Region::operator=(Region&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    owned_ = std::exchange(o.owned_, false);
  }
  return *this;
}

Region::~Region() { release(); }

void Region::release() noexcept {
  if (owned_) unmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  owned_ = false;
}

void check_capacity(std::uint64_t capacity, std::uint64_t min, std::uint64_t max,
                    const char* what) {
  if (capacity == 0) {
    throw_error(errc::invalid_argument, std::string(what) + " must not be 0");
  }
  if ((capacity & (capacity - 1)) != 0) {
    std::uint64_t next = 1;
    while (next < capacity && next < max) next <<= 1;
    throw_error(errc::invalid_argument,
                std::string(what) + " " + std::to_string(capacity) +
                    " is not a power of two (next: " + std::to_string(next) + ")");
  }
  if (capacity < min || capacity > max) {
    throw_error(errc::invalid_argument, std::string(what) + " " + std::to_string(capacity) +
                                            " is outside [" + std::to_string(min) + ", " +
                                            std::to_string(max) + "]");
  }
}

void throw_bad_layout(const char* what, std::string_view detail) {
  throw_error(errc::bad_layout, std::string(what) + ": " + std::string(detail));
}

void throw_closed(const char* what) {
  throw_error(errc::closed, std::string(what) + ": the channel is closed");
}

void throw_peer_dead(const char* what) {
  throw_error(errc::peer_dead, std::string(what) + ": every process on the other side has exited");
}

}  // namespace ipckit::detail
