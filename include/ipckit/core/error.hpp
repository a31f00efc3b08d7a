/// @file
/// Errors: every failure in ipckit is an ipckit::Error, a std::system_error carrying either an
/// ipckit::errc (library conditions such as peer_dead) or an errno (failed system calls), and a
/// message that says what was attempted.
#pragma once

#include <memory>
#include <string>
#include <system_error>

/// The public API: shared memory, process-shared synchronisation, channels, the process pool
/// and the SPMD communicator. Internal helpers live in ipckit::detail.
namespace ipckit {

/// The library's own error conditions (category ipckit_category()); each says what went wrong.
enum class errc : int {
  timeout = 1,        ///< a _for/_until call ran out of time
  peer_dead,          ///< the process on the other side exited or was killed
  owner_dead,         ///< a robust mutex's previous owner died while holding it
  barrier_broken,     ///< a barrier party died or timed out; the barrier is unusable
  closed,             ///< the channel/pool was closed
  message_too_large,  ///< a message can never fit the transport
  bad_frame,          ///< a frame read from another process is truncated or corrupt
  invalid_argument,   ///< a parameter is out of range (zero capacity, bad size, ...)
  invalid_name,       ///< a shared-memory name is empty, too long or has bad characters
  not_found,          ///< a named segment or object does not exist
  already_exists,     ///< exclusive create found an existing segment or object
  size_mismatch,      ///< an object or segment exists but has a different size/type
  bad_layout,         ///< a shared layout's magic/version word does not match
  out_of_memory,      ///< a shared segment has no room left
  child_failed,       ///< a child process did not exit cleanly
  remote_error,       ///< a pool task threw in its worker (ipckit::RemoteError)
  worker_lost,        ///< a pool worker died while running the task (ipckit::WorkerLost)
  interrupted,        ///< a blocking pool call was interrupted by SIGINT (Ctrl-C)
  cancelled,          ///< the call was cancelled (AsyncResult::cancel) before it finished
};

/// The error category of errc (name "ipckit").
const std::error_category& ipckit_category() noexcept;

/// The std::error_code of `e` in ipckit_category(), so that `ec == errc::timeout` works.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), ipckit_category()};
}

/// The exception type of the library. `code()` is either in ipckit_category() or in
/// std::system_category() (errno). what() is the message followed by ": " and the code's own
/// text, unless the message already says it ("...: the channel is closed", not "...: closed:
/// closed").
class Error : public std::system_error {
 public:
  /// An error with library condition `e`; `what` says what was attempted.
  Error(errc e, const std::string& what) : Error(make_error_code(e), what) {}
  /// An error with any code (an errno in std::system_category(), say).
  Error(std::error_code ec, const std::string& what);

  /// True when this error carries the given library condition.
  [[nodiscard]] bool is(errc e) const noexcept { return code() == make_error_code(e); }
  /// The message, then ": " and the code's text (see the class comment).
  [[nodiscard]] const char* what() const noexcept override { return what_->c_str(); }

 private:
  std::shared_ptr<const std::string> what_;  // shared: copying an exception never throws
};

/// What a failed call attempted: the error's message without the ": <code text>" that
/// what() appends ("fork() failed"), for wrapping it in a message of one's own.
[[nodiscard]] std::string attempted(const std::system_error& e);

/// Throws Error(errno, "<what> failed").
[[noreturn]] void throw_errno(const std::string& what);
/// Throws Error(err, "<what> failed"), for an errno value saved earlier.
[[noreturn]] void throw_errno(int err, const std::string& what);
/// Throws Error(e, what).
[[noreturn]] void throw_error(errc e, const std::string& what);

}  // namespace ipckit

/// @cond
template <>
struct std::is_error_code_enum<ipckit::errc> : std::true_type {};
/// @endcond
