// fuzz_pool_wire: the pool's messages as each side reads them from its ring. The input is
// [mode][which][records...], each record [u16 size][bytes] as one ring record would hold it.
//  - mode 0, the driver: fragments are reassembled as PoolCore::collect does, each whole
//    message is parsed as a result (parse_result), and its payload decoded as the results of
//    invoker `which` (kOk) or as an exception's text (kError, kInitError).
//  - mode 1, a worker: fragments reassembled as worker_main does, each whole message parsed
//    as a task (parse_task) and run by trampoline `which` (the frame's invoker address is
//    not followed: only the driver writes it, see lib/pool/wire.hpp), whose results must then
//    decode as the driver would.
//  - mode 2: the payload of a failed task (decode_error_text), which must round-trip.
// Only errc::bad_frame may come out of a parser or decoder.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "channel/fragment.hpp"
#include "fuzz_support.hpp"
#include "pool/wire.hpp"
#include "pool_wire_types.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
using ipckit::fuzz::expect;
using ipckit::fuzz::fail;
namespace d = ipckit::detail;

// Feeds records through the fragment layer's reader, as the driver and the worker do; calls
// on_message for each whole message.
template <class F>
void reassemble(const std::vector<std::span<const std::byte>>& records, F&& on_message) {
  d::FragmentReader reader(std::uint64_t{1} << 20);
  for (const auto& rec : records) {
    std::optional<d::FragmentReader::Message> msg;
    try {
      msg = reader.feed(rec, "fuzz");
    } catch (const Error& e) {
      expect(e, {errc::bad_frame});
      return;  // the reader stops trusting the writer here
    }
    if (msg) on_message(msg->bytes);
  }
}

void driver(unsigned which, std::span<const std::byte> msg) {
  d::ResultMessage m;
  try {
    m = d::parse_result(msg);
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  if (m.frame.busy_ns > d::kMaxBusyNs) fail("a busy time beyond kMaxBusyNs");
  // The driver decodes the count of the chunk it sent (a frame whose count differs is out of
  // protocol), never a count the worker made up: void results (Units) take no bytes, so a
  // made-up count would only measure push_back. Chunks are far smaller than this.
  if (m.frame.count > (1u << 16)) return;
  try {
    if (m.frame.status == d::ResultFrame::kOk) {
      ipckit::fuzz::decode_results_of(which, m.payload, m.frame.count);
    } else if (m.frame.status == d::ResultFrame::kError ||
               m.frame.status == d::ResultFrame::kInitError) {
      (void)d::decode_error_text(m.payload);
    } else {
      fail("parse_result let an unknown status through");
    }
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
  }
}

void worker(unsigned which, std::span<const std::byte> msg) {
  d::TaskMessage t;
  try {
    t = d::parse_task(msg);
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  if (t.fn.size() != t.frame.fn_size || t.fn.data() + t.fn.size() > msg.data() + msg.size() ||
      t.args.data() + t.args.size() != msg.data() + msg.size()) {
    fail("parse_task gave spans outside the message");
  }
  // Prefixer's output is its prefix per input: keep the product of the two small.
  if (which % ipckit::fuzz::kInvokers == 6 && t.fn.size() > 256) return;
  std::vector<std::byte> out;
  try {
    ipckit::fuzz::invoker(which)(t.fn, t.args, t.frame.count, out);
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  // What the worker would send back must decode on the driver's side.
  ipckit::fuzz::decode_results_of(which, out, t.frame.count);
}

void error_text(std::span<const std::byte> payload) {
  d::ErrorText t;
  try {
    t = d::decode_error_text(payload);
  } catch (const Error& e) {
    expect(e, {errc::bad_frame});
    return;
  }
  std::vector<std::byte> again;
  d::encode_error_text(t.type, t.message, again, t.registered, t.blob);
  if (again.size() != payload.size() ||
      std::memcmp(again.data(), payload.data(), again.size()) != 0) {
    fail("an error text does not round-trip");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return -1;
  ipckit::fuzz::Input in(data, size);
  const std::uint8_t mode = in.take<std::uint8_t>() % 3;
  const std::uint8_t which = in.take<std::uint8_t>();
  if (mode == 2) {
    error_text(in.rest());
    return 0;
  }
  const auto records = ipckit::fuzz::split_records(in, 64);
  if (mode == 0) {
    reassemble(records, [&](std::span<const std::byte> m) { driver(which, m); });
  } else {
    reassemble(records, [&](std::span<const std::byte> m) { worker(which, m); });
  }
  return 0;
}
