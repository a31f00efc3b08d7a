// ShmComm::allocate_shared (SharedWindow's memory): one memfd segment rank 0 makes and the
// other ranks open through /proc/<rank 0>/fd/<fd> (a sibling of the same user may: nothing is
// named, so nothing can leak when a rank is killed). Every rank learns every rank's size by
// an allgather; each step that can fail ends with an agreement, so all ranks throw the same
// error or none does.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/spmd/shm_comm.hpp"

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

// Rank 0's answer: where the memory is, or why there is none.
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
  const std::size_t used = std::max<std::size_t>(static_cast<std::size_t>(total), kAlign);
  // A page for the segment's header, pages for its heap's bookkeeping.
  const std::size_t segment_bytes = (used + std::size_t{4} * 4096 + 4095) / 4096 * 4096;

  Made made;
  std::optional<Segment> segment;
  std::byte* base = nullptr;
  if (rank_ == 0) {
    try {
      segment.emplace(Segment::memfd(segment_bytes));
      base = static_cast<std::byte*>(segment->allocate(used, kAlign));
      std::memset(base, 0, used);
      made.pid = ::getpid();
      made.fd = segment->fd();
      made.offset = segment->offset_of(base);
      made.segment_bytes = segment->size();
    } catch (const Error& e) {
      keep_error(made, e.code(), e.what());
      segment.reset();
    } catch (const std::bad_alloc&) {
      keep_error(made, make_error_code(errc::out_of_memory), "out of memory");
      segment.reset();
    }
  }
  made = broadcast(made, 0);
  if (made.failed != 0) throw_made(made, what);

  // The others open rank 0's descriptor; all agree on the outcome before anyone goes on.
  Made mine;
  if (rank_ != 0) {
    try {
      const std::string path =
          "/proc/" + std::to_string(made.pid) + "/fd/" + std::to_string(made.fd);
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!fd) throw_errno(("open " + path).c_str());
      segment.emplace(Segment::adopt(std::move(fd), made.segment_bytes));
      base = static_cast<std::byte*>(segment->at(static_cast<std::size_t>(made.offset)));
      if (made.offset + used > segment->size()) {
        throw Error(errc::bad_layout, "the window lies outside rank 0's segment");
      }
    } catch (const Error& e) {
      keep_error(mine, e.code(), e.what());
      segment.reset();
    }
  }
  const int first_failed = allreduce(mine.failed != 0 ? rank_ : n_, ReduceOp::min);
  if (first_failed != n_) throw_made(broadcast(mine, first_failed), what);
  return std::make_unique<ShmMemory>(*this, std::move(*segment), base, std::move(at),
                                     std::move(part));
}

}  // namespace ipckit
