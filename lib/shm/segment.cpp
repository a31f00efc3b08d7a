#include "ipckit/shm/segment.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
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
#include "segment_internal.hpp"

namespace ipckit {

using namespace segment_detail;  // NOLINT(google-build-using-namespace): this file's own parts

namespace {

// How long open() waits for a creator that has not finished.
constexpr std::chrono::seconds kOpenGrace{1};
constexpr std::chrono::milliseconds kPoll{2};

[[noreturn]] void rethrow_interprocess(const bip::interprocess_exception& e,
                                       const std::string& what) {
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      throw_error(errc::already_exists, what + ": the name already exists");
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

// Sizes a fresh, empty file (a named segment's or a memfd) to `size`, reserves its pages,
// maps it and lays a segment out in it, the caller registered as its first user.
void lay_out_file(Segment::Impl& impl, std::size_t size, const std::string& what) {
  if (::ftruncate(impl.fd.get(), static_cast<off_t>(size)) != 0) {
    throw_errno(what + ": ftruncate(" + std::to_string(size) + ")");
  }
  // Reserve every page now: on a full tmpfs the first touch of a page would raise SIGBUS.
  const int rc = ::posix_fallocate(impl.fd.get(), 0, static_cast<off_t>(size));
  if (rc == ENOSPC) {
    throw_error(errc::out_of_memory,
                what + ": no room for " + std::to_string(size) + " bytes in /dev/shm");
  }
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) throw_errno(rc, what + ": posix_fallocate");
  impl.file_map = map_file(impl.fd.get(), size, what);
  impl.size = size;
  impl.h = lay_out_header(impl.file_map, size);
  impl.register_user(what);
  try {
    impl.heap.emplace(bip::create_only, impl.file_map + kHeaderBytes, size - kHeaderBytes);
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, what);
  }
  impl.h->state.store(kReady, std::memory_order_release);  // pairs with acquire in open
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
                      (options.reclaim_stale
                           ? " and is not stale (in use, or not an ipckit segment of ours)"
                           : " (reclaim_stale removes a stale one)"));
    }
  }
  // From here on a failure removes the name again: nothing is left behind.
  impl->owner = true;
  impl->creator = ::getpid();
  if (::fchmod(impl->fd.get(), 0600) != 0) throw_errno(what + ": fchmod");
  lay_out_file(*impl, size, what);
  return Segment(std::move(impl));
}

Segment Segment::memfd(std::size_t size, const SegmentOptions& options) {
  check_size(size, "Segment::memfd");
  const std::string what = "Segment::memfd(" + std::to_string(size) + ")";
  auto impl = std::make_unique<Impl>();
  impl->lock_timeout = options.lock_timeout;
  impl->fd.reset(::memfd_create("ipckit-segment", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!impl->fd) throw_errno(what + ": memfd_create");
  impl->creator = ::getpid();
  lay_out_file(*impl, size, what);
  // Sealed at its size: no process that receives the descriptor can shrink it under the
  // others (no SIGBUS) or grow it; F_SEAL_SEAL keeps the seals as they are.
  if (::fcntl(impl->fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    throw_errno(what + ": sealing the memfd");
  }
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

// Throws errc::bad_layout for a file size no segment has, errc::size_mismatch when it is not
// the size the caller expects.
void check_file_size(std::size_t size, std::optional<std::size_t> expected_size,
                     const std::string& what) {
  if (size < Segment::kMinSize || size > Segment::kMaxSize) {
    throw_error(errc::bad_layout,
                what + ": " + std::to_string(size) + " bytes is no ipckit segment");
  }
  if (expected_size && size != *expected_size) {
    throw_error(errc::size_mismatch, what + ": size is " + std::to_string(size) + ", expected " +
                                         std::to_string(*expected_size));
  }
}

// Joins the segment mapped at impl.file_map (impl.size bytes), whose state its creator has
// published: checks the header, registers the caller among its users and opens its heap.
// False when the segment was reclaimed before the caller got its lock. Throws
// errc::bad_layout when the bytes are not a ready ipckit segment of this version and size.
bool join_mapped(Segment::Impl& impl, const std::string& what) {
  auto* h = reinterpret_cast<SegmentHeader*>(impl.file_map);
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  if ((state != kReady && state != kReclaimed) || h->magic != kSegmentMagic ||
      h->version != kSegmentVersion || h->size != impl.size || h->heap_offset != kHeaderBytes) {
    throw_error(errc::bad_layout, what + ": not an ipckit segment of this version");
  }
  impl.h = h;
  {
    HeapLock lock(impl, what, false);
    if (h->state.load(std::memory_order_acquire) != kReady) return false;
    impl.register_user(what);
  }
  try {
    impl.heap.emplace(bip::open_only, impl.file_map + kHeaderBytes, impl.size - kHeaderBytes);
  } catch (const bip::interprocess_exception& e) {
    throw_error(errc::bad_layout, what + ": its heap is not valid (" + e.what() + ")");
  }
  return true;
}

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
  check_file_size(size, expected_size, what);
  impl->file_map = map_file(impl->fd.get(), size, what);
  impl->size = size;
  auto* h = reinterpret_cast<SegmentHeader*>(impl->file_map);
  const std::uint32_t state = h->state.load(std::memory_order_acquire);  // pairs with create
  if (state == kCreating) return nullptr;
  if (state == kReclaimed) {
    *missing = true;
    return nullptr;
  }
  if (!join_mapped(*impl, what)) {  // reclaimed meanwhile
    *missing = true;
    return nullptr;
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
      throw_error(errc::timeout, what +
                                     ": the segment is still being created (or its "
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
  return Segment(
      std::unique_ptr<Impl>(open_loop(name, Deadline::after(std::chrono::seconds(0)),
                                      Deadline::after(kOpenGrace), expected_size, options, what)));
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

Segment Segment::adopt(UniqueFd fd, std::optional<std::size_t> expected_size,
                       const SegmentOptions& options) {
  const std::string what = "Segment::adopt(fd " + std::to_string(fd.get()) + ")";
  if (!fd) throw_error(errc::invalid_argument, what + ": no descriptor");
  auto impl = std::make_unique<Impl>();
  impl->lock_timeout = options.lock_timeout;
  impl->fd = std::move(fd);
  struct stat st {};
  if (::fstat(impl->fd.get(), &st) != 0) throw_errno(what + ": fstat");
  // Only memory-backed files: one on a network or FUSE file system could stall every access.
  struct statfs fs {};
  if (!S_ISREG(st.st_mode) || ::fstatfs(impl->fd.get(), &fs) != 0 ||
      (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC)) {
    throw_error(errc::bad_layout, what + ": not a shared-memory file (a memfd or a segment's)");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  check_file_size(size, expected_size, what);
  // Unsealed files (a named segment's) are mapped under the truncation guard like open()'s.
  impl->file_map = map_file(impl->fd.get(), size, what);
  impl->size = size;
  if (!join_mapped(*impl, what)) {
    throw_error(errc::not_found, what + ": the segment was reclaimed as stale");
  }
  return Segment(std::move(impl));
}

bool Segment::remove(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return ::shm_unlink(shm_path(name).c_str()) == 0;
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

bool Segment::others_gone(const Impl* impl) noexcept {
  if (impl == nullptr || !impl->fd) return false;
  const pid_t me = current_pid();
  bool any = false;
  const auto gone = [&](ProcessIdentity id) {
    if (id == 0 || identity_pid(id) == me) return true;
    any = true;
    return !identity_alive(id);
  };
  if (!gone(impl->h->creator.load(std::memory_order_acquire))) return false;
  for (const auto& u : impl->h->users) {
    if (!gone(u.load(std::memory_order_acquire))) return false;
  }
  return any;
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
    p = align <= alignof(std::max_align_t)
            ? m.allocate(bytes ? bytes : 1, std::nothrow)
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
    throw_error(
        exists ? errc::already_exists : errc::out_of_memory,
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
