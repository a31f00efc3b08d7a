/// @file
/// Shared containers in a Segment: a map, a vector, strings, for what Python does with a
/// Manager dict or list, with no proxy server process: every process works on the container
/// in place, under its robust lock.
///
///     auto seg = ipckit::Segment::memfd(1 << 20);            // or create()/anonymous()
///     auto scores = ipckit::SharedMap<int, double>::construct(seg, "scores");
///     { auto g = scores.lock(); (*g)[7] = 1.5; }               // in any process
///     auto names = ipckit::SharedVector<ipckit::SharedString>::construct(seg, "names");
///     { auto g = names.lock(); g->emplace_back("ada", names.allocator<char>()); }
///
/// The containers are Boost.Interprocess's (boost::interprocess::map, vector, basic_string)
/// over ShmAllocator, which takes memory from the segment's heap under the segment's own
/// robust lock and keeps offsets, not addresses: a process that maps the segment at another
/// address (Segment::open, Segment::adopt) finds the same container. Elements must not hold
/// pointers or process-local resources: use SharedString for text, nested Shared* types
/// (built with allocator<U>()) for nesting.
///
/// Death: a process killed holding lock() may have left the container half-changed; from
/// then on every guard says owner_died() until one repairs it: Guard::reset() starts it
/// empty (the old contents' memory stays allocated on the heap: walking a broken tree to free
/// it could loop or crash). A process killed holding read() (no changes) leaves nothing to
/// repair, and nobody is told. A process killed inside the segment's heap marks the heap
/// broken: allocations then throw errc::bad_layout (Segment::allocate's rule).
///
/// Opt-in: this header includes Boost; link ipckit::containers (find_package(ipckit
/// COMPONENTS containers)).
#pragma once

#include <atomic>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/offset_ptr.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "ipckit/core/error.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/mutex.hpp"

namespace ipckit {

namespace detail {
// Memory from the heap of the segment whose first byte is `base`, under its robust lock
// (lib/shm/segment_heap.cpp). Throws Error(errc::bad_layout) when `base` is not a ready
// segment or its heap is broken, errc::out_of_memory, errc::timeout (lock held for over 5 s).
void* segment_heap_allocate(void* base, std::size_t bytes, std::size_t align);
// Frees what segment_heap_allocate() returned; never throws (a block is leaked when the
// lock cannot be had or the heap is broken).
void segment_heap_deallocate(void* base, void* p) noexcept;
}  // namespace detail

/// A standard allocator over a Segment's heap whose pointers are offsets
/// (boost::interprocess::offset_ptr), so that containers built with it work in every process
/// that maps the segment, at any address.
template <class T>
class ShmAllocator {
 public:
  ///@{
  /// The allocator's types (std::allocator_traits): pointers are offset pointers.
  using value_type = T;
  using pointer = boost::interprocess::offset_ptr<T>;
  using const_pointer = boost::interprocess::offset_ptr<const T>;
  using void_pointer = boost::interprocess::offset_ptr<void>;
  using const_void_pointer = boost::interprocess::offset_ptr<const void>;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  ///@}
  /// The same allocator for elements of U.
  template <class U>
  struct rebind {
    using other = ShmAllocator<U>;  ///< the allocator for elements of U
  };

  /// Allocates from `seg`'s heap.
  explicit ShmAllocator(const Segment& seg) noexcept : base_(seg.base()) {}
  /// The same segment's allocator for another element type.
  template <class U>
  ShmAllocator(const ShmAllocator<U>& o) noexcept : base_(o.segment_base()) {}  // NOLINT

  /// Room for n elements from the segment's heap; Error(errc::out_of_memory) when there is
  /// none.
  pointer allocate(size_type n) {
    if (n > std::numeric_limits<size_type>::max() / sizeof(T)) {
      throw Error(errc::out_of_memory, "ShmAllocator: " + std::to_string(n) + " elements");
    }
    return pointer(
        static_cast<T*>(detail::segment_heap_allocate(segment_base(), n * sizeof(T), alignof(T))));
  }
  /// Gives p's room back to the heap.
  void deallocate(pointer p, size_type) noexcept {
    detail::segment_heap_deallocate(segment_base(), p.get());
  }
  /// The first byte of the segment, in this process.
  [[nodiscard]] void* segment_base() const noexcept { return base_.get(); }

  /// Allocators of one segment are interchangeable.
  template <class U>
  bool operator==(const ShmAllocator<U>& o) const noexcept {
    return segment_base() == o.segment_base();
  }

 private:
  void_pointer base_;
};

/// Text in a segment.
using SharedString =
    boost::interprocess::basic_string<char, std::char_traits<char>, ShmAllocator<char>>;

/// A container of type C (built with a ShmAllocator) stored under a name in a Segment, with a
/// robust lock of its own. Handles are cheap to copy; the container lives as long as the
/// segment (or until destroy()).
template <class C>
class Shared {
 private:
  static constexpr std::uint32_t kMagic = 0x49534331;  // "ISC1"
  struct Stored {
    template <class... Args>
    explicit Stored(const typename C::allocator_type& a, Args&&... args)
        : value(std::forward<Args>(args)..., a) {}
    Mutex mutex;
    std::atomic<std::uint32_t> magic{0};    // kMagic once `value` is built (release)
    std::atomic<std::uint32_t> writing{0};  // 1 while a lock() holder may be changing it
    std::atomic<std::uint32_t> broken{0};   // 1 from a writer's death to a reset()
    C value;
  };

 public:
  using container_type = C;  ///< the container it guards

  /// The locked container: holds the lock until destroyed.
  template <class View>
  class Guard {
   public:
    /// Takes over o's lock (o no longer holds it).
    Guard(Guard&& o) noexcept : s_(std::exchange(o.s_, nullptr)), w_(o.w_) {}
    Guard& operator=(Guard&&) = delete;
    ~Guard() {
      if (s_ == nullptr) return;
      if (w_) {
        std::atomic_signal_fence(std::memory_order_seq_cst);  // the changes stay before it
        s_->writing.store(0, std::memory_order_relaxed);
      }
      s_->mutex.unlock();
    }
    ///@{
    /// The container, while the lock is held.
    View& operator*() const noexcept { return s_->value; }
    View* operator->() const noexcept { return &s_->value; }
    ///@}
    /// True when a process died holding lock() (changing the container) and nobody has
    /// reset() it since: the container may be half-changed. Every guard says so, readers'
    /// too, until a lock() guard repairs it with reset().
    [[nodiscard]] bool owner_died() const noexcept {
      return s_->broken.load(std::memory_order_relaxed) != 0;
    }
    /// Starts the container empty, without touching the old contents (their memory stays
    /// allocated): the safe repair after owner_died().
    void reset() requires(!std::is_const_v<View>) {
      ::new (static_cast<void*>(&s_->value))
          C(typename C::allocator_type(s_->value.get_allocator()));
      std::atomic_signal_fence(std::memory_order_seq_cst);
      s_->broken.store(0, std::memory_order_relaxed);
    }

   private:
    friend class Shared;
    Guard(Stored* s, bool writing) : s_(s), w_(writing) {
      (void)s_->mutex.lock();  // owner_dead or not: `writing` tells whether a change was cut
      const bool cut = s_->writing.load(std::memory_order_relaxed) != 0;
      if (cut) s_->broken.store(1, std::memory_order_relaxed);
      if (w_) {
        s_->writing.store(1, std::memory_order_relaxed);
        std::atomic_signal_fence(std::memory_order_seq_cst);  // before any change is made
      } else if (cut) {
        s_->writing.store(0, std::memory_order_relaxed);  // told through `broken` from now on
      }
    }
    Stored* s_;
    bool w_;
  };

  /// Constructs an empty C (args, then the allocator, go to its constructor) under `name`.
  /// Throws what Segment::construct_bytes or C's constructor throws (errc::already_exists,
  /// errc::out_of_memory...); nothing is left under the name then.
  template <class... Args>
  static Shared construct(Segment& seg, std::string_view name, Args&&... args) {
    const auto bytes = seg.construct_bytes(name, sizeof(Stored), alignof(Stored));
    Stored* s = nullptr;
    try {
      s = ::new (bytes.data()) Stored(typename C::allocator_type(seg), std::forward<Args>(args)...);
    } catch (...) {
      seg.destroy_bytes(name);
      throw;
    }
    s->magic.store(kMagic, std::memory_order_release);  // found only once whole
    return Shared(s);
  }
  /// The container stored under `name`: errc::not_found; errc::size_mismatch or
  /// errc::bad_layout when what is there is not a Shared<C> of this segment.
  static Shared find(const Segment& seg, std::string_view name) {
    const auto bytes = seg.lookup_bytes(name);
    const std::string what = "Shared::find(\"" + std::string(name) + "\")";
    if (bytes.size() != sizeof(Stored) ||
        reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(Stored) != 0) {
      throw Error(errc::size_mismatch, what + ": not a container of this type");
    }
    auto* s = std::launder(reinterpret_cast<Stored*>(bytes.data()));
    // The allocator's segment is checked too: the heap calls start from it.
    if (s->magic.load(std::memory_order_acquire) != kMagic ||
        s->value.get_allocator().segment_base() != seg.base()) {
      throw Error(errc::bad_layout, what + ": no container of this segment there");
    }
    return Shared(s);
  }
  /// Destroys the container under `name` (its elements' memory goes back to the heap, unless
  /// a writer died in it) and frees the name; false when there is none. Nobody may use it
  /// any more.
  static bool destroy(Segment& seg, std::string_view name) {
    if (!seg.find_bytes(name)) return false;
    {
      Shared sh = find(seg, name);
      auto g = sh.lock();
      sh.s_->magic.store(0, std::memory_order_release);  // find() refuses it from here on
      if (!g.owner_died()) g->~C();
      ::new (static_cast<void*>(&sh.s_->value))
          C(typename C::allocator_type(seg));  // an empty one, should a handle remain
    }
    return seg.destroy_bytes(name);
  }

  /// Locks for changes: blocks until the lock is had.
  Guard<C> lock() { return Guard<C>(s_, true); }
  /// Locks for reading only (a reader that dies leaves nothing to repair).
  Guard<const C> read() const { return Guard<const C>(s_, false); }
  /// An allocator for elements that need one (SharedString, nested containers).
  template <class U>
  [[nodiscard]] ShmAllocator<U> allocator() const noexcept {
    return ShmAllocator<U>(s_->value.get_allocator());
  }

 private:
  explicit Shared(Stored* s) noexcept : s_(s) {}
  Stored* s_;
};

/// A std::map-like container in a segment (boost::interprocess::map), behind a robust lock.
template <class K, class V, class Compare = std::less<K>>
using SharedMap =
    Shared<boost::interprocess::map<K, V, Compare, ShmAllocator<std::pair<const K, V>>>>;
/// A std::vector-like container in a segment (boost::interprocess::vector), behind a robust
/// lock.
template <class T>
using SharedVector = Shared<boost::interprocess::vector<T, ShmAllocator<T>>>;

}  // namespace ipckit
