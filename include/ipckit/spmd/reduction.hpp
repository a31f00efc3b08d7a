/// @file
/// What the reducing collectives of Comm (allreduce, reduce, scan, exscan, reduce_scatter)
/// combine with: a built-in operation on one of the DataTypes, or a user function on elements
/// of any trivially copyable type.
///
///     using ipckit::ReduceOp;
///     double p = c.allreduce(2.5, ReduceOp::prod);
///     auto best = c.allreduce(ipckit::ValueIndex<double>{err, c.rank()}, ReduceOp::minloc);
///     auto compose = [](const Affine& a, const Affine& b) { return b * a; };  // in order
///     Affine all = c.allreduce(mine, ipckit::Reduction::of<Affine>(compose));
///
/// The ranks' values are combined in rank order: acc = op(acc, next), acc holding ranks
/// 0 .. r-1 when rank r's value comes. ShmComm does exactly that, so every rank gets the same
/// bytes; MpiComm lets MPI choose the order for commutative operations (user functions that
/// say they are not commutative are combined in rank order there too). A user function must
/// be associative: MPI groups the operands as it likes (a tree), ShmComm from the left.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace ipckit {

/// How a reducing collective combines the ranks' values.
enum class ReduceOp {
  sum,     ///< the sum (in rank order on ShmComm)
  min,     ///< the smallest
  max,     ///< the largest
  prod,    ///< the product
  land,    ///< logical and (1 when every value is non-zero, else 0); integer types
  lor,     ///< logical or; integer types
  lxor,    ///< logical exclusive or (1 when an odd number of values is non-zero); integers
  band,    ///< bitwise and; integer types
  bor,     ///< bitwise or; integer types
  bxor,    ///< bitwise exclusive or; integer types
  minloc,  ///< the smallest value and its index (the lowest index among equals); ValueIndex
  maxloc   ///< the largest value and its index (the lowest index among equals); ValueIndex
};

/// A value and where it came from, for ReduceOp::minloc and maxloc (the layout of MPI's
/// MPI_FLOAT_INT, MPI_DOUBLE_INT, MPI_2INT and MPI_LONG_INT).
template <class T>
struct ValueIndex {
  T value;             ///< compared
  std::int32_t index;  ///< carried along (often a rank)
  friend bool operator==(const ValueIndex&, const ValueIndex&) = default;
};

/// The element types of the built-in operations.
enum class DataType {
  i32,        ///< std::int32_t
  i64,        ///< std::int64_t (and long long)
  u32,        ///< std::uint32_t
  u64,        ///< std::uint64_t (and unsigned long long)
  f32,        ///< float
  f64,        ///< double
  f32_index,  ///< ValueIndex<float>
  f64_index,  ///< ValueIndex<double>
  i32_index,  ///< ValueIndex<std::int32_t>
  i64_index   ///< ValueIndex<std::int64_t>
};

/// The DataType of T; a compile-time error for any other type.
template <class T>
constexpr DataType data_type_of() {
  // long long is a distinct type from int64_t (long) on LP64, with the same 8 bytes.
  constexpr bool i64 =
      std::is_same_v<T, std::int64_t> || (std::is_same_v<T, long long> && sizeof(long long) == 8);
  constexpr bool u64 = std::is_same_v<T, std::uint64_t> ||
                       (std::is_same_v<T, unsigned long long> && sizeof(long long) == 8);
  if constexpr (std::is_same_v<T, std::int32_t>)
    return DataType::i32;
  else if constexpr (i64)
    return DataType::i64;
  else if constexpr (std::is_same_v<T, std::uint32_t>)
    return DataType::u32;
  else if constexpr (u64)
    return DataType::u64;
  else if constexpr (std::is_same_v<T, float>)
    return DataType::f32;
  else if constexpr (std::is_same_v<T, double>)
    return DataType::f64;
  else if constexpr (std::is_same_v<T, ValueIndex<float>>)
    return DataType::f32_index;
  else if constexpr (std::is_same_v<T, ValueIndex<double>>)
    return DataType::f64_index;
  else if constexpr (std::is_same_v<T, ValueIndex<std::int32_t>>)
    return DataType::i32_index;
  else if constexpr (std::is_same_v<T, ValueIndex<std::int64_t>>)
    return DataType::i64_index;
  else
    static_assert(sizeof(T) == 0,
                  "reductions: int32/int64/uint32/uint64/float/double or ValueIndex of "
                  "float/double/int32/int64 only (or Reduction::of for your own type)");
}

/// Bytes of one element of type `t`.
std::size_t size_of(DataType t) noexcept;

/// A reduction: a built-in ReduceOp on a DataType, or a user function. Cheap to copy; a user
/// function is held by pointer and must outlive the collective (and a non-blocking one's
/// wait).
class Reduction {
 public:
  /// A user function: acc[i] = acc[i] op next[i] for `count` elements (acc holds the lower
  /// ranks' combination); `context` is the pointer given with it.
  using Fn = void (*)(const void* context, void* acc, const void* next, std::size_t count);

  /// A built-in operation. Error(errc::invalid_argument) when `op` is not defined on `type`:
  /// the logical and bitwise operations take the integer types, minloc and maxloc the
  /// ValueIndex types, and the others every type but those.
  Reduction(DataType type, ReduceOp op);
  /// A user function on elements of `element_size` bytes (Error(errc::invalid_argument) for
  /// 0 or a null function). `commutative` lets MPI combine in another order.
  Reduction(std::size_t element_size, Fn fn, const void* context, bool commutative);

  /// A user function of T: `f(acc, next)` returns their combination (acc from lower ranks).
  /// `f` is held by reference: it must outlive the collective (and a non-blocking one's
  /// wait). A lambda without captures may be given as a temporary.
  template <class T, class F>
  requires(!std::is_function_v<F>) static Reduction of(const F& f, bool commutative = false) {
    static_assert(std::is_trivially_copyable_v<T>, "Reduction::of: T must be trivially copyable");
    static_assert(std::is_invocable_r_v<T, const F&, const T&, const T&>,
                  "Reduction::of<T>: f(const T& acc, const T& next) must return a T");
    const Fn fn = [](const void* context, void* acc, const void* next, std::size_t count) {
      const F& op = *static_cast<const F*>(context);
      each<T>(op, acc, next, count);
    };
    return Reduction(sizeof(T), fn, &f, commutative);
  }

  /// A user function of T given as a temporary function object without state (a lambda
  /// without captures): made anew for each call.
  template <class T, class F>
  requires(!std::is_reference_v<F> && std::is_empty_v<F> &&
           std::is_default_constructible_v<F>) static Reduction
      of(F&& /*f*/, bool commutative = false) {
    static_assert(std::is_trivially_copyable_v<T>, "Reduction::of: T must be trivially copyable");
    static_assert(std::is_invocable_r_v<T, const F&, const T&, const T&>,
                  "Reduction::of<T>: f(const T& acc, const T& next) must return a T");
    const Fn fn = [](const void*, void* acc, const void* next, std::size_t count) {
      each<T>(F{}, acc, next, count);
    };
    return Reduction(sizeof(T), fn, nullptr, commutative);
  }
  /// A temporary with state would be gone before the collective uses it: name it instead.
  template <class T, class F>
  requires(!std::is_reference_v<F> &&
           !(std::is_empty_v<F> && std::is_default_constructible_v<F>)) static Reduction
      of(F&& f, bool commutative = false) = delete;

  /// A user function of T given as a plain function.
  template <class T>
  static Reduction of(T (*f)(const T&, const T&), bool commutative = false) {
    static_assert(std::is_trivially_copyable_v<T>, "Reduction::of: T must be trivially copyable");
    const Fn fn = [](const void* context, void* acc, const void* next, std::size_t count) {
      // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): POSIX round trip
      const auto op = reinterpret_cast<T (*)(const T&, const T&)>(const_cast<void*>(context));
      each<T>(op, acc, next, count);
    };
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): POSIX round trip
    return Reduction(sizeof(T), fn, reinterpret_cast<const void*>(f), commutative);
  }

  /// True for a built-in operation (type() and op() say which).
  [[nodiscard]] bool builtin() const noexcept { return fn_ == nullptr; }
  /// The built-in's element type (i32 for a user function).
  [[nodiscard]] DataType type() const noexcept { return type_; }
  /// The built-in operation (sum for a user function).
  [[nodiscard]] ReduceOp op() const noexcept { return op_; }
  /// Bytes of one element.
  [[nodiscard]] std::size_t element_size() const noexcept { return size_; }
  /// True for the built-ins and for user functions said to be commutative.
  [[nodiscard]] bool commutative() const noexcept { return commutative_; }
  /// The user function (nullptr for a built-in).
  [[nodiscard]] Fn fn() const noexcept { return fn_; }
  /// The user function's context (nullptr for a built-in).
  [[nodiscard]] const void* context() const noexcept { return context_; }
  /// acc[i] = acc[i] op next[i] for `count` elements (unaligned buffers are fine).
  void combine(void* acc, const void* next, std::size_t count) const;
  /// Equal on ranks that pass equal reductions (type and op, or a user function's element
  /// size): the backends compare it to find ranks that disagree.
  [[nodiscard]] std::uint64_t signature() const noexcept;

 public:
  /// acc[i] = op(acc[i], next[i]) for `count` elements of T; memcpy in and out, so the
  /// buffers need not be aligned for T (the loop the built-ins and Reduction::of share).
  template <class T, class Op>
  static void each(const Op& op, void* acc, const void* next, std::size_t count) {
    auto* a = static_cast<unsigned char*>(acc);
    const auto* b = static_cast<const unsigned char*>(next);
    for (std::size_t i = 0; i < count; ++i) {
      T x{};
      T y{};
      std::memcpy(&x, a + i * sizeof(T), sizeof(T));
      std::memcpy(&y, b + i * sizeof(T), sizeof(T));
      const T z = op(x, y);
      std::memcpy(a + i * sizeof(T), &z, sizeof(T));
    }
  }

 private:
  DataType type_ = DataType::i32;
  ReduceOp op_ = ReduceOp::sum;
  std::size_t size_ = 0;
  bool commutative_ = true;
  Fn fn_ = nullptr;
  const void* context_ = nullptr;
};

/// Combines `in` into `acc` element-wise (acc = op(acc, in)); Reduction(type, op).combine.
void reduce_into(void* acc, const void* in, std::size_t count, DataType type, ReduceOp op);

}  // namespace ipckit
