// SharedMutex: a writer word (the identity of the process that holds or waits for the
// exclusive lock) and per-process reader counts. A reader counts itself, then looks for a
// writer; a writer claims the word, then waits for the counts to drain: both seq_cst, so one of
// the two always sees the other. Dead holders are found between bounded sleeps by identity
// (pid and start time): a dead writer's word is cleared or taken over, a dead reader's slot is
// freed (a slot changes hands only through the "being freed" mark, by one CAS).
#include "ipckit/sync/shared_mutex.hpp"

#include "ipckit/core/error.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit {
namespace {
constexpr std::uint32_t kSharedMutexMagic = 0x49524d31;  // "IRM1"
// A slot being freed holds the freer's identity with this bit (pids stay below 2^22): if the
// freer dies mid-way, the mark is stale too and the next waiter frees the slot again.
constexpr std::uint64_t kFreeingBit = std::uint64_t{1} << 31;

// A process identity (or a freeing mark) whose process is gone.
bool stale(std::uint64_t id) {
  return id != 0 && !identity_alive((id & kFreeingBit) != 0 ? id & ~kFreeingBit : id);
}
}  // namespace

SharedMutex::SharedMutex(WaitPolicy policy) noexcept : magic_(kSharedMutexMagic), policy_(policy) {}

bool SharedMutex::readers_gone() {
  const std::uint64_t mark = current_identity() | kFreeingBit;
  bool gone = true;
  for (Slot& s : slots_) {
    std::uint64_t id = s.id.load(std::memory_order_seq_cst);
    if (stale(id) && s.id.compare_exchange_strong(id, mark, std::memory_order_acq_rel)) {
      s.count.store(0, std::memory_order_seq_cst);
      s.id.store(0, std::memory_order_release);
      continue;
    }
    if (s.count.load(std::memory_order_seq_cst) != 0) gone = false;
  }
  return gone;
}

SharedMutex::Slot* SharedMutex::my_slot(std::uint64_t me) {
  for (Slot& s : slots_) {
    if (s.id.load(std::memory_order_acquire) == me) return &s;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (Slot& s : slots_) {
      std::uint64_t free = 0;
      if (s.id.compare_exchange_strong(free, me, std::memory_order_acq_rel)) return &s;
    }
    (void)readers_gone();  // free the slots of dead readers, then look again
  }
  return nullptr;
}

std::error_code SharedMutex::lock_until(const Deadline& deadline) {
  const std::uint64_t me = current_identity();
  const WaitPolicy policy = read_policy(policy_);
  bool mine = false;
  const auto take_over = [&] {
    std::uint64_t w = writer_.load(std::memory_order_seq_cst);
    if (w != me && stale(w) && writer_.compare_exchange_strong(w, me, std::memory_order_seq_cst)) {
      mine = true;
    }
  };
  take_over();  // once before any wait: a zero timeout still recovers from a dead writer
  const bool claimed = ec_.await(
      [&] {
        std::uint64_t free = 0;
        return mine || writer_.compare_exchange_strong(free, me, std::memory_order_seq_cst);
      },
      deadline, policy, take_over);
  if (!claimed) return make_error_code(errc::timeout);
  // A writer died holding it (held_ stays set until a writer unlocks): its data is suspect.
  const bool dead_holder = held_.load(std::memory_order_acquire) != 0;
  (void)readers_gone();  // once before any wait, as above
  // The writer word is ours: no new reader gets in. Wait for those inside to leave.
  const bool drained = ec_.await(
      [&] {
        for (const Slot& s : slots_) {
          if (s.count.load(std::memory_order_seq_cst) != 0) return false;
        }
        return true;
      },
      deadline, policy, [&] { (void)readers_gone(); });
  if (!drained) {
    writer_.store(0, std::memory_order_seq_cst);
    ec_.notify_all();
    return make_error_code(errc::timeout);
  }
  held_.store(1, std::memory_order_release);
  return dead_holder ? make_error_code(errc::owner_dead) : std::error_code{};
}

void SharedMutex::unlock() noexcept {
  if (writer_.load(std::memory_order_seq_cst) != current_identity()) return;  // not the holder
  held_.store(0, std::memory_order_release);
  writer_.store(0, std::memory_order_seq_cst);
  ec_.notify_all();
}

std::error_code SharedMutex::lock_shared_until(const Deadline& deadline) {
  const std::uint64_t me = current_identity();
  Slot* slot = nullptr;
  bool dead_holder = false;
  // A dead writer's word is cleared; held_ stays set, so the next writer is told too.
  const auto clear_dead_writer = [&] {
    std::uint64_t w = writer_.load(std::memory_order_seq_cst);
    if (stale(w) && writer_.compare_exchange_strong(w, 0, std::memory_order_seq_cst)) {
      dead_holder = dead_holder || held_.load(std::memory_order_acquire) != 0;
      ec_.notify_all();
    }
  };
  clear_dead_writer();  // once before any wait: a zero timeout still recovers
  const bool got = ec_.await(
      [&] {
        if (writer_.load(std::memory_order_seq_cst) != 0) return false;
        if (slot == nullptr) slot = my_slot(me);
        if (slot == nullptr) return false;  // 64 reading processes: wait for one to go
        slot->count.fetch_add(1, std::memory_order_seq_cst);
        if (writer_.load(std::memory_order_seq_cst) == 0) return true;
        slot->count.fetch_sub(1, std::memory_order_seq_cst);  // a writer came: it goes first
        ec_.notify_all();                                     // it may wait for this count
        return false;
      },
      deadline, read_policy(policy_), clear_dead_writer);
  if (!got) return make_error_code(errc::timeout);
  return dead_holder ? make_error_code(errc::owner_dead) : std::error_code{};
}

void SharedMutex::unlock_shared() noexcept {
  const std::uint64_t me = current_identity();
  for (Slot& s : slots_) {
    if (s.id.load(std::memory_order_acquire) == me) {
      std::uint32_t c = s.count.load(std::memory_order_seq_cst);
      while (c != 0 && !s.count.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst)) {
      }
      ec_.notify_all();
      return;
    }
  }
}

}  // namespace ipckit
