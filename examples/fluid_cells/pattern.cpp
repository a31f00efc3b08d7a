#include "pattern.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <new>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace fluid {
namespace {

constexpr std::size_t kLine = 8;  // doubles per 64-byte line

struct Free {
  void operator()(double* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
};
using Lines = std::unique_ptr<double[], Free>;

Lines lines(std::size_t n, double v) {
  Lines p(static_cast<double*>(::operator new[](n * sizeof(double), std::align_val_t{64})));
  std::fill(p.get(), p.get() + n, v);
  return p;
}

// One line of `src` plus one into `dst`, with streaming stores where the target has them.
inline void stream_line(double* dst, const double* src) noexcept {
#if defined(__AVX512F__)
  _mm512_stream_pd(dst, _mm512_add_pd(_mm512_load_pd(src), _mm512_set1_pd(1.0)));
#elif defined(__AVX__)
  for (std::size_t j = 0; j < kLine; j += 4) {
    _mm256_stream_pd(dst + j, _mm256_add_pd(_mm256_load_pd(src + j), _mm256_set1_pd(1.0)));
  }
#elif defined(__SSE2__)
  for (std::size_t j = 0; j < kLine; j += 2) {
    _mm_stream_pd(dst + j, _mm_add_pd(_mm_load_pd(src + j), _mm_set1_pd(1.0)));
  }
#else
  for (std::size_t j = 0; j < kLine; ++j) dst[j] = src[j] + 1.0;
#endif
}

}  // namespace

double pattern_seconds(std::size_t n, int reps, bool in_place) {
  n = n / kLine * kLine;
  Lines in[9], out[9];
  for (int i = 0; i < 9; ++i) {
    in[i] = lines(n, 1.0);
    if (!in_place) out[i] = lines(n, 0.0);
  }
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t k = 0; k < n; k += kLine) {
      for (int i = 0; i < 9; ++i) {
        double* src = in[i].get() + k;
        if (in_place) {
          for (std::size_t j = 0; j < kLine; ++j) src[j] += 1.0;
        } else {
          stream_line(out[i].get() + k, src);
        }
      }
    }
#if defined(__SSE2__)
    _mm_sfence();
#endif
    // Keep the passes from being folded away: one value of each pass escapes.
    volatile double sink = in_place ? in[8][n - 1] : out[8][n - 1];
    (void)sink;
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace fluid
