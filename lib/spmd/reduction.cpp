#include "ipckit/spmd/reduction.hpp"

#include <algorithm>
#include <string>
#include <type_traits>

#include "ipckit/core/error.hpp"

namespace ipckit {

std::size_t size_of(DataType t) noexcept {
  switch (t) {
    case DataType::i32:
    case DataType::u32:
    case DataType::f32: return 4;
    case DataType::i64:
    case DataType::u64:
    case DataType::f64: return 8;
    case DataType::f32_index: return sizeof(ValueIndex<float>);
    case DataType::f64_index: return sizeof(ValueIndex<double>);
    case DataType::i32_index: return sizeof(ValueIndex<std::int32_t>);
    case DataType::i64_index: return sizeof(ValueIndex<std::int64_t>);
  }
  return 0;
}

namespace {

bool is_index_pair(DataType t) {
  return t == DataType::f32_index || t == DataType::f64_index || t == DataType::i32_index ||
         t == DataType::i64_index;
}

bool is_integer(DataType t) {
  return t == DataType::i32 || t == DataType::i64 || t == DataType::u32 || t == DataType::u64;
}

bool defined(DataType t, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::min:
    case ReduceOp::max:
    case ReduceOp::prod: return !is_index_pair(t);
    case ReduceOp::land:
    case ReduceOp::lor:
    case ReduceOp::lxor:
    case ReduceOp::band:
    case ReduceOp::bor:
    case ReduceOp::bxor: return is_integer(t);
    case ReduceOp::minloc:
    case ReduceOp::maxloc: return is_index_pair(t);
  }
  return false;
}

// One loop per operation (Reduction::each), so that the compiler can vectorise it.
template <class T, class F>
void each(void* acc, const void* in, std::size_t count, F f) {
  Reduction::each<T>(f, acc, in, count);
}

// Integers wrap around (as two's complement) instead of overflowing: values a peer wrote
// may be anything.
template <class T>
T wrap_add(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(x) + static_cast<U>(y)));
  } else {
    return x + y;
  }
}
template <class T>
T wrap_mul(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(x) * static_cast<U>(y)));
  } else {
    return x * y;
  }
}

template <class T>
void combine_as(void* acc, const void* in, std::size_t count, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return each<T>(acc, in, count, [](T x, T y) { return wrap_add(x, y); });
    case ReduceOp::min: return each<T>(acc, in, count, [](T x, T y) { return std::min(x, y); });
    case ReduceOp::max: return each<T>(acc, in, count, [](T x, T y) { return std::max(x, y); });
    case ReduceOp::prod: return each<T>(acc, in, count, [](T x, T y) { return wrap_mul(x, y); });
    default: break;
  }
  if constexpr (std::is_integral_v<T>) {
    switch (op) {
      case ReduceOp::land:
        return each<T>(acc, in, count, [](T x, T y) { return T(x != 0 && y != 0); });
      case ReduceOp::lor:
        return each<T>(acc, in, count, [](T x, T y) { return T(x != 0 || y != 0); });
      case ReduceOp::lxor:
        return each<T>(acc, in, count, [](T x, T y) { return T((x != 0) != (y != 0)); });
      case ReduceOp::band: return each<T>(acc, in, count, [](T x, T y) { return T(x & y); });
      case ReduceOp::bor: return each<T>(acc, in, count, [](T x, T y) { return T(x | y); });
      case ReduceOp::bxor: return each<T>(acc, in, count, [](T x, T y) { return T(x ^ y); });
      default: break;
    }
  }
  // Not reached: Reduction's constructor refuses the other pairs.
}

// minloc / maxloc: the better value; among equal values, the lower index.
template <class V>
void combine_loc(void* acc, const void* in, std::size_t count, ReduceOp op) {
  using P = ValueIndex<V>;
  const bool min = op == ReduceOp::minloc;
  each<P>(acc, in, count, [min](P x, P y) {
    if (min ? y.value < x.value : y.value > x.value) return y;
    if (y.value == x.value) x.index = std::min(x.index, y.index);
    return x;
  });
}

}  // namespace

Reduction::Reduction(DataType type, ReduceOp op)
    : type_(type), op_(op), size_(size_of(type)), commutative_(true) {
  if (size_ == 0 || static_cast<unsigned>(op) > static_cast<unsigned>(ReduceOp::maxloc)) {
    throw Error(errc::invalid_argument, "Reduction: no such DataType or ReduceOp");
  }
  if (!defined(type, op)) {
    throw Error(errc::invalid_argument,
                "Reduction: ReduceOp " + std::to_string(static_cast<int>(op)) +
                    " is not defined on DataType " + std::to_string(static_cast<int>(type)) +
                    " (logical and bitwise ops take integers, minloc/maxloc ValueIndex)");
  }
}

Reduction::Reduction(std::size_t element_size, Fn fn, const void* context, bool commutative)
    : size_(element_size), commutative_(commutative), fn_(fn), context_(context) {
  if (element_size == 0 || fn == nullptr) {
    throw Error(errc::invalid_argument,
                "Reduction: a user function needs a function and an element size above 0");
  }
}

void Reduction::combine(void* acc, const void* next, std::size_t count) const {
  if (fn_ != nullptr) {
    fn_(context_, acc, next, count);
    return;
  }
  reduce_into(acc, next, count, type_, op_);
}

std::uint64_t Reduction::signature() const noexcept {
  if (fn_ != nullptr) return (std::uint64_t{1} << 63) | size_;
  return (static_cast<std::uint64_t>(type_) << 8) | static_cast<std::uint64_t>(op_);
}

void reduce_into(void* acc, const void* in, std::size_t count, DataType type, ReduceOp op) {
  switch (type) {
    case DataType::i32: combine_as<std::int32_t>(acc, in, count, op); break;
    case DataType::i64: combine_as<std::int64_t>(acc, in, count, op); break;
    case DataType::u32: combine_as<std::uint32_t>(acc, in, count, op); break;
    case DataType::u64: combine_as<std::uint64_t>(acc, in, count, op); break;
    case DataType::f32: combine_as<float>(acc, in, count, op); break;
    case DataType::f64: combine_as<double>(acc, in, count, op); break;
    case DataType::f32_index: combine_loc<float>(acc, in, count, op); break;
    case DataType::f64_index: combine_loc<double>(acc, in, count, op); break;
    case DataType::i32_index: combine_loc<std::int32_t>(acc, in, count, op); break;
    case DataType::i64_index: combine_loc<std::int64_t>(acc, in, count, op); break;
  }
}

}  // namespace ipckit
