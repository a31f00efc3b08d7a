// The pool's messages as read back from a ring the other side wrote: task and result messages
// and the text of a task's exception (each message travels through the fragment layer,
// lib/channel/fragment.hpp). The driver parses what a worker sends, the worker what the
// driver sends. Every parser checks each length against the bytes there and throws
// Error(errc::bad_frame) on anything else; the driver treats a worker that sends such a
// message as lost. Private to the library (and its fuzz targets).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include <sys/types.h>

#include "ipckit/pool/detail/task.hpp"
#include "ipckit/pool/exceptions.hpp"

namespace ipckit::detail {

// A whole task message: its frame, the callable's bytes and the encoded inputs. The frame's
// invoker names code in the program the worker runs too: it is resolved (and an unknown
// module refused) when the worker calls it; only the driver writes task rings.
struct TaskMessage {
  TaskFrame frame{};
  std::span<const std::byte> fn;
  std::span<const std::byte> args;
};
// Throws Error(errc::bad_frame) when the message is shorter than a TaskFrame or the callable
// (padded to 8 bytes) runs past its end.
TaskMessage parse_task(std::span<const std::byte> msg);

// Runs a task (in a worker): calls the trampoline the frame names on the callable and the
// inputs. Returns the result message's frame (kOk, or kError when it threw), its payload in
// `out` (the results, or the exception as encode_current_exception writes it). (worker.cpp)
ResultFrame run_task(const TaskMessage& task, std::vector<std::byte>& out);

// Longest time a chunk may report having run (about 146 years): the driver adds these up.
inline constexpr std::uint64_t kMaxBusyNs = std::uint64_t{1} << 62;

// A whole result message: its frame and payload (the results, or an exception's text).
struct ResultMessage {
  ResultFrame frame{};
  std::span<const std::byte> payload;
};
// Throws Error(errc::bad_frame) when the message is shorter than a ResultFrame, its status
// is not kOk, kError or kInitError, or its busy time exceeds kMaxBusyNs.
ResultMessage parse_result(std::span<const std::byte> msg);

// An exception as a failed task or initializer sends it: type name and message, each a
// 32-bit length and the bytes (at most 1 MiB; longer texts are cut); for a type given to
// register_exception, then its mangled name (same form) and the bytes its encoder wrote.
struct ErrorText {
  std::string type;
  std::string message;
  std::string registered;       // empty: not a registered type
  std::vector<std::byte> blob;  // the registered type's encoding
};
void encode_error_text(const std::string& type, const std::string& message,
                       std::vector<std::byte>& out, const std::string& registered = {},
                       std::span<const std::byte> blob = {});
// Throws Error(errc::bad_frame) unless the payload is two such strings, optionally followed
// by a third (not empty) and any bytes.
ErrorText decode_error_text(std::span<const std::byte> payload);

// The exception being handled (call inside a catch block), as its type name and message
// (and its registered encoding, when its type or a base was registered), replacing `out`.
void encode_current_exception(std::vector<std::byte>& out);
// The registered type rebuilt, or a RemoteError from worker `pid`, out of an encoded
// exception; throws as decode_error_text.
// `where`, when not empty, says where the worker ran ("rank 2 on node7"), for RemoteError.
std::exception_ptr decode_remote_error(std::span<const std::byte> in, pid_t pid,
                                       const std::string& where = {});

}  // namespace ipckit::detail
