/// @file
/// ipckit::Value<T> and ipckit::Array<T>: Python's multiprocessing.Value and Array — a value,
/// or n of them, in shared memory with a robust lock of their own.
///
///     ipckit::Value<Stats> stats;                 // anonymous: made before fork
///     { auto g = stats.lock(); g->count += 1; }   // in any process
///     ipckit::Array<double> a(1000, 0.0);
///     { auto g = a.lock(); g[3] = 1.5; }
///
/// T is trivially copyable (it is shared as bytes). When a process dies holding the lock, the
/// next lock() takes it and its Guard says owner_died(): the data may be half-updated.
#pragma once

#include <cstddef>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "ipckit/core/error.hpp"
#include "ipckit/core/mapping.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/mutex.hpp"

namespace ipckit {

/// A locked view of a Value's or an Array's data: holds the lock until destroyed.
template <class T>
class Guard {
 public:
  /// Takes over o's lock (o no longer holds it).
  Guard(Guard&& o) noexcept
      : m_(std::exchange(o.m_, nullptr)), data_(o.data_), n_(o.n_), ec_(o.ec_) {}
  Guard& operator=(Guard&&) = delete;
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  /// Unlocks.
  ~Guard() {
    if (m_ != nullptr) m_->unlock();
  }
  /// The value (a Value's, or an Array's first element).
  T& operator*() const noexcept { return *data_; }
  /// Its members.
  T* operator->() const noexcept { return data_; }
  /// Element i of an Array (unchecked).
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  /// An Array's elements (one element for a Value).
  [[nodiscard]] std::span<T> span() const noexcept { return {data_, n_}; }
  /// True when the previous holder died holding the lock: repair the data before unlocking.
  [[nodiscard]] bool owner_died() const noexcept { return static_cast<bool>(ec_); }

 private:
  template <class>
  friend class Array;
  Guard(Mutex* m, T* data, std::size_t n) : m_(m), data_(data), n_(n), ec_(m->lock()) {}
  Mutex* m_;
  T* data_;
  std::size_t n_;
  std::error_code ec_;
};

/// Array<T>: n values of T in shared memory behind one robust lock (Python's
/// multiprocessing.Array). Made before fork (anonymous) or by name in a Segment.
template <class T>
class Array {
  static_assert(std::is_trivially_copyable_v<T>,
                "ipckit::Array<T> / Value<T>: T must be trivially copyable (shared as bytes)");

 public:
  /// n copies of `init` in an anonymous shared mapping of their own. Throws
  /// Error(errc::invalid_argument) when n is 0 or the size overflows.
  explicit Array(std::size_t n, const T& init = T{})
      : mem_(detail::Mapping::anonymous(bytes_for(n), "Array")),
        block_(lay(std::span(mem_.data(), mem_.size()), n, init)),
        n_(n) {}
  /// n copies of `init` stored under `name` in `seg`.
  static Array construct(Segment& seg, std::string_view name, std::size_t n, const T& init = T{}) {
    const std::span<std::byte> bytes = seg.construct_bytes(name, bytes_for(n), kAlign);
    return Array(lay(bytes, n, init), n);
  }
  /// The array stored under `name` in `seg`; errc::size_mismatch when its size is not that of
  /// a whole number of T.
  static Array find(const Segment& seg, std::string_view name) {
    const std::span<std::byte> bytes = seg.lookup_bytes(name);
    if (bytes.size() < header() || (bytes.size() - header()) % sizeof(T) != 0 ||
        bytes.size() == header()) {
      throw Error(errc::size_mismatch, "Array::find: '" + std::string(name) + "' holds " +
                                           std::to_string(bytes.size()) +
                                           " bytes, not a lock and whole elements");
    }
    return Array(reinterpret_cast<Block*>(bytes.data()), (bytes.size() - header()) / sizeof(T));
  }

  /// Takes the lock (robust; see Guard::owner_died) and gives the elements.
  [[nodiscard]] Guard<T> lock() { return Guard<T>(&block_->mutex, data(), n_); }
  /// Element i, read under the lock; Error(errc::invalid_argument) past the end.
  [[nodiscard]] T load(std::size_t i = 0) {
    check(i);
    return lock()[i];
  }
  /// Writes element i under the lock; Error(errc::invalid_argument) past the end.
  void store(std::size_t i, const T& v) {
    check(i);
    lock()[i] = v;
  }
  /// The number of elements.
  [[nodiscard]] std::size_t size() const noexcept { return n_; }

 protected:
  /// @cond internal
  struct Block {
    Mutex mutex;
  };
  static constexpr std::size_t kAlign = alignof(T) > 64 ? alignof(T) : 64;
  static constexpr std::size_t header() {
    return (sizeof(Block) + alignof(T) - 1) / alignof(T) * alignof(T);
  }
  static std::size_t bytes_for(std::size_t n) {
    if (n == 0 || n > (detail::Mapping::kMaxBytes - header()) / sizeof(T)) {
      throw Error(errc::invalid_argument,
                  "Array: " + std::to_string(n) + " elements is none or too many");
    }
    return header() + n * sizeof(T);
  }
  static Block* lay(std::span<std::byte> mem, std::size_t n, const T& init) {
    auto* b = new (mem.data()) Block();
    T* d = reinterpret_cast<T*>(mem.data() + header());
    for (std::size_t i = 0; i < n; ++i) ::new (d + i) T(init);
    return b;
  }
  Array(Block* b, std::size_t n) : block_(b), n_(n) {}
  T* data() const noexcept {
    return reinterpret_cast<T*>(reinterpret_cast<std::byte*>(block_) + header());
  }
  void check(std::size_t i) const {
    if (i >= n_) {
      throw Error(errc::invalid_argument, "Array: index " + std::to_string(i) + " past the end (" +
                                              std::to_string(n_) + ")");
    }
  }

  detail::Mapping mem_;  // the anonymous array's memory (empty for one in a Segment)
  Block* block_ = nullptr;
  std::size_t n_ = 0;
  /// @endcond
};

/// Value<T>: one T in shared memory behind its own robust lock (Python's
/// multiprocessing.Value): `auto g = v.lock(); g->field = 1;`, or load()/store().
template <class T>
class Value : public Array<T> {
 public:
  /// `init` in an anonymous shared mapping of its own.
  explicit Value(const T& init = T{}) : Array<T>(1, init) {}
  /// `init` stored under `name` in `seg`.
  static Value construct(Segment& seg, std::string_view name, const T& init = T{}) {
    return Value(Array<T>::construct(seg, name, 1, init));
  }
  /// The value stored under `name` in `seg`.
  static Value find(const Segment& seg, std::string_view name) {
    Array<T> a = Array<T>::find(seg, name);
    if (a.size() != 1) {
      throw Error(errc::size_mismatch, "Value::find: '" + std::string(name) + "' holds " +
                                           std::to_string(a.size()) + " elements");
    }
    return Value(std::move(a));
  }
  /// The value, read under the lock.
  [[nodiscard]] T load() { return Array<T>::load(0); }
  /// Writes it under the lock.
  void store(const T& v) { Array<T>::store(0, v); }

 private:
  explicit Value(Array<T>&& a) : Array<T>(std::move(a)) {}
};

}  // namespace ipckit
