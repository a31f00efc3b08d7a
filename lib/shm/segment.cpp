#include "ipckit/shm/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "ipckit/core/error.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/sync/mutex.hpp"

namespace bip = boost::interprocess;

namespace ipckit {
namespace {

// The heap and directory: Boost.Interprocess's allocator and name index over the bytes after
// the header page, with Boost's own (non-robust) locks turned off; ipckit's robust lock in
// the header guards every call instead (HeapLock below).
using Heap = bip::basic_managed_external_buffer<char, bip::rbtree_best_fit<bip::null_mutex_family>,
                                                bip::iset_index>;

constexpr std::uint32_t kSegmentMagic = 0x49534732;  // "ISG2"
constexpr std::uint32_t kSegmentVersion = 2;
constexpr std::size_t kHeaderBytes = 4096;
// How long open() waits for a creator that has not finished.
constexpr std::chrono::seconds kOpenGrace{1};
constexpr std::chrono::milliseconds kPoll{2};

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

std::string quoted(std::string_view name) {
  std::string q;  // appended piecewise: `"\"" + s + "\""` trips GCC 12's -Wrestrict (PR105651)
  q.reserve(name.size() + 2);
  q.push_back('"');
  q.append(name);
  q.push_back('"');
  return q;
}

std::string shm_path(std::string_view name) { return "/" + std::string(name); }

[[noreturn]] void rethrow_interprocess(const bip::interprocess_exception& e,
                                       const std::string& what) {
  switch (e.get_error_code()) {
    case bip::already_exists_error: throw_error(errc::already_exists, what + ": the name already exists");
    case bip::not_found_error: throw_error(errc::not_found, what + ": no such name");
    case bip::out_of_space_error: throw_error(errc::out_of_memory, what + ": no room left");
    default: break;
  }
  const int native = e.get_native_error();
  if (native != 0) throw_errno(native, what);
  throw Error(std::make_error_code(std::errc::io_error), what + ": " + e.what());
}

void check_size(std::size_t size, const char* what) {
  if (size < Segment::kMinSize || size > Segment::kMaxSize) {
    throw_error(errc::invalid_argument, std::string(what) + ": size " + std::to_string(size) +
                                            " is outside " + std::to_string(Segment::kMinSize) +
                                            ".." + std::to_string(Segment::kMaxSize));
  }
}

// ---- truncation guard ------------------------------------------------------------------------
// A same-user peer can ftruncate() a named segment's file under the processes that map it;
// their next access past the new end raises SIGBUS, which no check can fully forestall (the
// file may shrink between an fstat() and the access). So every process that maps a named
// segment registers the mapping here, and a SIGBUS inside a registered mapping replaces the
// pages from the faulting one to the mapping's end with private zero pages and returns: the
// access completes on zeros ("nothing there"), and the next check_backing() (every blocking
// call runs one before and between sleeps; every heap call runs one) reports errc::bad_layout.
// A SIGBUS anywhere else goes to the handler that was there before (or kills as usual).
struct GuardedMapping {
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> size{0};
};
constexpr std::size_t kMaxGuarded = 1024;
std::array<GuardedMapping, kMaxGuarded> guarded;
struct sigaction previous_sigbus {};
std::uintptr_t page_size = 4096;

void call_previous(int sig, siginfo_t* info, void* context) {
  if ((previous_sigbus.sa_flags & SA_SIGINFO) != 0 && previous_sigbus.sa_sigaction != nullptr) {
    previous_sigbus.sa_sigaction(sig, info, context);
  } else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
    previous_sigbus.sa_handler(sig);
  } else {
    // Default action: restore it; returning re-runs the access, which faults again and dies.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGBUS, &dfl, nullptr);
  }
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (const auto& g : guarded) {
    const std::uintptr_t base = g.base.load(std::memory_order_acquire);
    const std::size_t size = g.size.load(std::memory_order_acquire);
    if (base == 0 || at < base || at >= base + size) continue;
    const std::uintptr_t page = at & ~(page_size - 1);
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the faulting page, from the kernel's si_addr
    void* p = ::mmap(reinterpret_cast<void*>(page), base + size - page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != MAP_FAILED) return;
    break;
  }
  call_previous(sig, info, context);
}

void guard_mapping(std::byte* base, std::size_t size) {
  static const bool installed = [] {
    page_size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    ::sigemptyset(&sa.sa_mask);
    return ::sigaction(SIGBUS, &sa, &previous_sigbus) == 0;
  }();
  if (!installed) return;
  constexpr std::uintptr_t kTaken = 1;  // a slot being filled: matches no address
  for (auto& g : guarded) {
    std::uintptr_t none = 0;
    if (g.base.load(std::memory_order_relaxed) != 0 ||
        !g.base.compare_exchange_strong(none, kTaken, std::memory_order_acq_rel)) {
      continue;
    }
    g.size.store(size, std::memory_order_release);
    g.base.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    return;
  }
  // More than kMaxGuarded named segments mapped at once: this one is unguarded.
}

void unguard_mapping(std::byte* base) noexcept {
  for (auto& g : guarded) {
    std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(base);
    if (g.base.compare_exchange_strong(mine, 0, std::memory_order_acq_rel)) return;
  }
}

// A file mapping of a named segment (MAP_SHARED over its descriptor), guarded against
// truncation.
std::byte* map_file(int fd, std::size_t size, const std::string& what) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno(what + ": mmap(" + std::to_string(size) + " bytes)");
  guard_mapping(static_cast<std::byte*>(p), size);
  return static_cast<std::byte*>(p);
}

SegmentHeader* lay_out_header(std::byte* base, std::size_t size) {
  auto* h = reinterpret_cast<SegmentHeader*>(base);  // zero-filled memory: state is kCreating
  h->creator.store(current_identity(), std::memory_order_relaxed);
  h->magic = kSegmentMagic;
  h->version = kSegmentVersion;
  h->size = size;
  h->heap_offset = kHeaderBytes;
  ::new (&h->lock) Mutex();
  return h;
}

// How many descriptors open on the file `st` describes the processes we can see hold (ours
// included): every /proc/<pid>/fd/<n> whose target is that file. A process forked from one
// that had the segment open holds the descriptor too, registered or not.
std::size_t open_descriptors(const struct stat& st) {
  std::size_t count = 0;
  DIR* procs = ::opendir("/proc");
  if (procs == nullptr) return 0;
  std::string dir;
  while (const dirent* p = ::readdir(procs)) {
    if (p->d_name[0] < '0' || p->d_name[0] > '9') continue;
    dir.assign("/proc/").append(p->d_name).append("/fd");
    DIR* fds = ::opendir(dir.c_str());
    if (fds == nullptr) continue;  // gone, or not ours to look at
    while (const dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      struct stat target {};
      if (::fstatat(::dirfd(fds), f->d_name, &target, 0) == 0 && target.st_ino == st.st_ino &&
          target.st_dev == st.st_dev) {
        ++count;
      }
    }
    ::closedir(fds);
  }
  ::closedir(procs);
  return count;
}

// Whether nobody alive created or uses the segment whose header is `h` (read atomically)
// and no process but the caller's one descriptor (`own`) has its file open.
bool nobody_alive(const SegmentHeader& h, const struct stat& st, std::size_t own) {
  if (open_descriptors(st) > own) return false;
  const ProcessIdentity creator = h.creator.load(std::memory_order_acquire);
  if (creator == 0) return true;  // killed before it wrote itself, and nobody has it open
  if (identity_alive(creator)) return false;
  for (const auto& u : h.users) {
    const ProcessIdentity id = u.load(std::memory_order_acquire);
    if (id != 0 && identity_alive(id)) return false;
  }
  return true;
}

}  // namespace

struct Segment::Impl {
  std::string name;
  bool owner = false;
  pid_t creator = -1;
  UniqueFd fd;                     // named segments
  detail::Mapping anon;            // anonymous segments
  std::byte* file_map = nullptr;   // named segments: the mapping of the whole file
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
      unguard_mapping(file_map);
      ::munmap(file_map, size);
    }
    if (owner && creator == ::getpid()) ::shm_unlink(shm_path(name).c_str());
  }

  // Throws errc::bad_layout when the file was truncated below the mapping (see the guard).
  void check_backing(const std::string& what) const {
    if (!fd) return;
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && static_cast<std::size_t>(st.st_size) < size) {
      throw_error(errc::bad_layout, what + ": the segment was truncated to " +
                                        std::to_string(st.st_size) + " of " +
                                        std::to_string(size) + " bytes by another process");
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

namespace {

// Holds the segment's robust lock for one heap or directory call, at most lock_timeout
// waiting. A holder that died is recovered; if it died while changing the heap (`writing`
// calls mark that), the heap is marked broken for good, since its free lists may be
// half-updated: later calls throw errc::bad_layout instead of trusting them.
class HeapLock {
 public:
  HeapLock(const Segment::Impl& impl, const std::string& what, bool writing) : h_(*impl.h) {
    impl.check_backing(what);
    const std::error_code ec = h_.lock.lock_for(impl.lock_timeout);
    if (ec == errc::timeout) {
      throw_error(errc::timeout, what + ": the segment's lock was held for over " +
                                     std::to_string(impl.lock_timeout.count()) +
                                     " ms (by a stopped process?)");
    }
    if (ec == errc::owner_dead && h_.heap_writing.load(std::memory_order_relaxed) != 0) {
      h_.heap_broken.store(1, std::memory_order_relaxed);
    }
    if (h_.heap_broken.load(std::memory_order_relaxed) != 0) {
      h_.lock.unlock();
      throw_error(errc::bad_layout,
                  what + ": a process died while changing the segment's heap; its heap and "
                         "directory can no longer be trusted (objects already found still work)");
    }
    if (writing) {
      h_.heap_writing.store(1, std::memory_order_relaxed);
      writing_ = true;
    }
  }
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

// Removes `name` if it is stale. The decision and the removal happen under the segment's
// lock with its state set to kReclaimed, and an opener registers under the same lock and
// re-checks the state: a process that opens the segment concurrently either counts as a
// live user (nothing is removed) or finds it reclaimed (and opens or creates anew).
bool reclaim(std::string_view name) {
  const std::string path = shm_path(name);
  UniqueFd fd(::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_uid != ::geteuid()) return false;
  const auto same_file = [&] {
    struct stat now {};
    UniqueFd again(::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0));
    return again && ::fstat(again.get(), &now) == 0 && now.st_ino == st.st_ino &&
           now.st_dev == st.st_dev;
  };
  if (static_cast<std::size_t>(st.st_size) < kHeaderBytes) {
    // A creator killed before it sized the file: nobody else holds it open.
    if (open_descriptors(st) > 1 || !same_file()) return false;
    return ::shm_unlink(path.c_str()) == 0;
  }
  void* p = ::mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return false;
  guard_mapping(static_cast<std::byte*>(p), kHeaderBytes);
  auto* h = static_cast<SegmentHeader*>(p);
  bool removed = false;
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  if (h->magic == kSegmentMagic && h->version == kSegmentVersion && state == kReady) {
    // owner_dead means we hold it too (consistent again); timeout: a stopped holder, skip.
    if (h->lock.lock_for(std::chrono::seconds(1)) != errc::timeout) {
      if (h->state.load(std::memory_order_acquire) == kReady && nobody_alive(*h, st, 1) &&
          same_file()) {
        h->state.store(kReclaimed, std::memory_order_release);
        removed = ::shm_unlink(path.c_str()) == 0;
      }
      h->lock.unlock();
    }
  } else if (state == kCreating && nobody_alive(*h, st, 1) && same_file()) {
    removed = ::shm_unlink(path.c_str()) == 0;
  }
  unguard_mapping(static_cast<std::byte*>(p));
  ::munmap(p, kHeaderBytes);
  return removed;
}

}  // namespace

Segment::Segment(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

void Segment::validate_name(std::string_view name) {
  const auto bad = [&](const std::string& why) {
    throw_error(errc::invalid_name, "shared-memory name " + quoted(name) + " " + why);
  };
  if (name.empty()) bad("is empty");
  if (name.size() > kMaxNameLength) {
    bad("is longer than " + std::to_string(kMaxNameLength) + " characters");
  }
  if (name.front() == '.') bad("starts with '.'");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) bad("has a character outside [A-Za-z0-9._-]");
  }
}

std::string Segment::unique_name(std::string_view prefix) {
  std::uint64_t r = 0;
  ssize_t got = 0;
  do {  // may be interrupted before the entropy pool is ready (early boot)
    got = ::getrandom(&r, sizeof r, 0);
  } while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(sizeof r)) throw_errno("getrandom()");
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
  std::string name = std::string(prefix) + "-" + hex;
  validate_name(name);
  return name;
}

Segment Segment::anonymous(std::size_t size, const SegmentOptions& options) {
  check_size(size, "Segment::anonymous");
  auto impl = std::make_unique<Impl>();
  impl->lock_timeout = options.lock_timeout;
  impl->anon = detail::Mapping::anonymous(size, "Segment::anonymous");
  impl->size = size;
  impl->h = lay_out_header(impl->anon.data(), size);
  try {
    impl->heap.emplace(bip::create_only, impl->anon.data() + kHeaderBytes, size - kHeaderBytes);
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, "Segment::anonymous(" + std::to_string(size) + ")");
  }
  impl->h->state.store(kReady, std::memory_order_release);
  return Segment(std::move(impl));
}

Segment Segment::create(std::string_view name, std::size_t size, const SegmentOptions& options) {
  validate_name(name);
  check_size(size, "Segment::create");
  const std::string what = "Segment::create(" + quoted(name) + ")";
  const std::string path = shm_path(name);
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  impl->lock_timeout = options.lock_timeout;
  for (int attempt = 0;; ++attempt) {
    impl->fd.reset(::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
    if (impl->fd) break;
    if (errno != EEXIST) throw_errno(what + ": shm_open");
    if (!options.reclaim_stale || attempt == 2 || !reclaim(name)) {
      throw_error(errc::already_exists,
                  what + ": the name already exists" +
                      (options.reclaim_stale ? " and is not stale (in use, or not an ipckit segment of ours)"
                                             : " (reclaim_stale removes a stale one)"));
    }
  }
  // From here on a failure removes the name again: nothing is left behind.
  impl->owner = true;
  impl->creator = ::getpid();
  if (::fchmod(impl->fd.get(), 0600) != 0) throw_errno(what + ": fchmod");
  if (::ftruncate(impl->fd.get(), static_cast<off_t>(size)) != 0) {
    throw_errno(what + ": ftruncate(" + std::to_string(size) + ")");
  }
  // Reserve every page now: on a full tmpfs the first touch of a page would raise SIGBUS.
  const int rc = ::posix_fallocate(impl->fd.get(), 0, static_cast<off_t>(size));
  if (rc == ENOSPC) {
    throw_error(errc::out_of_memory,
                what + ": no room for " + std::to_string(size) + " bytes in /dev/shm");
  }
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) throw_errno(rc, what + ": posix_fallocate");
  impl->file_map = map_file(impl->fd.get(), size, what);
  impl->size = size;
  impl->h = lay_out_header(impl->file_map, size);
  impl->register_user(what);
  try {
    impl->heap.emplace(bip::create_only, impl->file_map + kHeaderBytes, size - kHeaderBytes);
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, what);
  }
  impl->h->state.store(kReady, std::memory_order_release);  // pairs with acquire in open
  return Segment(std::move(impl));
}

Segment Segment::create_unique(std::size_t size, std::string_view prefix,
                               const SegmentOptions& options) {
  check_size(size, "Segment::create_unique");
  for (int attempt = 0;; ++attempt) {
    try {
      return create(unique_name(prefix), size, options);
    } catch (const Error& e) {
      if (!e.is(errc::already_exists) || attempt == 2) throw;
    }
  }
}

namespace {

// One attempt to open `name`. Returns nullptr when the segment is not ready yet (missing
// name: *missing is set; being created; reclaimed); throws for what waiting cannot change.
std::unique_ptr<Segment::Impl> try_open(std::string_view name,
                                        std::optional<std::size_t> expected_size,
                                        const SegmentOptions& options, const std::string& what,
                                        bool* missing) {
  *missing = false;
  auto impl = std::make_unique<Segment::Impl>();
  impl->name = std::string(name);
  impl->lock_timeout = options.lock_timeout;
  impl->fd.reset(::shm_open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!impl->fd) {
    if (errno != ENOENT) throw_errno(what + ": shm_open");
    *missing = true;
    return nullptr;
  }
  // Ownership, mode and size are checked before anything is mapped and trusted.
  struct stat st {};
  if (::fstat(impl->fd.get(), &st) != 0) throw_errno(what + ": fstat");
  if (st.st_uid != ::geteuid()) {
    throw_errno(EACCES, what + ": owned by uid " + std::to_string(st.st_uid));
  }
  if ((st.st_mode & 0777) != 0600) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 0777));
    throw_errno(EACCES, what + ": mode " + mode + ", expected 0600");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0) return nullptr;  // its creator has not sized it yet
  if (size < Segment::kMinSize || size > Segment::kMaxSize) {
    throw_error(errc::bad_layout, what + ": " + std::to_string(size) + " bytes is no ipckit segment");
  }
  if (expected_size && size != *expected_size) {
    throw_error(errc::size_mismatch, what + ": size is " + std::to_string(size) + ", expected " +
                                         std::to_string(*expected_size));
  }
  impl->file_map = map_file(impl->fd.get(), size, what);
  impl->size = size;
  auto* h = reinterpret_cast<SegmentHeader*>(impl->file_map);
  const std::uint32_t state = h->state.load(std::memory_order_acquire);  // pairs with create
  if (state == kCreating) return nullptr;
  if (state == kReclaimed) {
    *missing = true;
    return nullptr;
  }
  if (state != kReady || h->magic != kSegmentMagic || h->version != kSegmentVersion ||
      h->size != size || h->heap_offset != kHeaderBytes) {
    throw_error(errc::bad_layout, what + ": not an ipckit segment of this version");
  }
  impl->h = h;
  {
    HeapLock lock(*impl, what, false);
    if (h->state.load(std::memory_order_acquire) != kReady) {  // reclaimed meanwhile
      *missing = true;
      return nullptr;
    }
    impl->register_user(what);
  }
  try {
    impl->heap.emplace(bip::open_only, impl->file_map + kHeaderBytes, size - kHeaderBytes);
  } catch (const bip::interprocess_exception& e) {
    throw_error(errc::bad_layout, what + ": its heap is not valid (" + e.what() + ")");
  }
  return impl;
}

Segment::Impl* open_loop(std::string_view name, const Deadline& name_deadline,
                         const Deadline& ready_deadline, std::optional<std::size_t> expected_size,
                         const SegmentOptions& options, const std::string& what) {
  for (;;) {
    bool missing = false;
    auto impl = try_open(name, expected_size, options, what, &missing);
    if (impl) return impl.release();
    if (missing ? name_deadline.expired() : ready_deadline.expired()) {
      if (missing) throw_error(errc::not_found, what + ": no such segment");
      throw_error(errc::timeout, what + ": the segment is still being created (or its "
                                        "creator died doing so: see Segment::remove_stale)");
    }
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace

Segment Segment::open(std::string_view name, std::optional<std::size_t> expected_size,
                      const SegmentOptions& options) {
  validate_name(name);
  const std::string what = "Segment::open(" + quoted(name) + ")";
  return Segment(std::unique_ptr<Impl>(open_loop(name, Deadline::after(std::chrono::seconds(0)),
                                                 Deadline::after(kOpenGrace), expected_size,
                                                 options, what)));
}

Segment Segment::open_until(std::string_view name, const Deadline& deadline,
                            std::optional<std::size_t> expected_size,
                            const SegmentOptions& options) {
  validate_name(name);
  const std::string what = "Segment::open_for(" + quoted(name) + ")";
  return Segment(
      std::unique_ptr<Impl>(open_loop(name, deadline, deadline, expected_size, options, what)));
}

Segment Segment::open_or_create(std::string_view name, std::size_t size,
                                const SegmentOptions& options) {
  for (int attempt = 0;; ++attempt) {
    try {
      return create(name, size, options);
    } catch (const Error& e) {
      if (!e.is(errc::already_exists)) throw;
    }
    try {
      return open(name, size, options);
    } catch (const Error& e) {
      // Removed between the two calls: create again (a few times at most).
      if (!e.is(errc::not_found) || attempt == 4) throw;
    }
  }
}

bool Segment::remove(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return ::shm_unlink(shm_path(name).c_str()) == 0;
}

bool Segment::is_stale(std::string_view name) {
  validate_name(name);
  UniqueFd fd(::shm_open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC, 0));
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_uid != ::geteuid()) return false;
  if (static_cast<std::size_t>(st.st_size) < kHeaderBytes) return open_descriptors(st) <= 1;
  void* p = ::mmap(nullptr, kHeaderBytes, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return false;
  guard_mapping(static_cast<std::byte*>(p), kHeaderBytes);
  const auto* h = static_cast<const SegmentHeader*>(p);
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  const bool ours = state == kCreating ||
                    (h->magic == kSegmentMagic && h->version == kSegmentVersion && state == kReady);
  const bool stale = ours && nobody_alive(*h, st, 1);
  unguard_mapping(static_cast<std::byte*>(p));
  ::munmap(p, kHeaderBytes);
  return stale;
}

std::size_t Segment::remove_stale(std::string_view prefix) {
  std::vector<std::string> names;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      const std::string_view n = e->d_name;
      if (n.size() > kMaxNameLength || n.empty() || n.front() == '.') continue;
      if (n.substr(0, prefix.size()) == prefix) names.emplace_back(n);
    }
    ::closedir(dir);
  }
  std::size_t removed = 0;
  for (const auto& n : names) {
    try {
      validate_name(n);
    } catch (const Error&) {
      continue;
    }
    if (reclaim(n)) ++removed;
  }
  return removed;
}

void* Segment::base() const noexcept { return impl_->base(); }
std::size_t Segment::size() const noexcept { return impl_->size; }
std::size_t Segment::free_memory() const noexcept {
  try {
    HeapLock lock(*impl_, "Segment::free_memory", false);
    return static_cast<std::size_t>(impl_->heap->get_free_memory());
  } catch (...) {
    return 0;
  }
}
const std::string& Segment::name() const noexcept { return impl_->name; }
bool Segment::is_anonymous() const noexcept { return impl_->file_map == nullptr; }
bool Segment::owns_name() const noexcept { return impl_->owner; }
int Segment::fd() const noexcept { return impl_->fd.get(); }

bool Segment::others_alive(const Impl* impl) noexcept {
  if (impl == nullptr || !impl->fd) return true;
  const pid_t me = current_pid();
  const ProcessIdentity creator = impl->h->creator.load(std::memory_order_acquire);
  if (identity_pid(creator) != me && identity_alive(creator)) return true;
  for (const auto& u : impl->h->users) {
    const ProcessIdentity id = u.load(std::memory_order_acquire);
    if (id != 0 && identity_pid(id) != me && identity_alive(id)) return true;
  }
  return false;
}

void Segment::check_backing() const { impl_->check_backing("Segment " + quoted(impl_->name)); }

void* Segment::allocate(std::size_t bytes, std::size_t align) {
  if (align == 0 || (align & (align - 1)) != 0) {
    throw_error(errc::invalid_argument,
                "Segment::allocate: alignment " + std::to_string(align) + " is not a power of two");
  }
  const std::string what = "Segment::allocate(" + std::to_string(bytes) + ")";
  if (bytes > impl_->size) {
    throw_error(errc::out_of_memory,
                what + ": more than the segment's " + std::to_string(impl_->size) + " bytes");
  }
  void* p = nullptr;
  std::size_t free = 0;
  {
    HeapLock lock(*impl_, what, true);
    Heap& m = *impl_->heap;
    p = align <= alignof(std::max_align_t) ? m.allocate(bytes ? bytes : 1, std::nothrow)
                                           : m.allocate_aligned(bytes ? bytes : 1, align, std::nothrow);
    free = m.get_free_memory();
  }
  if (p == nullptr) {
    throw_error(errc::out_of_memory, what + ": only " + std::to_string(free) + " bytes free");
  }
  return p;
}

void Segment::deallocate(void* p) noexcept {
  if (p == nullptr) return;
  try {
    HeapLock lock(*impl_, "Segment::deallocate", true);
    impl_->heap->deallocate(p);
  } catch (...) {  // a stopped holder or a broken heap: the block stays allocated
  }
}

std::span<std::byte> Segment::construct_bytes(std::string_view name, std::size_t size,
                                              std::size_t align) {
  validate_name(name);
  const std::string what = "Segment::construct(" + quoted(name) + ")";
  const std::string key(name);
  void* storage = allocate(size, align);
  // Zero the front before the name appears: an opener that finds it before its object is
  // built sees "not ready" (magic 0), never an older object's bytes.
  std::memset(storage, 0, std::min<std::size_t>(size, 64));
  const Record rec{offset_of(storage), size, align};
  Record* r = nullptr;
  bool exists = false;
  try {
    HeapLock lock(*impl_, what, true);
    r = impl_->heap->construct<Record>(key.c_str(), std::nothrow)(rec);
    if (r == nullptr) exists = impl_->heap->find<Record>(key.c_str()).first != nullptr;
  } catch (const bip::interprocess_exception& e) {
    deallocate(storage);
    rethrow_interprocess(e, what);
  } catch (...) {
    deallocate(storage);
    throw;
  }
  if (r == nullptr) {
    deallocate(storage);
    throw_error(exists ? errc::already_exists : errc::out_of_memory,
                what + (exists ? ": the name already exists" : ": no room for the directory entry"));
  }
  return {static_cast<std::byte*>(storage), size};
}

std::optional<std::span<std::byte>> Segment::find_bytes(std::string_view name) const {
  validate_name(name);
  const std::string what = "Segment::find(" + quoted(name) + ")";
  const std::string key(name);
  Record rec{};
  {
    HeapLock lock(*impl_, what, false);
    const auto found = impl_->heap->find<Record>(key.c_str());
    if (found.first == nullptr) return std::nullopt;
    rec = *found.first;
  }
  if (rec.offset < kHeaderBytes || rec.offset >= size() || rec.size > size() - rec.offset) {
    throw_error(errc::bad_layout, what + ": entry points outside the segment's heap");
  }
  return std::span<std::byte>(static_cast<std::byte*>(at(rec.offset)), rec.size);
}

std::span<std::byte> Segment::lookup_bytes(std::string_view name) const {
  auto bytes = find_bytes(name);
  if (!bytes) throw_error(errc::not_found, "Segment::find(" + quoted(name) + "): no such object");
  return *bytes;
}

bool Segment::destroy_bytes(std::string_view name) noexcept {
  try {
    const auto bytes = find_bytes(name);
    if (!bytes) return false;
    const std::string key(name);
    {
      HeapLock lock(*impl_, "Segment::destroy", true);
      impl_->heap->destroy<Record>(key.c_str());
    }
    deallocate(bytes->data());
    return true;
  } catch (...) {
    return false;
  }
}

void Segment::throw_size_mismatch(std::string_view name, std::size_t stored, std::size_t wanted) {
  throw_error(errc::size_mismatch, "Segment::find(" + quoted(name) + "): stored object has " +
                                       std::to_string(stored) + " bytes, the requested type " +
                                       std::to_string(wanted));
}

std::size_t Segment::offset_of(const void* p) const {
  const auto* b = static_cast<const std::byte*>(base());
  const auto* q = static_cast<const std::byte*>(p);
  if (q < b || q >= b + size()) {
    throw_error(errc::invalid_argument, "Segment::offset_of: pointer is outside the segment");
  }
  return static_cast<std::size_t>(q - b);
}

void* Segment::at(std::size_t offset) const {
  if (offset >= size()) {
    throw_error(errc::invalid_argument,
                "Segment::at(" + std::to_string(offset) + "): offset is outside the segment");
  }
  return static_cast<std::byte*>(base()) + offset;
}

namespace detail {

void throw_array_size(std::string_view name, std::size_t bytes, std::size_t elem) {
  throw_error(errc::size_mismatch,
              "SharedArray::find(" + quoted(name) + "): " + std::to_string(bytes) +
                  " bytes is not a whole number of " + std::to_string(elem) + "-byte elements");
}

}  // namespace detail
}  // namespace ipckit
