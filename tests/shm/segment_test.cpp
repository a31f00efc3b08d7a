// Segment's API case by case. Over 600 lines: one suite per public class, so that its cases
// share one fixture and one place to look.
#include "ipckit/shm/segment.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fork_helpers.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/shm/arena.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/sync/semaphore.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using namespace std::chrono_literals;
using SegmentTest = testing::LeakCheckedTest;
using ArenaTest = testing::LeakCheckedTest;
using testing::error_of;

constexpr std::size_t kSize = 1 << 20;

bool shm_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

// A /dev/shm entry made without ipckit, as another program (or a crashed creator) leaves one.
void make_foreign_shm(const std::string& name, mode_t mode, off_t size, unsigned char fill) {
  const int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, mode);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::fchmod(fd, mode), 0);  // the umask must not decide the mode under test
  ASSERT_EQ(::ftruncate(fd, size), 0);
  if (fill != 0 && size > 0) {
    std::vector<unsigned char> bytes(static_cast<std::size_t>(size), fill);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  ::close(fd);
}

// ---- anonymous segments -------------------------------------------------------------------

TEST_F(SegmentTest, AnonymousSegmentIsSharedWithForkedChild) {
  auto seg = Segment::anonymous(kSize);
  EXPECT_TRUE(seg.is_anonymous());
  EXPECT_FALSE(seg.owns_name());
  EXPECT_TRUE(seg.name().empty());
  EXPECT_EQ(seg.size(), kSize);
  auto& value = seg.make<std::uint64_t>(41u);
  auto& child_offset = seg.make<std::atomic<std::uint64_t>>(0u);
  auto child = Process::spawn([&] {
    if (value != 41) return 1;  // made before fork: visible in the child
    value = 42;
    // The heap is shared too: an object the child makes is reachable from the parent.
    auto& from_child = seg.make<std::uint64_t>(0xC0FFEEu);
    child_offset.store(seg.offset_of(&from_child), std::memory_order_release);
    return 0;
  });
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success()) << st->describe();
  EXPECT_EQ(value, 42u);
  const std::size_t off = child_offset.load(std::memory_order_acquire);
  ASSERT_NE(off, 0u);
  EXPECT_EQ(*static_cast<std::uint64_t*>(seg.at(off)), 0xC0FFEEu);
}

TEST_F(SegmentTest, AnonymousRejectsSizeBelowMinimum) {
  EXPECT_EQ(error_of([] { (void)Segment::anonymous(0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([] { (void)Segment::anonymous(Segment::kMinSize - 1); }),
            errc::invalid_argument);
  EXPECT_EQ(error_of([] { (void)Segment::anonymous(Segment::kMinSize); }), std::error_code{});
}

// ---- named segments -----------------------------------------------------------------------

TEST_F(SegmentTest, ChildOpensNamedSegmentByNameAndWritesThroughFind) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  EXPECT_FALSE(seg.is_anonymous());
  EXPECT_TRUE(seg.owns_name());
  EXPECT_EQ(seg.name(), name);
  auto& counter = seg.construct<std::uint64_t>("counter", 1u);
  auto child = Process::spawn([&] {
    auto mine = Segment::open(name, kSize);
    if (mine.owns_name() || mine.name() != name || mine.size() != kSize) return 1;
    auto& c = mine.find<std::uint64_t>("counter");
    if (c != 1) return 2;
    c = 7;
    mine.construct<std::uint32_t>("from-child", 99u);
    return 0;
  });
  const auto st = child.wait_for(10s);
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success()) << st->describe();
  EXPECT_EQ(counter, 7u);
  EXPECT_EQ(seg.find<std::uint32_t>("from-child"), 99u);
  EXPECT_TRUE(shm_exists(name)) << "the opener must not unlink the name";
}

TEST_F(SegmentTest, CreateUsesMode0600) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kSize);
}

TEST_F(SegmentTest, CreateIsExclusive) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize); }), errc::already_exists);
  EXPECT_TRUE(shm_exists(name)) << "the failed create must not remove the first one's name";
}

TEST_F(SegmentTest, CreatorUnlinksNameOnDestruction) {
  const std::string name = shm_name();
  {
    auto seg = Segment::create(name, kSize);
    EXPECT_TRUE(shm_exists(name));
  }
  EXPECT_FALSE(shm_exists(name));
  EXPECT_EQ(error_of([&] { (void)Segment::open(name); }), errc::not_found);
}

TEST_F(SegmentTest, OpenerDoesNotUnlinkName) {
  const std::string name = shm_name();
  auto creator = Segment::create(name, kSize);
  {
    auto opener = Segment::open(name);
    EXPECT_FALSE(opener.owns_name());
  }
  EXPECT_TRUE(shm_exists(name));
}

TEST_F(SegmentTest, MovedFromCreatorDoesNotUnlinkTwice) {
  const std::string name = shm_name();
  auto a = Segment::create(name, kSize);
  {
    Segment b = std::move(a);
    EXPECT_TRUE(b.owns_name());
    EXPECT_TRUE(shm_exists(name));
  }
  EXPECT_FALSE(shm_exists(name));
}

TEST_F(SegmentTest, OpenOfMissingNameIsNotFound) {
  EXPECT_EQ(error_of([&] { (void)Segment::open(shm_name()); }), errc::not_found);
}

TEST_F(SegmentTest, OpenWithWrongExpectedSizeIsSizeMismatch) {
  const std::string name = shm_name();
  auto seg = Segment::create(name, kSize);
  EXPECT_EQ(error_of([&] { (void)Segment::open(name, kSize * 2); }), errc::size_mismatch);
  EXPECT_EQ(error_of([&] { (void)Segment::open(name, kSize); }), std::error_code{});
}

TEST_F(SegmentTest, OpenRejectsForeignSegmentWithWrongMode) {
  const std::string name = shm_name();
  make_foreign_shm(name, 0644, kSize, 0);
  const auto ec = error_of([&] { (void)Segment::open(name); });
  ::shm_unlink(("/" + name).c_str());
  EXPECT_EQ(ec, std::error_code(EACCES, std::system_category())) << ec.message();
}

TEST_F(SegmentTest, OpenRejectsTinyForeignSegmentAsBadLayout) {
  const std::string name = shm_name();
  make_foreign_shm(name, 0600, 16, 0);
  const auto ec = error_of([&] { (void)Segment::open(name); });
  ::shm_unlink(("/" + name).c_str());
  EXPECT_EQ(ec, errc::bad_layout) << ec.message();
}

// A garbage file of plausible size is not an ipckit segment either; a zero-filled one looks
// exactly like a segment whose creator has not finished it, so open() waits its grace second
// and then reports errc::timeout (never bad_layout: see OpenDuringCreateIsNeverBadLayout).
// The open runs in a child so that a hang shows up as a failure instead of stalling the suite.
TEST_F(SegmentTest, OpenRejectsForeignSegmentOfPlausibleSizeAsBadLayout) {
  for (const unsigned char fill : {0x00, 0xff}) {
    SCOPED_TRACE(::testing::Message() << "fill byte " << static_cast<int>(fill));
    const std::string name = shm_name();
    make_foreign_shm(name, 0600, kSize, fill);
    auto child = Process::spawn([&] {
      try {
        (void)Segment::open(name);
        return 1;
      } catch (const Error& e) {
        return e.is(fill == 0 ? errc::timeout : errc::bad_layout) ? 0 : 2;
      }
    });
    auto st = child.wait_for(5s);
    if (!st) {
      child.kill(SIGKILL);
      st = child.wait();
    }
    ::shm_unlink(("/" + name).c_str());
    EXPECT_TRUE(st->success()) << "open of a foreign segment: child " << st->describe()
                               << " (1: opened, 2: wrong error, signal 9: hung)";
  }
}

TEST_F(SegmentTest, RejectsBadNames) {
  const std::vector<std::string> bad = {"",          std::string(Segment::kMaxNameLength + 1, 'a'),
                                        "a/b",       "/abc",
                                        "has space", ".hidden",
                                        "semi;colon"};
  for (const auto& name : bad) {
    SCOPED_TRACE("name \"" + name + "\"");
    EXPECT_EQ(error_of([&] { (void)Segment::create(name, kSize); }), errc::invalid_name);
    EXPECT_EQ(error_of([&] { (void)Segment::open(name); }), errc::invalid_name);
    EXPECT_EQ(error_of([&] { Segment::validate_name(name); }), errc::invalid_name);
  }
}

TEST_F(SegmentTest, AcceptsNameOfMaximumLength) {
  std::string name = shm_name() + "-";
  name.resize(Segment::kMaxNameLength, 'x');
  EXPECT_EQ(error_of([&] { Segment::validate_name(name); }), std::error_code{});
  auto seg = Segment::create(name, kSize);
  EXPECT_TRUE(shm_exists(name));
}

TEST_F(SegmentTest, CreateRejectsSizeBelowMinimum) {
  const std::string name = shm_name();
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, 0); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)Segment::create(name, Segment::kMinSize - 1); }),
            errc::invalid_argument);
  EXPECT_FALSE(shm_exists(name));
}

TEST_F(SegmentTest, RemoveDeletesNameOfCrashedCreator) {
  const std::string name = shm_name();
  make_foreign_shm(name, 0600, 4096, 0);
  EXPECT_TRUE(Segment::remove(name));
  EXPECT_FALSE(shm_exists(name));
  EXPECT_FALSE(Segment::remove(name));
}

TEST_F(SegmentTest, UniqueNameIsValidAndDiffersBetweenCalls) {
  const std::string a = Segment::unique_name();
  const std::string b = Segment::unique_name();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("ipckit-", 0), 0u) << a;
  EXPECT_EQ(a.size(), std::string("ipckit-").size() + 16);
  EXPECT_EQ(error_of([&] { Segment::validate_name(a); }), std::error_code{});
  const std::string c = Segment::unique_name("my_app");
  EXPECT_EQ(c.rfind("my_app-", 0), 0u) << c;
  EXPECT_EQ(error_of([] { (void)Segment::unique_name("bad prefix"); }), errc::invalid_name);
}

TEST_F(SegmentTest, CreateUniqueMakesAnUnguessableNameWithMode0600) {
  auto a = Segment::create_unique(kSize, shm_prefix());
  auto b = Segment::create_unique(kSize, shm_prefix());
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(a.name().rfind(shm_prefix() + "-", 0), 0u) << a.name();
  EXPECT_EQ(a.name().size(), shm_prefix().size() + 1 + 16) << "64 random bits, in hex";
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + a.name()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(a.owns_name());
  auto peer = Segment::open(a.name(), kSize);
  EXPECT_EQ(peer.size(), kSize);
  EXPECT_EQ(error_of([&] { (void)Segment::create_unique(16, shm_prefix()); }),
            errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)Segment::create_unique(kSize, "bad/prefix"); }),
            errc::invalid_name);
}

// Another user's segments. Needs root (to act as that user); CI runs as root.
class OtherUserTest : public testing::LeakCheckedTest {
 protected:
  static constexpr uid_t kNobody = 65534;
  void SetUp() override {
    LeakCheckedTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a segment as another user";
  }
  // Runs fn in a child that has become uid/gid `nobody`; true when it returned 0.
  template <class F>
  bool as_nobody(F&& fn) {
    auto child = Process::spawn([&] {
      if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) return 99;
      return fn();
    });
    auto st = child.wait_for(10s);
    if (!st) {
      child.kill(SIGKILL);
      st = child.wait();
    }
    return st->success();
  }
};

TEST_F(OtherUserTest, OpenRefusesASegmentAnotherUserOwnsEvenWithMode0600) {
  const std::string name = shm_name();
  auto sync = Segment::anonymous(1 << 16);
  auto& made = sync.make<Semaphore>(0);
  auto& done = sync.make<Semaphore>(0);
  // nobody makes a real ipckit segment (mode 0600, its uid) and holds it while we look.
  auto child = Process::spawn([&] {
    if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) return 99;
    auto seg = Segment::create(name, kSize);
    (void)seg.construct<int>("secret", 42);
    made.post();
    return done.wait_for(20s) ? 0 : 98;
  });
  ASSERT_TRUE(made.wait_for(20s)) << "the other user's process did not make its segment";
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::error_code ec;
  std::string what;
  try {
    (void)Segment::open(name);
  } catch (const Error& e) {
    ec = e.code();
    what = e.what();
  }
  done.post();
  const auto status = child.wait();
  EXPECT_TRUE(status.success()) << status.describe();
  EXPECT_EQ(ec, std::error_code(EACCES, std::system_category())) << what;
  EXPECT_NE(what.find("owned by uid 65534"), std::string::npos) << what;
  EXPECT_FALSE(shm_exists(name)) << "the other user's creator unlinks its name";
}

TEST_F(OtherUserTest, CreateRefusesANameAnotherUserPlantedFirstAndLeavesItAlone) {
  const std::string name = shm_name();
  // nobody plants a world-writable object under the name we are about to use.
  ASSERT_TRUE(as_nobody([&] {
    const int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0666);
    if (fd < 0) return 1;
    const bool ok = ::fchmod(fd, 0666) == 0 && ::ftruncate(fd, kSize) == 0;
    ::close(fd);
    return ok ? 0 : 2;
  }));
  const auto ec = error_of([&] { (void)Segment::create(name, kSize); });
  struct stat st {};
  const bool still_there = ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
  ::shm_unlink(("/" + name).c_str());
  EXPECT_EQ(ec, errc::already_exists) << ec.message();
  ASSERT_TRUE(still_there) << "the failed create removed somebody else's name";
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_mode & 0777, 0666u) << "the failed create changed the planted object";
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kSize);
}

// ---- named objects ------------------------------------------------------------------------

TEST_F(SegmentTest, ConstructTwiceWithSameNameIsAlreadyExists) {
  auto seg = Segment::anonymous(kSize);
  auto& a = seg.construct<std::uint32_t>("x", 5u);
  EXPECT_EQ(error_of([&] { (void)seg.construct<std::uint32_t>("x", 6u); }), errc::already_exists);
  EXPECT_EQ(a, 5u) << "the failed construct must not touch the existing object";
  EXPECT_EQ(&seg.find<std::uint32_t>("x"), &a);
}

TEST_F(SegmentTest, FindWithDifferentSizeTypeIsSizeMismatch) {
  auto seg = Segment::anonymous(kSize);
  (void)seg.construct<std::uint32_t>("x", 5u);
  EXPECT_EQ(error_of([&] { (void)seg.find<std::uint64_t>("x"); }), errc::size_mismatch);
  EXPECT_EQ(error_of([&] { (void)seg.find<std::uint16_t>("x"); }), errc::size_mismatch);
}

TEST_F(SegmentTest, FindOfMissingNameIsNotFound) {
  auto seg = Segment::anonymous(kSize);
  EXPECT_EQ(error_of([&] { (void)seg.find<int>("nope"); }), errc::not_found);
  EXPECT_FALSE(seg.find_bytes("nope").has_value());
  EXPECT_EQ(error_of([&] { (void)seg.lookup_bytes("nope"); }), errc::not_found);
}

TEST_F(SegmentTest, DestroyBytesFreesTheName) {
  auto seg = Segment::anonymous(kSize);
  (void)seg.construct_bytes("blob", 100, 8);
  EXPECT_TRUE(seg.destroy_bytes("blob"));
  EXPECT_FALSE(seg.find_bytes("blob").has_value());
  EXPECT_FALSE(seg.destroy_bytes("blob"));
  EXPECT_EQ(seg.construct_bytes("blob", 10, 8).size(), 10u);
}

TEST_F(SegmentTest, ConstructRejectsBadObjectName) {
  auto seg = Segment::anonymous(kSize);
  EXPECT_EQ(error_of([&] { (void)seg.construct<int>("bad name", 1); }), errc::invalid_name);
  EXPECT_EQ(error_of([&] { (void)seg.construct<int>("", 1); }), errc::invalid_name);
}

// ---- heap ---------------------------------------------------------------------------------

TEST_F(SegmentTest, AllocateBeyondCapacityIsOutOfMemory) {
  auto seg = Segment::anonymous(64 * 1024);
  EXPECT_EQ(error_of([&] { (void)seg.allocate(128 * 1024); }), errc::out_of_memory);
  EXPECT_EQ(error_of([&] { (void)seg.allocate(seg.size()); }), errc::out_of_memory);
  EXPECT_EQ(error_of([&] { (void)seg.construct_bytes("big", 128 * 1024, 8); }),
            errc::out_of_memory);
  EXPECT_FALSE(seg.find_bytes("big").has_value());
  // Still usable afterwards.
  void* p = seg.allocate(1024);
  EXPECT_NE(p, nullptr);
  seg.deallocate(p);
}

TEST_F(SegmentTest, AllocateRejectsAlignmentThatIsNotAPowerOfTwo) {
  auto seg = Segment::anonymous(kSize);
  for (std::size_t align : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{100}}) {
    EXPECT_EQ(error_of([&] { (void)seg.allocate(16, align); }), errc::invalid_argument)
        << "align " << align;
  }
}

TEST_F(SegmentTest, AllocateHonoursLargeAlignment) {
  auto seg = Segment::anonymous(kSize);
  for (std::size_t align : {std::size_t{64}, std::size_t{4096}}) {
    for (int i = 0; i < 4; ++i) {
      (void)seg.allocate(8);  // disturb the heap so alignment is not accidental
      void* p = seg.allocate(100, align);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << "align " << align;
      std::memset(p, 0xab, 100);
    }
  }
  auto bytes = seg.construct_bytes("page", 10, 4096);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(bytes.data()) % 4096, 0u);
}

TEST_F(SegmentTest, DeallocateReturnsMemory) {
  auto seg = Segment::anonymous(64 * 1024);
  const std::size_t before = seg.free_memory();
  void* p = seg.allocate(8 * 1024);
  EXPECT_LT(seg.free_memory(), before);
  seg.deallocate(p);
  EXPECT_EQ(seg.free_memory(), before);
  seg.deallocate(nullptr);
}

TEST_F(SegmentTest, OffsetOfAndAtRoundTrip) {
  auto seg = Segment::anonymous(kSize);
  auto& v = seg.make<std::uint64_t>(3u);
  const std::size_t off = seg.offset_of(&v);
  EXPECT_GT(off, 0u);
  EXPECT_LT(off, seg.size());
  EXPECT_EQ(seg.at(off), &v);
  EXPECT_EQ(seg.offset_of(seg.base()), 0u);
  EXPECT_EQ(seg.at(0), seg.base());
}

TEST_F(SegmentTest, OffsetOfAndAtRejectOutOfRange) {
  auto seg = Segment::anonymous(kSize);
  int outside = 0;
  EXPECT_EQ(error_of([&] { (void)seg.offset_of(&outside); }), errc::invalid_argument);
  const auto* end = static_cast<const std::byte*>(seg.base()) + seg.size();
  EXPECT_EQ(error_of([&] { (void)seg.offset_of(end); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)seg.at(seg.size()); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)seg.at(std::size_t(-1)); }), errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)seg.at(seg.size() - 1); }), std::error_code{});
}

// ---- Arena --------------------------------------------------------------------------------

TEST_F(ArenaTest, ConcurrentAllocationsFromFourProcessesNeverOverlap) {
  constexpr int kProcs = 4;
  constexpr int kBlocksPerProc = 2000;
  struct Block {
    std::uint64_t offset;
    std::uint64_t size;
  };
  SharedArray<std::byte> region(4 << 20);
  Arena& arena = Arena::create(region.span());
  const std::size_t header = arena.used();
  SharedArray<Block> blocks(kProcs * kBlocksPerProc);
  SharedArray<int> go(1);  // start gate, so that the children really allocate concurrently
  auto kids = testing::spawn_n(kProcs, [&](int rank) {
    while (__atomic_load_n(&go[0], __ATOMIC_ACQUIRE) == 0) std::this_thread::sleep_for(100us);
    const auto pattern = static_cast<std::byte>(0x10 + rank);
    for (int i = 0; i < kBlocksPerProc; ++i) {
      const std::size_t bytes = 1 + static_cast<std::size_t>((i * 37 + rank * 11) % 500);
      const std::size_t align = std::size_t{1} << (i % 7);
      const std::size_t off = arena.allocate(bytes, align);
      if (off % align != 0) return 1;
      std::memset(arena.at(off), static_cast<int>(pattern), bytes);
      blocks[static_cast<std::size_t>(rank * kBlocksPerProc + i)] = Block{off, bytes};
    }
    return 0;
  });
  __atomic_store_n(&go[0], 1, __ATOMIC_RELEASE);
  ASSERT_TRUE(testing::all_succeed(kids, 30s));

  std::vector<Block> all(blocks.begin(), blocks.end());
  for (int rank = 0; rank < kProcs; ++rank) {
    for (int i = 0; i < kBlocksPerProc; ++i) {
      const Block& b = all[static_cast<std::size_t>(rank * kBlocksPerProc + i)];
      ASSERT_GE(b.offset, header) << "inside the arena header";
      ASSERT_LE(b.offset + b.size, arena.used());
      const auto* p = arena.at(b.offset);
      const auto want = static_cast<std::byte>(0x10 + rank);
      ASSERT_TRUE(std::all_of(p, p + b.size, [&](std::byte x) { return x == want; }))
          << "block of rank " << rank << " at offset " << b.offset << " was overwritten";
    }
  }
  std::sort(all.begin(), all.end(),
            [](const Block& a, const Block& b) { return a.offset < b.offset; });
  for (std::size_t i = 1; i < all.size(); ++i) {
    ASSERT_GE(all[i].offset, all[i - 1].offset + all[i - 1].size) << "blocks overlap";
  }
  EXPECT_LE(arena.used(), arena.capacity());
}

TEST_F(ArenaTest, FullArenaReturnsNulloptAndThrowsOutOfMemory) {
  SharedArray<std::byte> region(4096);
  Arena& arena = Arena::create(region.span());
  EXPECT_EQ(arena.capacity(), 4096u);
  const std::size_t header = arena.used();
  EXPECT_GT(header, 0u);
  const auto first = arena.try_allocate(4096 - header, 1);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, header);
  EXPECT_EQ(arena.used(), 4096u);
  EXPECT_FALSE(arena.try_allocate(1, 1).has_value());
  EXPECT_EQ(error_of([&] { (void)arena.allocate(1); }), errc::out_of_memory);
  arena.reset();
  EXPECT_EQ(arena.used(), header);
  EXPECT_FALSE(arena.try_allocate(4096, 1).has_value());
  EXPECT_FALSE(arena.try_allocate(std::size_t(-1), 1).has_value()) << "no wrap-around";
  EXPECT_TRUE(arena.try_allocate(100).has_value());
}

TEST_F(ArenaTest, AttachFindsTheArenaAndChecksMagic) {
  SharedArray<std::byte> region(8192);
  EXPECT_EQ(error_of([&] { (void)Arena::attach(region.span()); }), errc::bad_layout)
      << "zero-filled region";
  Arena& arena = Arena::create(region.span());
  (void)arena.allocate(32);
  Arena& again = Arena::attach(region.span());
  EXPECT_EQ(&again, &arena);
  EXPECT_EQ(again.used(), arena.used());
  EXPECT_EQ(error_of([&] { (void)Arena::attach(region.span().first(4096)); }), errc::bad_layout)
      << "recorded size differs";
  EXPECT_EQ(error_of([&] { (void)Arena::attach(region.span().first(8)); }), errc::bad_layout);
  region[0] ^= std::byte{0xff};  // corrupt the magic word
  EXPECT_EQ(error_of([&] { (void)Arena::attach(region.span()); }), errc::bad_layout);
}

TEST_F(ArenaTest, ChildAllocatesFromArenaAttachedByOffset) {
  SharedArray<std::byte> region(64 * 1024);
  Arena::create(region.span());
  SharedArray<std::uint64_t> offset(1);
  auto child = Process::spawn([&] {
    Arena& a = Arena::attach(region.span());
    const std::size_t off = a.allocate(6);
    std::memcpy(a.at(off), "hello", 6);
    offset[0] = off;
    return 0;
  });
  ASSERT_TRUE(child.wait().success());
  Arena& arena = Arena::attach(region.span());
  EXPECT_STREQ(reinterpret_cast<const char*>(arena.at(offset[0])), "hello");
}

TEST_F(ArenaTest, RejectsBadAlignment) {
  SharedArray<std::byte> region(64 * 1024);
  Arena& arena = Arena::create(region.span());
  const std::size_t used = arena.used();
  for (std::size_t align : {std::size_t{0}, std::size_t{3}, std::size_t{48}, std::size_t{8192}}) {
    EXPECT_FALSE(arena.try_allocate(8, align).has_value()) << "align " << align;
    EXPECT_EQ(error_of([&] { (void)arena.allocate(8, align); }), errc::invalid_argument)
        << "align " << align;
  }
  EXPECT_EQ(arena.used(), used) << "a rejected call must not reserve anything";
}

TEST_F(ArenaTest, HonoursAlignmentUpTo4096) {
  SharedArray<std::byte> region(256 * 1024);
  // Start the arena off the page boundary, so offset alignment alone would not be enough.
  Arena& arena = Arena::create(region.span().subspan(64));
  for (std::size_t align = 1; align <= 4096; align *= 2) {
    (void)arena.allocate(3, 1);
    const auto off = arena.try_allocate(10, align);
    ASSERT_TRUE(off.has_value()) << "align " << align;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(arena.at(*off)) % align, 0u) << "align " << align;
  }
}

TEST_F(ArenaTest, CreateRejectsMisalignedOrTinyRegion) {
  SharedArray<std::byte> region(8192);
  EXPECT_EQ(error_of([&] { (void)Arena::create(region.span().subspan(8)); }),
            errc::invalid_argument);
  EXPECT_EQ(error_of([&] { (void)Arena::create(region.span().first(8)); }), errc::invalid_argument);
}

}  // namespace
}  // namespace ipckit
