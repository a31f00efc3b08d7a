// SIGINT while a pool call waits: a process-wide handler, installed while any thread waits in
// a pool call (BlockingScope), that rings the doorbell of every pool handling SIGINT; each
// pool's driver then stops the pool if someone waits on it (driver.cpp, loop()).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <new>

#include "internal.hpp"

namespace ipckit::detail {
namespace {

constexpr int kMaxPools = 64;
// Doorbell fds of pools that handle SIGINT, stored as fd + 1 (0: free slot).
std::atomic<int> g_doorbells[kMaxPools];
std::atomic<std::uint64_t> g_sigint_count{0};
std::mutex g_sig_mu;
int g_blocked = 0;
bool g_installed = false;
struct sigaction g_previous {};

// Handlers running now: unregister_doorbell() waits for them, so that a handler never
// writes to a descriptor that was closed and reused in the meantime.
std::atomic<int> g_in_handler{0};

extern "C" void on_sigint(int) {
  const int saved = errno;
  g_in_handler.fetch_add(1, std::memory_order_seq_cst);
  g_sigint_count.fetch_add(1, std::memory_order_seq_cst);
  for (auto& slot : g_doorbells) {
    const int v = slot.load(std::memory_order_seq_cst);
    if (v > 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t r = ::write(v - 1, &one, sizeof one);
    }
  }
  g_in_handler.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved;
}

}  // namespace

void register_doorbell(int fd) {
  for (auto& slot : g_doorbells) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1, std::memory_order_seq_cst)) return;
  }
  // More than kMaxPools pools handling SIGINT at once: this one just is not interrupted.
}
void unregister_doorbell(int fd) {
  for (auto& slot : g_doorbells) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_seq_cst)) break;
  }
  // A handler that read the slot before it was cleared finishes its write first. (A handler
  // interrupting this very thread has returned before we get here.)
  while (g_in_handler.load(std::memory_order_seq_cst) != 0) cpu_relax();
}

namespace {

// A child forked while a pool call waits (by the program, not the pool) gets the program's
// own SIGINT disposition back: the pool's handler means nothing there.
void restore_sigint_in_child() noexcept {
  if (g_installed) ::sigaction(SIGINT, &g_previous, nullptr);
  g_installed = false;
  g_blocked = 0;
  new (&g_sig_mu) std::mutex();  // another thread of the parent may have held it at fork
}

thread_local bool t_in_driver = false;

}  // namespace

void write_doorbell(int fd) noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t r = ::write(fd, &one, sizeof one);
}

std::uint64_t sigint_count() noexcept { return g_sigint_count.load(std::memory_order_acquire); }
void mark_driver_thread() noexcept { t_in_driver = true; }
bool on_driver_thread() noexcept { return t_in_driver; }

BlockingScope::BlockingScope(PoolLink* link) : link_(nullptr) {
  check_may_block(link, "a wait for a pool result");
  if (link == nullptr || !link->handle_sigint) return;
  static const bool atfork = [] {
    ::pthread_atfork(nullptr, nullptr, restore_sigint_in_child);
    return true;
  }();
  (void)atfork;
  link_ = link;
  link_->blocking.fetch_add(1, std::memory_order_seq_cst);
  std::lock_guard lk(g_sig_mu);
  if (g_blocked++ == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // other threads' system calls go on; the pool's poll() wakes
    if (::sigaction(SIGINT, &sa, &g_previous) == 0) {
      g_installed = true;
      if (g_previous.sa_handler == SIG_IGN) {  // the program ignores SIGINT: keep it so
        ::sigaction(SIGINT, &g_previous, nullptr);
        g_installed = false;
      }
    }
  }
}

BlockingScope::~BlockingScope() {
  if (link_ == nullptr) return;
  {
    // The handler goes first: while it is installed, this caller still counts as waiting,
    // so a SIGINT in between is not swallowed.
    std::lock_guard lk(g_sig_mu);
    if (--g_blocked == 0 && g_installed) {
      ::sigaction(SIGINT, &g_previous, nullptr);
      g_installed = false;
    }
  }
  link_->blocking.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace ipckit::detail
