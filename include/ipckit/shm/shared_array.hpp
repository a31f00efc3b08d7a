/// @class ipckit::SharedArray
/// SharedArray<T>: a fixed-size array of trivially copyable T in shared memory, usable as a
/// std::span in the parent and in every forked child. Either it owns an anonymous mapping of
/// its own (zero-filled), or it is a view of named storage in a Segment, reachable from
/// unrelated processes by name.
///
///     ipckit::SharedArray<double> a(1024);        // fork; children write a[rank]
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "ipckit/core/mapping.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit {
namespace detail {
[[noreturn]] void throw_array_size(std::string_view name, std::size_t bytes, std::size_t elem);
}  // namespace detail

template <class T>
class SharedArray {
  static_assert(std::is_trivially_copyable_v<T>,
                "SharedArray<T> needs a trivially copyable T: it is shared as raw bytes");

 public:
  /// n zero-filled elements in an anonymous mapping of their own (n may be 0). Throws
  /// Error(errc::invalid_argument) when n * sizeof(T) overflows or passes 1 TiB, the mmap
  /// errno when the kernel refuses.
  explicit SharedArray(std::size_t n)
      : SharedArray(n == 0 ? detail::Mapping()
                           : detail::Mapping::anonymous(
                                 detail::checked_bytes(n, sizeof(T), "SharedArray"), "SharedArray"),
                    n) {}
  /// n value-initialised elements stored under `name` in `seg` (which must outlive the view).
  /// Throws as Segment::construct_bytes does, and errc::invalid_argument when n * sizeof(T)
  /// overflows.
  static SharedArray construct(Segment& seg, std::string_view name, std::size_t n) {
    auto bytes = seg.construct_bytes(
        name, detail::checked_bytes(n, sizeof(T), "SharedArray::construct"), alignof(T));
    T* p = reinterpret_cast<T*>(bytes.data());
    for (std::size_t i = 0; i < n; ++i) ::new (p + i) T{};
    return SharedArray(p, n);
  }
  /// The array stored under `name`; throws errc::not_found, or errc::size_mismatch when the
  /// stored bytes are not a whole number of T.
  static SharedArray find(const Segment& seg, std::string_view name) {
    const std::span<std::byte> bytes = seg.lookup_bytes(name);
    if (bytes.size() % sizeof(T) != 0 ||
        reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) != 0) {
      detail::throw_array_size(name, bytes.size(), sizeof(T));
    }
    return SharedArray(std::launder(reinterpret_cast<T*>(bytes.data())), bytes.size() / sizeof(T));
  }

  /// Takes over `o`'s elements (and mapping); `o` is left empty.
  SharedArray(SharedArray&& o) noexcept
      : map_(std::move(o.map_)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  /// Unmaps this array's own mapping, if any, and takes over `o`'s.
  SharedArray& operator=(SharedArray&& o) noexcept {
    if (this != &o) {
      map_ = std::move(o.map_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  /// Unmaps an owned mapping (the children keep theirs); a view of segment storage leaves
  /// it in the segment.
  ~SharedArray() = default;

  /// The elements as a span.
  [[nodiscard]] std::span<T> span() const noexcept { return {data_, size_}; }
  /// span().
  operator std::span<T>() const noexcept { return span(); }  // NOLINT: a view, like span
  /// The first element.
  [[nodiscard]] T* data() const noexcept { return data_; }
  /// The number of elements.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// True for no elements.
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// Element `i` (unchecked).
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  /// data().
  [[nodiscard]] T* begin() const noexcept { return data_; }
  /// One past the last element.
  [[nodiscard]] T* end() const noexcept { return data_ + size_; }

 private:
  SharedArray(T* p, std::size_t n) noexcept : data_(p), size_(n) {}
  SharedArray(detail::Mapping m, std::size_t n) noexcept
      : map_(std::move(m)), data_(reinterpret_cast<T*>(map_.data())), size_(n) {}

  detail::Mapping map_;  // empty for a view of segment storage
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ipckit
