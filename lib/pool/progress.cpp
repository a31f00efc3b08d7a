#include "ipckit/pool/progress.hpp"

#include <unistd.h>

#include <algorithm>

namespace ipckit {

ProgressBar::ProgressBar(std::string label, std::FILE* out, bool force)
    : state_(std::make_shared<State>()) {
  state_->label = std::move(label);
  state_->out = out;
  state_->enabled = out != nullptr && (force || ::isatty(::fileno(out)) == 1);
}

std::string ProgressBar::render(const std::string& label, std::size_t done, std::size_t total,
                                std::size_t width) {
  std::string s = label.empty() ? "" : label + " ";
  if (total == 0) return s + std::to_string(done) + " done";
  const std::size_t d = std::min(done, total);
  const std::size_t fill = d * width / total;
  s += '[';
  s.append(fill, '#');
  s.append(width - fill, '.');
  s += "] ";
  const std::size_t pct = d * 100 / total;
  std::string p = std::to_string(pct);
  s.append(3 - std::min<std::size_t>(p.size(), 3), ' ');
  s += p + "%  " + std::to_string(done) + "/" + std::to_string(total);
  return s;
}

void ProgressBar::operator()(std::size_t done, std::size_t total) {
  State& st = *state_;
  if (!st.enabled || st.finished) return;
  const auto now = std::chrono::steady_clock::now();
  const bool end = total != 0 && done >= total;
  if (!end && now - st.last < std::chrono::milliseconds(50)) return;
  st.last = now;
  std::fprintf(st.out, "\r%s", render(st.label, done, total).c_str());
  if (end) {
    std::fputc('\n', st.out);
    st.finished = true;
  }
  std::fflush(st.out);
}

}  // namespace ipckit
