// Stale named segments: who may still use one (its creator and users by identity, and any
// process holding its file open), and removing it only when nobody can.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ipckit/core/error.hpp"
#include "segment_internal.hpp"

namespace ipckit {
namespace segment_detail {

// How many descriptors open on the file `st` describes the processes we can see hold (ours
// included): every /proc/<pid>/fd/<n> whose target is that file. A process forked from one
// that had the segment open holds the descriptor too, registered or not.
namespace {

std::size_t open_descriptors(const struct stat& st) {
  std::size_t count = 0;
  DIR* procs = ::opendir("/proc");
  if (procs == nullptr) return 0;
  std::string dir;
  while (const dirent* p = ::readdir(procs)) {
    if (p->d_name[0] < '0' || p->d_name[0] > '9') continue;
    dir.assign("/proc/").append(p->d_name).append("/fd");
    DIR* fds = ::opendir(dir.c_str());
    if (fds == nullptr) continue;  // gone, or not ours to look at
    while (const dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      struct stat target {};
      if (::fstatat(::dirfd(fds), f->d_name, &target, 0) == 0 && target.st_ino == st.st_ino &&
          target.st_dev == st.st_dev) {
        ++count;
      }
    }
    ::closedir(fds);
  }
  ::closedir(procs);
  return count;
}

}  // namespace

// Whether nobody alive created or uses the segment whose header is `h` (read atomically)
// and no process but the caller's one descriptor (`own`) has its file open.
bool nobody_alive(const SegmentHeader& h, const struct stat& st, std::size_t own) {
  if (open_descriptors(st) > own) return false;
  const ProcessIdentity creator = h.creator.load(std::memory_order_acquire);
  if (creator == 0) return true;  // killed before it wrote itself, and nobody has it open
  if (identity_alive(creator)) return false;
  for (const auto& u : h.users) {
    const ProcessIdentity id = u.load(std::memory_order_acquire);
    if (id != 0 && identity_alive(id)) return false;
  }
  return true;
}

// Removes `name` if it is stale. The decision and the removal happen under the segment's
// lock with its state set to kReclaimed, and an opener registers under the same lock and
// re-checks the state: a process that opens the segment concurrently either counts as a
// live user (nothing is removed) or finds it reclaimed (and opens or creates anew).
bool reclaim(std::string_view name) {
  const std::string path = shm_path(name);
  UniqueFd fd(::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_uid != ::geteuid()) return false;
  const auto same_file = [&] {
    struct stat now {};
    UniqueFd again(::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0));
    return again && ::fstat(again.get(), &now) == 0 && now.st_ino == st.st_ino &&
           now.st_dev == st.st_dev;
  };
  if (static_cast<std::size_t>(st.st_size) < kHeaderBytes) {
    // A creator killed before it sized the file: nobody else holds it open.
    if (open_descriptors(st) > 1 || !same_file()) return false;
    return ::shm_unlink(path.c_str()) == 0;
  }
  void* p = ::mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return false;
  guard_mapping(static_cast<std::byte*>(p), kHeaderBytes);
  auto* h = static_cast<SegmentHeader*>(p);
  bool removed = false;
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  if (h->magic == kSegmentMagic && h->version == kSegmentVersion && state == kReady) {
    // owner_dead means we hold it too (consistent again); timeout: a stopped holder, skip.
    if (h->lock.lock_for(std::chrono::seconds(1)) != errc::timeout) {
      if (h->state.load(std::memory_order_acquire) == kReady && nobody_alive(*h, st, 1) &&
          same_file()) {
        h->state.store(kReclaimed, std::memory_order_release);
        removed = ::shm_unlink(path.c_str()) == 0;
      }
      h->lock.unlock();
    }
  } else if (state == kCreating && nobody_alive(*h, st, 1) && same_file()) {
    removed = ::shm_unlink(path.c_str()) == 0;
  }
  unguard_mapping(static_cast<std::byte*>(p));
  ::munmap(p, kHeaderBytes);
  return removed;
}

}  // namespace segment_detail

using namespace segment_detail;  // NOLINT(google-build-using-namespace)

bool Segment::is_stale(std::string_view name) {
  validate_name(name);
  UniqueFd fd(::shm_open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC, 0));
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_uid != ::geteuid()) return false;
  if (static_cast<std::size_t>(st.st_size) < kHeaderBytes) return open_descriptors(st) <= 1;
  void* p = ::mmap(nullptr, kHeaderBytes, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return false;
  guard_mapping(static_cast<std::byte*>(p), kHeaderBytes);
  const auto* h = static_cast<const SegmentHeader*>(p);
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  const bool ours = state == kCreating ||
                    (h->magic == kSegmentMagic && h->version == kSegmentVersion && state == kReady);
  const bool stale = ours && nobody_alive(*h, st, 1);
  unguard_mapping(static_cast<std::byte*>(p));
  ::munmap(p, kHeaderBytes);
  return stale;
}

std::size_t Segment::remove_stale(std::string_view prefix) {
  std::vector<std::string> names;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      const std::string_view n = e->d_name;
      if (n.size() > kMaxNameLength || n.empty() || n.front() == '.') continue;
      if (n.substr(0, prefix.size()) == prefix) names.emplace_back(n);
    }
    ::closedir(dir);
  }
  std::size_t removed = 0;
  for (const auto& n : names) {
    try {
      validate_name(n);
    } catch (const Error&) {
      continue;
    }
    if (reclaim(n)) ++removed;
  }
  return removed;
}

}  // namespace ipckit
