// The SIGBUS guard of named segments (see segment_internal.hpp and the comment below).
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "ipckit/core/error.hpp"
#include "segment_internal.hpp"

namespace ipckit::segment_detail {
namespace {

// ---- truncation guard ------------------------------------------------------------------------
// A same-user peer can ftruncate() a named segment's file under the processes that map it;
// their next access past the new end raises SIGBUS, which no check can fully forestall (the
// file may shrink between an fstat() and the access). So every process that maps a named
// segment registers the mapping here, and a SIGBUS inside a registered mapping replaces the
// pages from the faulting one to the mapping's end with private zero pages and returns: the
// access completes on zeros ("nothing there"), and the next check_backing() (every blocking
// call runs one before and between sleeps; every heap call runs one) reports errc::bad_layout.
// A SIGBUS anywhere else goes to the handler that was there before (or kills as usual).
struct GuardedMapping {
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> size{0};
};
constexpr std::size_t kMaxGuarded = 1024;
std::array<GuardedMapping, kMaxGuarded> guarded;
struct sigaction previous_sigbus {};
std::uintptr_t page_size = 4096;

void call_previous(int sig, siginfo_t* info, void* context) {
  if ((previous_sigbus.sa_flags & SA_SIGINFO) != 0 && previous_sigbus.sa_sigaction != nullptr) {
    previous_sigbus.sa_sigaction(sig, info, context);
  } else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
    previous_sigbus.sa_handler(sig);
  } else {
    // Default action: restore it; returning re-runs the access, which faults again and dies.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGBUS, &dfl, nullptr);
  }
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (const auto& g : guarded) {
    const std::uintptr_t base = g.base.load(std::memory_order_acquire);
    const std::size_t size = g.size.load(std::memory_order_acquire);
    if (base == 0 || at < base || at >= base + size) continue;
    const std::uintptr_t page = at & ~(page_size - 1);
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the faulting page, from the kernel's si_addr
    void* p = ::mmap(reinterpret_cast<void*>(page), base + size - page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != MAP_FAILED) return;
    break;
  }
  call_previous(sig, info, context);
}

}  // namespace

void guard_mapping(std::byte* base, std::size_t size) {
  static const bool installed = [] {
    page_size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    ::sigemptyset(&sa.sa_mask);
    return ::sigaction(SIGBUS, &sa, &previous_sigbus) == 0;
  }();
  if (!installed) return;
  constexpr std::uintptr_t kTaken = 1;  // a slot being filled: matches no address
  for (auto& g : guarded) {
    std::uintptr_t none = 0;
    if (g.base.load(std::memory_order_relaxed) != 0 ||
        !g.base.compare_exchange_strong(none, kTaken, std::memory_order_acq_rel)) {
      continue;
    }
    g.size.store(size, std::memory_order_release);
    g.base.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    return;
  }
  // More than kMaxGuarded named segments mapped at once: this one is unguarded.
}

void unguard_mapping(std::byte* base) noexcept {
  for (auto& g : guarded) {
    std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(base);
    if (g.base.compare_exchange_strong(mine, 0, std::memory_order_acq_rel)) return;
  }
}

// A file mapping of a named segment (MAP_SHARED over its descriptor), guarded against
// truncation.
std::byte* map_file(int fd, std::size_t size, const std::string& what) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno(what + ": mmap(" + std::to_string(size) + " bytes)");
  guard_mapping(static_cast<std::byte*>(p), size);
  return static_cast<std::byte*>(p);
}

}  // namespace ipckit::segment_detail
