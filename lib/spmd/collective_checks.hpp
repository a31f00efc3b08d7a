// Argument checks every Comm backend makes on the collectives with counts (lib/spmd/comm.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipckit::detail {

// True when there is one count and one displacement per rank (n) and every block
// [displs[r], displs[r] + counts[r]) lies inside a buffer of `bytes`.
bool blocks_fit(std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                std::size_t bytes, int n) noexcept;

// A hash of a counts array (FNV-1a): equal on ranks that pass equal counts, so that ranks
// compare one word instead of the arrays.
std::uint64_t hash_of(std::span<const std::size_t> counts) noexcept;

}  // namespace ipckit::detail
