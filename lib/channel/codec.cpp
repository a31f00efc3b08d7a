#include "ipckit/channel/codec.hpp"

#include <sys/mman.h>

#include <cstdint>

namespace ipckit::detail {

void throw_codec(const std::string& what) { throw_error(errc::bad_frame, what); }

void advise_huge_pages(void* p, std::size_t n) noexcept {
  if (n < kLargeBlock || p == nullptr) return;
  // The 2 MiB-aligned inside of the block: madvise wants page-aligned ranges, and only whole
  // huge pages can be backed by one.
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t last = (begin + n) & ~(kHuge - 1);
  if (last > first) {
    (void)::madvise(static_cast<std::byte*>(p) + (first - begin), last - first, MADV_HUGEPAGE);
  }
}

}  // namespace ipckit::detail
