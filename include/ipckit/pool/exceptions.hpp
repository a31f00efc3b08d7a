/// @file
/// ipckit::register_exception<E>(): exceptions that keep their type across processes. A pool
/// task that throws a registered type is rethrown on the caller as that type, its fields
/// intact (through cereal) or rebuilt from its message; unregistered types stay RemoteError.
///
///     struct QuotaExceeded : std::runtime_error {
///       using std::runtime_error::runtime_error;   // message-only: E(std::string)
///     };
///     ipckit::register_exception<QuotaExceeded>();  // before the Pool is made
///     try { pool.apply(task, x); } catch (const QuotaExceeded& e) { ... }
#pragma once

#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "ipckit/channel/codec.hpp"
#include "ipckit/core/code_address.hpp"

namespace ipckit {

namespace detail {
// Encodes the exception in `p` when it is an E (or derived from it) into `out`; false if not.
using ExceptionEncoder = bool (*)(const std::exception_ptr& p, std::vector<std::byte>& out);
// Rebuilds an E from its message and the bytes its encoder wrote.
using ExceptionDecoder = std::exception_ptr (*)(std::string_view message,
                                                std::span<const std::byte> bytes);

template <class E>
inline constexpr bool cereal_exception_v =
    codec::is_serializable_v<E>&& std::is_default_constructible_v<E>;

template <class E>
bool encode_exception(const std::exception_ptr& p, std::vector<std::byte>& out) {
  try {
    std::rethrow_exception(p);
  } catch (const E& e) {
    out.clear();
    if constexpr (cereal_exception_v<E>) codec::encode(e, out);
    return true;
  } catch (...) {
    return false;
  }
}
template <class E>
std::exception_ptr decode_exception(std::string_view message, std::span<const std::byte> bytes) {
  if constexpr (cereal_exception_v<E>) {
    return std::make_exception_ptr(codec::decode<E>(bytes));
  } else {
    return std::make_exception_ptr(E(std::string(message)));
  }
}

// One registered type: its mangled name (the same in every process of the program) and its
// two functions.
struct ExceptionCodec {
  std::string name;
  ExceptionEncoder encode = nullptr;
  ExceptionDecoder decode = nullptr;
};
// Adds (or replaces) a type; thread-safe.
void add_exception_codec(const char* mangled_name, ExceptionEncoder enc, ExceptionDecoder dec);
// The registered types, latest first (an immutable snapshot; lock-free to read).
std::span<const ExceptionCodec> exception_codecs() noexcept;
// Inside a catch block: the registered form of the exception being handled, its type's
// mangled name (its exact type first, else the latest registered base it matches) and
// encoding; false when no registered type matches (or its encoder threw).
bool encode_current_registered(std::string& name, std::vector<std::byte>& blob);
// The registered type `name` rebuilt from `message` and `blob`; nullptr when the type is not
// registered here or the bytes do not decode.
std::exception_ptr decode_registered(const std::string& name, std::string_view message,
                                     std::span<const std::byte> blob) noexcept;
}  // namespace detail

/// Registers E so that, thrown in a pool worker, it is rethrown on the caller as E (not
/// RemoteError). E is rebuilt with cereal when it has serialize() (or save/load) and a default
/// constructor, so its fields cross; otherwise it must be constructible from std::string and
/// is rebuilt from its what(). A type derived from E and not registered itself crosses as E
/// (sliced). Register every type before making the Pool: forkserver workers get the
/// registrations made by then, forked workers those made before their fork. Thread-safe.
template <class E>
void register_exception() {
  static_assert(std::is_class_v<E> && std::is_copy_constructible_v<E>,
                "ipckit::register_exception: E must be a copyable class type");
  static_assert(detail::cereal_exception_v<E> || std::is_constructible_v<E, std::string>,
                "ipckit::register_exception: E needs serialize() and a default constructor, or a "
                "constructor from std::string (its message)");
  detail::add_exception_codec(typeid(E).name(), &detail::encode_exception<E>,
                              &detail::decode_exception<E>);
}

}  // namespace ipckit
