/// @class ipckit::Arena
/// Arena: a lock-free bump allocator over a byte range in shared memory. Any process may
/// allocate concurrently; nothing is freed until reset(). Unlike a heap it holds no lock, so a
/// process killed mid-allocation cannot block the others. Place the Arena header at the front
/// of its region (Arena::create) and hand offsets, not pointers, to other processes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace ipckit {

class Arena {
 public:
  /// Lays an Arena over `region` (which it must start) and returns it. Throws
  /// Error(errc::invalid_argument) when the region is too small or misaligned.
  static Arena& create(std::span<std::byte> region);
  /// Returns the Arena created at the start of `region`; throws Error(errc::bad_layout) if
  /// the magic word or the recorded size do not match.
  static Arena& attach(std::span<std::byte> region);

  /// Offset (from the Arena itself) of `bytes` newly reserved bytes aligned to `align`, or
  /// nullopt when full. align must be a power of two no larger than 4096.
  [[nodiscard]] std::optional<std::size_t> try_allocate(std::size_t bytes,
                                                        std::size_t align = 16) noexcept;
  /// As try_allocate, but throws Error(errc::out_of_memory) / errc::invalid_argument.
  [[nodiscard]] std::size_t allocate(std::size_t bytes, std::size_t align = 16);
  /// Forgets every allocation. Only safe when no process still uses arena memory.
  void reset() noexcept;

  /// The address of `offset` (from the Arena itself) in this process.
  [[nodiscard]] std::byte* at(std::size_t offset) noexcept {
    return reinterpret_cast<std::byte*>(this) + offset;
  }
  /// Bytes in the region, header included.
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  /// Bytes handed out so far (a high-water mark), header included.
  [[nodiscard]] std::size_t used() const noexcept { return used_.load(std::memory_order_relaxed); }

  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

 private:
  explicit Arena(std::size_t capacity) noexcept;

  std::uint32_t magic_;
  std::uint32_t version_;
  std::uint64_t capacity_;           // bytes in the region, header included
  std::atomic<std::uint64_t> used_;  // high-water mark, header included
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace ipckit
