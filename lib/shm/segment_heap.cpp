// The segment's heap reached from its first byte alone, for ShmAllocator (the allocator of
// the shared containers, ipckit/shm/containers.hpp), which lives inside the segment and so
// can hold no pointer to a process's Segment handle.
#include <chrono>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/shm/containers.hpp"
#include "segment_internal.hpp"

namespace ipckit::detail {

namespace {

using segment_detail::HeapLock;
using segment_detail::kHeaderBytes;
using segment_detail::SegmentHeader;

constexpr std::chrono::milliseconds kLockTimeout{5000};

SegmentHeader& header_at(void* base, const char* what) {
  auto* h = static_cast<SegmentHeader*>(base);
  if (h == nullptr || h->state.load(std::memory_order_acquire) != segment_detail::kReady ||
      h->magic != segment_detail::kSegmentMagic || h->version != segment_detail::kSegmentVersion ||
      h->heap_offset != kHeaderBytes) {
    throw_error(errc::bad_layout, std::string(what) +
                                      ": the allocator's segment is not a ready "
                                      "ipckit segment");
  }
  return *h;
}

// Boost's segment manager sits at the start of the heap's buffer (where Segment's Heap put it).
segment_detail::Heap::segment_manager& manager_of(void* base) {
  return *static_cast<segment_detail::Heap::segment_manager*>(
      static_cast<void*>(static_cast<std::byte*>(base) + kHeaderBytes));
}

}  // namespace

void* segment_heap_allocate(void* base, std::size_t bytes, std::size_t align) {
  const char* what = "ShmAllocator::allocate";
  SegmentHeader& h = header_at(base, what);
  if (bytes > h.size) {
    throw_error(errc::out_of_memory, std::string(what) + ": " + std::to_string(bytes) +
                                         " bytes, more than the segment's " +
                                         std::to_string(h.size));
  }
  void* p = nullptr;
  std::size_t free = 0;
  {
    HeapLock lock(h, kLockTimeout, what, true);
    auto& m = manager_of(base);
    p = align <= alignof(std::max_align_t)
            ? m.allocate(bytes ? bytes : 1, std::nothrow)
            : m.allocate_aligned(bytes ? bytes : 1, align, std::nothrow);
    free = m.get_free_memory();
  }
  if (p == nullptr) {
    throw_error(errc::out_of_memory, std::string(what) + "(" + std::to_string(bytes) + "): only " +
                                         std::to_string(free) + " bytes free");
  }
  return p;
}

void segment_heap_deallocate(void* base, void* p) noexcept {
  if (p == nullptr) return;
  try {
    SegmentHeader& h = header_at(base, "ShmAllocator::deallocate");
    HeapLock lock(h, kLockTimeout, "ShmAllocator::deallocate", true);
    manager_of(base).deallocate(p);
  } catch (...) {  // a stopped holder or a broken heap: the block stays allocated
  }
}

}  // namespace ipckit::detail
