#include "wire.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <typeinfo>

#include "ipckit/pool/errors.hpp"

namespace ipckit::detail {

TaskMessage parse_task(std::span<const std::byte> msg) {
  TaskMessage t;
  if (msg.size() < sizeof t.frame) throw_codec("pool: a task message shorter than its frame");
  std::memcpy(&t.frame, msg.data(), sizeof t.frame);
  const std::size_t fn_end = sizeof t.frame + pad8(t.frame.fn_size);
  if (fn_end > msg.size()) {
    throw_codec("pool: a callable of " + std::to_string(t.frame.fn_size) +
                " bytes runs past the task message's " + std::to_string(msg.size()));
  }
  t.fn = msg.subspan(sizeof t.frame, t.frame.fn_size);
  t.args = msg.subspan(fn_end);
  return t;
}

ResultMessage parse_result(std::span<const std::byte> msg) {
  ResultMessage r;
  if (msg.size() < sizeof r.frame) throw_codec("pool: a result message shorter than its frame");
  std::memcpy(&r.frame, msg.data(), sizeof r.frame);
  const std::uint32_t st = r.frame.status;
  if (st != ResultFrame::kOk && st != ResultFrame::kError && st != ResultFrame::kInitError) {
    throw_codec("pool: a result of unknown status " + std::to_string(st));
  }
  if (r.frame.busy_ns > kMaxBusyNs) {
    throw_codec("pool: a result that ran " + std::to_string(r.frame.busy_ns) + " ns");
  }
  r.payload = msg.subspan(sizeof r.frame);
  return r;
}

namespace {
void put_string(std::vector<std::byte>& out, const std::string& s) {
  const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(s.size(), 1u << 20));
  const std::size_t at = out.size();
  out.resize(at + 4 + n);
  std::memcpy(out.data() + at, &n, 4);
  std::memcpy(out.data() + at + 4, s.data(), n);
}
std::string get_string(std::span<const std::byte>& in) {
  std::uint32_t n = 0;
  if (in.size() < 4) throw_codec("pool: truncated error record");
  std::memcpy(&n, in.data(), 4);
  if (in.size() - 4 < n) throw_codec("pool: truncated error record");
  std::string s(reinterpret_cast<const char*>(in.data() + 4), n);
  in = in.subspan(4 + n);
  return s;
}
}  // namespace

void encode_error_text(const std::string& type, const std::string& message,
                       std::vector<std::byte>& out, const std::string& registered,
                       std::span<const std::byte> blob) {
  put_string(out, type);
  put_string(out, message);
  if (registered.empty()) return;
  put_string(out, registered);
  out.insert(out.end(), blob.begin(), blob.end());
}

ErrorText decode_error_text(std::span<const std::byte> payload) {
  ErrorText t;
  t.type = get_string(payload);
  t.message = get_string(payload);
  if (payload.empty()) return t;
  t.registered = get_string(payload);
  if (t.registered.empty()) throw_codec("pool: an error record with an empty registered name");
  t.blob.assign(payload.begin(), payload.end());
  return t;
}
namespace {
std::string demangle(const char* name) {
  int status = 0;
  char* s = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && s != nullptr) ? s : name;
  std::free(s);
  return out;
}

}  // namespace

// The exception being handled, as type name and message.
void encode_current_exception(std::vector<std::byte>& out) {
  const std::type_info* t = abi::__cxa_current_exception_type();
  std::string type = t != nullptr ? demangle(t->name()) : "unknown exception";
  std::string message;
  try {
    throw;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  std::string registered;
  std::vector<std::byte> blob;
  (void)encode_current_registered(registered, blob);
  out.clear();
  encode_error_text(type, message, out, registered, blob);
}

std::exception_ptr decode_remote_error(std::span<const std::byte> in, pid_t pid,
                                       const std::string& where) {
  ErrorText text = decode_error_text(in);
  if (!text.registered.empty()) {
    if (auto e = decode_registered(text.registered, text.message, text.blob)) return e;
  }
  return std::make_exception_ptr(
      RemoteError(std::move(text.type), std::move(text.message), pid, where));
}

}  // namespace ipckit::detail
