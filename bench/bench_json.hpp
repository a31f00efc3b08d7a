// The JSON the plain (non Google Benchmark) benchmark programs write, the shape their Python
// anchors write too: {"context": {...}, "benchmarks": [{"name", "median", "unit", "values"}]}.
#pragma once

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

namespace ipckit::bench {

struct Result {
  std::string name;
  std::vector<double> values;  // one per repetition
  std::string unit;
};

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The document, `context` being the inside of its context object ("\"a\": 1, \"b\": 2").
inline std::string to_json(const std::string& context, const std::vector<Result>& results) {
  std::string json = "{\n  \"context\": {" + context + "},\n  \"benchmarks\": [\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    json += "    {\"name\": \"" + r.name + "\", \"median\": " + std::to_string(median(r.values)) +
            ", \"unit\": \"" + r.unit + "\", \"values\": [";
    for (std::size_t k = 0; k < r.values.size(); ++k) {
      json += (k ? ", " : "") + std::to_string(r.values[k]);
    }
    json += "]}" + std::string(i + 1 < results.size() ? "," : "") + "\n";
  }
  return json + "  ]\n}\n";
}

inline void write_json(const std::string& path, const std::string& json) {
  if (!path.empty()) std::ofstream(path) << json;
}

}  // namespace ipckit::bench
