// The callables and inputs fuzz_pool_wire runs task messages through (make_corpus encodes
// real task messages for the same ones).
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

#include "codec_types.hpp"
#include "ipckit/pool/detail/task.hpp"

namespace ipckit::fuzz {

// A callable cereal serialises (not trivially copyable): its bytes are a codec encoding.
struct Prefixer {
  std::string prefix;
  std::string operator()(const std::string& s) const { return prefix + s; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(prefix);
  }
};

// (Unsigned arithmetic: the inputs are fuzz bytes, and overflow must not be UB here.)
inline constexpr auto kTwice = [](std::int32_t x) {  // empty: crosses as no bytes
  return static_cast<std::int32_t>(2u * static_cast<std::uint32_t>(x));
};
inline constexpr auto kLength = [](const std::string& s) { return s.size(); };
inline constexpr auto kSumPair = [](std::int32_t a, const std::string& s) {  // starmap
  return static_cast<std::int64_t>(a) + static_cast<std::int64_t>(s.size());
};
inline constexpr auto kPodSum = [](const Pod& p) { return std::int64_t{p.a} + p.b + p.c; };
inline constexpr auto kIgnore = [](std::int32_t) {};  // void: results are Units

// A callable that captures a value: trivially copyable, crosses as its bytes.
inline auto make_adder(std::int32_t k) {
  return [k](std::int32_t x) {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(x) + static_cast<std::uint32_t>(k));
  };
}
using Adder = decltype(make_adder(0));

// The trampolines a worker would find at the frame's invoker address, numbered. (The address
// itself is not checked: see lib/pool/wire.hpp.)
inline constexpr int kInvokers = 7;
inline detail::Invoker invoker(unsigned which) {
  using detail::invoke_chunk;
  using detail::result_t;
  using detail::Unit;
  using T2 = decltype(kTwice);
  using TL = decltype(kLength);
  using TS = decltype(kSumPair);
  using TP = decltype(kPodSum);
  using TI = decltype(kIgnore);
  using Tup = std::tuple<std::int32_t, std::string>;
  switch (which % kInvokers) {
    case 0: return &invoke_chunk<T2, std::int32_t, result_t<T2, std::int32_t, false>, false>;
    case 1: return &invoke_chunk<TL, std::string, result_t<TL, std::string, false>, false>;
    case 2: return &invoke_chunk<TS, Tup, result_t<TS, Tup, true>, true>;
    case 3: return &invoke_chunk<TP, Pod, result_t<TP, Pod, false>, false>;
    case 4: return &invoke_chunk<TI, std::int32_t, Unit, false>;
    case 5: return &invoke_chunk<Adder, std::int32_t, result_t<Adder, std::int32_t, false>, false>;
    default:
      return &invoke_chunk<Prefixer, std::string, result_t<Prefixer, std::string, false>, false>;
  }
}

// Decodes `count` results of invoker `which`'s result type, as the driver's job would.
inline void decode_results_of(unsigned which, std::span<const std::byte> bytes,
                              std::uint32_t count) {
  const auto go = [&]<class R>() {
    std::vector<R> out;
    detail::decode_results<R>(bytes, count, std::back_inserter(out));
  };
  switch (which % kInvokers) {
    case 0:
    case 5: go.operator()<std::int32_t>(); break;
    case 1: go.operator()<std::size_t>(); break;
    case 2:
    case 3: go.operator()<std::int64_t>(); break;
    case 4: go.operator()<detail::Unit>(); break;
    default: go.operator()<std::string>(); break;
  }
}

}  // namespace ipckit::fuzz
