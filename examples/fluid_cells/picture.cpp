// The pictures of output.hpp: the speed map with stream-function contours and the vorticity
// map, drawn on an RGB canvas with a 5 x 7 pixel font and written with libpng.
#include <png.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "output.hpp"
#include "output_detail.hpp"

namespace fluid {
namespace {

using detail::check;
using detail::check_u_ref;
using detail::OutFile;

// ---------------------------------------------------------------------------------------------
// Pictures

struct Rgb {
  std::uint8_t r, g, b;
};

// Colour maps, interpolated linearly between evenly spaced entries: 33 samples of matplotlib's
// viridis (CC0; within 3/255 of its table), and ColorBrewer's RdBu reversed (its 11 defining
// colours, as matplotlib's RdBu_r), white at the middle.
constexpr std::array<Rgb, 33> kViridis{
    {{68, 1, 84},    {71, 13, 96},   {72, 24, 106},  {72, 35, 116},  {71, 45, 123},  {69, 55, 129},
     {66, 64, 134},  {62, 73, 137},  {59, 82, 139},  {55, 91, 141},  {51, 99, 141},  {47, 107, 142},
     {44, 114, 142}, {41, 122, 142}, {38, 130, 142}, {35, 137, 142}, {33, 145, 140}, {31, 152, 139},
     {31, 160, 136}, {34, 167, 133}, {40, 174, 128}, {50, 182, 122}, {63, 188, 115}, {78, 195, 107},
     {94, 201, 98},  {112, 207, 87}, {132, 212, 75}, {152, 216, 62}, {173, 220, 48}, {194, 223, 35},
     {216, 226, 25}, {236, 229, 27}, {253, 231, 37}}};
constexpr std::array<Rgb, 11> kBlueRed{{{5, 48, 97},
                                        {33, 102, 172},
                                        {67, 147, 195},
                                        {146, 197, 222},
                                        {209, 229, 240},
                                        {247, 247, 247},
                                        {253, 219, 199},
                                        {244, 165, 130},
                                        {214, 96, 77},
                                        {178, 24, 43},
                                        {103, 0, 31}}};
constexpr Rgb kNanGrey{128, 128, 128};
constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kInk{32, 32, 32};

Rgb colour(std::span<const Rgb> map, double t) {
  if (std::isnan(t)) return kNanGrey;
  t = std::clamp(t, 0.0, 1.0) * static_cast<double>(map.size() - 1);
  const auto i = std::min(static_cast<std::size_t>(t), map.size() - 2);
  const double w = t - static_cast<double>(i);
  const auto mix = [w](std::uint8_t a, std::uint8_t b) {
    return static_cast<std::uint8_t>(std::lround(a + w * (b - a)));
  };
  return {mix(map[i].r, map[i + 1].r), mix(map[i].g, map[i + 1].g), mix(map[i].b, map[i + 1].b)};
}

// 5 x 7 glyphs, one byte per row, bit 4 is the leftmost column. Only what the labels and the
// captions use: a %g number and "|u|/U", "vorticity".
struct Glyph {
  char c;
  std::array<std::uint8_t, 7> rows;
};
constexpr std::array<Glyph, 26> kFont{{
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'|', {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
}};
constexpr int kFontScale = 2;  // each font pixel is 2 x 2 image pixels
constexpr int kGlyphW = 5 * kFontScale;
constexpr int kGlyphH = 7 * kFontScale;
constexpr int kAdvance = kGlyphW + kFontScale;  // one font pixel between characters

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<std::size_t>(w) * h * 3, 255) {}

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    std::uint8_t* p = &px_[(static_cast<std::size_t>(y) * w_ + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void fill(int x, int y, int w, int h, Rgb c) {
    for (int j = y; j < y + h; ++j) {
      for (int i = x; i < x + w; ++i) set(i, j, c);
    }
  }
  // Mixes `c` into pixel (x, y) with weight `a` in [0, 1].
  void blend(int x, int y, Rgb c, double a) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    auto* p = &px_[(static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + x) * 3];
    const auto mix = [a](std::uint8_t from, std::uint8_t to) {
      return static_cast<std::uint8_t>(std::lround(from + a * (to - from)));
    };
    p[0] = mix(p[0], c.r);
    p[1] = mix(p[1], c.g);
    p[2] = mix(p[2], c.b);
  }
  // A one-pixel frame just outside the rectangle.
  void frame(int x, int y, int w, int h, Rgb c) {
    fill(x - 1, y - 1, w + 2, 1, c);
    fill(x - 1, y + h, w + 2, 1, c);
    fill(x - 1, y, 1, h, c);
    fill(x + w, y, 1, h, c);
  }
  // Text with its top-left corner at (x, y); characters outside the font are left blank.
  void text(int x, int y, std::string_view s, Rgb c) {
    for (const char ch : s) {
      const auto g =
          std::find_if(kFont.begin(), kFont.end(), [ch](const Glyph& gl) { return gl.c == ch; });
      if (g != kFont.end()) {
        for (int row = 0; row < 7; ++row) {
          for (int col = 0; col < 5; ++col) {
            if ((g->rows[row] >> (4 - col) & 1) != 0) {
              fill(x + col * kFontScale, y + row * kFontScale, kFontScale, kFontScale, c);
            }
          }
        }
      }
      x += kAdvance;
    }
  }

  void save_png(const std::string& path) const {
    OutFile file(path);
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    image.width = static_cast<png_uint_32>(w_);
    image.height = static_cast<png_uint_32>(h_);
    image.format = PNG_FORMAT_RGB;
    // The simplified API keeps libpng's longjmp error handling inside libpng.
    errno = 0;
    if (png_image_write_to_stdio(&image, file.get(), 0, px_.data(), 0, nullptr) == 0) {
      const int err = errno;
      const std::string msg = image.message;
      png_image_free(&image);
      throw std::runtime_error("writing PNG \"" + path + "\" failed: " + msg +
                               (err != 0 ? std::string(" (") + std::strerror(err) + ")" : ""));
    }
    file.close();
  }

 private:
  int w_, h_;
  std::vector<std::uint8_t> px_;
};

std::string label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v == 0.0 ? 0.0 : v);  // no "-0"
  return buf;
}

// How values map to the colour map: linearly from lo to hi, or, with soft > 0 (and lo = -hi),
// on an asinh scale: linear within about +-soft, logarithmic beyond, so that a few extreme
// cells (the lid corners of the cavity) keep their colour without washing out the rest.
struct Scale {
  double lo = 0, hi = 1;
  double soft = 0;
  [[nodiscard]] double to_unit(double v) const {
    if (soft > 0) return 0.5 + 0.5 * std::asinh(v / soft) / std::asinh(hi / soft);
    return (v - lo) / (hi - lo);
  }
};

// Lines of a field drawn over the picture: where floor(level / spacing) changes between
// neighbouring pixels (level interpolated bilinearly between cell centres).
struct Contours {
  const std::vector<double>* level = nullptr;  // one per cell; nullptr: no lines
  double spacing = 1;
};

// Draws `value` (one double per cell, NaN allowed) through `map` on `scale`, with `lines`
// over it, and a vertical colour bar on the right labelled at both ends and at `ticks`.
void draw_field_png(const std::string& path, const Field& f, const std::vector<double>& value,
                    Scale scale, std::span<const Rgb> map, std::string_view caption,
                    const std::vector<double>& ticks, const Contours& lines) {
  if (!(scale.hi > scale.lo)) scale.hi = scale.lo + 1.0;  // a uniform (or empty) field
  // Pixels per cell: an integer >= 1 while the larger side is <= 1024 cells, else below 1.
  const int big = std::max(f.nx, f.ny);
  const double ppc = big <= 1024 ? static_cast<double>((512 + big - 1) / big) : 1024.0 / big;
  const int fw = std::max(1, static_cast<int>(std::lround(f.nx * ppc)));
  const int fh = std::max(1, static_cast<int>(std::lround(f.ny * ppc)));

  const std::string top = label(scale.hi), bottom = label(scale.lo);
  const int pad = kGlyphH + 10;  // room for the caption above the bar
  const int gap = 16, bar_w = 20, tick = 5, label_gap = 6;
  const int bar_h = std::max(fh, 4 * kGlyphH);
  const auto text_w = [](std::string_view s) { return static_cast<int>(s.size()) * kAdvance; };
  int labels_w = std::max(text_w(top), text_w(bottom));
  for (const double t : ticks) labels_w = std::max(labels_w, text_w(label(t)));
  const int column_w = std::max(bar_w + tick + label_gap + labels_w, text_w(caption));
  Canvas c(pad + fw + gap + column_w + pad, pad + std::max(fh, bar_h) + pad);

  const int fx = pad, fy = pad;
  for (int py = 0; py < fh; ++py) {
    // Top image row = top of the domain; sample the cell under the pixel's centre.
    const int y = f.ny - 1 - std::min(f.ny - 1, static_cast<int>((py + 0.5) / ppc));
    for (int px = 0; px < fw; ++px) {
      const int x = std::min(f.nx - 1, static_cast<int>((px + 0.5) / ppc));
      c.set(fx + px, fy + py, colour(map, scale.to_unit(value[f.index(x, y)])));
    }
  }
  if (lines.level != nullptr) {
    const std::vector<double>& lv = *lines.level;
    // The band index of each pixel, from the level at the pixel centre (cell coordinates).
    std::vector<long> band(static_cast<std::size_t>(fw) * static_cast<std::size_t>(fh));
    for (int py = 0; py < fh; ++py) {
      const double cy = std::clamp(f.ny - (py + 0.5) / ppc - 0.5, 0.0, f.ny - 1.0);
      const int y0 = std::min(static_cast<int>(cy), std::max(0, f.ny - 2));
      const double wy = f.ny == 1 ? 0.0 : cy - y0;
      for (int px = 0; px < fw; ++px) {
        const double cx = std::clamp((px + 0.5) / ppc - 0.5, 0.0, f.nx - 1.0);
        const int x0 = std::min(static_cast<int>(cx), std::max(0, f.nx - 2));
        const double wx = f.nx == 1 ? 0.0 : cx - x0;
        const int x1 = std::min(x0 + 1, f.nx - 1), y1 = std::min(y0 + 1, f.ny - 1);
        const double v = (1 - wy) * ((1 - wx) * lv[f.index(x0, y0)] + wx * lv[f.index(x1, y0)]) +
                         wy * ((1 - wx) * lv[f.index(x0, y1)] + wx * lv[f.index(x1, y1)]);
        band[static_cast<std::size_t>(py) * fw + px] =
            std::isfinite(v) ? std::lround(std::floor(v / lines.spacing)) : 0;
      }
    }
    for (int py = 0; py < fh; ++py) {
      for (int px = 0; px < fw; ++px) {
        const std::size_t i = static_cast<std::size_t>(py) * fw + px;
        const bool edge = (px + 1 < fw && band[i + 1] != band[i]) ||
                          (py + 1 < fh && band[i + static_cast<std::size_t>(fw)] != band[i]);
        if (edge) c.blend(fx + px, fy + py, kWhite, 0.75);
      }
    }
  }
  c.frame(fx, fy, fw, fh, kInk);

  const int bx = fx + fw + gap, by = fy;
  for (int j = 0; j < bar_h; ++j) {
    const double t = bar_h == 1 ? 1.0 : 1.0 - static_cast<double>(j) / (bar_h - 1);
    c.fill(bx, by + j, bar_w, 1, colour(map, t));
  }
  c.frame(bx, by, bar_w, bar_h, kInk);
  c.text(bx, by - kGlyphH - 6, caption, kInk);

  const int lx = bx + bar_w + tick + label_gap;
  c.fill(bx + bar_w, by, tick, 1, kInk);
  c.text(lx, by, top, kInk);
  c.fill(bx + bar_w, by + bar_h - 1, tick, 1, kInk);
  c.text(lx, by + bar_h - kGlyphH, bottom, kInk);
  for (const double t : ticks) {
    const double u = std::clamp(scale.to_unit(t), 0.0, 1.0);
    const int ym = by + static_cast<int>(std::lround((1.0 - u) * (bar_h - 1)));
    c.fill(bx + bar_w, ym, tick, 1, kInk);
    c.text(lx, std::clamp(ym - kGlyphH / 2, by + kGlyphH + 2, by + bar_h - 2 * kGlyphH - 2),
           label(t), kInk);
  }
  c.save_png(path);
}

// d/dx and d/dy as numpy.gradient: central inside, first-order one-sided at the edges, 0 along
// an axis of one cell.
double ddx(const Field& f, const std::vector<double>& v, int x, int y) {
  if (f.nx == 1) return 0.0;
  if (x == 0) return v[f.index(1, y)] - v[f.index(0, y)];
  if (x == f.nx - 1) return v[f.index(x, y)] - v[f.index(x - 1, y)];
  return 0.5 * (v[f.index(x + 1, y)] - v[f.index(x - 1, y)]);
}
double ddy(const Field& f, const std::vector<double>& v, int x, int y) {
  if (f.ny == 1) return 0.0;
  if (y == 0) return v[f.index(x, 1)] - v[f.index(x, 0)];
  if (y == f.ny - 1) return v[f.index(x, y)] - v[f.index(x, y - 1)];
  return 0.5 * (v[f.index(x, y + 1)] - v[f.index(x, y - 1)]);
}

// The minimum and maximum of the finite values (0, 0 if there are none).
std::pair<double, double> finite_range(const std::vector<double>& v) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const double x : v) {
    if (std::isfinite(x)) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  }
  return lo <= hi ? std::pair{lo, hi} : std::pair{0.0, 0.0};
}

}  // namespace

void write_speed_png(const std::string& path, const Field& f, double u_ref) {
  check(f);
  check_u_ref(u_ref);
  std::vector<double> speed(f.ux.size());
  for (std::size_t i = 0; i < speed.size(); ++i) speed[i] = std::hypot(f.ux[i], f.uy[i]) / u_ref;
  const auto [lo, hi] = finite_range(speed);
  // The stream function (u = dpsi/dy, v = -dpsi/dx; lattice units, up to a constant): -v
  // integrated along the bottom row of cell centres, then u up each column, by the trapezoid
  // rule between cell centres. Its contours are the streamlines of a steady 2-D flow. Drawn at
  // levels even in the cube root of psi / max |psi|, so that the weak corner eddies (a thousandth
  // of the main vortex in a cavity) get lines too.
  const auto finite = [](double v) { return std::isfinite(v) ? v : 0.0; };
  std::vector<double> psi(f.ux.size());
  double base = 0;
  for (int x = 0; x < f.nx; ++x) {
    if (x > 0) base -= 0.5 * (finite(f.uy[f.index(x - 1, 0)]) + finite(f.uy[f.index(x, 0)]));
    double p = base;
    psi[f.index(x, 0)] = p;
    for (int y = 1; y < f.ny; ++y) {
      p += 0.5 * (finite(f.ux[f.index(x, y - 1)]) + finite(f.ux[f.index(x, y)]));
      psi[f.index(x, y)] = p;
    }
  }
  const auto [plo, phi] = finite_range(psi);
  const double pmax = std::max(-plo, phi);
  Contours lines;
  if (pmax > 0) {
    for (double& p : psi) p = std::cbrt(p / pmax);
    lines.level = &psi;
    lines.spacing = 1.0 / 12;
  }
  draw_field_png(path, f, speed, Scale{lo, hi}, kViridis, "|u|/U", {}, lines);
}

void write_vorticity_png(const std::string& path, const Field& f) {
  check(f);
  std::vector<double> w(f.ux.size());
  std::vector<double> magnitude;
  magnitude.reserve(w.size());
  for (int y = 0; y < f.ny; ++y) {
    for (int x = 0; x < f.nx; ++x) {
      const double v = ddx(f, f.uy, x, y) - ddy(f, f.ux, x, y);
      w[f.index(x, y)] = v;
      if (std::isfinite(v)) magnitude.push_back(std::abs(v));
    }
  }
  // The full range on an asinh scale, linear up to about the 90th percentile of |vorticity|:
  // the lid corners of the cavity are singular (far above the rest) and still show.
  double soft = 0.0, p99 = 0.0;
  if (!magnitude.empty()) {
    const auto at = [&](double q) {
      const auto k = static_cast<std::size_t>(q * static_cast<double>(magnitude.size() - 1));
      std::nth_element(magnitude.begin(), magnitude.begin() + static_cast<std::ptrdiff_t>(k),
                       magnitude.end());
      return magnitude[k];
    };
    soft = at(0.90);
    p99 = at(0.99);
  }
  const auto [lo, hi] = finite_range(w);
  const double limit = std::max(-lo, hi) > 0.0 ? std::max(-lo, hi) : 1.0;  // 1.0: the field is 0
  std::vector<double> ticks{0.0};
  if (p99 > 0 && p99 < 0.5 * limit) ticks.insert(ticks.end(), {-p99, p99});
  draw_field_png(path, f, w, Scale{-limit, limit, soft > 0 ? soft : 0.0}, kBlueRed, "vorticity",
                 ticks, {});
}

}  // namespace fluid
