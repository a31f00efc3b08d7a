// ShmComm's shared segments: SharedWindow's memory (allocate_shared) and a sub-communicator's
// collective state (split, dup). A memfd segment one rank makes and others open through
// /proc/<maker>/fd/<fd> (a sibling of the same user may: nothing is named, so nothing can
// leak when a rank is killed). Each step that can fail ends with an agreement over the whole
// communicator, so all ranks throw the same error or none does.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "shm_comm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {
namespace {

constexpr std::size_t kAlign = 64;

class ShmMemory final : public SharedMemory {
 public:
  ShmMemory(ShmComm& comm, Segment segment, std::byte* base, std::vector<std::size_t> at,
            std::vector<std::size_t> bytes)
      : comm_(&comm),
        segment_(std::move(segment)),
        base_(base),
        at_(std::move(at)),
        bytes_(std::move(bytes)) {}
  [[nodiscard]] std::span<std::byte> part(int r) const override {
    const auto i = static_cast<std::size_t>(r);
    return {base_ + at_[i], bytes_[i]};
  }
  // The barrier's release/acquire orders every rank's writes before it with every rank's
  // reads after it.
  void fence() override { comm_->barrier(); }

 private:
  ShmComm* comm_;
  Segment segment_;
  std::byte* base_;
  std::vector<std::size_t> at_;
  std::vector<std::size_t> bytes_;
};

// A maker's answer: where the memory is, or why there is none.
struct Made {
  std::int64_t pid = 0;
  std::int32_t fd = -1;
  std::int32_t failed = 0;  // 1: ipckit errc, 2: errno, 3: another error
  std::int32_t code = 0;
  std::uint64_t offset = 0;
  std::uint64_t segment_bytes = 0;
  char message[240]{};
};

void keep_error(Made& m, const std::error_code& ec, const char* text) {
  m.failed = ec.category() == ipckit_category()        ? 1
             : ec.category() == std::system_category() ? 2
                                                       : 3;
  m.code = ec.value();
  std::strncpy(m.message, text, sizeof(m.message) - 1);
}

[[noreturn]] void throw_made(const Made& m, const char* what) {
  std::string text(m.message, strnlen(m.message, sizeof(m.message)));
  if (m.failed == 1) throw Error(static_cast<errc>(m.code), std::string(what) + ": " + text);
  if (m.failed == 2) {
    throw Error(std::error_code(m.code, std::system_category()), std::string(what) + ": " + text);
  }
  throw Error(errc::invalid_argument, std::string(what) + ": " + text);
}

}  // namespace

// Collective: the ranks with `make` each make a segment with `bytes` zeroed at a 64-byte
// aligned `base`, and lay it out with init(base) before anyone can see it; every rank with `from`
// >= 0 maps the one rank `from` made (its own when it is the maker). Every rank learns of any
// rank's failure, the first in rank order, by the same two collectives (an allgather of what was
// made, a min-allreduce of who failed to open it), and throws it.
ShmComm::Shared ShmComm::share_segment(std::size_t bytes, bool make, int from, const char* what,
                                       const std::function<void(std::byte*)>& init) {
  const std::size_t used = std::max<std::size_t>(bytes, kAlign);
  // A page for the segment's header, pages for its heap's bookkeeping.
  const std::size_t segment_bytes = (used + std::size_t{4} * 4096 + 4095) / 4096 * 4096;
  Made made;
  Shared shared;
  if (make) {
    try {
      shared.segment = std::make_unique<Segment>(Segment::memfd(segment_bytes));
      shared.base = static_cast<std::byte*>(shared.segment->allocate(used, kAlign));
      std::memset(shared.base, 0, used);
      if (init) init(shared.base);
      made.pid = ::getpid();
      made.fd = shared.segment->fd();
      made.offset = shared.segment->offset_of(shared.base);
      made.segment_bytes = shared.segment->size();
    } catch (const Error& e) {
      keep_error(made, e.code(), e.what());
      shared = {};
    } catch (const std::bad_alloc&) {
      keep_error(made, make_error_code(errc::out_of_memory), "out of memory");
      shared = {};
    }
  }
  const std::vector<Made> all = allgather(made);
  for (const Made& m : all) {
    if (m.failed != 0) throw_made(m, what);
  }

  // The others open their maker's descriptor; all agree on the outcome before anyone goes on
  // (the maker keeps it open until then).
  Made mine;
  if (from >= 0 && from != rank_) {
    const Made& m = all[static_cast<std::size_t>(from)];
    try {
      const std::string path = "/proc/" + std::to_string(m.pid) + "/fd/" + std::to_string(m.fd);
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!fd) throw_errno(("open " + path).c_str());
      shared.segment = std::make_unique<Segment>(Segment::adopt(std::move(fd), m.segment_bytes));
      if (m.offset > shared.segment->size() || used > shared.segment->size() - m.offset) {
        throw Error(errc::bad_layout,
                    "the memory lies outside rank " + std::to_string(from) + "'s segment");
      }
      shared.base = static_cast<std::byte*>(shared.segment->at(static_cast<std::size_t>(m.offset)));
    } catch (const Error& e) {
      keep_error(mine, e.code(), e.what());
      shared = {};
    } catch (const std::bad_alloc&) {
      keep_error(mine, make_error_code(errc::out_of_memory), "out of memory");
      shared = {};
    }
  }
  const int first_failed = allreduce(mine.failed != 0 ? rank_ : n_, ReduceOp::min);
  if (first_failed != n_) throw_made(broadcast(mine, first_failed), what);
  return shared;
}

std::unique_ptr<SharedMemory> ShmComm::allocate_shared(std::size_t bytes) {
  const char* what = "ShmComm::allocate_shared";
  const std::vector<std::uint64_t> sizes = allgather(static_cast<std::uint64_t>(bytes));
  std::vector<std::size_t> at(sizes.size());
  std::vector<std::size_t> part(sizes.size());
  std::uint64_t total = 0;
  bool too_large = false;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    at[r] = static_cast<std::size_t>(total);
    part[r] = static_cast<std::size_t>(sizes[r]);
    const std::uint64_t rounded = (sizes[r] + kAlign - 1) / kAlign * kAlign;
    too_large = too_large || sizes[r] > Segment::kMaxSize || total > Segment::kMaxSize;
    total += rounded;
  }
  if (too_large || total > Segment::kMaxSize / 2) {
    throw Error(errc::invalid_argument,
                std::string(what) + ": the parts add up to more than a segment holds");
  }
  Shared shared = share_segment(static_cast<std::size_t>(total), rank_ == 0, 0, what, {});
  return std::make_unique<ShmMemory>(*this, std::move(*shared.segment), shared.base, std::move(at),
                                     std::move(part));
}

}  // namespace ipckit
