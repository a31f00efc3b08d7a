/// @namespace ipckit::codec
/// codec: how values cross a channel as bytes.
///  - trivially copyable T: its bytes, exactly sizeof(T) of them;
///  - std::vector<U> and std::basic_string<C> of trivially copyable elements: the elements'
///    bytes (the length is the message length);
///  - anything else cereal can serialise (std::map, std::tuple, std::optional, nested
///    containers, user types with a serialize() member or function): cereal, through
///    ipckit's own binary archives, whose reader checks every length against the bytes left
///    before it allocates or copies.
///
/// decode() throws Error(errc::bad_frame) on input that is short, long or inconsistent; it
/// never reads outside the span, and a container's element count is checked against the
/// bytes left before it is resized (so an allocation is at most sizeof(element) per input
/// byte). Raw structs are copied as they are: a bool member is not validated there.
///
///     std::vector<std::byte> bytes; ipckit::codec::encode(value, bytes);
///     auto back = ipckit::codec::decode<Value>(bytes);
#pragma once

#include <algorithm>
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace detail {

[[noreturn]] void throw_codec(const std::string& what);

// Asks the kernel to back [p, p + n) with transparent huge pages when the block is large
// (kLargeBlock and more): filling fresh memory 4 KiB page fault at a time costs several times
// the copy itself. A hint; nothing changes when the kernel says no.
inline constexpr std::size_t kLargeBlock = std::size_t{4} << 20;
void advise_huge_pages(void* p, std::size_t n) noexcept;

// Grows v's capacity to at least n elements, with huge pages for a large block (before the
// first write touches it).
template <class V>
void reserve_large(V& v, std::size_t n) {
  using U = typename V::value_type;
  if (n <= v.capacity() || n > v.max_size() || n * sizeof(U) < kLargeBlock) return;
  v.reserve(n);
  advise_huge_pages(static_cast<void*>(v.data()), n * sizeof(U));
}

// Replaces v's elements with the ones whose bytes are `src` (a whole number of them): one
// copy into storage reserved for exactly that many (reserve_large), with no zero fill first
// for byte-sized elements (which need no alignment).
template <class V>
void assign_elements(V& v, std::span<const std::byte> src) {
  using U = typename V::value_type;
  const std::size_t n = src.size() / sizeof(U);
  reserve_large(v, n);
  if constexpr (sizeof(U) == 1 && (std::is_arithmetic_v<U> || std::is_same_v<U, std::byte>)) {
    const auto* first = reinterpret_cast<const U*>(src.data());
    v.assign(first, first + n);
  } else {
    v.resize(n);
    if (n != 0) std::memcpy(static_cast<void*>(v.data()), src.data(), n * sizeof(U));
  }
}

// Appends to a byte vector.
class CodecOutputArchive
    : public cereal::OutputArchive<CodecOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit CodecOutputArchive(std::vector<std::byte>& out)
      : cereal::OutputArchive<CodecOutputArchive, cereal::AllowEmptyClassElision>(this),
        out_(out) {}
  void save_bytes(const void* p, std::size_t n) {
    const std::size_t at = out_.size();
    if (at + n > out_.capacity()) reserve_large(out_, std::max(at + n, 2 * out_.capacity()));
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);  // one copy: no zero fill first
  }

 private:
  std::vector<std::byte>& out_;
};

// Reads from a span, never past its end.
class CodecInputArchive
    : public cereal::InputArchive<CodecInputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit CodecInputArchive(std::span<const std::byte> in)
      : cereal::InputArchive<CodecInputArchive, cereal::AllowEmptyClassElision>(this), in_(in) {}
  void load_bytes(void* p, std::size_t n) {
    if (n > remaining()) {
      throw_codec("codec: needs " + std::to_string(n) + " more bytes, " +
                  std::to_string(remaining()) + " left (truncated message)");
    }
    if (n != 0) std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
  }
  [[nodiscard]] std::size_t remaining() const noexcept { return in_.size() - pos_; }
  // The next n bytes, in place (the caller copies them); throws as load_bytes.
  std::span<const std::byte> take_bytes(std::size_t n) {
    if (n > remaining()) {
      throw_codec("codec: needs " + std::to_string(n) + " more bytes, " +
                  std::to_string(remaining()) + " left (truncated message)");
    }
    const std::span<const std::byte> s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
};

template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar,
                                                                    const T& t) {
  ar.save_bytes(&t, sizeof t);
}
template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    // A bool is one byte, 0 or 1; any other byte would be undefined behaviour as a bool.
    std::uint8_t b = 0;
    ar.load_bytes(&b, 1);
    if (b > 1) throw_codec("codec: a bool byte of " + std::to_string(b) + " (not 0 or 1)");
    t = b != 0;
  } else {
    ar.load_bytes(&t, sizeof t);
  }
}
template <class Archive, class T>
CEREAL_ARCHIVE_RESTRICT(CodecInputArchive, CodecOutputArchive)
CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar, const cereal::SizeTag<T>& t) {
  ar(t.size);
}
// The one place a length enters from outside: a container of n elements needs at least n
// more bytes (every element is at least one byte), so n is checked before anyone resizes.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  if (static_cast<std::uint64_t>(t.size) > ar.remaining()) {
    throw_codec("codec: a length of " + std::to_string(static_cast<std::uint64_t>(t.size)) +
                " exceeds the " + std::to_string(ar.remaining()) + " bytes left");
  }
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.save_bytes(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.load_bytes(bd.data, static_cast<std::size_t>(bd.size));
}

// Pointers and views are trivially copyable but mean nothing in another process: rejected,
// at the top level and as elements of a raw range.
template <class T>
struct is_view : std::bool_constant<std::is_pointer_v<T> || std::is_member_pointer_v<T>> {};
template <class C, class Tr>
struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class U, std::size_t E>
struct is_view<std::span<U, E>> : std::true_type {};

// Inside cereal-encoded values (a map of vectors, a chunk of pool inputs), a vector of
// trivially copyable, non-arithmetic elements (std::byte, plain structs) goes as a length and
// the elements' bytes, as it does at the top level: cereal itself would want a serialize()
// for each element, or copy std::byte one at a time.
template <class U>
inline constexpr bool is_raw_element_v =
    std::is_trivially_copyable_v<U> && !std::is_arithmetic_v<U> && !is_view<U>::value;
template <class U, class A>
std::enable_if_t<is_raw_element_v<U>> CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar,
                                                                const std::vector<U, A>& v) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
  ar.save_bytes(v.data(), v.size() * sizeof(U));
}
// Arithmetic elements (not bool) load the same way, replacing cereal's own overload for this
// archive: one copy into storage reserved (with huge pages when large) for exactly n.
template <class U>
inline constexpr bool is_bulk_element_v = is_raw_element_v<U> ||
                                          (std::is_arithmetic_v<U> && !std::is_same_v<U, bool>);
template <class U, class A>
std::enable_if_t<is_bulk_element_v<U>> CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar,
                                                                 std::vector<U, A>& v) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if (n > ar.remaining() / sizeof(U)) {
    throw_codec("codec: " + std::to_string(static_cast<std::uint64_t>(n)) + " elements of " +
                std::to_string(sizeof(U)) + " bytes exceed the " + std::to_string(ar.remaining()) +
                " bytes left");
  }
  assign_elements(v, ar.take_bytes(static_cast<std::size_t>(n) * sizeof(U)));
}

// Storage in which the bytes of a trivially copyable T become a T (memcpy into suitably
// aligned storage creates the object): on the stack when small, on the heap when large, so
// that a large plain struct does not overflow a thread's stack.
template <class T>
class RawSlot {
 public:
  // inline_ is raw storage on purpose: fill() copies the bytes that become the T.
  RawSlot() {  // NOLINT(cppcoreguidelines-pro-type-member-init)
    if constexpr (kHeap)
      heap_.reset(
          static_cast<unsigned char*>(::operator new(sizeof(T), std::align_val_t(alignof(T)))));
  }
  T& fill(const std::byte* src) noexcept {
    unsigned char* p = data();
    std::memcpy(p, src, sizeof(T));
    return *std::launder(reinterpret_cast<T*>(p));
  }
  [[nodiscard]] unsigned char* data() noexcept {
    if constexpr (kHeap) {
      return heap_.get();
    } else {
      return inline_;
    }
  }

 private:
  static constexpr bool kHeap = sizeof(T) > 4096;
  struct Free {
    void operator()(unsigned char* p) const noexcept {
      ::operator delete(p, std::align_val_t(alignof(T)));
    }
  };
  alignas(T) unsigned char inline_[kHeap ? 1 : sizeof(T)];
  std::unique_ptr<unsigned char, Free> heap_;
};

template <class T>
struct is_raw_range : std::false_type {};
template <class U, class A>
struct is_raw_range<std::vector<U, A>>
    : std::bool_constant<std::is_trivially_copyable_v<U> && !std::is_same_v<U, bool> &&
                         !is_view<U>::value> {};
template <class C, class Tr, class A>
struct is_raw_range<std::basic_string<C, Tr, A>> : std::true_type {};

}  // namespace detail
}  // namespace ipckit

CEREAL_REGISTER_ARCHIVE(ipckit::detail::CodecOutputArchive)
CEREAL_REGISTER_ARCHIVE(ipckit::detail::CodecInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(ipckit::detail::CodecInputArchive, ipckit::detail::CodecOutputArchive)

namespace ipckit::codec {

// How T is encoded: raw bytes of one value, raw bytes of a contiguous range, or cereal.
/// True for pointers, member pointers, string views and spans: they mean nothing in another
/// process, so they never cross a channel.
template <class T>
using is_view = detail::is_view<T>;
/// Encoded as its own bytes: trivially copyable and not a view.
template <class T>
inline constexpr bool is_trivial_v = std::is_trivially_copyable_v<T> && !is_view<T>::value;
/// Encoded as its elements' bytes: a vector of trivially copyable elements (not bool, not
/// views) or a string.
template <class T>
inline constexpr bool is_raw_range_v = detail::is_raw_range<T>::value;
/// Encoded by cereal: T can be saved and loaded through ipckit's archives.
template <class T>
inline constexpr bool is_serializable_v =
    cereal::traits::is_output_serializable<T, detail::CodecOutputArchive>::value&&
        cereal::traits::is_input_serializable<T, detail::CodecInputArchive>::value;
/// True when a T can cross a channel at all.
template <class T>
inline constexpr bool is_encodable_v =
    !is_view<T>::value && (is_trivial_v<T> || is_raw_range_v<T> || is_serializable_v<T>);

/// Bytes `v` will take when that is known without encoding (trivial values and raw ranges),
/// else 0.
template <class T>
constexpr std::size_t raw_size(const T& v) noexcept {
  if constexpr (is_trivial_v<T>) {
    return sizeof(T);
  } else if constexpr (is_raw_range_v<T>) {
    return v.size() * sizeof(typename T::value_type);
  } else {
    return 0;
  }
}

/// Writes the encoding of `v` to `dst`, which has exactly raw_size(v) bytes (raw kinds only).
template <class T>
void encode_raw(const T& v, std::span<std::byte> dst) noexcept {
  static_assert(is_trivial_v<T> || is_raw_range_v<T>);
  if constexpr (is_trivial_v<T>) {
    std::memcpy(dst.data(), &v, sizeof(T));
  } else {
    if (!dst.empty()) std::memcpy(dst.data(), v.data(), dst.size());
  }
}

/// Replaces `out` with the encoding of `v`.
template <class T>
void encode(const T& v, std::vector<std::byte>& out) {
  static_assert(is_encodable_v<T>,
                "ipckit::codec: T is neither trivially copyable, a vector/string of trivially "
                "copyable elements, nor serialisable by cereal (give it a serialize() member)");
  out.clear();
  if constexpr (is_trivial_v<T> || is_raw_range_v<T>) {
    out.resize(raw_size(v));
    encode_raw(v, out);
  } else {
    detail::CodecOutputArchive ar(out);
    ar(v);
  }
}
/// The encoding of `v`.
template <class T>
std::vector<std::byte> encode(const T& v) {
  std::vector<std::byte> out;
  encode(v, out);
  return out;
}

/// Decodes a whole message into `out`. Throws Error(errc::bad_frame) when the bytes are not a
/// complete encoding of a T (too short, trailing bytes, a length beyond the input).
template <class T>
void decode_into(std::span<const std::byte> in, T& out) {
  static_assert(is_encodable_v<T>, "ipckit::codec: T cannot be decoded (see encode)");
  if constexpr (is_trivial_v<T>) {
    if (in.size() != sizeof(T)) {
      detail::throw_codec("codec: expected " + std::to_string(sizeof(T)) + " bytes, got " +
                          std::to_string(in.size()));
    }
    if constexpr (std::is_same_v<T, bool>) {
      if (std::to_integer<unsigned>(in[0]) > 1)
        detail::throw_codec("codec: a bool byte not 0 or 1");
    }
    std::memcpy(static_cast<void*>(&out), in.data(), sizeof(T));
  } else if constexpr (is_raw_range_v<T>) {
    using U = typename T::value_type;
    if (in.size() % sizeof(U) != 0) {
      detail::throw_codec("codec: " + std::to_string(in.size()) +
                          " bytes is not a whole number of " + std::to_string(sizeof(U)) +
                          "-byte elements");
    }
    detail::assign_elements(out, in);
  } else {
    detail::CodecInputArchive ar(in);
    try {
      ar(out);
    } catch (const cereal::Exception& e) {
      detail::throw_codec(std::string("codec: ") + e.what());
    } catch (const std::length_error& e) {  // a checked but still too large element count
      detail::throw_codec(std::string("codec: ") + e.what());
    } catch (const std::bad_alloc&) {
      detail::throw_codec("codec: a length in the message needs more memory than there is");
    }
    if (ar.remaining() != 0) {
      detail::throw_codec("codec: " + std::to_string(ar.remaining()) +
                          " trailing bytes after the value");
    }
  }
}
/// Decodes a whole message into a new T (default-constructed first); throws as decode_into.
template <class T>
T decode(std::span<const std::byte> in) {
  static_assert(std::is_default_constructible_v<T>,
                "ipckit::codec::decode needs a default-constructible T");
  T out{};
  decode_into(in, out);
  return out;
}

/// A sequence of values whose count travels beside the bytes (a pool chunk): the raw bytes of
/// each value one after another for trivially copyable T, one cereal archive for the rest.
template <class T>
class SeqWriter {
  static_assert(is_encodable_v<T>, "ipckit::codec: T cannot cross a channel (see encode)");
  struct NoArchive {
    explicit NoArchive(std::vector<std::byte>&) noexcept {}
  };
  using Archive = std::conditional_t<is_trivial_v<T>, NoArchive, detail::CodecOutputArchive>;

 public:
  /// Appends to `out`, which must outlive the writer.
  explicit SeqWriter(std::vector<std::byte>& out) : out_(out), ar_(out) {}
  /// Appends the encoding of `v`.
  void add(const T& v) {
    if constexpr (is_trivial_v<T>) {
      const std::size_t at = out_.size();
      out_.resize(at + sizeof(T));
      std::memcpy(out_.data() + at, &v, sizeof(T));
    } else {
      ar_(v);
    }
  }

 private:
  std::vector<std::byte>& out_;
  Archive ar_;
};

/// Decodes `count` values written by a SeqWriter<T> and hands each to fn(T&), in order.
/// Throws Error(errc::bad_frame) when the bytes are not exactly `count` encodings of T.
template <class T, class Fn>
void decode_each(std::span<const std::byte> in, std::size_t count, Fn&& fn) {
  static_assert(is_encodable_v<T>, "ipckit::codec: T cannot be decoded (see encode)");
  if constexpr (is_trivial_v<T>) {
    if (count > in.size() || in.size() != count * sizeof(T)) {
      detail::throw_codec("codec: " + std::to_string(count) + " values of " +
                          std::to_string(sizeof(T)) + " bytes do not make " +
                          std::to_string(in.size()) + " bytes");
    }
    detail::RawSlot<T> slot;
    for (std::size_t i = 0; i < count; ++i) {
      const std::byte* src = in.data() + i * sizeof(T);
      if constexpr (std::is_same_v<T, bool>) {
        if (std::to_integer<unsigned>(*src) > 1)
          detail::throw_codec("codec: a bool byte not 0 or 1");
      }
      fn(slot.fill(src));
    }
  } else {
    static_assert(std::is_default_constructible_v<T>,
                  "ipckit::codec: a cereal-encoded T must be default-constructible");
    detail::CodecInputArchive ar(in);
    for (std::size_t i = 0; i < count; ++i) {
      T v{};
      // Only decoding errors are translated; what fn throws passes through untouched.
      try {
        ar(v);
      } catch (const cereal::Exception& e) {
        detail::throw_codec(std::string("codec: ") + e.what());
      } catch (const std::length_error& e) {
        detail::throw_codec(std::string("codec: ") + e.what());
      } catch (const std::bad_alloc&) {
        detail::throw_codec("codec: a length in the message needs more memory than there is");
      }
      fn(v);
    }
    if (ar.remaining() != 0) {
      detail::throw_codec("codec: " + std::to_string(ar.remaining()) + " trailing bytes after " +
                          std::to_string(count) + " values");
    }
  }
}

}  // namespace ipckit::codec
