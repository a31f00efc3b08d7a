/// @file
/// Code addresses that mean the same in another process running the same program: the module
/// (the executable or a shared library) named by its GNU build id, and the offset from where
/// that module is loaded. A pool sends its trampolines and function-pointer callables this
/// way, so that a worker the forkserver made (another exec of the program, another load
/// address under ASLR) or another MPI rank finds the same code.
#pragma once

#include <cstdint>

namespace ipckit::detail {

/// A function's address, independent of where its module is loaded.
struct CodeAddress {
  /// FNV-1a of the module's GNU build id; of its path when it has none (the main program:
  /// "<main>"), so two builds without ids pass for the same one.
  std::uint64_t module = 0;
  std::uint64_t offset = 0;  ///< from the module's load address
  friend bool operator==(const CodeAddress&, const CodeAddress&) = default;
};

/// The portable form of `p`, an address inside a loaded module. Throws
/// Error(errc::invalid_argument) when `p` lies in no module (a JIT buffer, say).
/// Thread-safe; lock-free after the first call (a snapshot of the loaded modules is kept and
/// taken again only when a library was loaded since).
CodeAddress to_code_address(const void* p);

/// The address `a` names in this process. Throws Error(errc::not_found) when no loaded module
/// has its build id (another build of the program, or a library this process did not load).
const void* from_code_address(const CodeAddress& a);

/// Takes the snapshot of the loaded modules now if there is none: call it before forking
/// processes that will resolve code addresses, so that they inherit it.
void prime_code_addresses();

/// This process never takes a snapshot again (from_code_address() of an unknown module is then
/// errc::not_found): for a forked child, where another thread of the parent may have held the
/// loader's lock that taking one needs (dl_iterate_phdr) at the fork, held forever.
void freeze_code_addresses() noexcept;

/// to_code_address() of a function pointer.
template <class Fn>
CodeAddress code_address_of(Fn* fn) {
  return to_code_address(reinterpret_cast<const void*>(fn));  // NOLINT: a code address
}

/// from_code_address() as a function pointer of type Fn*.
template <class Fn>
Fn* function_at(const CodeAddress& a) {
  return reinterpret_cast<Fn*>(const_cast<void*>(from_code_address(a)));  // NOLINT
}

}  // namespace ipckit::detail
