// The exception registry: an immutable snapshot behind an atomic pointer, replaced on each
// registration (old snapshots are kept: a reader may hold one). A worker reads it while
// reporting a task's exception, so it takes no lock a thread of the parent could have held
// at fork time.
#include "ipckit/pool/exceptions.hpp"

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

}  // namespace ipckit::detail
