// The parts of Segment that segment.cpp, segment_guard.cpp and segment_stale.cpp share: the
// header page every segment starts with, the heap type, and Segment::Impl.
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "ipckit/core/error.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/mutex.hpp"

namespace ipckit::segment_detail {

namespace bip = boost::interprocess;

// The heap and directory: Boost.Interprocess's allocator and name index over the bytes after
// the header page, with Boost's own (non-robust) locks turned off; ipckit's robust lock in
// the header guards every call instead (HeapLock below).
using Heap = bip::basic_managed_external_buffer<char, bip::rbtree_best_fit<bip::null_mutex_family>,
                                                bip::iset_index>;

constexpr std::uint32_t kSegmentMagic = 0x49534732;  // "ISG2"
constexpr std::uint32_t kSegmentVersion = 2;
constexpr std::size_t kHeaderBytes = 4096;

enum : std::uint32_t { kCreating = 0, kReady = 1, kReclaimed = 2 };

// The first page of every segment, named or anonymous.
struct SegmentHeader {
  std::atomic<std::uint32_t> state;  // kCreating until the creator publishes it (release)
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  std::uint64_t size;         // bytes of the whole segment, header included
  std::uint64_t heap_offset;  // kHeaderBytes
  std::atomic<ProcessIdentity> creator;
  std::atomic<std::uint32_t> heap_writing;  // 1 while the lock's holder changes the heap
  std::atomic<std::uint32_t> heap_broken;   // 1 once a process died doing that
  alignas(64) Mutex lock;
  // Processes that have a named segment open (0: free slot), for stale detection.
  alignas(64) std::array<std::atomic<ProcessIdentity>, Segment::kMaxUsers> users;
};
static_assert(sizeof(SegmentHeader) <= kHeaderBytes);
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(std::atomic<ProcessIdentity>::is_always_lock_free);

// Directory entry for named storage: where it lives (offset from the segment base) and what
// it holds.
struct Record {
  std::uint64_t offset;
  std::uint64_t size;
  std::uint64_t align;
};

inline std::string quoted(std::string_view name) {
  std::string q;  // appended piecewise: `"\"" + s + "\""` trips GCC 12's -Wrestrict (PR105651)
  q.reserve(name.size() + 2);
  q.push_back('"');
  q.append(name);
  q.push_back('"');
  return q;
}

inline std::string shm_path(std::string_view name) { return "/" + std::string(name); }

// A file mapping of a named segment (MAP_SHARED over its descriptor), guarded against
// truncation (segment_guard.cpp). Throws the mmap errno naming `what`.
std::byte* map_file(int fd, std::size_t size, const std::string& what);
// Registers / forgets a mapping of a named segment's file with the SIGBUS guard.
void guard_mapping(std::byte* base, std::size_t size);
void unguard_mapping(std::byte* base) noexcept;

// Stale detection (segment_stale.cpp): whether nobody alive created or uses the segment
// whose header is `h`, and no process but the caller's `own` descriptors holds its file.
bool nobody_alive(const SegmentHeader& h, const struct stat& st, std::size_t own);
// Removes `name` if it is stale; true when it did.
bool reclaim(std::string_view name);

}  // namespace ipckit::segment_detail

namespace ipckit {

struct Segment::Impl {
  using SegmentHeader = segment_detail::SegmentHeader;
  using Heap = segment_detail::Heap;

  std::string name;
  bool owner = false;
  pid_t creator = -1;
  UniqueFd fd;                    // named segments
  detail::Mapping anon;           // anonymous segments
  std::byte* file_map = nullptr;  // named segments: the mapping of the whole file
  std::size_t size = 0;
  SegmentHeader* h = nullptr;
  std::optional<Heap> heap;
  std::chrono::milliseconds lock_timeout{5000};
  ProcessIdentity registered = 0;  // our entry in h->users

  [[nodiscard]] std::byte* base() const noexcept { return file_map ? file_map : anon.data(); }

  ~Impl() {
    heap.reset();
    if (h != nullptr && registered != 0 && identity_pid(registered) == current_pid()) {
      for (auto& u : h->users) {
        ProcessIdentity mine = registered;
        if (u.compare_exchange_strong(mine, 0, std::memory_order_acq_rel)) break;
      }
    }
    if (file_map != nullptr) {
      segment_detail::unguard_mapping(file_map);
      ::munmap(file_map, size);
    }
    if (owner && creator == ::getpid()) ::shm_unlink(segment_detail::shm_path(name).c_str());
  }

  // Throws errc::bad_layout when the file was truncated below the mapping (see the guard).
  void check_backing(const std::string& what) const {
    if (!fd) return;
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && static_cast<std::size_t>(st.st_size) < size) {
      throw_error(errc::bad_layout, what + ": the segment was truncated to " +
                                        std::to_string(st.st_size) + " of " + std::to_string(size) +
                                        " bytes by another process");
    }
  }

  // Adds the caller to h->users (under the lock). Throws errc::invalid_argument when the
  // table is full of live processes.
  void register_user(const std::string& what) {
    const ProcessIdentity me = current_identity();
    for (auto& u : h->users) {
      if (u.load(std::memory_order_acquire) == me) {
        registered = me;
        return;
      }
    }
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& u : h->users) {
        ProcessIdentity cur = u.load(std::memory_order_acquire);
        if (pass == 0 ? cur != 0 : (cur == 0 || identity_alive(cur))) continue;
        if (u.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) {
          registered = me;
          return;
        }
      }
    }
    throw_error(errc::invalid_argument, what + ": more than " + std::to_string(kMaxUsers) +
                                            " live processes have the segment open");
  }
};

}  // namespace ipckit

namespace ipckit::segment_detail {

// Holds the segment's robust lock for one heap or directory call, at most `timeout` waiting.
// A holder that died is recovered; if it died while changing the heap (`writing` calls mark
// that), the heap is marked broken for good, since its free lists may be half-updated: later
// calls throw errc::bad_layout instead of trusting them.
class HeapLock {
 public:
  HeapLock(SegmentHeader& h, std::chrono::milliseconds timeout, const std::string& what,
           bool writing)
      : h_(h) {
    const std::error_code ec = h_.lock.lock_for(timeout);
    if (ec == errc::timeout) {
      throw_error(errc::timeout, what + ": the segment's lock was held for over " +
                                     std::to_string(timeout.count()) +
                                     " ms (by a stopped process?)");
    }
    if (ec == errc::owner_dead && h_.heap_writing.load(std::memory_order_relaxed) != 0) {
      h_.heap_broken.store(1, std::memory_order_relaxed);
    }
    if (h_.heap_broken.load(std::memory_order_relaxed) != 0) {
      h_.lock.unlock();
      throw_error(errc::bad_layout,
                  what +
                      ": a process died while changing the segment's heap; its heap and "
                      "directory can no longer be trusted (objects already found still work)");
    }
    if (writing) {
      h_.heap_writing.store(1, std::memory_order_relaxed);
      writing_ = true;
    }
  }
  // The lock of a handle's segment, after checking that its file was not truncated.
  HeapLock(const Segment::Impl& impl, const std::string& what, bool writing)
      : HeapLock((impl.check_backing(what), *impl.h), impl.lock_timeout, what, writing) {}
  HeapLock(const HeapLock&) = delete;
  HeapLock& operator=(const HeapLock&) = delete;
  ~HeapLock() {
    if (writing_) h_.heap_writing.store(0, std::memory_order_relaxed);
    h_.lock.unlock();
  }

 private:
  SegmentHeader& h_;
  bool writing_ = false;
};

}  // namespace ipckit::segment_detail
