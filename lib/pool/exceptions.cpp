// The exception registry: an immutable snapshot behind an atomic pointer, replaced on each
// registration (old snapshots are kept: a reader may hold one). A worker reads it while
// reporting a task's exception, so it takes no lock a thread of the parent could have held
// at fork time.
#include "ipckit/pool/exceptions.hpp"

#include <cxxabi.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace ipckit::detail {
namespace {

struct Snapshot {
  std::vector<ExceptionCodec> codecs;  // latest first
  const Snapshot* older = nullptr;     // kept alive, never read
};
std::atomic<const Snapshot*> g_codecs{nullptr};
std::mutex g_write_mu;  // registrations only

}  // namespace

void add_exception_codec(const char* mangled_name, ExceptionEncoder enc, ExceptionDecoder dec) {
  const std::lock_guard lk(g_write_mu);
  const Snapshot* cur = g_codecs.load(std::memory_order_acquire);
  auto* next = new Snapshot;
  next->codecs.push_back({mangled_name, enc, dec});
  if (cur != nullptr) {
    for (const ExceptionCodec& c : cur->codecs) {
      if (c.name != mangled_name) next->codecs.push_back(c);
    }
  }
  next->older = cur;
  g_codecs.store(next, std::memory_order_release);
}

std::span<const ExceptionCodec> exception_codecs() noexcept {
  const Snapshot* s = g_codecs.load(std::memory_order_acquire);
  if (s == nullptr) return {};
  return s->codecs;
}

bool encode_current_registered(std::string& name, std::vector<std::byte>& blob) {
  name.clear();
  blob.clear();
  const auto codecs = exception_codecs();
  if (codecs.empty()) return false;
  const std::exception_ptr p = std::current_exception();
  const std::type_info* t = abi::__cxa_current_exception_type();
  const ExceptionCodec* exact = nullptr;
  for (const ExceptionCodec& c : codecs) {
    if (t != nullptr && c.name == t->name()) exact = &c;
  }
  try {
    if (exact != nullptr && exact->encode(p, blob)) {
      name = exact->name;
      return true;
    }
    for (const ExceptionCodec& c : codecs) {
      if (c.encode(p, blob)) {
        name = c.name;
        return true;
      }
    }
  } catch (...) {  // its serialize() threw: no registered form
  }
  name.clear();
  blob.clear();
  return false;
}

std::exception_ptr decode_registered(const std::string& name, std::string_view message,
                                     std::span<const std::byte> blob) noexcept {
  for (const ExceptionCodec& c : exception_codecs()) {
    if (c.name != name) continue;
    try {
      return c.decode(message, blob);
    } catch (...) {
      return nullptr;
    }
  }
  return nullptr;
}

}  // namespace ipckit::detail
