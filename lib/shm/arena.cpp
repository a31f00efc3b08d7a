#include "ipckit/shm/arena.hpp"

#include <new>
#include <string>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kArenaMagic = 0x49415231;  // "IAR1"
constexpr std::uint32_t kArenaVersion = 1;
constexpr std::size_t kRegionAlign = 64;  // create() needs this; header fields stay aligned
constexpr std::size_t kMaxAlign = 4096;   // the largest alignment allocations honour

bool valid_align(std::size_t align) noexcept {
  return align != 0 && align <= kMaxAlign && (align & (align - 1)) == 0;
}
}  // namespace

Arena::Arena(std::size_t capacity) noexcept
    : magic_(kArenaMagic), version_(kArenaVersion), capacity_(capacity), used_(sizeof(Arena)) {}

Arena& Arena::create(std::span<std::byte> region) {
  if (region.size() < sizeof(Arena) ||
      reinterpret_cast<std::uintptr_t>(region.data()) % kRegionAlign != 0) {
    throw_error(errc::invalid_argument, "Arena::create: region of " +
                                            std::to_string(region.size()) +
                                            " bytes is too small or not 64-byte aligned");
  }
  return *::new (region.data()) Arena(region.size());
}

Arena& Arena::attach(std::span<std::byte> region) {
  if (region.size() < sizeof(Arena)) {
    throw_error(errc::bad_layout, "Arena::attach: region smaller than the arena header");
  }
  auto* a = std::launder(reinterpret_cast<Arena*>(region.data()));
  if (a->magic_ != kArenaMagic || a->version_ != kArenaVersion || a->capacity_ != region.size()) {
    throw_error(errc::bad_layout, "Arena::attach: no arena of this version and size here");
  }
  return *a;
}

std::optional<std::size_t> Arena::try_allocate(std::size_t bytes, std::size_t align) noexcept {
  if (!valid_align(align)) return std::nullopt;
  // Align the address, not the offset: the region is only kRegionAlign-aligned. Mappings are
  // page-aligned, so every process sees the same address alignment for align <= 4096.
  const auto base = reinterpret_cast<std::uintptr_t>(this);
  std::uint64_t cur = used_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t start =
        ((base + cur + align - 1) & ~static_cast<std::uintptr_t>(align - 1)) - base;
    if (start > capacity_ || bytes > capacity_ - start) return std::nullopt;
    if (used_.compare_exchange_weak(cur, start + bytes, std::memory_order_relaxed)) {
      return static_cast<std::size_t>(start);
    }
  }
}

std::size_t Arena::allocate(std::size_t bytes, std::size_t align) {
  if (!valid_align(align)) {
    throw_error(errc::invalid_argument, "Arena::allocate: alignment " + std::to_string(align) +
                                            " is not a power of two <= 4096");
  }
  if (auto off = try_allocate(bytes, align)) return *off;
  throw_error(errc::out_of_memory, "Arena::allocate(" + std::to_string(bytes) +
                                       "): " + std::to_string(capacity_ - used()) + " of " +
                                       std::to_string(capacity_) + " bytes left");
}

void Arena::reset() noexcept { used_.store(sizeof(Arena), std::memory_order_relaxed); }

}  // namespace ipckit
