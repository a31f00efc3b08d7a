/// @class ipckit::Segment
/// Segment: a region of shared memory with a heap and a directory of named objects.
///  - anonymous(size): a MAP_SHARED|MAP_ANONYMOUS mapping, inherited by forked children at the
///    same address; it has no name, so nothing can leak when anyone is killed.
///  - create(name, size) / open(name): POSIX shared memory for unrelated processes. Created
///    exclusively with mode 0600 (a name somebody planted first is refused, never reused), its
///    pages reserved at once (a full /dev/shm is errc::out_of_memory now, never a SIGBUS
///    later); the creating process unlinks the name when its Segment is destroyed.
///    create_unique(size) picks a name nobody can guess; open() refuses a segment another user
///    owns or whose mode is not 0600; open_for() waits for a creator that has not finished.
///  - Lifecycle: the segment records its creator and every process that opened it (by pid and
///    start time). A segment whose creator and users are all dead, and whose file no process
///    holds open, is stale: remove_stale() and create(..., {.reclaim_stale = true}) remove
///    it; one a live process uses, never.
///  - Heap and directory are guarded by a robust lock in the segment: a process killed or
///    stopped while holding it blocks nobody forever (owner death is recovered; a stopped
///    holder makes calls fail with errc::timeout after SegmentOptions::lock_timeout).
///
/// Objects placed in a segment must be trivially destructible (process-shared types are) and
/// hold offsets, not pointers, when unrelated processes share them.
///
///     auto seg = ipckit::Segment::anonymous(1 << 20);
///     auto& sem = seg.make<ipckit::Semaphore>(0);      // then fork; parent and child share `sem`
#pragma once

#include <chrono>
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

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/unique_fd.hpp"

namespace ipckit {

/// Options of the Segment factories.
struct SegmentOptions {
  /// create(): when the name exists but is stale (see Segment::is_stale), remove it and
  /// create anew instead of throwing errc::already_exists.
  bool reclaim_stale = false;
  /// Longest wait for the segment's lock (held for microseconds by a running process; longer
  /// only when its holder is stopped). Past it, heap and directory calls throw
  /// Error(errc::timeout).
  std::chrono::milliseconds lock_timeout{5000};
};

class Segment {
 public:
  /// Longest name accepted by create()/open().
  static constexpr std::size_t kMaxNameLength = 200;
  /// Smallest size create()/anonymous() accept: a page for the segment's own header (lock,
  /// creator, users) and a page for the heap's bookkeeping.
  static constexpr std::size_t kMinSize = 8192;
  /// Largest size accepted (1 TiB).
  static constexpr std::size_t kMaxSize = std::size_t{1} << 40;
  /// Most processes that may have one named segment open at once (slots of dead ones are
  /// reused); one more is refused with errc::invalid_argument.
  static constexpr std::size_t kMaxUsers = 256;

  /// Throws Error(errc::invalid_argument) for a size outside [kMinSize, kMaxSize], or the mmap
  /// errno.
  static Segment anonymous(std::size_t size, const SegmentOptions& options = {});
  /// Creates a named segment exclusively, mode 0600, its pages reserved. Throws Error with
  /// errc::invalid_name, errc::invalid_argument (size), errc::already_exists,
  /// errc::out_of_memory (no room in /dev/shm), or the OS error; nothing is left under the
  /// name when it throws.
  static Segment create(std::string_view name, std::size_t size,
                        const SegmentOptions& options = {});
  /// create() under a name no other process can guess: unique_name(prefix), a fresh one tried
  /// again in the (2^-64) case that it exists. The name() is what peers pass to open(); share
  /// it through a channel you trust (argv, an inherited pipe), not a well-known place.
  static Segment create_unique(std::size_t size, std::string_view prefix = "ipckit",
                               const SegmentOptions& options = {});
  /// Opens a segment made by create(). A segment whose creator has not finished it is waited
  /// for up to a second. Throws errc::invalid_name, errc::not_found, errc::timeout (still
  /// being created after that second), errc::size_mismatch (when expected_size is given and
  /// differs), errc::bad_layout (not an ipckit segment of this version), errc::invalid_argument
  /// (kMaxUsers live processes have it open), or EACCES when it belongs to another user or is
  /// not mode 0600.
  static Segment open(std::string_view name, std::optional<std::size_t> expected_size = {},
                      const SegmentOptions& options = {});
  /// As open(), but also waits (polling every few milliseconds) while the name does not exist
  /// yet, until the deadline: for a consumer started before its producer. Throws
  /// errc::not_found when the name is still missing then, errc::timeout when the segment is
  /// still being created.
  static Segment open_until(std::string_view name, const Deadline& deadline,
                            std::optional<std::size_t> expected_size = {},
                            const SegmentOptions& options = {});
  /// open_until(name, Deadline::after(timeout), expected_size, options).
  template <class Rep, class Period>
  static Segment open_for(std::string_view name, std::chrono::duration<Rep, Period> timeout,
                          std::optional<std::size_t> expected_size = {},
                          const SegmentOptions& options = {}) {
    return open_until(name, Deadline::after(timeout), expected_size, options);
  }
  /// A segment in a memfd: shared memory with no name anywhere (nothing in /dev/shm to leak
  /// or guess), reached through its descriptor: inherited across fork, or handed to an
  /// unrelated process over a Unix socket (Link::send_segment) and mapped there by adopt().
  /// The file is sealed at its size (F_SEAL_SHRINK | F_SEAL_GROW), so no receiver can shrink
  /// it under the others; its pages are reserved at once (errc::out_of_memory, not a later
  /// SIGBUS). It lives while a process maps it or holds its descriptor. Throws as anonymous().
  static Segment memfd(std::size_t size, const SegmentOptions& options = {});
  /// Maps the segment whose file `fd` is (a memfd() segment's or a named one's, received from
  /// another process), taking the descriptor. The bytes are checked before they are trusted:
  /// Error(errc::bad_layout) when it is not a regular file holding a ready ipckit segment of
  /// this version in memory (tmpfs or hugetlbfs: a file elsewhere could stall every access),
  /// errc::size_mismatch when `expected_size` is given and differs,
  /// errc::invalid_argument for an empty descriptor.
  static Segment adopt(UniqueFd fd, std::optional<std::size_t> expected_size = {},
                       const SegmentOptions& options = {});
  /// Opens the segment under `name` if there is one (its size must be `size`, else
  /// errc::size_mismatch), otherwise creates it (owns_name() tells which happened).
  static Segment open_or_create(std::string_view name, std::size_t size,
                                const SegmentOptions& options = {});
  /// Removes a name; true if it existed. Processes that have it open keep their mapping.
  static bool remove(std::string_view name) noexcept;
  /// True when the segment under `name` is stale: its creator and every process that opened
  /// it are dead, and no process (a forked child included) holds its file open; or it is an
  /// empty file a creator killed before sizing it left, open nowhere. False when it does
  /// not exist, belongs to another user, is not an ipckit segment, or a live process may use
  /// it. Scans /proc (its cost grows with the processes and descriptors on the machine).
  [[nodiscard]] static bool is_stale(std::string_view name);
  /// Removes every stale segment whose name starts with `prefix` (all of this user's stale
  /// ipckit segments for ""); returns how many. Never removes one a live process uses.
  static std::size_t remove_stale(std::string_view prefix = "");
  /// "<prefix>-<16 random hex digits>", for names that must not be guessable.
  static std::string unique_name(std::string_view prefix = "ipckit");
  /// Throws Error(errc::invalid_name) unless name is 1..kMaxNameLength of [A-Za-z0-9._-] and
  /// does not start with '.'.
  static void validate_name(std::string_view name);

  /// Takes over the other handle's mapping (and name); the other is left empty.
  Segment(Segment&&) noexcept;
  /// Releases this handle's segment (as the destructor does), then takes over the other's.
  Segment& operator=(Segment&&) noexcept;
  /// Unmaps this process's view and takes it off the segment's users; the creator of a named
  /// segment also unlinks the name (processes that have it open keep their mapping).
  ~Segment();

  /// The address of the segment's first byte in this process.
  [[nodiscard]] void* base() const noexcept;
  /// The segment's size in bytes.
  [[nodiscard]] std::size_t size() const noexcept;
  /// Bytes still free on the segment's heap (0 when its lock cannot be taken).
  [[nodiscard]] std::size_t free_memory() const noexcept;
  /// The name; empty for an anonymous segment.
  [[nodiscard]] const std::string& name() const noexcept;  // empty for anonymous
  /// True for a segment made by anonymous() (no file, so no descriptor to pass on).
  [[nodiscard]] bool is_anonymous() const noexcept;
  /// True in the process that created a named segment (and will unlink it).
  [[nodiscard]] bool owns_name() const noexcept;
  /// The descriptor of a named or memfd() segment's file (owned by the Segment), -1 for
  /// anonymous ones.
  [[nodiscard]] int fd() const noexcept;
  /// For a named segment: true when some process other than the caller created or opened
  /// it and every such process is dead (by identity) — nobody but the caller is left who
  /// ever took part. False while one lives, when nobody else ever came (or all closed it
  /// normally), and for anonymous segments (not tracked).
  [[nodiscard]] bool others_gone() const noexcept { return others_gone(impl_.get()); }
  /// For a named segment: throws Error(errc::bad_layout) when another process has truncated
  /// its file below size() (the next access past the new end would raise SIGBUS).
  void check_backing() const;

  /// Heap allocation inside the segment; thread- and process-safe. Throws
  /// Error(errc::out_of_memory), errc::invalid_argument (align not a power of two), errc::timeout
  /// (the lock was held past lock_timeout), errc::bad_layout (a process died while changing
  /// the heap: it can no longer be trusted; objects already found keep working).
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t align = alignof(std::max_align_t));
  /// Frees a block allocate() returned (nullptr: nothing). Never throws: when the lock cannot
  /// be taken or the heap is broken, the block stays allocated.
  void deallocate(void* p) noexcept;

  /// Raw named storage: `size` bytes aligned to `align`, registered under `name`; its first
  /// 64 bytes are zero when the name appears to other processes.
  /// construct_bytes throws errc::already_exists / invalid_name / out_of_memory (and what
  /// allocate() throws);
  /// find_bytes returns an empty optional when the name is not there; lookup_bytes throws
  /// Error(errc::not_found) instead.
  std::span<std::byte> construct_bytes(std::string_view name, std::size_t size, std::size_t align);
  /// The storage under `name`, or an empty optional when the name is not there.
  [[nodiscard]] std::optional<std::span<std::byte>> find_bytes(std::string_view name) const;
  /// The storage under `name`; throws Error(errc::not_found) when the name is not there.
  [[nodiscard]] std::span<std::byte> lookup_bytes(std::string_view name) const;
  /// Removes a named entry and frees its storage; false when it was not there.
  bool destroy_bytes(std::string_view name) noexcept;

  /// Constructs a T under `name`. Throws errc::already_exists if the name is taken.
  template <class T, class... Args>
  T& construct(std::string_view name, Args&&... args);
  /// Finds the T constructed under `name`. Throws errc::not_found, or errc::size_mismatch when
  /// the stored object has a different size or alignment than T.
  template <class T>
  T& find(std::string_view name) const;
  /// Constructs an unnamed T on the segment's heap (for anonymous segments shared by fork).
  template <class T, class... Args>
  T& make(Args&&... args);

  /// Offset of p from base(), and back. Offsets are what unrelated processes can share.
  /// Both throw Error(errc::invalid_argument) for an address or offset outside the segment.
  [[nodiscard]] std::size_t offset_of(const void* p) const;
  /// The address of `offset` in this process (see offset_of()).
  [[nodiscard]] void* at(std::size_t offset) const;

  struct Impl;  // opaque: defined in lib/shm/segment.cpp
  /// The implementation, whose address stays put when the Segment is moved: what handles of
  /// objects in the segment keep (Segment::others_gone(impl)).
  [[nodiscard]] const Impl* impl() const noexcept { return impl_.get(); }
  /// others_gone() of the segment whose implementation is `impl` (a handle's saved impl()).
  static bool others_gone(const Impl* impl) noexcept;

 private:
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
