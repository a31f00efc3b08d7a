// The validated layout every shared object with a run-time size uses (SpscQueue, MpmcQueue,
// ByteRing): one header at its front, handled here and nowhere else.
//  - The creator writes the fields, builds the object, then publishes the magic word last
//    (release): an opener that finds magic 0 knows the object is still being built.
//  - An opener reads the header once, each word atomically, and checks it as a whole against
//    the bytes the object really has (magic, version, element size, capacity a power of two
//    in range, header + capacity * slot inside those bytes, no overflow). The handle then
//    uses its own validated copy and never reads these words again: a peer that rewrites
//    them later changes nothing the handle relies on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace ipckit::detail {

struct LayoutHeader {
  std::uint32_t magic;      // 0 while the creator is building the object
  std::uint32_t version;    // of the object's layout
  std::uint64_t capacity;   // slots (queues) or bytes (rings)
  std::uint64_t elem_size;  // bytes per element as the creator's type had it (1 for rings)
};
static_assert(std::is_standard_layout_v<LayoutHeader> && sizeof(LayoutHeader) == 24);

// Where the slots of an object with a header of `header_bytes` start: the next cache line.
constexpr std::size_t slots_offset(std::size_t header_bytes) noexcept {
  return (header_bytes + 63) / 64 * 64;
}

// What one kind of object looks like.
struct LayoutSpec {
  const char* type;     // "SpscQueue": names the object in every message
  std::uint32_t magic;  // never 0
  std::uint32_t version;
  std::uint64_t elem_size;     // expected LayoutHeader::elem_size
  std::size_t data_offset;     // bytes before the first slot
  std::size_t slot_bytes;      // bytes each unit of capacity takes
  std::uint64_t min_capacity;  // a power of two (or equal to max_capacity: a fixed capacity,
  std::uint64_t max_capacity;  // any value, as compile-time queues have)
};

// Throws Error(errc::invalid_argument) naming spec.type unless `capacity` is a power of two
// in [min_capacity, max_capacity] (or the fixed capacity).
void check_capacity(const LayoutSpec& spec, std::uint64_t capacity);
// Bytes an object of `capacity` takes (check_capacity first; overflow-checked).
std::size_t layout_bytes(const LayoutSpec& spec, std::uint64_t capacity);
// Writes the header with magic 0 (the object is not ready yet).
void begin_layout(LayoutHeader& h, const LayoutSpec& spec, std::uint64_t capacity) noexcept;
// Publishes the object: stores the magic word last, with release order (pairs with the
// acquire load in read_layout()).
void publish_layout(LayoutHeader& h, const LayoutSpec& spec) noexcept;

// What read_layout() found.
enum class LayoutState {
  ready,     // valid: `capacity` is set
  building,  // magic 0: the creator has not published it yet (or died before it did)
};
struct LayoutRead {
  LayoutState state;
  std::uint64_t capacity;
};
// Reads the header at the front of `bytes` once and validates it as a whole. Throws
// Error(errc::bad_layout), naming `what` (the call the user made), when the bytes are not a
// published object of `spec` that fits them.
LayoutRead read_layout(const LayoutSpec& spec, std::span<const std::byte> bytes, const char* what);

}  // namespace ipckit::detail
