// The lattice update's memory pattern without its arithmetic, for fluid_bench: what it reaches
// is the bandwidth the solver can hope for. Compiled with the kernel's flags (lbm.cpp's), so
// that both use the same vector width.
#pragma once

#include <cstddef>

namespace fluid {

// The best of `reps` passes over 9 arrays of n doubles, in seconds. in_place (the kernel's
// AA pattern): the 9 arrays read and written back a line at a time, all 9 at once. Otherwise
// (the two-copy pattern the kernel used before): 9 arrays in and 9 out written with
// streaming stores, a whole line at a time, 18 streams at once. Either moves 144 bytes per
// cell.
double pattern_seconds(std::size_t n, int reps, bool in_place);

}  // namespace fluid
