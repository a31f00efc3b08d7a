// Mapping: the one owner of anonymous shared memory (MAP_SHARED|MAP_ANONYMOUS) in ipckit.
// Forked children inherit it at the same address; each process's handle unmaps its own view.
// Move-only RAII; sizes are checked before the kernel sees them.
//
//   auto m = ipckit::detail::Mapping::anonymous(1 << 20);   // zero-filled; fork; share
#pragma once

#include <cstddef>
#include <utility>

namespace ipckit::detail {

class Mapping {
 public:
  // Largest mapping accepted (1 TiB): far above any real use, far below overflow.
  static constexpr std::size_t kMaxBytes = std::size_t{1} << 40;

  Mapping() noexcept = default;
  // `bytes` zero-filled bytes, rounded up to pages. `reserve`: false maps with MAP_NORESERVE
  // (pages are committed as they are touched). Throws Error(errc::invalid_argument) for 0
  // or more than kMaxBytes, the mmap errno (ENOMEM) otherwise; `what` names the caller.
  static Mapping anonymous(std::size_t bytes, const char* what = "mmap", bool reserve = true);
  // `bytes` of the file `fd` from offset 0, shared (MAP_SHARED); throws as anonymous().
  static Mapping of_file(int fd, std::size_t bytes, const char* what = "mmap");

  Mapping(Mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // Unmaps now (idempotent).
  void reset() noexcept;
  // Gives up ownership: the caller unmaps with unmap(data, size).
  std::byte* release() noexcept {
    size_ = 0;
    return std::exchange(data_, nullptr);
  }

 private:
  Mapping(std::byte* p, std::size_t n) noexcept : data_(p), size_(n) {}
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// n * size, or throws Error(errc::invalid_argument) naming `what` when it overflows or
// passes Mapping::kMaxBytes.
std::size_t checked_bytes(std::size_t n, std::size_t size, const char* what);

}  // namespace ipckit::detail
