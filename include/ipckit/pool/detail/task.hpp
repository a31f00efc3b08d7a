// How a pool task crosses to a worker. The worker runs the same program, though not always at
// the same addresses (the forkserver's workers come from another exec of it; MPI ranks are
// other processes), so a task names its trampoline, invoke_chunk<F, In, R, Unpack>, as a
// CodeAddress (module build id + offset), followed by the bytes of the callable and of a chunk
// of inputs; the worker calls the trampoline, which decodes, runs the callable on each input
// and encodes the results. A function-pointer callable crosses as a CodeAddress too.
//
// Messages travel through the library's fragment layer (lib/channel/fragment.hpp: one record,
// or several when larger than one ring record, the first led by the total size). A task message
// is a TaskFrame, the callable (padded to 8 bytes) and the inputs; a result message is a
// ResultFrame and the results (or, for an error, the exception's type name and message).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ipckit/channel/codec.hpp"
#include "ipckit/core/code_address.hpp"

namespace ipckit::detail {

// Stands for the result of a callable that returns void: encoded as nothing.
struct Unit {
  friend bool operator==(Unit, Unit) = default;
};

using Invoker = void (*)(std::span<const std::byte> fn, std::span<const std::byte> args,
                         std::uint32_t count, std::vector<std::byte>& out);

struct TaskFrame {
  std::uint64_t id = 0;       // the driver's id for this dispatch of the chunk
  CodeAddress invoker;        // the trampoline
  std::uint32_t fn_size = 0;  // callable bytes (then padding to 8)
  std::uint32_t count = 0;    // inputs in the chunk
};
struct ResultFrame {
  static constexpr std::uint32_t kOk = 1;
  static constexpr std::uint32_t kError = 2;      // payload: the exception (encode_exception)
  static constexpr std::uint32_t kInitError = 3;  // the initializer threw; the worker exits
  std::uint64_t id;
  std::uint32_t status;
  std::uint32_t count;
  std::uint64_t busy_ns;  // time spent running the chunk
};
static_assert(sizeof(TaskFrame) == 32 && sizeof(ResultFrame) == 24);
static_assert(std::is_trivially_copyable_v<TaskFrame>);

constexpr std::size_t pad8(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }

// ---- callables ---------------------------------------------------------------------------
template <class F>
inline constexpr bool is_function_pointer_v =
    std::is_pointer_v<F>&& std::is_function_v<std::remove_pointer_t<F>>;

// A callable can cross to a worker when it is a function pointer (sent as a CodeAddress),
// an object whose bytes are its value (captureless lambdas, lambdas capturing trivially
// copyable values) or an object cereal can serialise. A captured pointer crosses as its bits:
// it means something only in a worker forked from the caller (StartMethod::fork).
template <class F>
inline constexpr bool is_portable_callable_v =
    is_function_pointer_v<F> ||
    (std::is_class_v<F> && (std::is_trivially_copyable_v<F> || codec::is_serializable_v<F>));

template <class F>
void encode_callable(const F& f, std::vector<std::byte>& out) {
  if constexpr (std::is_empty_v<F> && std::is_default_constructible_v<F>) {
    out.clear();
  } else if constexpr (is_function_pointer_v<F>) {
    const CodeAddress a = code_address_of(f);
    out.resize(sizeof a);
    std::memcpy(out.data(), &a, sizeof a);
  } else if constexpr (std::is_trivially_copyable_v<F>) {
    out.resize(sizeof(F));
    std::memcpy(out.data(), &f, sizeof(F));
  } else {
    codec::encode(f, out);
  }
}

// Rebuilds the callable from its bytes and hands it to fn(F&).
template <class F, class Fn>
void with_callable(std::span<const std::byte> bytes, Fn&& fn) {
  if constexpr (std::is_empty_v<F> && std::is_default_constructible_v<F>) {
    F f{};
    fn(f);
  } else if constexpr (is_function_pointer_v<F>) {
    CodeAddress a;
    if (bytes.size() != sizeof a) throw_codec("pool: a function pointer of the wrong size");
    std::memcpy(&a, bytes.data(), sizeof a);
    F f = function_at<std::remove_pointer_t<F>>(a);
    fn(f);
  } else if constexpr (std::is_trivially_copyable_v<F>) {
    if (bytes.size() != sizeof(F)) throw_codec("pool: a callable of the wrong size");
    RawSlot<F> slot;
    fn(slot.fill(bytes.data()));
  } else {
    F f = codec::decode<F>(bytes);
    fn(f);
  }
}

// The value a call returns, or Unit for void. SFINAE-friendly: no `raw` when F cannot be
// called so.
template <class F, class Tuple, class Seq>
struct apply_result {};
template <class F, class Tuple, std::size_t... I>
requires std::invocable < F&, std::tuple_element_t<I, Tuple>
&... > struct apply_result<F, Tuple, std::index_sequence<I...>> {
  using type = std::invoke_result_t<F&, std::tuple_element_t<I, Tuple>&...>;
};
template <class F, class In, bool Unpack>
struct call_result {};
template <class F, class In>
requires requires {
  typename apply_result<F, In, std::make_index_sequence<std::tuple_size_v<In>>>::type;
}
struct call_result<F, In, true> {
  using raw = typename apply_result<F, In, std::make_index_sequence<std::tuple_size_v<In>>>::type;
};
template <class F, class In>
requires std::invocable<F&, In&>
struct call_result<F, In, false> {
  using raw = std::invoke_result_t<F&, In&>;
};
template <class F, class In, bool Unpack>
using result_t = std::conditional_t<std::is_void_v<typename call_result<F, In, Unpack>::raw>, Unit,
                                    std::decay_t<typename call_result<F, In, Unpack>::raw>>;

template <bool Unpack, class F, class In>
decltype(auto) call(F& f, In& in) {
  if constexpr (Unpack) {
    return std::apply(f, in);
  } else {
    return std::invoke(f, in);
  }
}

// The trampoline: runs F on each of `count` inputs and appends the results to `out`.
template <class F, class In, class R, bool Unpack>
void invoke_chunk(std::span<const std::byte> fn_bytes, std::span<const std::byte> args,
                  std::uint32_t count, std::vector<std::byte>& out) {
  with_callable<F>(fn_bytes, [&](F& f) {
    if constexpr (std::is_same_v<R, Unit>) {
      codec::decode_each<In>(args, count, [&](In& in) { call<Unpack>(f, in); });
    } else {
      codec::SeqWriter<R> w(out);
      codec::decode_each<In>(args, count, [&](In& in) { w.add(call<Unpack>(f, in)); });
    }
  });
}

// Appends `count` results to `dst` (in order), from the bytes a trampoline wrote.
template <class R, class It>
void decode_results(std::span<const std::byte> bytes, std::uint32_t count, It dst) {
  if constexpr (std::is_same_v<R, Unit>) {
    if (!bytes.empty()) throw_codec("pool: bytes in a result of void calls");
    for (std::uint32_t i = 0; i < count; ++i) *dst++ = Unit{};
  } else {
    codec::decode_each<R>(bytes, count, [&](R& r) { *dst++ = std::move(r); });
  }
}

}  // namespace ipckit::detail
