// Messages larger than one ByteRing record, cut into fragments and put back together: the one
// fragment layer, used by the pool (task and result messages) and by ShmComm (point-to-point
// messages). Private to the library.
//
// Wire format. A message of `total` bytes is one or more records on a ByteRing:
//   first record:  total (u64, native order), then the message's first bytes;
//   later records: the next bytes of the message, until `total` have come.
// A record carries at most the writer's `max_record` bytes (header included). The reader
// checks every word a peer wrote: a first record shorter than its total word, a record that
// runs past `total`, or a total above the reader's limit is Error(errc::bad_frame).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>

#include "ipckit/channel/byte_ring.hpp"

namespace ipckit::detail {

inline constexpr std::size_t kFragmentHeader = 8;  // the first record's total word

// Writes one message as fragments, resumably: write() moves as much as the ring has room
// for and can be called again until done(). The message is gathered from up to four parts,
// which must stay valid (and unchanged) until done().
class FragmentWriter {
 public:
  // How records become visible: each at once (commit), or staged for the caller's next
  // ByteRing::publish() (a batch appears with one wake-up).
  enum class Mode { commit, stage };

  // Starts a message. Throws Error(errc::invalid_argument) with more than four parts or
  // while a message is being written.
  void start(std::initializer_list<std::span<const std::byte>> parts);
  // Moves records onto `ring` while it has room (try_reserve). True when anything moved.
  // Records are at most `max_record` bytes, at most the ring's maximum message.
  bool write(ByteRing& ring, std::size_t max_record, Mode mode);
  // Writes the whole message, blocking while the ring is full (ByteRing::reserve), and
  // calls `after_record` after each record is committed.
  void write_all(ByteRing& ring, std::size_t max_record,
                 const std::function<void()>& after_record = {});
  // From now on the rest of the message is sent as zero bytes (its source went away; the
  // receiver still gets a whole message of the announced size).
  void orphan() noexcept { orphaned_ = true; }
  [[nodiscard]] bool active() const noexcept { return active_; }
  // Whether the first record (with the total) has gone: the receiver expects the rest.
  [[nodiscard]] bool started() const noexcept { return header_sent_; }
  [[nodiscard]] bool done() const noexcept { return !active_; }
  [[nodiscard]] std::uint64_t total() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t sent() const noexcept { return sent_; }
  // Abandons the message (the ring is gone). The writer can start another.
  void reset() noexcept;

 private:
  std::size_t record_bytes(std::size_t max_record) const noexcept;
  void fill(std::span<std::byte> rec) noexcept;

  std::array<std::span<const std::byte>, 4> parts_{};
  std::size_t nparts_ = 0;
  std::uint64_t total_ = 0;
  std::uint64_t sent_ = 0;  // message bytes written so far
  bool header_sent_ = false;
  bool active_ = false;
  bool orphaned_ = false;
};

// Reads one message's fragments: the cursor that checks them.
class FragmentCursor {
 public:
  explicit FragmentCursor(std::uint64_t max_total) noexcept : max_total_(max_total) {}
  // The bytes of the message that `record` carries; on a message's first record, reads and
  // checks its total. Throws Error(errc::bad_frame) (naming `what`) on a record that breaks
  // the format, and changes nothing then.
  std::span<const std::byte> take(std::span<const std::byte> record, const char* what);
  [[nodiscard]] bool started() const noexcept { return started_; }
  [[nodiscard]] bool complete() const noexcept { return started_ && done_ == total_; }
  [[nodiscard]] std::uint64_t total() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t done() const noexcept { return done_; }
  void reset() noexcept { started_ = false, total_ = 0, done_ = 0; }

 private:
  std::uint64_t max_total_;
  std::uint64_t total_ = 0;
  std::uint64_t done_ = 0;
  bool started_ = false;
};

// Puts whole messages back together. A message in one record is handed out in place (no
// copy, no allocation); a longer one is copied into a buffer of exactly its size, allocated
// when its first record arrives and kept for the next message.
class FragmentReader {
 public:
  explicit FragmentReader(std::uint64_t max_total) noexcept : cursor_(max_total) {}
  struct Message {
    std::span<const std::byte> bytes;
    bool in_record = false;  // bytes point into the record: use them before releasing it
  };
  // Feeds one record; the message when this record completes one. Throws Error(bad_frame)
  // as FragmentCursor::take, and Error(bad_frame) when the buffer cannot be allocated; after
  // a throw the reader has dropped the message and starts afresh with the next record.
  std::optional<Message> feed(std::span<const std::byte> record, const char* what);
  [[nodiscard]] bool in_progress() const noexcept { return cursor_.started(); }
  // Frees the buffer if it is large (kLargeBlock and more) and no message is in progress:
  // call after using a reassembled message, so that one huge message does not stay resident
  // for the reader's whole life.
  void trim() noexcept;
  // Drops a message in progress and the buffer (after a peer was lost).
  void reset() noexcept;

 private:
  FragmentCursor cursor_;
  std::unique_ptr<std::byte[]> buf_;
  std::size_t cap_ = 0;
};

// Allocates `n` bytes, uninitialised, and asks for transparent huge pages when the block is
// large (first-touch page faults dominate copies into fresh memory). Null for n == 0.
std::unique_ptr<std::byte[]> allocate_bytes(std::size_t n);

}  // namespace ipckit::detail
