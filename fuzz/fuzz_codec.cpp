// fuzz_codec: ipckit::codec decoding. Input byte 0 < 128 picks a type (codec_types.hpp) and
// the rest is decoded as one value of it (decode_into); byte 0 >= 128 picks a sequence type,
// byte 1 a count, and the rest goes through decode_each. Only errc::bad_frame may come out.
// A value that decodes must round-trip: re-encoded it gives the input back (canonical kinds),
// or decodes again to an equal value (maps and sets, whose order and duplicates the encoding
// does not pin down).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "codec_types.hpp"
#include "fuzz_support.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;
using ipckit::fuzz::fail;
namespace codec = ipckit::codec;

template <class T>
void one(std::span<const std::byte> in) {
  T v{};
  try {
    codec::decode_into(in, v);
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  const std::vector<std::byte> again = codec::encode(v);
  if constexpr (ipckit::fuzz::kCanonical<T>) {
    if (again.size() != in.size() ||
        (!again.empty() && std::memcmp(again.data(), in.data(), in.size()) != 0)) {
      fail("a decoded value re-encodes to other bytes");
    }
  } else {
    if (!(codec::decode<T>(again) == v)) fail("a decoded value does not round-trip");
  }
}

template <class T>
void seq(std::span<const std::byte> in, std::size_t count) {
  std::vector<T> values;
  try {
    codec::decode_each<T>(in, count, [&](T& v) { values.push_back(std::move(v)); });
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  if (values.size() != count) fail("decode_each handed out the wrong number of values");
  std::vector<std::byte> again;
  {
    codec::SeqWriter<T> w(again);
    for (const T& v : values) w.add(v);
  }
  if constexpr (ipckit::fuzz::kCanonical<T>) {
    if (again.size() != in.size() ||
        (!again.empty() && std::memcmp(again.data(), in.data(), in.size()) != 0)) {
      fail("a decoded sequence re-encodes to other bytes");
    }
  } else {
    std::size_t i = 0;
    codec::decode_each<T>(again, count, [&](T& v) {
      if (!(v == values[i++])) fail("a decoded sequence does not round-trip");
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return -1;
  const std::span<const std::byte> all(reinterpret_cast<const std::byte*>(data), size);
  const unsigned which = data[0];
  if (which < 128) {
    ipckit::fuzz::with_codec_type(which, [&]<class T>() { one<T>(all.subspan(1)); });
  } else {
    if (size < 2) return -1;
    const std::size_t count = data[1];
    ipckit::fuzz::with_seq_type(which - 128, [&]<class T>() { seq<T>(all.subspan(2), count); });
  }
  return 0;
}
