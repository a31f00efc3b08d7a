// QueueCore: Queue<T>'s shared state. Two locks (the producers', the consumers') guard a byte
// ring of records ([u32 length][u32 length ^ kCheck][payload], padded to whole cache lines; a
// record that would straddle the ring's end is preceded by a wrap marker and starts at 0). The
// committed state is head and tail (monotonic byte positions). A put writes its record past
// tail, then commits the new tail with one store; a get copies the record at head out, then
// commits the new head with one store: a holder killed at any instruction leaves the old state
// or the new one, never a mix, and the next locker of that side (which takes the lock over)
// finds it consistent. Nothing is trusted: every length and position is checked against the
// capacity this process fixed when it made or attached the queue, and a state that breaks
// them is errc::bad_layout.
#include "ipckit/channel/queue.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <new>
#include <string>

#include "ipckit/core/error.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"

namespace ipckit::detail {

namespace {
constexpr std::uint32_t kQueueMagic = 0x49515531;  // "IQU1"
constexpr std::uint32_t kQueueVersion = 2;
constexpr std::uint32_t kCheck = 0x51554555;
constexpr std::uint32_t kWrap = 0xffffffff;
constexpr std::size_t kRecordHeader = 8;
constexpr std::size_t kParties = 64;  // per side
constexpr std::size_t kMinCapacity = 64;
constexpr std::size_t kMaxCapacity = std::size_t{1} << 40;

constexpr std::size_t round64(std::size_t n) { return (n + 63) & ~std::size_t{63}; }
// A record's bytes: whole cache lines, so that a producer writing the next record never
// shares a line with the consumer reading this one (measured: int64 items 1 -> 1 went from 3.6
// to 5.6 M/s).
constexpr std::size_t record_bytes(std::size_t len) { return round64(kRecordHeader + len); }
}  // namespace

// The queue's lock: the holder's process identity (pid and start time) in one word. Taken by
// CAS, released by a store; a waiter spins reading it, then sleeps on `wake` in steps of at
// most 20 ms, after each of which it looks whether the holder is alive: a dead holder's lock
// is taken over (and the taker told owner_dead). Cheaper than a robust pthread mutex, whose
// robust-list bookkeeping cost most of a put when measured; the queue needs no more, because
// every change it guards is a single committing store. (Two threads of one process exclude
// each other too: the word is not 0 while either holds it.)
struct IdLock {
  std::atomic<std::uint64_t> owner{0};
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> wake{0};

  enum class Got { ok, owner_dead, timeout };
  // Takes it by `deadline` (a dead holder is looked for once even when the deadline has
  // passed, so a zero timeout still recovers the lock from one).
  Got lock(const Deadline& deadline) {
    const std::uint64_t me = current_identity();
    std::uint64_t free = 0;
    if (owner.compare_exchange_strong(free, me, std::memory_order_acquire)) [[likely]]
      return Got::ok;
    for (int i = 0; i < 200; ++i) {
      cpu_relax();
      if (owner.load(std::memory_order_relaxed) == 0) {
        free = 0;
        if (owner.compare_exchange_strong(free, me, std::memory_order_acquire)) return Got::ok;
      }
    }
    // A holder that was preempted (more processes than CPUs) runs sooner if this one yields
    // its CPU a few times than if it sleeps until a wake-up.
    for (int i = 0; i < 4; ++i) {
      sched_yield();
      if (owner.load(std::memory_order_relaxed) == 0) {
        free = 0;
        if (owner.compare_exchange_strong(free, me, std::memory_order_acquire)) return Got::ok;
      }
    }
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    const auto leave = [&](Got g) {
      sleepers.fetch_sub(1, std::memory_order_relaxed);
      return g;
    };
    for (;;) {
      const std::uint32_t seen = wake.load(std::memory_order_seq_cst);
      std::uint64_t held = owner.load(std::memory_order_seq_cst);
      if (held == 0) {
        if (owner.compare_exchange_strong(held, me, std::memory_order_acquire)) {
          return leave(Got::ok);
        }
        continue;
      }
      if (held != me && !identity_alive(held) &&
          owner.compare_exchange_strong(held, me, std::memory_order_acquire)) {
        return leave(Got::owner_dead);
      }
      if (deadline.expired()) return leave(Got::timeout);
      (void)futex_wait(wake, seen, deadline.capped(std::chrono::milliseconds(20)));
    }
  }
  void unlock() noexcept {
    owner.store(0, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) {
      wake.fetch_add(1, std::memory_order_release);
      futex_wake(wake, 1);
    }
  }
};

// The identities of the processes on one side (0: a free slot); `overflow` when more came than
// there are slots (then that side is never reported dead).
struct PartyTable {
  std::atomic<std::uint64_t> ids[kParties]{};
  std::atomic<std::uint32_t> overflow{0};

  // Records the calling process (a free slot, or one whose process is gone).
  void enroll() {
    const ProcessIdentity id = current_identity();
    for (auto& slot : ids) {
      if (slot.load(std::memory_order_acquire) == id) return;
    }
    for (auto& slot : ids) {
      std::uint64_t seen = slot.load(std::memory_order_acquire);
      if ((seen == 0 || !identity_alive(seen)) &&
          slot.compare_exchange_strong(seen, id, std::memory_order_acq_rel)) {
        return;
      }
    }
    overflow.store(1, std::memory_order_release);
  }
  // True when some process enrolled and every one that did is dead.
  [[nodiscard]] bool all_dead() const {
    if (overflow.load(std::memory_order_acquire) != 0) return false;
    bool any = false;
    for (const auto& slot : ids) {
      const std::uint64_t id = slot.load(std::memory_order_acquire);
      if (id == 0) continue;
      if (identity_alive(id)) return false;
      any = true;
    }
    return any;
  }
};

// A change of several words (JoinableQueue only): written here, marked valid, applied, then
// unmarked; a locker that finds it valid (its writer died mid-commit) applies it again.
struct Change {
  std::uint32_t slot = kParties;  // the consumer slot whose counters change (kParties: none)
  std::uint64_t head = 0, tail = 0, puts = 0, dones = 0, taken = 0, finished = 0;
  std::uint64_t released = 0;  // tasks of dead consumers folded into `dones` so far
};
struct RedoLog {
  std::atomic<std::uint32_t> valid{0};
  Change change;
};

struct alignas(64) QueueHeader {
  std::uint32_t magic = kQueueMagic;
  std::uint32_t version = kQueueVersion;
  std::uint64_t capacity = 0;  // data bytes (each process keeps its own copy: see QueueCore)
  WaitPolicy policy;
  // Two locks, as in Michael and Scott's two-lock queue: producers take put_lock and move
  // tail, consumers take get_lock and move head, so a producer and a consumer never wait for
  // each other (each reads the other's index with acquire). Each lock shares its line with the
  // index it guards: an operation's lock and commit touch one line, which stays with its side.
  // A JoinableQueue's counters move with both indexes: its operations take both locks,
  // put_lock first. (Measured 1 -> 1 int64 on one lock: 3.8-6 M items/s, the lock line moving
  // between the processes on every item.)
  // The committed state: head and tail, each written under its lock by one store.
  alignas(64) IdLock put_lock;
  std::atomic<std::uint64_t> tail{0};
  alignas(64) IdLock get_lock;
  std::atomic<std::uint64_t> head{0};
  alignas(64) std::atomic<std::uint32_t> closed{0};
  PartyTable producers;  // the processes that have put
  PartyTable consumers;  // the processes that have got
  // JoinableQueue: items put and tasks done in all, and per consumer slot the items it got
  // and the tasks it marked done. Changed together through `redo`.
  std::uint32_t joinable = 0;
  std::atomic<std::uint64_t> puts{0};
  std::atomic<std::uint64_t> dones{0};
  std::atomic<std::uint64_t> released{0};
  std::atomic<std::uint64_t> taken[kParties]{};
  std::atomic<std::uint64_t> finished[kParties]{};
  RedoLog redo;
  alignas(64) EventCount not_empty;
  alignas(64) EventCount not_full;
  alignas(64) EventCount all_done;  // JoinableQueue: puts == dones
};

namespace {

std::byte* data_of(QueueHeader* h) {
  return reinterpret_cast<std::byte*>(h) + round64(sizeof(QueueHeader));
}

std::uint64_t checked_capacity(std::size_t capacity) {
  if (capacity < kMinCapacity || capacity > kMaxCapacity) {
    throw Error(errc::invalid_argument, "Queue: a capacity of " + std::to_string(capacity) +
                                            " bytes is outside [64, 2^40]");
  }
  return round64(capacity);
}

[[noreturn]] void corrupt(const std::string& what) {
  throw Error(errc::bad_layout, "Queue: the shared state is not a queue's (" + what + ")");
}

enum class Side { put, get };

// The lock of one side (both for a JoinableQueue), with the state checked. Throws bad_layout
// (having unlocked) when the committed state breaks the ring's invariants. Holding one side's
// lock, its own index is fixed and the other's only moves towards it: the snapshot keeps
// head <= tail <= head + cap whatever the other side does meanwhile.
class Locked {
 public:
  // Takes the lock(s) by `deadline`; `held` is false when it could not (the state unread).
  // `joinable`: the queue has a redo record to replay (a plain one never writes it).
  // `cache`: this process's last reading of the other side's index, used instead of reading
  // it again (a line the other side keeps writing) until it is not enough: refresh().
  Locked(QueueHeader* h, std::uint64_t cap, const Deadline& deadline, bool joinable, Side side,
         std::uint64_t* cache = nullptr)
      : h_(h), cap_(cap), side_(side), cache_(joinable ? nullptr : cache) {
    first_ = joinable || side == Side::put ? &h_->put_lock : &h_->get_lock;
    second_ = joinable ? &h_->get_lock : nullptr;
    // A dead holder: the state is the old one or the new (one-store commits), and checked.
    held = first_->lock(deadline) != IdLock::Got::timeout;
    if (!held) return;
    if (second_ != nullptr && second_->lock(deadline) == IdLock::Got::timeout) {
      first_->unlock();
      held = false;
      return;
    }
    if (joinable && h_->redo.valid.load(std::memory_order_acquire) != 0) {
      apply(h_->redo);  // its writer died mid-commit
    }
    (side == Side::put ? tail : head) =
        (side == Side::put ? h_->tail : h_->head).load(std::memory_order_relaxed);
    if (cache_ != nullptr) {
      (side == Side::put ? head : tail) = *cache_;
      if (consistent()) return;  // a stale reading can only understate what the other did
    }
    refresh();
  }
  // Reads the other side's index again (pairs with its release commit). Throws bad_layout
  // (having unlocked) when the state breaks the ring's invariants.
  void refresh() {
    std::uint64_t& other = side_ == Side::put ? head : tail;
    other = (side_ == Side::put ? h_->head : h_->tail).load(std::memory_order_acquire);
    if (cache_ != nullptr) *cache_ = other;
    if (!consistent()) {
      unlock();
      held = false;
      corrupt("head " + std::to_string(head) + ", tail " + std::to_string(tail));
    }
  }
  ~Locked() {
    if (held) unlock();
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

  // The commits: the record is in place (put) or copied out (get) before the store.
  void commit_tail(std::uint64_t new_tail) noexcept {
    h_->tail.store(new_tail, std::memory_order_release);
  }
  void commit_head(std::uint64_t new_head) noexcept {
    h_->head.store(new_head, std::memory_order_release);
  }

  // A change of several words (JoinableQueue): through the redo record.
  void commit(const Change& c) noexcept {
    h_->redo.change = c;
    h_->redo.valid.store(1, std::memory_order_release);  // from here on it happens
    apply(h_->redo);
  }
  // The state as it is, as a Change to make (slot: kParties).
  [[nodiscard]] Change now() const noexcept {
    Change r;
    r.head = head;
    r.tail = tail;
    r.puts = h_->puts.load(std::memory_order_relaxed);
    r.dones = h_->dones.load(std::memory_order_relaxed);
    r.released = h_->released.load(std::memory_order_relaxed);
    return r;
  }

  bool held = false;
  std::uint64_t head = 0;
  std::uint64_t tail = 0;

 private:
  void apply(RedoLog& log) noexcept {
    const Change& r = log.change;
    h_->head.store(r.head, std::memory_order_release);
    h_->tail.store(r.tail, std::memory_order_release);
    h_->puts.store(r.puts, std::memory_order_release);
    h_->dones.store(r.dones, std::memory_order_release);
    h_->released.store(r.released, std::memory_order_release);
    if (r.slot < kParties) {  // a scribbled slot is ignored
      h_->taken[r.slot].store(r.taken, std::memory_order_release);
      h_->finished[r.slot].store(r.finished, std::memory_order_release);
    }
    log.valid.store(0, std::memory_order_release);
  }

  void unlock() noexcept {
    if (second_ != nullptr) second_->unlock();
    first_->unlock();
  }
  [[nodiscard]] bool consistent() const noexcept {
    return tail >= head && tail - head <= cap_ && head % 64 == 0 && tail % 64 == 0;
  }

  QueueHeader* h_;
  std::uint64_t cap_;
  Side side_;
  std::uint64_t* cache_;
  IdLock* first_ = nullptr;
  IdLock* second_ = nullptr;
};

// JoinableQueue: the calling process's slot among the consumers, found or taken under the
// queue's lock (kParties when the table is full: its tasks are not tracked per process). A
// dead consumer's slot is reused once the tasks it got and never marked done are released
// (counted done: join() does not wait for them).
std::uint32_t consumer_slot(QueueHeader* h, Locked& lk) {
  const ProcessIdentity id = current_identity();
  auto& ids = h->consumers.ids;
  for (std::uint32_t i = 0; i < kParties; ++i) {
    if (ids[i].load(std::memory_order_acquire) == id) return i;
  }
  // A free slot first (its counters are 0); then one whose process is gone.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < kParties; ++i) {
      std::uint64_t seen = ids[i].load(std::memory_order_acquire);
      if (pass == 0 ? seen != 0 : (seen == 0 || identity_alive(seen))) continue;
      const std::uint64_t t = h->taken[i].load(std::memory_order_relaxed);
      const std::uint64_t f = h->finished[i].load(std::memory_order_relaxed);
      if (t != 0 || f != 0) {  // the dead one's tasks not done: released, counted done
        Change r = lk.now();
        const std::uint64_t left = t > f ? t - f : 0;
        r.slot = i;
        r.dones = std::min(r.puts, r.dones + left);
        r.released += left;
        r.taken = 0;
        r.finished = 0;
        lk.commit(r);
        h->all_done.notify_all();  // the fold may have finished every task
      }
      if (ids[i].compare_exchange_strong(seen, id, std::memory_order_acq_rel)) return i;
    }
  }
  h->consumers.overflow.store(1, std::memory_order_release);
  return kParties;
}

void write_header(std::byte* at, std::uint32_t len) {
  const std::uint32_t words[2] = {len, len ^ kCheck};
  std::memcpy(at, words, sizeof words);
}

// Bytes a record of `len` takes at `tail`, counting a wrap marker's waste before it.
std::uint64_t room_needed(std::uint64_t tail, std::uint64_t cap, std::size_t len,
                          std::uint64_t& waste) {
  const std::uint64_t need = record_bytes(len);
  const std::uint64_t contiguous = cap - tail % cap;
  waste = contiguous < need ? contiguous : 0;
  return waste + need;
}

}  // namespace

std::size_t QueueCore::bytes_for(std::size_t capacity) {
  return round64(sizeof(QueueHeader)) + checked_capacity(capacity);
}

QueueCore QueueCore::create(std::span<std::byte> mem, std::size_t capacity, WaitPolicy policy,
                            bool joinable) {
  const std::uint64_t cap = checked_capacity(capacity);
  if (mem.size() < bytes_for(capacity) || reinterpret_cast<std::uintptr_t>(mem.data()) % 64 != 0) {
    throw Error(errc::invalid_argument, "Queue: the memory given is too small or misaligned");
  }
  auto* h = new (mem.data()) QueueHeader();
  h->capacity = cap;
  h->policy = policy;
  h->joinable = joinable ? 1 : 0;
  QueueCore q(h);
  q.cap_ = cap;
  q.joinable_ = joinable;
  return q;
}

QueueCore QueueCore::attach(std::span<std::byte> mem) {
  if (mem.size() < round64(sizeof(QueueHeader)) + kMinCapacity ||
      reinterpret_cast<std::uintptr_t>(mem.data()) % 64 != 0) {
    corrupt(std::to_string(mem.size()) + " bytes, too few for a queue");
  }
  auto* h = reinterpret_cast<QueueHeader*>(mem.data());
  std::uint32_t magic = 0, version = 0;
  std::uint64_t cap = 0;
  std::memcpy(&magic, &h->magic, sizeof magic);
  std::memcpy(&version, &h->version, sizeof version);
  std::memcpy(&cap, &h->capacity, sizeof cap);
  if (magic != kQueueMagic || version != kQueueVersion) corrupt("magic or version");
  if (cap < kMinCapacity || cap % 64 != 0 || cap > mem.size() - round64(sizeof(QueueHeader))) {
    corrupt("capacity " + std::to_string(cap) + " for " + std::to_string(mem.size()) + " bytes");
  }
  std::uint32_t joinable = 0;
  std::memcpy(&joinable, &h->joinable, sizeof joinable);
  QueueCore q(h);
  q.cap_ = cap;
  q.joinable_ = joinable != 0;
  return q;
}

// Lengths travel in 32 bits (0xffffffff marks a wrap): at most 2^31 - 1, whatever the capacity.
std::size_t QueueCore::max_message() const noexcept {
  return std::min<std::uint64_t>(cap_ / 2 - kRecordHeader, 0x7fffffff);
}

bool QueueCore::closed() const noexcept { return h_->closed.load(std::memory_order_acquire) != 0; }

bool QueueCore::empty() const noexcept {
  return h_->head.load(std::memory_order_acquire) == h_->tail.load(std::memory_order_acquire);
}

WaitSource QueueCore::wait_source() const {
  WaitSource s;
  QueueHeader* h = h_;
  s.event = &h->not_empty;
  s.ready = [h](bool check_peers) {
    return h->head.load(std::memory_order_acquire) != h->tail.load(std::memory_order_acquire) ||
           h->closed.load(std::memory_order_acquire) != 0 ||
           (check_peers && h->producers.all_dead());
  };
  return s;
}

void QueueCore::close() noexcept {
  // Under the producers' lock: a put that saw the queue open has committed before the flag
  // is up, so a consumer that sees the flag and then an empty ring may say "drained" (a put
  // committing after that would never be got). A holder stopped for over a second is not
  // waited for longer.
  const bool locked =
      h_->put_lock.lock(Deadline::after(std::chrono::seconds(1))) != IdLock::Got::timeout;
  h_->closed.store(1, std::memory_order_release);
  if (locked) h_->put_lock.unlock();
  h_->not_empty.notify_all();
  h_->not_full.notify_all();
}

void QueueCore::enroll(bool producer) {
  pid_t& mine = producer ? producer_pid_ : consumer_pid_;
  const pid_t me = current_pid();
  if (mine == me) return;        // once per process (a forked child enrolls again)
  if (!producer && joinable_) {  // a slot whose counters start clean: under the lock
    Locked lk(h_, cap_, Deadline::never(), joinable_, Side::get);
    (void)consumer_slot(h_, lk);
  } else {
    (producer ? h_->producers : h_->consumers).enroll();
  }
  mine = me;
}

void QueueCore::task_done() {
  {
    Locked lk(h_, cap_, Deadline::never(), joinable_, Side::get);
    const std::uint32_t slot = consumer_slot(h_, lk);
    Change r = lk.now();
    if (r.dones >= r.puts) {
      throw Error(errc::invalid_argument,
                  "JoinableQueue::task_done: called more times than items were put");
    }
    if (slot < kParties) {
      r.slot = slot;
      r.taken = h_->taken[slot].load(std::memory_order_relaxed);
      r.finished = h_->finished[slot].load(std::memory_order_relaxed) + 1;
      if (r.finished > r.taken) {
        throw Error(errc::invalid_argument,
                    "JoinableQueue::task_done: called more times than this process got items");
      }
    }
    r.dones += 1;
    lk.commit(r);
    if (r.dones < r.puts) return;
  }
  h_->all_done.notify_all();
}

std::uint64_t QueueCore::abandoned() const {
  Locked lk(h_, cap_, Deadline::never(), joinable_, Side::get);  // the counters as one state
  return h_->released.load(std::memory_order_acquire) + pending_release();
}

std::uint64_t QueueCore::pending_release() const {
  std::uint64_t sum = 0;
  for (std::uint32_t i = 0; i < kParties; ++i) {
    const std::uint64_t id = h_->consumers.ids[i].load(std::memory_order_acquire);
    if (id == 0 || identity_alive(id)) continue;
    const std::uint64_t t = h_->taken[i].load(std::memory_order_acquire);
    const std::uint64_t f = h_->finished[i].load(std::memory_order_acquire);
    if (t > f) sum += t - f;
  }
  return sum;
}

// Decided under the lock, where every counter is one state (a slot reused folds its dead
// consumer's tasks into dones and zeroes its counters in one commit): all put tasks are done,
// or got by a consumer that has died. The wait in between reads dones before puts (both only
// grow), so a "done" it sees held at some instant; the lock confirms it.
bool QueueCore::join(const Deadline& deadline) {
  for (;;) {
    std::uint64_t pending = 0;  // tasks of dead consumers, as of the lock (then each check)
    {
      Locked lk(h_, cap_, deadline, joinable_, Side::get);
      if (!lk.held) return false;
      pending = pending_release();
      if (h_->puts.load(std::memory_order_acquire) <=
          h_->dones.load(std::memory_order_acquire) + pending) {
        return true;
      }
    }
    const bool again = h_->all_done.await(
        [&] {
          const std::uint64_t dones = h_->dones.load(std::memory_order_seq_cst);
          return dones + pending >= h_->puts.load(std::memory_order_seq_cst);
        },
        deadline, read_policy(h_->policy), [&] { pending = pending_release(); });
    if (!again) return false;
  }
}

void QueueCore::check_producers() const {
  // Looked at after the deaths: an item a producer committed before it died is still got.
  if (h_->producers.all_dead() && empty() && !closed()) {
    throw Error(errc::peer_dead,
                "Queue::get: the queue is empty and every process that put "
                "to it has died");
  }
}

void QueueCore::check_consumers(std::size_t len) const {
  if (!h_->consumers.all_dead() || closed()) return;
  const std::uint64_t head = h_->head.load(std::memory_order_acquire);
  const std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
  std::uint64_t waste = 0;
  if (tail >= head && tail - head <= cap_ &&
      cap_ - (tail - head) < room_needed(tail, cap_, len, waste)) {
    throw Error(errc::peer_dead,
                "Queue::put: the queue is full and every process that got "
                "from it has died");
  }
}

bool QueueCore::put(std::span<const std::byte> msg, const Deadline& deadline) {
  if (msg.size() > max_message()) {
    throw Error(errc::message_too_large, "Queue::put: an item of " + std::to_string(msg.size()) +
                                             " bytes is more than the queue's max_message() of " +
                                             std::to_string(max_message()));
  }
  enroll(true);
  std::byte* data = data_of(h_);
  for (;;) {
    bool done = false;
    {
      Locked lk(h_, cap_, deadline, joinable_, Side::put, &head_seen_);
      if (!lk.held) return false;  // a live holder kept it past the deadline
      if (closed()) throw Error(errc::closed, "Queue::put: the queue is closed");
      std::uint64_t waste = 0;
      const std::uint64_t need = room_needed(lk.tail, cap_, msg.size(), waste);
      if (cap_ - (lk.tail - lk.head) < need) lk.refresh();  // the consumers may have made room
      if (cap_ - (lk.tail - lk.head) >= need) {
        if (waste != 0) write_header(data + lk.tail % cap_, kWrap);
        std::byte* at = data + (lk.tail + waste) % cap_;
        write_header(at, static_cast<std::uint32_t>(msg.size()));
        if (!msg.empty()) std::memcpy(at + kRecordHeader, msg.data(), msg.size());
        if (joinable_) {
          Change r = lk.now();
          r.tail = lk.tail + need;
          r.puts += 1;
          lk.commit(r);
        } else {
          lk.commit_tail(lk.tail + need);
        }
        done = true;
      }
    }  // unlocked before the notify: a woken consumer finds the lock free
    if (done) {
      h_->not_empty.notify(1);
      return true;
    }
    const bool room = h_->not_full.await(
        [&] {
          const std::uint64_t head = h_->head.load(std::memory_order_acquire);
          const std::uint64_t tail = h_->tail.load(std::memory_order_acquire);
          std::uint64_t waste = 0;
          return closed() || (tail >= head && tail - head <= cap_ &&
                              cap_ - (tail - head) >= room_needed(tail, cap_, msg.size(), waste));
        },
        deadline, read_policy(h_->policy), [&] { check_consumers(msg.size()); });
    if (!room) return false;
  }
}

bool QueueCore::get(std::vector<std::byte>& out, const Deadline& deadline) {
  if (!joinable_) enroll(false);  // a JoinableQueue's consumers enroll under the lock
  std::byte* data = data_of(h_);
  for (;;) {
    bool done = false;
    {
      Locked lk(h_, cap_, deadline, joinable_, Side::get, &tail_seen_);
      if (!lk.held) return false;  // a live holder kept it past the deadline
      // Closed is read before the last look at tail: a put that committed before close()
      // (which waits for the producers' lock) is then seen; drained means drained.
      bool was_closed = false;
      if (lk.head == lk.tail) {
        was_closed = closed();
        lk.refresh();  // the producers may have put more
      }
      if (lk.head != lk.tail) {
        std::uint64_t head = lk.head;
        std::uint32_t words[2];
        std::memcpy(words, data + head % cap_, sizeof words);
        if (words[0] == kWrap && words[1] == (kWrap ^ kCheck)) {
          head += cap_ - head % cap_;  // the next record starts the next lap
          if (head >= lk.tail) corrupt("a wrap marker at the tail");
          std::memcpy(words, data + head % cap_, sizeof words);
        }
        const std::uint64_t len = words[0];
        if (words[1] != (words[0] ^ kCheck) || len > max_message() ||
            record_bytes(len) > lk.tail - head || head % cap_ + record_bytes(len) > cap_) {
          corrupt("a record of " + std::to_string(len) + " bytes at " + std::to_string(head));
        }
        out.assign(data + head % cap_ + kRecordHeader, data + head % cap_ + kRecordHeader + len);
        if (joinable_) {
          const std::uint32_t slot = consumer_slot(h_, lk);
          Change r = lk.now();
          r.head = head + record_bytes(len);
          if (slot < kParties) {
            r.slot = slot;
            r.taken = h_->taken[slot].load(std::memory_order_relaxed) + 1;
            r.finished = h_->finished[slot].load(std::memory_order_relaxed);
          }
          lk.commit(r);
        } else {
          lk.commit_head(head + record_bytes(len));
        }
        done = true;
      } else if (was_closed) {
        throw Error(errc::closed, "Queue::get: the queue is closed and drained");
      }
    }
    if (done) {
      h_->not_full.notify_all();  // producers may wait for different amounts of room
      return true;
    }
    const bool any = h_->not_empty.await([&] { return !empty() || closed(); }, deadline,
                                         read_policy(h_->policy), [&] { check_producers(); });
    if (!any) return false;
  }
}

}  // namespace ipckit::detail
