// Writes the seed corpora of the fuzz targets: real encodings made by the library's own
// writers (SocketChannel::send, ByteRing, codec::encode / SeqWriter, the pool's frames,
// ShmComm::send), in each target's input format, plus a few edge cases. Usage:
//   fuzz_make_corpus <dir>    (writes <dir>/<target>/<name>; the committed seeds live in
//                              fuzz/corpus)
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "channel/link_frame.hpp"
#include "codec_types.hpp"
#include "fuzz_support.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/socket_channel.hpp"
#include "ipckit/shm/segment.hpp"
#include "pool/wire.hpp"
#include "pool_wire_types.hpp"

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;
namespace d = ipckit::detail;
namespace codec = ipckit::codec;
using ipckit::fuzz::append_record;
using ipckit::fuzz::Pod;

namespace {

fs::path g_root;

void put(const std::string& target, const std::string& name, const Bytes& b) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
template <class T>
requires std::is_trivially_copyable_v<T>  // a Bytes goes through the span overload
void add(Bytes& out, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}
void add(Bytes& out, std::span<const std::byte> s) { out.insert(out.end(), s.begin(), s.end()); }
Bytes bytes_of(const std::string& s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return Bytes(p, p + s.size());
}

// ---- fuzz_pipe_frame: the bytes SocketChannel::send/close put on a stream ----
Bytes stream_of(const std::vector<Bytes>& msgs, bool close) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  ipckit::UniqueFd r(fds[0]);
  {
    auto ch = ipckit::SocketChannel::from_fds({}, ipckit::UniqueFd(fds[1]));
    for (const Bytes& m : msgs) ch.send(m);
    if (close) ch.close();
  }
  Bytes out;
  std::byte buf[4096];
  for (ssize_t n; (n = ::read(r.get(), buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + n);
  return out;
}
void pipe_frame() {
  const auto with_mode = [](std::uint8_t mode, const Bytes& stream) {
    Bytes b{std::byte{mode}};
    add(b, stream);
    return b;
  };
  put("fuzz_pipe_frame", "bytes_two_then_close",
      with_mode(0, stream_of({bytes_of("hello"), {}}, true)));
  put("fuzz_pipe_frame", "bytes_no_close",
      with_mode(0, stream_of({Bytes(100, std::byte{7})}, false)));
  put("fuzz_pipe_frame", "bytes_over_small_limit",
      with_mode(0x80, stream_of({Bytes(5000, std::byte{1})}, true)));
  Bytes big = stream_of({Bytes(200, std::byte{2})}, true);
  const std::uint64_t claim = 70000;  // the large-payload path, then a truncated frame
  std::memcpy(big.data() + 8, &claim, 8);
  put("fuzz_pipe_frame", "bytes_large_claim_truncated", with_mode(0, big));
  Bytes trunc = stream_of({bytes_of("truncated frame")}, false);
  trunc.resize(trunc.size() - 4);
  put("fuzz_pipe_frame", "bytes_truncated", with_mode(0, trunc));
  put("fuzz_pipe_frame", "typed_u32_vector",
      with_mode(1,
                stream_of({codec::encode(std::vector<std::uint32_t>{1, 2, 3}), Bytes(3)}, true)));
  put("fuzz_pipe_frame", "typed_string",
      with_mode(2, stream_of({codec::encode(std::string("abc")), {}}, true)));
  put("fuzz_pipe_frame", "typed_map",
      with_mode(3,
                stream_of({codec::encode(std::map<std::uint16_t, std::string>{{1, "a"}, {2, "bb"}}),
                           Bytes(9, std::byte{0xff})},
                          true)));
}

// ---- fuzz_byte_ring ----
void byte_ring() {
  // [0][cap][valid][consumed][sizes][patches][how][produce][how]
  Bytes plain{std::byte{0}, std::byte{1},  std::byte{3}, std::byte{1},    std::byte{5},
              std::byte{0}, std::byte{40}, std::byte{0}, std::byte{0x55}, std::byte{3}};
  add(plain, std::uint16_t{8});
  add(plain, std::uint16_t{0});
  add(plain, std::uint16_t{30});
  plain.push_back(std::byte{0xff});
  put("fuzz_byte_ring", "laid_plain", plain);
  const auto patched = [](std::uint8_t op, std::uint16_t at, const Bytes& arg) {
    Bytes b{std::byte{0},  std::byte{2}, std::byte{4},   std::byte{2}, std::byte{9},
            std::byte{17}, std::byte{0}, std::byte{100}, std::byte{1}, std::byte{op}};
    add(b, at);
    add(b, arg);
    b.push_back(std::byte{0});
    b.push_back(std::byte{2});
    add(b, std::uint16_t{12});
    add(b, std::uint16_t{50});
    b.push_back(std::byte{0xff});
    return b;
  };
  Bytes huge;
  add(huge, std::uint32_t{0x7fffffff});
  put("fuzz_byte_ring", "patch_huge_record", patched(0, 0, huge));
  put("fuzz_byte_ring", "patch_padding_at_0", patched(8, 0, Bytes(4)));
  put("fuzz_byte_ring", "patch_tail_misaligned", patched(2, 3, {}));  // regression: tail % 8
  Bytes far;
  add(far, std::uint64_t{0x123456789abcdef8});
  put("fuzz_byte_ring", "patch_tail_far", patched(0x82, 0, far));
  put("fuzz_byte_ring", "patch_closed", patched(3, 0, {}));
  put("fuzz_byte_ring", "patch_raw",
      patched(1, 20, Bytes{std::byte{16}, std::byte{1}, std::byte{2}}));
  // Attach mode: the bytes of a real ring with two messages in it.
  const std::uint64_t cap = 128;
  Bytes mem(ipckit::ByteRing::bytes_for(cap) + 64);
  auto* aligned = reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(mem.data()) + 63) &
                                               ~std::uintptr_t{63});
  {
    auto ring = ipckit::ByteRing::at(std::span(aligned, ipckit::ByteRing::bytes_for(cap)), cap);
    (void)ring.try_send(bytes_of("one"));
    (void)ring.try_send(bytes_of("two two"));
  }
  // Deterministic bytes: no pids in the peer tables, no stack bytes in the policy's padding.
  auto* h = std::launder(reinterpret_cast<d::ByteRingHeader*>(aligned));
  ::new (&h->control.producers) d::PeerTable();
  ::new (&h->control.consumers) d::PeerTable();
  std::byte* policy =
      aligned + offsetof(d::ByteRingHeader, control) + offsetof(d::ChannelControl, policy);
  std::memset(
      policy + offsetof(ipckit::WaitPolicy, sleep) + 1, 0,
      offsetof(ipckit::WaitPolicy, check_interval) - offsetof(ipckit::WaitPolicy, sleep) - 1);
  Bytes attach{std::byte{1}};
  add(attach, std::span<const std::byte>(aligned, ipckit::ByteRing::bytes_for(cap)));
  put("fuzz_byte_ring", "attach_real_ring", attach);
  Bytes bad_policy = attach;  // regression: a `sleep` byte that is no bool
  bad_policy[1 + offsetof(d::ByteRingHeader, control) + offsetof(d::ChannelControl, policy) +
             offsetof(ipckit::WaitPolicy, sleep)] = std::byte{7};
  put("fuzz_byte_ring", "attach_bad_policy", bad_policy);
  put("fuzz_byte_ring", "attach_garbage", Bytes{std::byte{1}, std::byte{0x31}, std::byte{0x52}});
}

// ---- fuzz_codec ----
void codec_seeds() {
  int i = 0;
  const auto one = [&]<class T>(const T& v) {
    Bytes b{std::byte{static_cast<unsigned char>(i)}};
    add(b, codec::encode(v));
    put("fuzz_codec", "type" + std::to_string(i++), b);
  };
  one(std::int32_t{-5});
  one(3.25);
  one(true);
  one(Pod{1, 2, 3, 4.5});
  one(std::string("hello"));
  one(std::vector<std::int32_t>{1, -2, 3});
  one(std::vector<std::byte>{std::byte{1}, std::byte{2}});
  one(std::vector<Pod>{Pod{1, 2, 3, 4.0}, Pod{5, 6, 7, 8.0}});
  one(std::vector<std::string>{"a", "", "ccc"});
  one(std::optional<std::int64_t>{42});
  one(std::pair<std::int32_t, std::string>{7, "seven"});
  one(std::tuple<std::uint8_t, double, std::string>{1, 2.0, "three"});
  one(std::map<std::int32_t, std::string>{{1, "one"}, {2, "two"}});
  one(std::variant<std::int32_t, std::string, std::vector<std::uint16_t>>{std::string("v")});
  ipckit::fuzz::Nested n;
  n.name = "nested";
  n.pods = {Pod{1, 1, 1, 1.0}};
  n.extra = std::map<std::uint16_t, std::vector<std::string>>{{3, {"x", "yz"}}};
  n.flag = true;
  n.small = {1, -1, 2};
  n.tag = std::int64_t{99};
  one(n);
  one(std::set<std::uint32_t>{5, 1, 9});
  one(std::unordered_map<std::uint16_t, std::int64_t>{{1, -1}});
  one(std::vector<bool>{true, false, true});
  one(std::u16string(u"wide"));
  one(std::array<std::uint32_t, 4>{1, 2, 3, 4});
  one(std::vector<std::vector<std::int32_t>>{{1}, {}, {2, 3}});
  one(std::optional<std::string>{"maybe"});
  int k = 0;
  const auto seq = [&]<class T>(const std::vector<T>& vs) {
    Bytes b{std::byte{static_cast<unsigned char>(128 + k)},
            std::byte{static_cast<unsigned char>(vs.size())}};
    Bytes body;
    {
      codec::SeqWriter<T> w(body);
      for (const T& v : vs) w.add(v);
    }
    add(b, body);
    put("fuzz_codec", "seq" + std::to_string(k++), b);
  };
  seq(std::vector<std::int32_t>{1, 2, 3});
  seq(std::vector<Pod>{Pod{9, 8, 7, 6.0}});
  seq(std::vector<std::string>{"x", "yy"});
  seq(std::vector<std::pair<std::int32_t, std::vector<std::byte>>>{{1, {std::byte{2}}}, {3, {}}});
  seq(std::vector<ipckit::fuzz::Nested>{n, ipckit::fuzz::Nested{}});
  // Edge cases: a length far beyond the bytes, a bool byte of 2, a variant index out of range.
  Bytes long_len{std::byte{4}};
  add(long_len, std::uint64_t{1} << 60);
  put("fuzz_codec", "edge_long_length", long_len);
  put("fuzz_codec", "edge_bool_2", Bytes{std::byte{2}, std::byte{2}});
  Bytes bad_variant{std::byte{13}};
  add(bad_variant, std::int32_t{7});
  put("fuzz_codec", "edge_variant_index", bad_variant);
}

// ---- fuzz_pool_wire ----
// A first record of the fragment layer: the message's total, then its first bytes.
Bytes record_of(std::uint64_t total, const Bytes& body) {
  Bytes rec;
  add(rec, total);
  add(rec, body);
  return rec;
}
// A whole message in one record.
Bytes whole(const Bytes& m) { return record_of(m.size(), m); }
void pool_wire() {
  const auto input = [](std::uint8_t mode, std::uint8_t which, const std::vector<Bytes>& records) {
    Bytes b{std::byte{mode}, std::byte{which}};
    for (const Bytes& r : records) append_record(b, r);
    return b;
  };
  // Results, as a worker sends them.
  Bytes ok;
  add(ok, d::ResultFrame{1, d::ResultFrame::kOk, 3, 1500});
  {
    codec::SeqWriter<std::int32_t> w(ok);
    for (std::int32_t v : {2, 4, 6}) w.add(v);
  }
  put("fuzz_pool_wire", "result_ok", input(0, 0, {whole(ok)}));
  const Bytes head(ok.begin(), ok.begin() + 10), tail(ok.begin() + 10, ok.end());
  put("fuzz_pool_wire", "result_ok_fragments", input(0, 0, {record_of(ok.size(), head), tail}));
  Bytes strings;
  add(strings, d::ResultFrame{2, d::ResultFrame::kOk, 2, 10});
  {
    codec::SeqWriter<std::string> w(strings);
    w.add("ab");
    w.add("");
  }
  put("fuzz_pool_wire", "result_strings", input(0, 6, {whole(strings)}));
  Bytes err;
  add(err, d::ResultFrame{3, d::ResultFrame::kError, 1, 10});
  d::encode_error_text("std::runtime_error", "boom", err);
  put("fuzz_pool_wire", "result_error", input(0, 0, {whole(err)}));
  Bytes init;
  add(init, d::ResultFrame{0, d::ResultFrame::kInitError, 0, 0});
  d::encode_error_text("std::logic_error", "", init);
  put("fuzz_pool_wire", "result_init_error", input(0, 0, {whole(init)}));
  Bytes status = ok;  // regression: an unknown status was taken for an error
  status[8] = std::byte{9};
  put("fuzz_pool_wire", "result_bad_status", input(0, 0, {whole(status)}));
  put("fuzz_pool_wire", "result_past_total", input(0, 0, {record_of(ok.size() - 1, ok)}));

  // Tasks, as the driver sends them (PoolCore::send_chunk): frame, callable padded, inputs.
  const auto task = [&](unsigned which, const Bytes& fn, std::uint32_t count, const Bytes& args) {
    Bytes m;
    add(m, d::TaskFrame{7, {}, static_cast<std::uint32_t>(fn.size()), count});
    add(m, fn);
    m.resize(m.size() + d::pad8(fn.size()) - fn.size());
    add(m, args);
    put("fuzz_pool_wire", "task" + std::to_string(which),
        input(1, static_cast<std::uint8_t>(which), {whole(m)}));
  };
  const auto seq_of = [&]<class T>(std::initializer_list<T> vs) {
    Bytes b;
    codec::SeqWriter<T> w(b);
    for (const T& v : vs) w.add(v);
    return b;
  };
  Bytes fn;
  task(0, {}, 3, seq_of(std::initializer_list<std::int32_t>{1, 2, 3}));
  task(1, {}, 2, seq_of(std::initializer_list<std::string>{"a", "bcd"}));
  task(2, {}, 1, seq_of(std::initializer_list<std::tuple<std::int32_t, std::string>>{{4, "four"}}));
  task(3, {}, 1, seq_of(std::initializer_list<Pod>{Pod{1, 2, 3, 0.0}}));
  task(4, {}, 2, seq_of(std::initializer_list<std::int32_t>{5, 6}));
  d::encode_callable(ipckit::fuzz::make_adder(10), fn);
  task(5, fn, 2, seq_of(std::initializer_list<std::int32_t>{5, 6}));
  d::encode_callable(ipckit::fuzz::Prefixer{"pre-"}, fn);
  task(6, fn, 1, seq_of(std::initializer_list<std::string>{"fix"}));

  Bytes text;
  d::encode_error_text("ipckit::Error", "a message", text);
  Bytes et{std::byte{2}, std::byte{0}};
  add(et, text);
  put("fuzz_pool_wire", "error_text", et);
}

// ---- fuzz_spmd_header ----
void spmd() {
  // Mode 0: [0][real n][sizes][raw n][u16 len, bytes]...[dir byte][recv specs: how, size]
  Bytes p2p{std::byte{0}, std::byte{3}, std::byte{5}, std::byte{0}, std::byte{200}, std::byte{2}};
  Bytes piece;
  add(piece, std::uint64_t{4});
  add(piece, Bytes{std::byte{1}, std::byte{2}});
  add(p2p, static_cast<std::uint16_t>(piece.size()));
  add(p2p, piece);
  add(p2p, std::uint16_t{2});
  add(p2p, Bytes{std::byte{3}, std::byte{4}});
  p2p.push_back(std::byte{1});  // keep the directory
  for (std::uint8_t s : {5, 0, 200, 4, 9}) {
    p2p.push_back(std::byte{0});
    p2p.push_back(std::byte{s});
  }
  put("fuzz_spmd_header", "p2p_real_and_raw", p2p);
  Bytes wrong = p2p;  // a size that does not match: size_mismatch, then the next message
  wrong[wrong.size() - 9] = std::byte{6};
  put("fuzz_spmd_header", "p2p_size_mismatch", wrong);
  Bytes past{std::byte{0}, std::byte{0}, std::byte{1}};
  Bytes over;
  add(over, std::uint64_t{1});
  add(over, Bytes(5));
  add(past, static_cast<std::uint16_t>(over.size()));
  add(past, over);
  past.push_back(std::byte{1});
  past.push_back(std::byte{0});
  past.push_back(std::byte{1});
  put("fuzz_spmd_header", "p2p_piece_past_end", past);
  Bytes dir{std::byte{0}, std::byte{1}, std::byte{8}, std::byte{0}, std::byte{0}};
  add(dir, std::uint64_t{0x10000000});  // regression: a ring offset outside the mapping
  dir.push_back(std::byte{0});
  dir.push_back(std::byte{8});
  put("fuzz_spmd_header", "p2p_bad_directory", dir);
  // Mode 1: [1] then per parity: u64 size, u8 scale, u16 aux; u16 len + buffer; what; u16 n.
  Bytes coll{std::byte{1}};
  for (int p = 0; p < 2; ++p) {
    add(coll, std::uint64_t{16});
    coll.push_back(std::byte{0});
    add(coll, std::uint16_t{4});
  }
  add(coll, std::uint16_t{16});
  add(coll, Bytes(16, std::byte{1}));
  coll.push_back(std::byte{0});
  add(coll, std::uint16_t{2});
  put("fuzz_spmd_header", "coll_allreduce", coll);
  Bytes gather = coll;
  gather[gather.size() - 3] = std::byte{2};
  put("fuzz_spmd_header", "coll_gather", gather);
  Bytes bcast = coll;
  bcast[bcast.size() - 3] = std::byte{3};
  put("fuzz_spmd_header", "coll_broadcast", bcast);
}

}  // namespace

// ---- fuzz_fragment ----
void fragment() {
  // Mode 0: records from a hostile writer, limit 64 KiB.
  const auto hostile = [](const std::vector<Bytes>& records) {
    Bytes b{std::byte{0}};
    add(b, std::uint16_t{64});
    for (const Bytes& r : records) append_record(b, r);
    return b;
  };
  const Bytes body = bytes_of("a message in three records");
  const Bytes head(body.begin(), body.begin() + 5), mid(body.begin() + 5, body.begin() + 12),
      tail(body.begin() + 12, body.end());
  put("fuzz_fragment", "whole", hostile({whole(body), whole({})}));
  put("fuzz_fragment", "three_records", hostile({record_of(body.size(), head), mid, tail}));
  put("fuzz_fragment", "past_total", hostile({record_of(4, body)}));
  put("fuzz_fragment", "over_limit", hostile({record_of(std::uint64_t{1} << 40, head)}));
  put("fuzz_fragment", "short_header", hostile({Bytes{std::byte{1}, std::byte{2}}}));
  // Mode 1: round trips, records of 16 + param bytes, cut into parts at 3, 10 and 40.
  const auto trip = [](std::uint16_t param, const Bytes& msg) {
    Bytes b{std::byte{1}};
    add(b, param);
    add(b, std::uint16_t{3});
    add(b, std::uint16_t{10});
    add(b, std::uint16_t{40});
    add(b, msg);
    return b;
  };
  Bytes big(3000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7);
  put("fuzz_fragment", "trip_small", trip(100, body));
  put("fuzz_fragment", "trip_empty", trip(0, {}));
  put("fuzz_fragment", "trip_many_records", trip(0, big));
}

// ---- fuzz_link_frame: frames a Link sends, as [u8 control][u16 size][bytes] ----
void link_frame() {
  const auto frame = [](Bytes& out, std::uint8_t control, d::LinkKind kind, std::uint64_t value,
                        const Bytes& payload) {
    Bytes f;
    add(f, std::span<const std::byte>(d::link_header(kind, value)));
    add(f, std::span<const std::byte>(payload));
    add(out, control);
    add(out, static_cast<std::uint16_t>(f.size()));
    add(out, std::span<const std::byte>(f));
  };
  const Bytes hello = codec::encode(std::string("jobs"));
  Bytes msgs;
  frame(msgs, 0, d::LinkKind::message, hello.size(), hello);
  frame(msgs, 0, d::LinkKind::message, 0, {});
  put("fuzz_link_frame", "two_messages", msgs);
  Bytes seg;
  frame(seg, 1 | 4, d::LinkKind::segment, ipckit::Segment::kMinSize, {});
  frame(seg, 0, d::LinkKind::message, hello.size(), hello);
  put("fuzz_link_frame", "segment_then_message", seg);
  Bytes pipe_seg;
  frame(pipe_seg, 1, d::LinkKind::segment, ipckit::Segment::kMinSize, {});
  frame(pipe_seg, 2 | 4, d::LinkKind::segment, ipckit::Segment::kMinSize, {});
  put("fuzz_link_frame", "segment_of_a_pipe_and_two_fds", pipe_seg);
  Bytes shake;
  frame(shake, 0, d::LinkKind::welcome, 0, {});
  frame(shake, 8 | 16, d::LinkKind::message, 3, Bytes(3));
  put("fuzz_link_frame", "handshake_then_fixed_up", shake);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  pipe_frame();
  byte_ring();
  codec_seeds();
  pool_wire();
  spmd();
  fragment();
  link_frame();
  return 0;
}
