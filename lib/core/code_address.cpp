// The module table behind CodeAddress: one immutable snapshot of the loaded modules (their
// address ranges, load addresses and build ids), published through an atomic pointer. It is
// taken again only when dl_iterate_phdr's load counter moved (a dlopen since), so the hot
// path takes no lock: a worker forked while another thread held a lock here would otherwise
// wait for it forever. Replaced snapshots are kept (one per dlopen that mattered): a reader
// may still hold one.
#include "ipckit/core/code_address.hpp"

#include <elf.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "ipckit/core/error.hpp"

namespace ipckit::detail {
namespace {

struct Module {
  std::uintptr_t base = 0;  // load address (dlpi_addr)
  std::uintptr_t lo = 0;    // its PT_LOAD segments span [lo, hi)
  std::uintptr_t hi = 0;
  std::uint64_t key = 0;
};

struct Snapshot {
  unsigned long long adds = 0;  // dl_iterate_phdr's load count when taken
  std::vector<Module> modules;
  const Snapshot* older = nullptr;  // kept alive, never read
};

std::atomic<const Snapshot*> g_snapshot{nullptr};
bool g_frozen = false;  // set in a forked child before it resolves anything

std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// The GNU build id among the module's notes, as a hash; 0 when it has none.
std::uint64_t build_id_key(const dl_phdr_info& info) {
  for (int i = 0; i < info.dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info.dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the loader gives addresses as integers
    const auto* p = reinterpret_cast<const unsigned char*>(info.dlpi_addr + ph.p_vaddr);
    std::size_t left = ph.p_memsz;
    while (left >= sizeof(ElfW(Nhdr))) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const std::size_t name = (nh.n_namesz + 3) & ~std::size_t{3};
      const std::size_t desc = (nh.n_descsz + 3) & ~std::size_t{3};
      const std::size_t whole = sizeof nh + name + desc;
      if (whole > left) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
          std::memcmp(p + sizeof nh, "GNU", 4) == 0) {
        return fnv1a(p + sizeof nh + name, nh.n_descsz);
      }
      p += whole;
      left -= whole;
    }
  }
  return 0;
}

const Snapshot* take_snapshot() {
  auto* s = new Snapshot;
  (void)::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* arg) {
        auto* snap = static_cast<Snapshot*>(arg);
        snap->adds = info->dlpi_adds;
        Module m;
        m.base = info->dlpi_addr;
        m.lo = UINTPTR_MAX;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          m.lo = std::min<std::uintptr_t>(m.lo, info->dlpi_addr + ph.p_vaddr);
          m.hi = std::max<std::uintptr_t>(m.hi, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        if (m.lo >= m.hi) return 0;
        m.key = build_id_key(*info);
        if (m.key == 0) {
          const char* name = info->dlpi_name;
          // The main program is the one with an empty name (or the first one).
          const std::string_view n = (name == nullptr || *name == '\0') ? "<main>" : name;
          const std::string_view base =
              n.substr(n.rfind('/') == std::string_view::npos ? 0 : n.rfind('/') + 1);
          m.key = fnv1a(base.data(), base.size());
        }
        snap->modules.push_back(m);
        return 0;
      },
      s);
  return s;
}

// The current snapshot; a new one when a library was loaded since (or `force`).
const Snapshot* snapshot(bool refresh) {
  const Snapshot* cur = g_snapshot.load(std::memory_order_acquire);
  if (cur != nullptr && (!refresh || g_frozen)) return cur;
  if (g_frozen) {
    static const Snapshot empty;
    return &empty;
  }
  const Snapshot* fresh = take_snapshot();
  if (cur != nullptr && fresh->adds == cur->adds) {
    delete fresh;  // nothing was loaded since: the old one was right
    return cur;
  }
  const_cast<Snapshot*>(fresh)->older = cur;
  if (g_snapshot.compare_exchange_strong(cur, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;  // another thread published first: theirs is as new
  return cur;
}

const Module* by_address(const Snapshot& s, std::uintptr_t a) {
  for (const Module& m : s.modules) {
    if (a >= m.lo && a < m.hi) return &m;
  }
  return nullptr;
}

const Module* by_key(const Snapshot& s, std::uint64_t key) {
  for (const Module& m : s.modules) {
    if (m.key == key) return &m;
  }
  return nullptr;
}

}  // namespace

void prime_code_addresses() { (void)snapshot(false); }

void freeze_code_addresses() noexcept { g_frozen = true; }

CodeAddress to_code_address(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const Snapshot* s = snapshot(false);
  const Module* m = by_address(*s, a);
  if (m == nullptr) m = by_address(*snapshot(true), a);
  if (m == nullptr) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%p", p);
    throw Error(errc::invalid_argument, std::string("code address ") + buf +
                                            " lies in no loaded module: it cannot be sent to "
                                            "another process");
  }
  return {m->key, a - m->base};
}

const void* from_code_address(const CodeAddress& a) {
  const Snapshot* s = snapshot(false);
  const Module* m = by_key(*s, a.module);
  if (m == nullptr) m = by_key(*snapshot(true), a.module);
  if (m == nullptr || a.offset >= m->hi - m->base) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%016llx+0x%llx", static_cast<unsigned long long>(a.module),
                  static_cast<unsigned long long>(a.offset));
    throw Error(errc::not_found,
                std::string("code address ") + buf +
                    ": no module with that build id is loaded here (another build of the "
                    "program, or a library this process did not load)");
  }
  return reinterpret_cast<const void*>(m->base + a.offset);  // NOLINT(performance-no-int-to-ptr)
}

}  // namespace ipckit::detail
