// The value types fuzz_codec and fuzz_pool_wire decode, one per kind the codec supports, and
// a table that maps the input's first byte to a type (make_corpus writes real encodings of
// each through the same table).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "ipckit/channel/codec.hpp"

namespace ipckit::fuzz {

// A plain struct without padding: crosses as its bytes.
struct Pod {
  std::int32_t a;
  std::uint16_t b;
  std::uint16_t c;
  double d;
  friend bool operator==(const Pod& x, const Pod& y) { return std::memcmp(&x, &y, sizeof x) == 0; }
};
static_assert(sizeof(Pod) == 16 && codec::is_trivial_v<Pod>);

// A user type cereal serialises, with containers nested in it.
struct Nested {
  std::string name;
  std::vector<Pod> pods;
  std::optional<std::map<std::uint16_t, std::vector<std::string>>> extra;
  bool flag = false;
  std::array<std::int16_t, 3> small{};
  std::variant<std::monostate, std::int64_t, std::string> tag;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, pods, extra, flag, small, tag);
  }
  friend bool operator==(const Nested&, const Nested&) = default;
};

// Types whose encoding is canonical: a value that decodes re-encodes to the same bytes.
// The others (maps, sets: order and duplicates) are checked by value instead.
template <class T>
inline constexpr bool kCanonical = true;
template <class K, class V>
inline constexpr bool kCanonical<std::map<K, V>> = false;
template <class K>
inline constexpr bool kCanonical<std::set<K>> = false;
template <class K, class V>
inline constexpr bool kCanonical<std::unordered_map<K, V>> = false;
template <>
inline constexpr bool kCanonical<Nested> = false;

// Calls fn.template operator()<T>() for the type numbered `which` (modulo the count).
inline constexpr int kCodecTypes = 22;
template <class Fn>
void with_codec_type(unsigned which, Fn&& fn) {
  switch (which % kCodecTypes) {
    case 0: fn.template operator()<std::int32_t>(); break;
    case 1: fn.template operator()<double>(); break;
    case 2: fn.template operator()<bool>(); break;
    case 3: fn.template operator()<Pod>(); break;
    case 4: fn.template operator()<std::string>(); break;
    case 5: fn.template operator()<std::vector<std::int32_t>>(); break;
    case 6: fn.template operator()<std::vector<std::byte>>(); break;
    case 7: fn.template operator()<std::vector<Pod>>(); break;
    case 8: fn.template operator()<std::vector<std::string>>(); break;
    case 9: fn.template operator()<std::optional<std::int64_t>>(); break;
    case 10: fn.template operator()<std::pair<std::int32_t, std::string>>(); break;
    case 11: fn.template operator()<std::tuple<std::uint8_t, double, std::string>>(); break;
    case 12: fn.template operator()<std::map<std::int32_t, std::string>>(); break;
    case 13:
      fn.template operator()<std::variant<std::int32_t, std::string, std::vector<std::uint16_t>>>();
      break;
    case 14: fn.template operator()<Nested>(); break;
    case 15: fn.template operator()<std::set<std::uint32_t>>(); break;
    case 16: fn.template operator()<std::unordered_map<std::uint16_t, std::int64_t>>(); break;
    case 17: fn.template operator()<std::vector<bool>>(); break;
    case 18: fn.template operator()<std::u16string>(); break;
    case 19: fn.template operator()<std::array<std::uint32_t, 4>>(); break;
    case 20: fn.template operator()<std::vector<std::vector<std::int32_t>>>(); break;
    default: fn.template operator()<std::optional<std::string>>(); break;
  }
}

// Sequence types (SeqWriter / decode_each), numbered from 0.
inline constexpr int kSeqTypes = 5;
template <class Fn>
void with_seq_type(unsigned which, Fn&& fn) {
  switch (which % kSeqTypes) {
    case 0: fn.template operator()<std::int32_t>(); break;
    case 1: fn.template operator()<Pod>(); break;
    case 2: fn.template operator()<std::string>(); break;
    case 3: fn.template operator()<std::pair<std::int32_t, std::vector<std::byte>>>(); break;
    default: fn.template operator()<Nested>(); break;
  }
}

}  // namespace ipckit::fuzz
