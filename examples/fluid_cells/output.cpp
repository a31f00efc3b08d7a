#include "output.hpp"

#include <png.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <utility>

namespace fluid {
namespace {

// ---------------------------------------------------------------------------------------------
// Files

[[noreturn]] void throw_io(const char* what, const std::string& path, int err) {
  throw std::runtime_error(std::string(what) + "(\"" + path + "\") failed: " + std::strerror(err));
}

// A FILE* opened for writing; close() reports the errors that only show up on the final flush.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {
    file_ = std::fopen(path_.c_str(), "wb");
    if (file_ == nullptr) throw_io("fopen", path_, errno);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile() {
    if (file_ != nullptr) std::fclose(file_);
  }

  [[nodiscard]] std::FILE* get() const noexcept { return file_; }

  void write(const void* data, std::size_t bytes) {
    if (bytes != 0 && std::fwrite(data, 1, bytes, file_) != bytes) throw_io("fwrite", path_, errno);
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  void close() {
    std::FILE* f = std::exchange(file_, nullptr);
    const bool failed = std::ferror(f) != 0;  // a write error libpng saw but did not report
    if (std::fclose(f) != 0) throw_io("fclose", path_, errno);
    if (failed) throw_io("fwrite", path_, EIO);
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

void check(const Field& f) {
  const auto n =
      static_cast<std::size_t>(std::max(f.nx, 0)) * static_cast<std::size_t>(std::max(f.ny, 0));
  if (f.nx < 1 || f.ny < 1 || f.ux.size() != n || f.uy.size() != n || f.rho.size() != n) {
    throw std::invalid_argument(
        "fluid output: a field needs nx, ny >= 1 and nx * ny values in "
        "ux, uy and rho (got " +
        std::to_string(f.nx) + " x " + std::to_string(f.ny) + " with " +
        std::to_string(f.ux.size()) + ", " + std::to_string(f.uy.size()) + ", " +
        std::to_string(f.rho.size()) + ")");
  }
}

void check_u_ref(double u_ref) {
  if (!(u_ref > 0.0) || !std::isfinite(u_ref)) {
    throw std::invalid_argument("fluid output: the reference velocity must be positive and finite");
  }
}

std::string g17(double v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", v);
  return std::string(buf, static_cast<std::size_t>(n));
}

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

// Draws `value` (one double per cell, NaN allowed) mapped from [lo, hi] through `map`, with a
// vertical colour bar on the right labelled at both ends (and at 0 when `mid_label`).
void draw_field_png(const std::string& path, const Field& f, const std::vector<double>& value,
                    double lo, double hi, std::span<const Rgb> map, std::string_view caption,
                    bool mid_label) {
  if (!(hi > lo)) hi = lo + 1.0;  // a uniform (or empty) field: any non-empty range will do
  // Pixels per cell: an integer >= 1 while the larger side is <= 1024 cells, else below 1.
  const int big = std::max(f.nx, f.ny);
  const double ppc = big <= 1024 ? static_cast<double>((512 + big - 1) / big) : 1024.0 / big;
  const int fw = std::max(1, static_cast<int>(std::lround(f.nx * ppc)));
  const int fh = std::max(1, static_cast<int>(std::lround(f.ny * ppc)));

  const std::string top = label(hi), bottom = label(lo), zero = label(0.0);
  const int pad = kGlyphH + 10;  // room for the caption above the bar
  const int gap = 16, bar_w = 20, tick = 5, label_gap = 6;
  const int bar_h = std::max(fh, 4 * kGlyphH);
  const auto text_w = [](std::string_view s) { return static_cast<int>(s.size()) * kAdvance; };
  const int labels_w = std::max({text_w(top), text_w(bottom), mid_label ? text_w(zero) : 0});
  const int column_w = std::max(bar_w + tick + label_gap + labels_w, text_w(caption));
  Canvas c(pad + fw + gap + column_w + pad, pad + std::max(fh, bar_h) + pad);

  const int fx = pad, fy = pad;
  for (int py = 0; py < fh; ++py) {
    // Top image row = top of the domain; sample the cell under the pixel's centre.
    const int y = f.ny - 1 - std::min(f.ny - 1, static_cast<int>((py + 0.5) / ppc));
    for (int px = 0; px < fw; ++px) {
      const int x = std::min(f.nx - 1, static_cast<int>((px + 0.5) / ppc));
      c.set(fx + px, fy + py, colour(map, (value[f.index(x, y)] - lo) / (hi - lo)));
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
  if (mid_label) {
    const int ym = by + (bar_h - 1) / 2;
    c.fill(bx + bar_w, ym, tick, 1, kInk);
    c.text(lx, ym - kGlyphH / 2, zero, kInk);
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

// ---------------------------------------------------------------------------------------------
// JSON text

void append_escaped(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(ch));
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// The shortest text that reads back as the same double; null for NaN and infinities.
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void write_speed_png(const std::string& path, const Field& f, double u_ref) {
  check(f);
  check_u_ref(u_ref);
  std::vector<double> speed(f.ux.size());
  for (std::size_t i = 0; i < speed.size(); ++i) speed[i] = std::hypot(f.ux[i], f.uy[i]) / u_ref;
  const auto [lo, hi] = finite_range(speed);
  draw_field_png(path, f, speed, lo, hi, kViridis, "|u|/U", false);
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
  double limit = 0.0;
  if (!magnitude.empty()) {
    const auto k = static_cast<std::size_t>(0.99 * static_cast<double>(magnitude.size() - 1));
    std::nth_element(magnitude.begin(), magnitude.begin() + static_cast<std::ptrdiff_t>(k),
                     magnitude.end());
    limit = magnitude[k];
  }
  if (!(limit > 0.0)) {
    const auto [lo, hi] = finite_range(w);
    limit = std::max(-lo, hi) > 0.0 ? std::max(-lo, hi) : 1.0;  // 1.0: the field is 0
  }
  draw_field_png(path, f, w, -limit, limit, kBlueRed, "vorticity", true);
}

void write_vti(const std::string& path, const Field& f) {
  check(f);
  const std::size_t n = f.ux.size();
  const std::uint64_t velocity_bytes = 3 * n * sizeof(double);
  const std::uint64_t scalar_bytes = n * sizeof(double);
  // Each appended array is a UInt64 byte count followed by the bytes; offsets count from the
  // first byte after the '_'.
  const std::uint64_t density_offset = sizeof(std::uint64_t) + velocity_bytes;
  const std::uint64_t speed_offset = density_offset + sizeof(std::uint64_t) + scalar_bytes;
  const std::string extent =
      "0 " + std::to_string(f.nx - 1) + " 0 " + std::to_string(f.ny - 1) + " 0 0";
  const char* order = std::endian::native == std::endian::little ? "LittleEndian" : "BigEndian";

  std::string head;
  head += "<?xml version=\"1.0\"?>\n";
  head += std::string("<VTKFile type=\"ImageData\" version=\"1.0\" byte_order=\"") + order +
          "\" header_type=\"UInt64\">\n";
  head += "  <ImageData WholeExtent=\"" + extent + "\" Origin=\"0 0 0\" Spacing=\"1 1 1\">\n";
  head += "    <Piece Extent=\"" + extent + "\">\n";
  head += "      <PointData Scalars=\"speed\" Vectors=\"velocity\">\n";
  head +=
      "        <DataArray type=\"Float64\" Name=\"velocity\" NumberOfComponents=\"3\" "
      "format=\"appended\" offset=\"0\"/>\n";
  head += "        <DataArray type=\"Float64\" Name=\"density\" format=\"appended\" offset=\"" +
          std::to_string(density_offset) + "\"/>\n";
  head += "        <DataArray type=\"Float64\" Name=\"speed\" format=\"appended\" offset=\"" +
          std::to_string(speed_offset) + "\"/>\n";
  head += "      </PointData>\n";
  head += "    </Piece>\n";
  head += "  </ImageData>\n";
  head += "  <AppendedData encoding=\"raw\">\n   _";

  OutFile file(path);
  file.write(head);
  std::vector<double> buf(3 * n);
  for (std::size_t i = 0; i < n; ++i) {
    buf[3 * i] = f.ux[i];
    buf[3 * i + 1] = f.uy[i];
    buf[3 * i + 2] = 0.0;
  }
  file.write(&velocity_bytes, sizeof velocity_bytes);
  file.write(buf.data(), velocity_bytes);
  file.write(&scalar_bytes, sizeof scalar_bytes);
  file.write(f.rho.data(), scalar_bytes);
  buf.resize(n);
  for (std::size_t i = 0; i < n; ++i) buf[i] = std::hypot(f.ux[i], f.uy[i]);
  file.write(&scalar_bytes, sizeof scalar_bytes);
  file.write(buf.data(), scalar_bytes);
  file.write("\n  </AppendedData>\n</VTKFile>\n");
  file.close();
}

void write_centrelines(const std::string& dir, const Field& f, double u_ref) {
  check(f);
  check_u_ref(u_ref);
  // The two cells either side of the middle of n cells (the same cell when n is odd).
  const auto middle = [](int n) { return std::pair{(n - 1) / 2, n / 2}; };
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";

  // One profile: "<coord>,<value>" for i in [0, n), the value at i averaged over the two
  // middle cells across it, scaled by u_ref.
  const auto profile = [&](const char* name, const char* header, int n, auto&& at) {
    std::string text = header;
    for (int i = 0; i < n; ++i) {
      text += g17((i + 0.5) / n) + "," + g17(at(i) / u_ref) + "\n";
    }
    OutFile file(base + name);
    file.write(text);
    file.close();
  };
  const auto [x0, x1] = middle(f.nx);
  profile("centreline_u.csv", "y,u\n", f.ny,
          [&](int y) { return 0.5 * (f.ux[f.index(x0, y)] + f.ux[f.index(x1, y)]); });
  const auto [y0, y1] = middle(f.ny);
  profile("centreline_v.csv", "x,v\n", f.nx,
          [&](int x) { return 0.5 * (f.uy[f.index(x, y0)] + f.uy[f.index(x, y1)]); });
}

// ---------------------------------------------------------------------------------------------
// Json

struct Json::Entry {
  std::string key;
  std::string text;              // the value as JSON text, unless it is an object
  std::unique_ptr<Json> object;  // non-null for a nested object
};

Json::Json() = default;
Json::~Json() = default;
Json::Json(Json&&) noexcept = default;
Json& Json::operator=(Json&&) noexcept = default;

Json::Entry& Json::slot(std::string_view key) {
  for (Entry& e : entries_) {
    if (e.key == key) return e;
  }
  return entries_.emplace_back(Entry{std::string(key), {}, nullptr});
}

Json& Json::add_raw(std::string_view key, std::string text) {
  Entry& e = slot(key);
  e.text = std::move(text);
  e.object.reset();
  return *this;
}

Json& Json::add(std::string_view key, double value) { return add_raw(key, json_number(value)); }

Json& Json::add(std::string_view key, bool value) { return add_raw(key, value ? "true" : "false"); }

Json& Json::add(std::string_view key, std::string_view value) {
  std::string text;
  append_escaped(text, value);
  return add_raw(key, std::move(text));
}

Json& Json::add(std::string_view key, const std::vector<double>& values) {
  std::string text = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i != 0) text += ", ";
    text += json_number(values[i]);
  }
  return add_raw(key, text + "]");
}

Json& Json::add(std::string_view key, const std::vector<int>& values) {
  std::string text = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i != 0) text += ", ";
    text += std::to_string(values[i]);
  }
  return add_raw(key, text + "]");
}

Json& Json::add_object(std::string_view key) {
  Entry& e = slot(key);
  e.text.clear();
  e.object = std::make_unique<Json>();
  return *e.object;
}

void Json::print(std::string& out, int indent) const {
  if (entries_.empty()) {
    out += "{}";
    return;
  }
  const std::string pad(static_cast<std::size_t>(indent + 2), ' ');
  out += "{\n";
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    out += pad;
    append_escaped(out, e.key);
    out += ": ";
    if (e.object) {
      e.object->print(out, indent + 2);
    } else {
      out += e.text;
    }
    out += i + 1 < entries_.size() ? ",\n" : "\n";
  }
  out += std::string(static_cast<std::size_t>(indent), ' ') + "}";
}

std::string Json::str() const {
  std::string out;
  print(out, 0);
  return out;
}

void write_json(const std::string& path, const Json& j) {
  OutFile file(path);
  file.write(j.str() + "\n");
  file.close();
}

}  // namespace fluid
