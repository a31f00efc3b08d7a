#include "fragment.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "ipckit/channel/codec.hpp"
#include "ipckit/core/error.hpp"

namespace ipckit::detail {

// ---- writer -------------------------------------------------------------------------------

void FragmentWriter::start(std::initializer_list<std::span<const std::byte>> parts) {
  if (active_) throw Error(errc::invalid_argument, "FragmentWriter: a message is being written");
  if (parts.size() > parts_.size()) {
    throw Error(errc::invalid_argument, "FragmentWriter: more than four parts");
  }
  nparts_ = 0;
  total_ = 0;
  for (std::span<const std::byte> p : parts) {
    parts_[nparts_++] = p;
    total_ += p.size();
  }
  sent_ = 0;
  header_sent_ = false;
  orphaned_ = false;
  active_ = true;
}

void FragmentWriter::reset() noexcept {
  active_ = false;
  nparts_ = 0;
  total_ = sent_ = 0;
  header_sent_ = orphaned_ = false;
}

std::size_t FragmentWriter::record_bytes(std::size_t max_record) const noexcept {
  const std::size_t lead = header_sent_ ? 0 : kFragmentHeader;
  const std::uint64_t body = std::min<std::uint64_t>(total_ - sent_, max_record - lead);
  return lead + static_cast<std::size_t>(body);
}

// Copies the next record's bytes (header first when due) from the parts into `rec`.
void FragmentWriter::fill(std::span<std::byte> rec) noexcept {
  std::byte* p = rec.data();
  std::size_t left = rec.size();
  if (!header_sent_) {
    std::memcpy(p, &total_, kFragmentHeader);
    p += kFragmentHeader;
    left -= kFragmentHeader;
    header_sent_ = true;
  }
  if (orphaned_) {
    std::memset(p, 0, left);
    sent_ += left;
    return;
  }
  // Find the part holding byte `sent_`, then copy part by part.
  std::uint64_t at = sent_;
  std::size_t i = 0;
  while (i < nparts_ && at >= parts_[i].size()) at -= parts_[i++].size();
  while (left != 0 && i < nparts_) {
    const std::span<const std::byte> part = parts_[i];
    const std::size_t n = std::min<std::uint64_t>(part.size() - at, left);
    if (n != 0) std::memcpy(p, part.data() + at, n);
    p += n;
    left -= n;
    sent_ += n;
    at = 0;
    ++i;
  }
}

bool FragmentWriter::write(ByteRing& ring, std::size_t max_record, Mode mode) {
  max_record = std::max(std::min(max_record, ring.max_message_size()), kFragmentHeader + 1);
  bool moved = false;
  while (active_) {
    const std::size_t n = record_bytes(max_record);
    const std::optional<std::span<std::byte>> rec = ring.try_reserve(n);
    if (!rec) break;
    fill(*rec);
    if (mode == Mode::commit) {
      ring.commit();
    } else {
      ring.stage(n);
    }
    moved = true;
    if (sent_ == total_) active_ = false;
  }
  return moved;
}

void FragmentWriter::write_all(ByteRing& ring, std::size_t max_record,
                               const std::function<void()>& after_record) {
  max_record = std::max(std::min(max_record, ring.max_message_size()), kFragmentHeader + 1);
  while (active_) {
    const std::size_t n = record_bytes(max_record);
    fill(ring.reserve(n));
    ring.commit();
    if (sent_ == total_) active_ = false;
    if (after_record) after_record();
  }
}

// ---- reader -------------------------------------------------------------------------------

namespace {
[[noreturn]] void throw_past_end(const char* what, std::size_t bytes, std::uint64_t total) {
  throw Error(errc::bad_frame, std::string(what) + ": a fragment of " + std::to_string(bytes) +
                                   " bytes runs past the " + std::to_string(total) +
                                   "-byte message");
}
}  // namespace

std::span<const std::byte> FragmentCursor::take(std::span<const std::byte> record,
                                                const char* what) {
  if (!started_) {
    if (record.size() < kFragmentHeader) {
      throw Error(errc::bad_frame, std::string(what) + ": a first fragment of " +
                                       std::to_string(record.size()) +
                                       " bytes, shorter than its size word");
    }
    std::uint64_t total = 0;
    std::memcpy(&total, record.data(), kFragmentHeader);
    if (total > max_total_) {
      throw Error(errc::bad_frame, std::string(what) + ": a message of " + std::to_string(total) +
                                       " bytes, more than the " + std::to_string(max_total_) +
                                       " accepted");
    }
    const std::span<const std::byte> body = record.subspan(kFragmentHeader);
    if (body.size() > total) throw_past_end(what, body.size(), total);
    total_ = total;
    done_ = body.size();
    started_ = true;
    return body;
  }
  if (record.size() > total_ - done_) throw_past_end(what, record.size(), total_);
  done_ += record.size();
  return record;
}

std::optional<FragmentReader::Message> FragmentReader::feed(std::span<const std::byte> record,
                                                            const char* what) {
  const bool first = !cursor_.started();
  std::span<const std::byte> body;
  try {
    body = cursor_.take(record, what);
  } catch (...) {
    cursor_.reset();  // a record refused leaves no half-begun message behind
    throw;
  }
  if (first && cursor_.complete()) {
    cursor_.reset();
    return Message{body, true};
  }
  if (first) {
    const std::uint64_t total = cursor_.total();
    if (total > cap_) {
      buf_.reset();
      cap_ = 0;
      try {
        buf_ = allocate_bytes(static_cast<std::size_t>(total));
      } catch (const std::bad_alloc&) {
        cursor_.reset();
        throw Error(errc::bad_frame, std::string(what) + ": no memory for a message of " +
                                         std::to_string(total) + " bytes");
      }
      cap_ = static_cast<std::size_t>(total);
    }
  }
  if (!body.empty()) {
    std::memcpy(buf_.get() + (cursor_.done() - body.size()), body.data(), body.size());
  }
  if (!cursor_.complete()) return std::nullopt;
  const std::size_t total = static_cast<std::size_t>(cursor_.total());
  cursor_.reset();
  return Message{std::span<const std::byte>(buf_.get(), total), false};
}

void FragmentReader::trim() noexcept {
  if (cap_ > kLargeBlock && !cursor_.started()) {
    buf_.reset();
    cap_ = 0;
  }
}

void FragmentReader::reset() noexcept {
  cursor_.reset();
  buf_.reset();
  cap_ = 0;
}

std::unique_ptr<std::byte[]> allocate_bytes(std::size_t n) {
  if (n == 0) return nullptr;
  std::unique_ptr<std::byte[]> p(new std::byte[n]);  // NOLINT: uninitialised on purpose
  advise_huge_pages(p.get(), n);
  return p;
}

}  // namespace ipckit::detail
