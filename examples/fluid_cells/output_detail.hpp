// What output.cpp and picture.cpp share: a checked output file and the checks every writer
// makes of its arguments.
#pragma once

#include <cerrno>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "output.hpp"

namespace fluid::detail {

// Throws std::runtime_error: "<what>("<path>") failed: <strerror(err)>".
[[noreturn]] void throw_io(const char* what, const std::string& path, int err);

// A FILE* opened for writing; close() reports the errors that only show up on the final flush.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {
    file_ = std::fopen(path_.c_str(), "wb");
    if (file_ == nullptr) throw_io("fopen", path_, errno);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile() {
    if (file_ != nullptr) std::fclose(file_);
  }

  [[nodiscard]] std::FILE* get() const noexcept { return file_; }

  void write(const void* data, std::size_t bytes) {
    if (bytes != 0 && std::fwrite(data, 1, bytes, file_) != bytes) throw_io("fwrite", path_, errno);
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  void close() {
    std::FILE* f = std::exchange(file_, nullptr);
    const bool failed = std::ferror(f) != 0;  // a write error libpng saw but did not report
    if (std::fclose(f) != 0) throw_io("fclose", path_, errno);
    if (failed) throw_io("fwrite", path_, EIO);
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Throws std::invalid_argument unless the field has nx, ny >= 1 and nx * ny values in each
// vector.
void check(const Field& f);
// Throws std::invalid_argument unless u_ref is positive and finite.
void check_u_ref(double u_ref);

}  // namespace fluid::detail
