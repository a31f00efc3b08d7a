// Shared by the fuzz targets: a cursor over libFuzzer's input, and the check that an
// ipckit::Error which came out of a decoder is one its contract allows (anything else aborts,
// which libFuzzer reports as a crash with the input that caused it).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <span>
#include <vector>

#include "ipckit/core/error.hpp"

namespace ipckit::fuzz {

// Reads values off the front of the input; past its end every read gives zeros / nothing.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
  explicit Input(std::span<const std::byte> s) noexcept
      : data_(reinterpret_cast<const std::uint8_t*>(s.data())), size_(s.size()) {}

  template <class T>
  T take() noexcept {
    T v{};
    const std::size_t n = std::min(sizeof v, left());
    if (n != 0) std::memcpy(&v, data_ + pos_, n);
    pos_ += n;
    return v;
  }
  std::span<const std::byte> bytes(std::size_t n) noexcept {
    n = std::min(n, left());
    const std::span<const std::byte> s(reinterpret_cast<const std::byte*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  std::span<const std::byte> rest() noexcept { return bytes(left()); }
  [[nodiscard]] std::size_t left() const noexcept { return size_ - pos_; }
  [[nodiscard]] bool empty() const noexcept { return left() == 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Aborts unless `e` carries one of `allowed`.
inline void expect(const Error& e, std::initializer_list<errc> allowed) {
  for (errc c : allowed) {
    if (e.is(c)) return;
  }
  std::fprintf(stderr, "fuzz: an error the contract does not allow: %s (%s)\n", e.what(),
               e.code().message().c_str());
  std::abort();
}

// Aborts with `why` (an invariant the target checks itself).
[[noreturn]] inline void fail(const char* why) {
  std::fprintf(stderr, "fuzz: %s\n", why);
  std::abort();
}

// The records of a stream of length-prefixed pieces: [u16 size][bytes] ... (the encoding
// the ring and pool targets use for "a sequence of records").
inline std::vector<std::span<const std::byte>> split_records(Input& in, std::size_t max) {
  std::vector<std::span<const std::byte>> out;
  while (!in.empty() && out.size() < max) {
    const auto n = in.take<std::uint16_t>();
    out.push_back(in.bytes(n));
  }
  return out;
}
inline void append_record(std::vector<std::byte>& out, std::span<const std::byte> rec) {
  const auto n = static_cast<std::uint16_t>(rec.size());
  const std::size_t at = out.size();
  out.resize(at + 2 + n);
  std::memcpy(out.data() + at, &n, 2);
  if (n != 0) std::memcpy(out.data() + at + 2, rec.data(), n);
}

}  // namespace ipckit::fuzz
