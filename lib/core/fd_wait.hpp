// Waiting on one descriptor with a Deadline, for the socket transports (SocketChannel, Link).
#pragma once

#include "ipckit/core/deadline.hpp"

namespace ipckit::detail {

// Waits until poll() reports one of `events` (or an error/hang-up) on `fd`, or the deadline
// passes: true for the first, false for the second. Sleeps in slices of at most a second (so a
// never-deadline wait still wakes now and then); retries EINTR. Throws the poll() errno,
// naming `what`.
bool wait_fd(int fd, short events, const Deadline& deadline, const char* what);

}  // namespace ipckit::detail
