// What the fluid-cell example leaves in its output folder: pictures of the flow (PNG), the
// field for ParaView (VTK .vti), the centreline profiles (CSV) and a run summary (JSON).
// Rank 0 gathers the global Field and calls these once at the end of a run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace fluid {

// A global field on the nx x ny lattice, row-major with x fastest: value(x, y) = v[y * nx + x].
// y points up: row 0 is the bottom of the domain (the cavity lid is row ny - 1).
struct Field {
  int nx = 0;
  int ny = 0;
  std::vector<double> ux, uy, rho;

  [[nodiscard]] std::size_t index(int x, int y) const noexcept {
    return static_cast<std::size_t>(y) * static_cast<std::size_t>(nx) + static_cast<std::size_t>(x);
  }
};

// Every writer checks the field first (nx, ny >= 1 and all three vectors of nx * ny values)
// and throws std::invalid_argument if it is not; I/O failures throw std::runtime_error naming
// the path and the OS error (strerror). A failed write may leave a partial file behind.

// Pictures, y up (the top image row is the top of the domain), with a colour bar, its limits
// labelled, and a caption. Each lattice cell is an s x s block of pixels, s chosen so that the
// larger side of the field is 512-1024 px; beyond 1024 cells it is sampled down to 1024 px.
// NaN cells are grey.
//
// Speed |u| / u_ref on a viridis map from the field's minimum to its maximum, with the
// streamlines over it: white contours of the stream function psi = integral of u dy from the
// bottom, at levels even in cbrt(psi / max |psi|) (12 each side of 0, the separatrix psi = 0
// among them), so the weak corner eddies of a cavity get lines too. u_ref > 0.
void write_speed_png(const std::string& path, const Field& f, double u_ref);
// Vorticity dv/dx - du/dy in lattice units (per time step), central differences inside and
// one-sided at the edges (as numpy.gradient), on a blue-white-red map symmetric around 0,
// over the full range on an asinh scale: linear up to about the 90th percentile of
// |vorticity|, logarithmic beyond, so the singular lid corners of the cavity keep their own
// colour without washing out everything else (nothing saturates). The bar is labelled at
// the ends, at 0 and at +-the 99th percentile.
void write_vorticity_png(const std::string& path, const Field& f);

// VTK XML ImageData with point data "velocity" (3 components, z = 0), "density" and "speed",
// Float64 in the machine's byte order, raw binary in an appended block: compact and exact, read
// by VTK's vtkXMLImageDataReader (ParaView), though not by a generic XML parser (only the part
// before the block is XML). One point per lattice cell, in lattice units: Origin 0, Spacing 1,
// so point (i, j) is cell (i, j) and the aspect ratio of a non-square domain is kept.
void write_vti(const std::string& path, const Field& f);

// Writes dir/centreline_u.csv ("y,u": u along the vertical centreline x = 0.5) and
// dir/centreline_v.csv ("x,v": v along the horizontal centreline y = 0.5). Coordinates are
// the cell centres in [0, 1], (i + 0.5) / n; on an even lattice the profile is interpolated
// linearly (the mean of the two middle columns/rows) to the exact centreline. Velocities are
// divided by u_ref (> 0). 17 significant digits, so the doubles round-trip. dir must exist.
void write_centrelines(const std::string& dir, const Field& f, double u_ref);

// A JSON object built key by key, kept in insertion order and printed with two-space indents.
// Adding a key that is already there replaces its value in place. Numbers that are not
// finite are written as null (JSON has no NaN). Strings are UTF-8, escaped on output.
//
//   Json j;
//   j.add("case", "cavity").add("re", 100.0).add("nx", 129);
//   j.add_object("final").add("mass", 16641.0);
class Json {
 public:
  Json();
  ~Json();
  Json(Json&&) noexcept;
  Json& operator=(Json&&) noexcept;

  Json& add(std::string_view key, double value);
  Json& add(std::string_view key, bool value);
  Json& add(std::string_view key, std::string_view value);
  Json& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  template <typename T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool>) Json& add(std::string_view key,
                                                                        T value) {
    if constexpr (std::is_signed_v<T>) {
      return add_raw(key, std::to_string(static_cast<std::int64_t>(value)));
    } else {
      return add_raw(key, std::to_string(static_cast<std::uint64_t>(value)));
    }
  }
  // An array of numbers (e.g. the process grid).
  Json& add(std::string_view key, const std::vector<double>& values);
  Json& add(std::string_view key, const std::vector<int>& values);
  // A nested object under `key`; the reference stays valid as long as this object does.
  Json& add_object(std::string_view key);

  // The object as pretty-printed JSON text (no trailing newline).
  [[nodiscard]] std::string str() const;

 private:
  struct Entry;
  Json& add_raw(std::string_view key, std::string text);  // text is already valid JSON
  Entry& slot(std::string_view key);
  void print(std::string& out, int indent) const;

  std::vector<Entry> entries_;
};

// Writes j.str() and a newline to path.
void write_json(const std::string& path, const Json& j);

}  // namespace fluid
