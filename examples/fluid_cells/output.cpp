#include "output.hpp"

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

#include "output_detail.hpp"

namespace fluid {
namespace detail {

[[noreturn]] void throw_io(const char* what, const std::string& path, int err) {
  throw std::runtime_error(std::string(what) + "(\"" + path + "\") failed: " + std::strerror(err));
}

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

}  // namespace detail

namespace {

using detail::check;
using detail::check_u_ref;
using detail::OutFile;

std::string g17(double v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", v);
  return std::string(buf, static_cast<std::size_t>(n));
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
