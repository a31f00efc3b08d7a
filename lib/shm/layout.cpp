#include "ipckit/shm/detail/layout.hpp"

#include <cstdio>
#include <string>

#include "ipckit/core/error.hpp"

namespace ipckit::detail {
namespace {

bool power_of_two(std::uint64_t x) noexcept { return x != 0 && (x & (x - 1)) == 0; }

template <class T>
T load_word(const T* p) noexcept {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);  // a peer may be writing it: one atomic read
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

[[noreturn]] void bad(const LayoutSpec& spec, const char* what, const std::string& why) {
  throw_error(errc::bad_layout,
              std::string(what) + ": not a valid " + spec.type + " (" + why + ")");
}

}  // namespace

void check_capacity(const LayoutSpec& spec, std::uint64_t capacity) {
  const std::string what = std::string(spec.type) + " capacity " + std::to_string(capacity);
  if (spec.min_capacity == spec.max_capacity) {  // fixed at compile time (any value)
    if (capacity != spec.min_capacity) {
      throw_error(errc::invalid_argument, what + " is not " + std::to_string(spec.min_capacity));
    }
    return;
  }
  if (capacity == 0) throw_error(errc::invalid_argument, what + " must not be 0");
  if (!power_of_two(capacity)) {
    std::uint64_t next = 1;
    while (next < capacity && next < spec.max_capacity) next <<= 1;
    throw_error(errc::invalid_argument,
                what + " is not a power of two (next: " + std::to_string(next) + ")");
  }
  if (capacity < spec.min_capacity || capacity > spec.max_capacity) {
    throw_error(errc::invalid_argument, what + " is outside [" + std::to_string(spec.min_capacity) +
                                            ", " + std::to_string(spec.max_capacity) + "]");
  }
}

std::size_t layout_bytes(const LayoutSpec& spec, std::uint64_t capacity) {
  // Within max_capacity, slot_bytes * capacity cannot overflow for any slot a type has
  // (max_capacity <= 2^40, slots below 2^20 bytes); checked all the same.
  if (spec.slot_bytes != 0 && capacity > (SIZE_MAX - spec.data_offset) / spec.slot_bytes) {
    throw_error(errc::invalid_argument, std::string(spec.type) + " capacity " +
                                            std::to_string(capacity) + " overflows its size");
  }
  return spec.data_offset + static_cast<std::size_t>(capacity) * spec.slot_bytes;
}

void begin_layout(LayoutHeader& h, const LayoutSpec& spec, std::uint64_t capacity) noexcept {
  __atomic_store_n(&h.magic, 0u, __ATOMIC_RELAXED);
  h.version = spec.version;
  h.capacity = capacity;
  h.elem_size = spec.elem_size;
}

void publish_layout(LayoutHeader& h, const LayoutSpec& spec) noexcept {
  __atomic_store_n(&h.magic, spec.magic, __ATOMIC_RELEASE);
}

LayoutRead read_layout(const LayoutSpec& spec, std::span<const std::byte> bytes, const char* what) {
  if (bytes.size() < spec.data_offset || bytes.size() < sizeof(LayoutHeader)) {
    bad(spec, what, std::to_string(bytes.size()) + " bytes is smaller than its header");
  }
  const auto* h = reinterpret_cast<const LayoutHeader*>(bytes.data());
  const std::uint32_t magic = load_word(&h->magic);  // pairs with publish_layout()
  if (magic == 0) return {LayoutState::building, 0};
  const std::uint32_t version = load_word(&h->version);
  const std::uint64_t capacity = load_word(&h->capacity);
  const std::uint64_t elem = load_word(&h->elem_size);
  if (magic != spec.magic) bad(spec, what, "magic " + hex(magic));
  if (version != spec.version) {
    bad(spec, what,
        "layout version " + std::to_string(version) + ", this build reads " +
            std::to_string(spec.version));
  }
  if (elem != spec.elem_size) {
    bad(spec, what,
        "element size " + std::to_string(elem) + ", expected " + std::to_string(spec.elem_size));
  }
  const bool fixed = spec.min_capacity == spec.max_capacity;
  if ((!fixed && !power_of_two(capacity)) || capacity < spec.min_capacity ||
      capacity > spec.max_capacity) {
    bad(spec, what, "capacity " + std::to_string(capacity));
  }
  const std::size_t room = bytes.size() - spec.data_offset;
  if (spec.slot_bytes != 0 && capacity > room / spec.slot_bytes) {
    bad(spec, what,
        "capacity " + std::to_string(capacity) + " needs more than the " +
            std::to_string(bytes.size()) + " bytes it has");
  }
  return {LayoutState::ready, capacity};
}

}  // namespace ipckit::detail
