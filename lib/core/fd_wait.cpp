#include "fd_wait.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>

#include "ipckit/core/error.hpp"

namespace ipckit::detail {

namespace {
constexpr int kPollSliceMs = 1000;

int poll_ms(const Deadline& deadline) {
  if (deadline.is_never()) return kPollSliceMs;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline.remaining()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, kPollSliceMs));
}
}  // namespace

bool wait_fd(int fd, short events, const Deadline& deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, poll_ms(deadline));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) throw_errno(std::string(what) + ": poll()");
    if (deadline.expired()) return false;
  }
}

}  // namespace ipckit::detail
