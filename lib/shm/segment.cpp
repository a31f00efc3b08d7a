#include "ipckit/shm/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/permissions.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "ipckit/core/error.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/shared_array.hpp"

namespace bip = boost::interprocess;

namespace ipckit {
namespace {

constexpr std::uint32_t kSegmentMagic = 0x49534731;  // "ISG1"
constexpr std::uint32_t kSegmentVersion = 1;
constexpr std::size_t kMaxSize = std::size_t{1} << 40;
// Boost.Interprocess's first word of a managed segment once it is fully initialised (0 and 1
// mean "being created"; Boost's open_only spins on those forever).
constexpr std::uint32_t kBoostSegmentInitialized = 2;
// Not a valid user name (':' is rejected by validate_name), so it cannot collide.
constexpr const char* kHeaderName = "ipckit:segment";

// At the front of every named segment's directory; checked on open.
struct SegmentHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t size;
};

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

[[noreturn]] void rethrow_interprocess(const bip::interprocess_exception& e,
                                       const std::string& what) {
  switch (e.get_error_code()) {
    case bip::already_exists_error: throw_error(errc::already_exists, what + ": already exists");
    case bip::not_found_error: throw_error(errc::not_found, what + ": not found");
    case bip::out_of_space_error: throw_error(errc::out_of_memory, what + ": out of space");
    default: break;
  }
  const int native = e.get_native_error();
  if (native != 0) throw_errno(native, what);
  throw Error(std::make_error_code(std::errc::io_error), what + ": " + e.what());
}

void check_size(std::size_t size, const char* what) {
  if (size < Segment::kMinSize || size > kMaxSize) {
    throw_error(errc::invalid_argument, std::string(what) + ": size " + std::to_string(size) +
                                            " is outside " + std::to_string(Segment::kMinSize) +
                                            ".." + std::to_string(kMaxSize));
  }
}

}  // namespace

struct Segment::Impl {
  std::string name;
  bool owner = false;
  pid_t creator = -1;
  void* map = nullptr;  // anonymous mapping
  std::size_t map_size = 0;
  std::optional<bip::managed_external_buffer> ext;
  std::optional<bip::managed_shared_memory> shm;

  template <class F>
  decltype(auto) with(F&& f) const {
    if (shm) return f(const_cast<bip::managed_shared_memory&>(*shm));
    return f(const_cast<bip::managed_external_buffer&>(*ext));
  }

  ~Impl() {
    shm.reset();
    ext.reset();
    if (map) ::munmap(map, map_size);
    if (owner && creator == ::getpid()) bip::shared_memory_object::remove(name.c_str());
  }
};

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

Segment Segment::anonymous(std::size_t size) {
  check_size(size, "Segment::anonymous");
  auto impl = std::make_unique<Impl>();
  impl->map = detail::map_shared_anonymous(size);
  impl->map_size = size;
  try {
    impl->ext.emplace(bip::create_only, impl->map, size);
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, "Segment::anonymous(" + std::to_string(size) + ")");
  }
  return Segment(std::move(impl));
}

Segment Segment::create(std::string_view name, std::size_t size) {
  validate_name(name);
  check_size(size, "Segment::create");
  const std::string what = "Segment::create(" + quoted(name) + ")";
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  bip::permissions perm;
  perm.set_permissions(0600);
  try {
    impl->shm.emplace(bip::create_only, impl->name.c_str(), size, nullptr, perm);
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, what);
  }
  impl->owner = true;  // from here on, ~Impl unlinks the name
  impl->creator = ::getpid();
  try {
    impl->shm->construct<SegmentHeader>(kHeaderName)(
        SegmentHeader{kSegmentMagic, kSegmentVersion, static_cast<std::uint64_t>(size)});
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, what + ": writing the header");
  }
  return Segment(std::move(impl));
}

Segment Segment::create_unique(std::size_t size, std::string_view prefix) {
  check_size(size, "Segment::create_unique");
  for (int attempt = 0;; ++attempt) {
    try {
      return create(unique_name(prefix), size);
    } catch (const Error& e) {
      if (!e.is(errc::already_exists) || attempt == 2) throw;
    }
  }
}

Segment Segment::open(std::string_view name, std::optional<std::size_t> expected_size) {
  validate_name(name);
  const std::string what = "Segment::open(" + quoted(name) + ")";
  // Check ownership, mode and size before Boost maps and trusts the contents.
  {
    const std::string path = "/" + std::string(name);
    UniqueFd fd(::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0));
    if (!fd) {
      if (errno == ENOENT) throw_error(errc::not_found, what + ": no such segment");
      throw_errno(what + ": shm_open");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(what + ": fstat");
    if (st.st_uid != ::geteuid()) {
      throw_errno(EACCES, what + ": owned by uid " + std::to_string(st.st_uid));
    }
    if ((st.st_mode & 0777) != 0600) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 0777));
      throw_errno(EACCES, what + ": mode " + mode + ", expected 0600");
    }
    if (static_cast<std::size_t>(st.st_size) < kMinSize) {
      throw_error(errc::bad_layout, what + ": " + std::to_string(st.st_size) +
                                        " bytes is too small to be an ipckit segment");
    }
    if (expected_size && static_cast<std::size_t>(st.st_size) != *expected_size) {
      throw_error(errc::size_mismatch, what + ": size is " + std::to_string(st.st_size) +
                                           ", expected " + std::to_string(*expected_size));
    }
    // A creator killed mid-create, or a file that is not a managed segment, would make Boost
    // spin forever or read garbage. A creator still initialising gets up to a second.
    std::uint32_t init = 0;
    for (int tries = 0;; ++tries) {
      const bool read =
          ::pread(fd.get(), &init, sizeof init, 0) == static_cast<ssize_t>(sizeof init);
      if (read && init == kBoostSegmentInitialized) break;
      if (!read || init > kBoostSegmentInitialized || tries == 100) {
        throw_error(errc::bad_layout, what + ": not an initialised ipckit segment");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->name = std::string(name);
  try {
    impl->shm.emplace(bip::open_only, impl->name.c_str());
    const auto header = impl->shm->find<SegmentHeader>(kHeaderName);
    if (header.first == nullptr || header.second != 1 || header.first->magic != kSegmentMagic ||
        header.first->version != kSegmentVersion || header.first->size != impl->shm->get_size()) {
      throw_error(errc::bad_layout, what + ": not an ipckit segment of this version");
    }
  } catch (const bip::interprocess_exception& e) {
    rethrow_interprocess(e, what);
  }
  return Segment(std::move(impl));
}

bool Segment::remove(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return bip::shared_memory_object::remove(std::string(name).c_str());
}

void* Segment::base() const noexcept {
  return impl_->with([](auto& m) { return m.get_address(); });
}
std::size_t Segment::size() const noexcept {
  return impl_->with([](auto& m) { return static_cast<std::size_t>(m.get_size()); });
}
std::size_t Segment::free_memory() const noexcept {
  return impl_->with([](auto& m) { return static_cast<std::size_t>(m.get_free_memory()); });
}
const std::string& Segment::name() const noexcept { return impl_->name; }
bool Segment::is_anonymous() const noexcept { return !impl_->shm.has_value(); }
bool Segment::owns_name() const noexcept { return impl_->owner; }

void* Segment::allocate(std::size_t bytes, std::size_t align) {
  if (align == 0 || (align & (align - 1)) != 0) {
    throw_error(errc::invalid_argument,
                "Segment::allocate: alignment " + std::to_string(align) + " is not a power of two");
  }
  void* p = impl_->with([&](auto& m) {
    return align <= alignof(std::max_align_t)
               ? m.allocate(bytes ? bytes : 1, std::nothrow)
               : m.allocate_aligned(bytes ? bytes : 1, align, std::nothrow);
  });
  if (p == nullptr) {
    throw_error(errc::out_of_memory, "Segment::allocate(" + std::to_string(bytes) + "): only " +
                                         std::to_string(free_memory()) + " bytes free");
  }
  return p;
}

void Segment::deallocate(void* p) noexcept {
  if (p) impl_->with([&](auto& m) { m.deallocate(p); });
}

std::span<std::byte> Segment::construct_bytes(std::string_view name, std::size_t size,
                                              std::size_t align) {
  validate_name(name);
  const std::string key(name);
  void* storage = allocate(size, align);
  const Record rec{offset_of(storage), size, align};
  Record* r = nullptr;
  try {
    r = impl_->with(
        [&](auto& m) { return m.template construct<Record>(key.c_str(), std::nothrow)(rec); });
  } catch (const bip::interprocess_exception& e) {
    deallocate(storage);
    rethrow_interprocess(e, "Segment::construct(" + quoted(name) + ")");
  }
  if (r == nullptr) {
    deallocate(storage);
    const bool exists = find_bytes(name).has_value();
    throw_error(exists ? errc::already_exists : errc::out_of_memory,
                "Segment::construct(" + quoted(name) + ")" +
                    (exists ? ": name already exists" : ": no room for the directory entry"));
  }
  return {static_cast<std::byte*>(storage), size};
}

std::optional<std::span<std::byte>> Segment::find_bytes(std::string_view name) const {
  validate_name(name);
  const std::string key(name);
  const auto found = impl_->with([&](auto& m) { return m.template find<Record>(key.c_str()); });
  if (found.first == nullptr) return std::nullopt;
  const Record rec = *found.first;
  if (rec.offset >= size() || rec.size > size() - rec.offset) {
    throw_error(errc::bad_layout,
                "Segment::find(" + quoted(name) + "): entry points outside the segment");
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
    impl_->with([&](auto& m) { return m.template destroy<Record>(key.c_str()); });
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

void* map_shared_anonymous(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("mmap(MAP_SHARED|MAP_ANONYMOUS, " + std::to_string(bytes) + ")");
  return p;
}

void unmap(void* p, std::size_t bytes) noexcept {
  if (p) ::munmap(p, bytes);
}

void throw_array_size(std::string_view name, std::size_t bytes, std::size_t elem) {
  throw_error(errc::size_mismatch,
              "SharedArray::find(" + quoted(name) + "): " + std::to_string(bytes) +
                  " bytes is not a whole number of " + std::to_string(elem) + "-byte elements");
}

}  // namespace detail
}  // namespace ipckit
