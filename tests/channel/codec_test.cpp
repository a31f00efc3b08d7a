#include "ipckit/channel/codec.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

#include "ipckit/core/error.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

// The largest single allocation since the last reset: decode must never allocate what a
// length field claims before checking it against the input.
namespace {
std::atomic<std::size_t> g_largest_allocation{0};
}  // namespace

void* operator new(std::size_t n) {
  std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
  }
  if (void* p = std::malloc(n != 0 ? n : 1)) return p;
  throw std::bad_alloc();
}
// Both sides are replaced, so new and delete still pair; GCC cannot see that.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace ipckit {
namespace {

using CodecTest = testing::LeakCheckedTest;
using testing::error_of;

struct Pod {
  std::int32_t a;
  double b;
  char c[3];
  bool operator==(const Pod&) const = default;
};

// A user type serialised through its serialize() member.
struct Person {
  std::string name;
  std::vector<int> scores;
  std::optional<std::string> nickname;
  std::map<std::string, double> traits;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, scores, nickname, traits);
  }
  bool operator==(const Person&) const = default;
};

struct NotSerialisable {
  std::string text;  // not trivially copyable, and no serialize()
};

template <class T>
T round_trip(const T& v) {
  return codec::decode<T>(codec::encode(v));
}

std::string every_byte_value(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + 7);
  return s;
}

// ---- what can be encoded ------------------------------------------------------------------

static_assert(codec::is_encodable_v<int>);
static_assert(codec::is_encodable_v<Pod>);
static_assert(codec::is_encodable_v<std::string>);
static_assert(codec::is_encodable_v<std::vector<double>>);
static_assert(codec::is_encodable_v<std::vector<std::string>>);
static_assert(codec::is_encodable_v<std::map<std::string, std::vector<int>>>);
static_assert(codec::is_encodable_v<std::tuple<int, std::string, double>>);
static_assert(codec::is_encodable_v<std::optional<std::string>>);
static_assert(codec::is_encodable_v<Person>);
static_assert(!codec::is_encodable_v<NotSerialisable>);
static_assert(!codec::is_encodable_v<int*>, "a pointer means nothing in another process");
static_assert(!codec::is_encodable_v<std::string_view>);
static_assert(!codec::is_encodable_v<std::span<const int>>);
static_assert(codec::is_raw_range_v<std::string> && codec::is_raw_range_v<std::vector<double>>);
static_assert(!codec::is_raw_range_v<std::vector<std::string>>);

TEST_F(CodecTest, IntIsItsFourBytes) {
  for (const int v :
       {0, 1, -1, 42, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()}) {
    const auto bytes = codec::encode(v);
    ASSERT_EQ(bytes.size(), sizeof(int));
    EXPECT_EQ(std::memcmp(bytes.data(), &v, sizeof v), 0);
    EXPECT_EQ(codec::decode<int>(bytes), v);
  }
  EXPECT_EQ(codec::raw_size(5), sizeof(int));
}

TEST_F(CodecTest, TriviallyCopyableStructRoundTripsAsItsBytes) {
  const Pod v{-7, 2.5, {'x', 'y', 'z'}};
  const auto bytes = codec::encode(v);
  EXPECT_EQ(bytes.size(), sizeof(Pod));
  EXPECT_EQ(codec::decode<Pod>(bytes), v);
}

TEST_F(CodecTest, StringRoundTripsEmptyAndLarge) {
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_TRUE(codec::encode(std::string()).empty());
  const std::string large = every_byte_value(3 << 20);  // with '\0' and every other byte
  const auto bytes = codec::encode(large);
  EXPECT_EQ(bytes.size(), large.size()) << "a string is its characters, nothing more";
  EXPECT_EQ(codec::decode<std::string>(bytes), large);
}

TEST_F(CodecTest, VectorOfDoubleRoundTripsBitForBit) {
  const std::vector<double> v{0.0,
                              -0.0,
                              1.5,
                              -1e300,
                              std::numeric_limits<double>::infinity(),
                              std::numeric_limits<double>::denorm_min(),
                              std::numeric_limits<double>::quiet_NaN()};
  const auto back = round_trip(v);
  ASSERT_EQ(back.size(), v.size());
  EXPECT_EQ(std::memcmp(back.data(), v.data(), v.size() * sizeof(double)), 0);
  EXPECT_EQ(round_trip(std::vector<double>{}), std::vector<double>{});
}

TEST_F(CodecTest, VectorOfStringsRoundTrips) {
  for (const auto& v : {std::vector<std::string>{}, std::vector<std::string>{""},
                        std::vector<std::string>{"a", "", every_byte_value(100'000), "z"}}) {
    EXPECT_EQ(round_trip(v), v);
  }
}

TEST_F(CodecTest, MapOfStringToVectorOfIntRoundTrips) {
  const std::map<std::string, std::vector<int>> v{
      {"", {}}, {"one", {1}}, {"many", {3, -1, 4, 1, -5, 9}}, {every_byte_value(300), {0}}};
  EXPECT_EQ(round_trip(v), v);
  EXPECT_EQ(round_trip(std::map<std::string, std::vector<int>>{}),
            (std::map<std::string, std::vector<int>>{}));
}

// Inside a cereal-encoded value, a vector of plain structs or bytes goes as a length and its
// bytes (cereal alone would need a serialize() per element, or copy bytes one by one); a
// length that claims more elements than there are bytes left is refused before resizing.
TEST_F(CodecTest, VectorsOfPlainStructsAndBytesInsideAMapRoundTripAndLengthsAreChecked) {
  const std::map<int, std::vector<Pod>> pods{{1, {}}, {2, {Pod{1, 2.5, {'a', 'b', 'c'}}}}};
  EXPECT_EQ(round_trip(pods), pods);
  std::vector<std::byte> blob(100'000);
  for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<std::byte>(i * 7);
  using Named = std::tuple<std::string, std::vector<std::byte>>;
  const Named t{"blob", blob};
  const auto bytes = codec::encode(t);
  EXPECT_EQ(bytes.size(), 8 + 4 + 8 + blob.size());  // two lengths, "blob", the bytes
  EXPECT_EQ(codec::decode<Named>(bytes), t);
  auto patched = codec::encode(std::tuple<std::string, std::vector<Pod>>{"p", {Pod{}, Pod{}}});
  const std::uint64_t three = 3;  // one more Pod than there are bytes for
  std::memcpy(patched.data() + 9, &three, sizeof three);
  EXPECT_EQ(
      error_of([&] { (void)codec::decode<std::tuple<std::string, std::vector<Pod>>>(patched); }),
      errc::bad_frame);
}

TEST_F(CodecTest, TupleRoundTrips) {
  const std::tuple<int, std::string, double> v{-3, "three", 3.25};
  EXPECT_EQ(round_trip(v), v);
  const std::tuple<int, std::string, double> empty_string{0, "", 0.0};
  EXPECT_EQ(round_trip(empty_string), empty_string);
}

TEST_F(CodecTest, OptionalRoundTripsSetAndEmpty) {
  EXPECT_EQ(round_trip(std::optional<std::string>("here")), std::optional<std::string>("here"));
  EXPECT_EQ(round_trip(std::optional<std::string>("")), std::optional<std::string>(""));
  EXPECT_EQ(round_trip(std::optional<std::string>()), std::nullopt);
}

TEST_F(CodecTest, UserStructWithSerializeMemberRoundTrips) {
  const Person p{"Ada", {90, 85, 100}, "countess", {{"curious", 1.0}, {"patient", 0.5}}};
  EXPECT_EQ(round_trip(p), p);
  const Person nobody{};
  EXPECT_EQ(round_trip(nobody), nobody);
  const std::vector<Person> people{p, nobody, p};
  EXPECT_EQ(round_trip(people), people);
}

TEST_F(CodecTest, VariantRoundTripsAndBadIndexIsBadFrame) {
  using V = std::variant<int, std::string>;
  EXPECT_EQ(round_trip(V(5)), V(5));
  EXPECT_EQ(round_trip(V("five")), V("five"));
  auto bytes = codec::encode(V(5));
  for (const std::int32_t index : {2, -1, 1 << 30}) {
    std::memcpy(bytes.data(), &index, sizeof index);  // the index is the first field
    EXPECT_EQ(error_of([&] { (void)codec::decode<V>(bytes); }), errc::bad_frame) << index;
  }
}

// ---- bad input ----------------------------------------------------------------------------

TEST_F(CodecTest, WrongSizeForTrivialTypeIsBadFrame) {
  const auto four = codec::encode(7);
  EXPECT_EQ(error_of([&] { (void)codec::decode<int>(std::span(four).first(3)); }), errc::bad_frame);
  auto five = four;
  five.push_back(std::byte{0});
  EXPECT_EQ(error_of([&] { (void)codec::decode<int>(five); }), errc::bad_frame);
  EXPECT_EQ(error_of([&] { (void)codec::decode<int>({}); }), errc::bad_frame);
  auto pod = codec::encode(Pod{1, 2.0, {}});
  pod.push_back(std::byte{0});
  EXPECT_EQ(error_of([&] { (void)codec::decode<Pod>(pod); }), errc::bad_frame);
}

TEST_F(CodecTest, VectorOfDoubleWithAPartialElementIsBadFrame) {
  const auto bytes = codec::encode(std::vector<double>{1.0, 2.0});
  EXPECT_EQ(error_of([&] { (void)codec::decode<std::vector<double>>(std::span(bytes).first(12)); }),
            errc::bad_frame);
  EXPECT_EQ(codec::decode<std::vector<double>>(std::span(bytes).first(8)),
            std::vector<double>{1.0});
}

// Every proper prefix of an encoding is a truncated message.
TEST_F(CodecTest, TruncatedInputIsBadFrame) {
  const Person p{"Grace", {1, 2, 3}, "amazing", {{"rank", 3.0}}};
  const auto people = codec::encode(std::vector<Person>{p, p});
  const auto tuple = codec::encode(std::tuple<int, std::string, double>{1, "two", 3.0});
  const auto map = codec::encode(std::map<std::string, std::vector<int>>{{"k", {1, 2}}});
  const auto optional = codec::encode(std::optional<std::string>("set"));
  for (std::size_t n = 0; n < people.size(); ++n) {
    ASSERT_EQ(
        error_of([&] { (void)codec::decode<std::vector<Person>>(std::span(people).first(n)); }),
        errc::bad_frame)
        << n << " of " << people.size() << " bytes";
  }
  for (std::size_t n = 0; n < tuple.size(); ++n) {
    ASSERT_EQ(
        error_of([&] {
          (void)codec::decode<std::tuple<int, std::string, double>>(std::span(tuple).first(n));
        }),
        errc::bad_frame)
        << n;
  }
  for (std::size_t n = 0; n < map.size(); ++n) {
    ASSERT_EQ(
        error_of([&] {
          (void)codec::decode<std::map<std::string, std::vector<int>>>(std::span(map).first(n));
        }),
        errc::bad_frame)
        << n;
  }
  for (std::size_t n = 0; n < optional.size(); ++n) {
    ASSERT_EQ(error_of([&] {
                (void)codec::decode<std::optional<std::string>>(std::span(optional).first(n));
              }),
              errc::bad_frame)
        << n;
  }
}

TEST_F(CodecTest, TrailingBytesAreBadFrame) {
  const auto check = [](auto value) {
    using T = decltype(value);
    auto bytes = codec::encode(value);
    bytes.push_back(std::byte{0});
    return error_of([&] { (void)codec::decode<T>(bytes); });
  };
  EXPECT_EQ(check(std::vector<std::string>{"a", "b"}), errc::bad_frame);
  EXPECT_EQ(check(std::tuple<int, std::string, double>{1, "x", 2.0}), errc::bad_frame);
  EXPECT_EQ(check(std::optional<std::string>()), errc::bad_frame);
  EXPECT_EQ(check(std::map<std::string, std::vector<int>>{}), errc::bad_frame);
  EXPECT_EQ(check(Person{}), errc::bad_frame);
}

// A length field that claims 2^60 elements (or bytes) fails before anything that size is
// allocated: the decoder allocates at most a small multiple of its input.
TEST_F(CodecTest, LengthFieldClaimingTwoToTheSixtyIsBadFrameWithoutAHugeAllocation) {
  constexpr std::uint64_t kHuge = std::uint64_t{1} << 60;
  const auto decode_patched = [&](auto value, std::size_t at) {
    using T = decltype(value);
    auto bytes = codec::encode(value);
    std::memcpy(bytes.data() + at, &kHuge, sizeof kHuge);
    g_largest_allocation.store(0);
    const auto err = error_of([&] { (void)codec::decode<T>(bytes); });
    EXPECT_LT(g_largest_allocation.load(), std::size_t{1} << 20) << "allocated for a lie";
    return err;
  };
  // The element count of a vector of strings comes first.
  EXPECT_EQ(decode_patched(std::vector<std::string>{"a", "b"}, 0), errc::bad_frame);
  // The length of the first string in it.
  EXPECT_EQ(decode_patched(std::vector<std::string>{"a", "b"}, 8), errc::bad_frame);
  // The size of a map, and the length of a vector<int> inside it (key "k": 8 + 8 + 1 bytes).
  EXPECT_EQ(decode_patched(std::map<std::string, std::vector<int>>{{"k", {1, 2}}}, 0),
            errc::bad_frame);
  EXPECT_EQ(decode_patched(std::map<std::string, std::vector<int>>{{"k", {1, 2}}}, 17),
            errc::bad_frame);
  // The string inside a tuple (after the 4-byte int).
  EXPECT_EQ(decode_patched(std::tuple<int, std::string, double>{1, "two", 3.0}, 4),
            errc::bad_frame);
}

// A bool on the wire is 0 or 1; any other byte is a corrupt message, to be reported as such
// (loading it into a bool as it is would be undefined behaviour). std::optional<std::string>
// goes through cereal, whose first field is a bool "empty" flag.
TEST_F(CodecTest, BoolFieldWithAByteOtherThanZeroOrOneIsBadFrame) {
  auto bytes = codec::encode(std::optional<std::string>());
  ASSERT_EQ(bytes, std::vector<std::byte>{std::byte{1}});
  bytes[0] = std::byte{2};
  EXPECT_EQ(error_of([&] { (void)codec::decode<std::optional<std::string>>(bytes); }),
            errc::bad_frame);
  auto flags = codec::encode(std::vector<bool>{true, false, true});
  flags.back() = std::byte{0x80};
  EXPECT_EQ(error_of([&] { (void)codec::decode<std::vector<bool>>(flags); }), errc::bad_frame);
}

TEST_F(CodecTest, RawBoolOtherThanZeroOrOneIsBadFrameAndViewsInsideVectorsAreRefused) {
  const std::vector<std::byte> two{std::byte{2}};
  EXPECT_EQ(error_of([&] { (void)codec::decode<bool>(two); }), errc::bad_frame);
  EXPECT_TRUE(codec::decode<bool>(std::vector<std::byte>{std::byte{1}}));
  // Not copied as raw bytes (cereal then refuses them when they are used).
  static_assert(!codec::is_raw_range_v<std::vector<std::string_view>>);
  static_assert(!codec::is_raw_range_v<std::vector<const char*>>);
  static_assert(!codec::is_raw_range_v<std::vector<std::span<int>>>);
}

}  // namespace
}  // namespace ipckit
