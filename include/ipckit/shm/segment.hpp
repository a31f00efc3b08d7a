// Segment: a region of shared memory with a heap and a directory of named objects.
//  - anonymous(size): a MAP_SHARED|MAP_ANONYMOUS mapping, inherited by forked children at the
//    same address; it has no name, so nothing can leak when anyone is killed.
//  - create(name, size) / open(name): POSIX shared memory (through Boost.Interprocess) for
//    unrelated processes. Created exclusively with mode 0600 (a name somebody planted first
//    is refused, never reused); the creating process unlinks the name when its Segment is
//    destroyed. create_unique(size) picks a name nobody can guess; open() refuses a segment
//    another user owns or whose mode is not 0600.
// Objects placed in a segment must be trivially destructible (process-shared types are) and
// hold offsets, not pointers, when unrelated processes share them.
//
//   auto seg = ipckit::Segment::anonymous(1 << 20);
//   auto& sem = seg.make<ipckit::Semaphore>(0);      // then fork; parent and child share `sem`
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ipckit {

class Segment {
 public:
  // Longest name accepted by create()/open().
  static constexpr std::size_t kMaxNameLength = 200;
  // Smallest size create()/anonymous() accept (room for the heap's own bookkeeping).
  static constexpr std::size_t kMinSize = 4096;

  // Throws Error(errc::invalid_argument) for size < kMinSize, or the mmap errno.
  static Segment anonymous(std::size_t size);
  // Creates a named segment exclusively, mode 0600. Throws Error with errc::invalid_name,
  // errc::invalid_argument (size), errc::already_exists, or the OS error.
  static Segment create(std::string_view name, std::size_t size);
  // create() under a name no other process can guess: unique_name(prefix), a fresh one tried
  // again in the (2^-64) case that it exists. The name() is what peers pass to open(); share
  // it through a channel you trust (argv, an inherited pipe), not a well-known place.
  static Segment create_unique(std::size_t size, std::string_view prefix = "ipckit");
  // Opens a segment made by create(). Throws errc::invalid_name, errc::not_found,
  // errc::size_mismatch (when expected_size is given and differs), errc::bad_layout (not an
  // ipckit segment), or EACCES when it belongs to another user or is not mode 0600.
  static Segment open(std::string_view name, std::optional<std::size_t> expected_size = {});
  // Removes a name; true if it existed. For cleaning up after a crashed creator.
  static bool remove(std::string_view name) noexcept;
  // "<prefix>-<16 random hex digits>", for names that must not be guessable.
  static std::string unique_name(std::string_view prefix = "ipckit");
  // Throws Error(errc::invalid_name) unless name is 1..kMaxNameLength of [A-Za-z0-9._-] and
  // does not start with '.'.
  static void validate_name(std::string_view name);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  [[nodiscard]] void* base() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] std::size_t free_memory() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;  // empty for anonymous
  [[nodiscard]] bool is_anonymous() const noexcept;
  // True in the process that created a named segment (and will unlink it).
  [[nodiscard]] bool owns_name() const noexcept;

  // Heap allocation inside the segment; thread- and process-safe. Throws
  // Error(errc::out_of_memory) or errc::invalid_argument (align not a power of two).
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t align = alignof(std::max_align_t));
  void deallocate(void* p) noexcept;

  // Raw named storage: `size` bytes aligned to `align`, registered under `name`.
  // construct_bytes throws errc::already_exists / invalid_name / out_of_memory;
  // find_bytes returns an empty optional when the name is not there; lookup_bytes throws
  // Error(errc::not_found) instead.
  std::span<std::byte> construct_bytes(std::string_view name, std::size_t size, std::size_t align);
  [[nodiscard]] std::optional<std::span<std::byte>> find_bytes(std::string_view name) const;
  [[nodiscard]] std::span<std::byte> lookup_bytes(std::string_view name) const;
  // Removes a named entry and frees its storage; false when it was not there.
  bool destroy_bytes(std::string_view name) noexcept;

  // Constructs a T under `name`. Throws errc::already_exists if the name is taken.
  template <class T, class... Args>
  T& construct(std::string_view name, Args&&... args);
  // Finds the T constructed under `name`. Throws errc::not_found, or errc::size_mismatch when
  // the stored object has a different size or alignment than T.
  template <class T>
  T& find(std::string_view name) const;
  // Constructs an unnamed T on the segment's heap (for anonymous segments shared by fork).
  template <class T, class... Args>
  T& make(Args&&... args);

  // Offset of p from base(), and back. Offsets are what unrelated processes can share.
  [[nodiscard]] std::size_t offset_of(const void* p) const;
  [[nodiscard]] void* at(std::size_t offset) const;

 private:
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl) noexcept;
  [[noreturn]] static void throw_size_mismatch(std::string_view name, std::size_t stored,
                                               std::size_t wanted);
  std::unique_ptr<Impl> impl_;
};

template <class T, class... Args>
T& Segment::construct(std::string_view name, Args&&... args) {
  static_assert(std::is_trivially_destructible_v<T>,
                "objects in shared memory are never destroyed: T must be trivially destructible");
  std::span<std::byte> bytes = construct_bytes(name, sizeof(T), alignof(T));
  try {
    return *::new (bytes.data()) T(std::forward<Args>(args)...);
  } catch (...) {
    destroy_bytes(name);
    throw;
  }
}

template <class T>
T& Segment::find(std::string_view name) const {
  const std::span<std::byte> bytes = lookup_bytes(name);
  if (bytes.size() != sizeof(T) ||
      reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) != 0) {
    throw_size_mismatch(name, bytes.size(), sizeof(T));
  }
  return *std::launder(reinterpret_cast<T*>(bytes.data()));
}

template <class T, class... Args>
T& Segment::make(Args&&... args) {
  static_assert(std::is_trivially_destructible_v<T>,
                "objects in shared memory are never destroyed: T must be trivially destructible");
  void* p = allocate(sizeof(T), alignof(T));
  try {
    return *::new (p) T(std::forward<Args>(args)...);
  } catch (...) {
    deallocate(p);
    throw;
  }
}

}  // namespace ipckit
