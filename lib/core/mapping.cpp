#include "ipckit/core/mapping.hpp"

#include <sys/mman.h>

#include <string>

#include "ipckit/core/error.hpp"

namespace ipckit::detail {

Mapping Mapping::anonymous(std::size_t bytes, const char* what, bool reserve) {
  if (bytes == 0 || bytes > kMaxBytes) {
    throw_error(errc::invalid_argument, std::string(what) + ": " + std::to_string(bytes) +
                                            " bytes is outside 1.." + std::to_string(kMaxBytes));
  }
  const int flags = MAP_SHARED | MAP_ANONYMOUS | (reserve ? 0 : MAP_NORESERVE);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    throw_errno(std::string(what) + ": mmap(MAP_SHARED|MAP_ANONYMOUS, " + std::to_string(bytes) +
                " bytes)");
  }
  return Mapping(static_cast<std::byte*>(p), bytes);
}

Mapping Mapping::of_file(int fd, std::size_t bytes, const char* what) {
  if (bytes == 0 || bytes > kMaxBytes) {
    throw_error(errc::invalid_argument, std::string(what) + ": " + std::to_string(bytes) +
                                            " bytes is outside 1.." + std::to_string(kMaxBytes));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    throw_errno(std::string(what) + ": mmap(MAP_SHARED, " + std::to_string(bytes) + " bytes)");
  }
  return Mapping(static_cast<std::byte*>(p), bytes);
}

void Mapping::reset() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

std::size_t checked_bytes(std::size_t n, std::size_t size, const char* what) {
  if (size != 0 && n > Mapping::kMaxBytes / size) {
    throw_error(errc::invalid_argument, std::string(what) + ": " + std::to_string(n) +
                                            " elements of " + std::to_string(size) +
                                            " bytes is more than " +
                                            std::to_string(Mapping::kMaxBytes) + " bytes");
  }
  return n * size;
}

}  // namespace ipckit::detail
