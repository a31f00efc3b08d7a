/// @class ipckit::ProgressBar
/// ProgressBar: a ready-made progress callback for Pool::map / imap (MapOptions::progress),
/// drawing `label [#########.........]  45%  450/1000` on one terminal line.
///
///     pool.map(work, inputs, {.progress = ipckit::ProgressBar("work")});
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>

namespace ipckit {

class ProgressBar {
 public:
  /// Draws on `out` (stderr by default) only when it is a terminal, unless `force`; redraws
  /// at most every 50 ms and always at the end. Copies share one bar.
  explicit ProgressBar(std::string label = {}, std::FILE* out = stderr, bool force = false);

  /// The progress callback: shows `done` of `total` (total 0: unknown). The first call with
  /// done >= total > 0 draws the final line and a newline; later calls draw nothing.
  void operator()(std::size_t done, std::size_t total);

  /// The line the bar shows for these counts (total 0: unknown, shows the count only).
  static std::string render(const std::string& label, std::size_t done, std::size_t total,
                            std::size_t width = 30);

 private:
  struct State {
    std::string label;
    std::FILE* out = nullptr;
    bool enabled = false;
    std::chrono::steady_clock::time_point last{};
    bool finished = false;
  };
  std::shared_ptr<State> state_;
};

}  // namespace ipckit
