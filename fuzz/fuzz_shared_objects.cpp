// fuzz_shared_objects: every shared object with a validated layout, driven through live
// handles while the input scribbles on its bytes between operations, as a hostile peer could.
// One object per input (SpscQueue, MpmcQueue, ByteRing, Barrier, Semaphore, Queue<string>, or
// Event + Condition + SharedMutex) is made by name in
// an anonymous Segment; then each input step either runs an operation on a handle (push/pop,
// send/recv, arrive, post/wait, all with zero timeouts), writes 1-8 bytes anywhere in the
// object (header, cursors, slots, control block, peer table, wait policy), or opens a fresh
// handle by name (the validation path). Allowed outcomes: a value, or Error with bad_frame,
// bad_layout, closed, peer_dead, timeout or barrier_broken. A crash, a hang (libFuzzer's
// -timeout) or any other error is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/channel/queue.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/condition.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/semaphore.hpp"
#include "ipckit/sync/shared_mutex.hpp"

namespace {

using ipckit::errc;
using ipckit::Error;
using ipckit::Segment;
using ipckit::fuzz::expect;
using ipckit::fuzz::fail;
using ipckit::fuzz::Input;
using namespace std::chrono_literals;

constexpr std::size_t kSteps = 64;

// invalid_argument: a peer may fill a side's table of attached processes with identities of
// live processes (init's, say), and "more than 64 live processes attached" is then the truth.
// message_too_large: a handle found again after a scribble takes the capacity written then
// (any the bytes can hold, checked), and an item over its smaller maximum is refused.
void allowed(const Error& e) {
  expect(e, {errc::bad_frame, errc::bad_layout, errc::closed, errc::peer_dead, errc::timeout,
             errc::barrier_broken, errc::invalid_argument, errc::message_too_large});
}

// Writes 1-8 input bytes at an input-chosen offset of `object`.
void scribble(std::span<std::byte> object, Input& in) {
  const auto at = static_cast<std::size_t>(in.take<std::uint16_t>()) % object.size();
  const auto n = std::min<std::size_t>(1 + in.take<std::uint8_t>() % 8, object.size() - at);
  const auto bytes = in.bytes(n);
  std::memcpy(object.data() + at, bytes.data(), bytes.size());
}

template <class Q>
void queues(Segment& seg, Input& in) {
  std::optional<Q> q;
  try {
    q.emplace(Q::create(seg, "q", 8u << (in.take<std::uint8_t>() % 4)));
  } catch (const Error&) {
    fail("creating the queue failed");
  }
  const std::span<std::byte> object = seg.lookup_bytes("q");
  std::uint64_t next = 0;
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 8) {
        case 0: (void)q->try_push(next++); break;
        case 1: (void)q->try_pop(); break;
        case 2: (void)q->push_for(next++, 0ms); break;
        case 3: (void)q->pop_for(0ms); break;
        case 4: scribble(object, in); break;
        case 5: q.emplace(Q::open(seg, "q")); break;
      }
    } catch (const Error& e) {
      allowed(e);
    }
  }
}

void rings(Segment& seg, Input& in) {
  std::optional<ipckit::ByteRing> ring;
  ring.emplace(ipckit::ByteRing::create(seg, "r", 256u << (in.take<std::uint8_t>() % 4)));
  const std::span<std::byte> object = seg.lookup_bytes("r");
  const std::byte* end = object.data() + object.size();
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 5) {
        case 0: {
          const auto msg = in.bytes(in.take<std::uint8_t>() % 64);
          (void)ring->try_send(msg);
          break;
        }
        case 1:
          if (ring->try_recv(out) && out.size() > ring->max_message_size()) {
            fail("a message longer than max_message_size()");
          }
          break;
        case 2:
          if (const auto m = ring->try_peek()) {
            if (m->data() < object.data() || m->data() + m->size() > end) {
              fail("a span outside the ring");
            }
            ring->release();
          }
          break;
        case 3: scribble(object, in); break;
        case 4: ring.emplace(ipckit::ByteRing::open(seg, "r")); break;
      }
    } catch (const Error& e) {
      allowed(e);
    }
  }
}

void barrier(Segment& seg, Input& in) {
  auto& b = seg.construct<ipckit::Barrier>("b", 1u + in.take<std::uint8_t>() % 2);
  const std::span<std::byte> object = seg.lookup_bytes("b");
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 3) {
        case 0: (void)b.arrive_and_wait_for(0ms); break;
        case 1: b.attach(); break;
        case 2: scribble(object, in); break;
      }
    } catch (const Error& e) {
      // attach() into a table another party filled: invalid_argument is its contract.
      if (!e.is(errc::invalid_argument)) allowed(e);
    }
  }
}

void semaphore(Segment& seg, Input& in) {
  auto& s = seg.construct<ipckit::Semaphore>("s", in.take<std::uint8_t>());
  const std::span<std::byte> object = seg.lookup_bytes("s");
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 4) {
        case 0: s.post(in.take<std::uint8_t>()); break;
        case 1: (void)s.try_wait(); break;
        case 2: (void)s.wait_for(0ms); break;
        case 3: scribble(object, in); break;
      }
    } catch (const Error& e) {
      if (!e.is(errc::invalid_argument)) allowed(e);  // post past kMaxValue: its contract
    }
  }
}

// Event, Condition (over a Mutex), SharedMutex: flags, counters, slot tables, wait policies.
// The Mutex's own bytes are left alone: a peer that scribbles on a pthread mutex can hang its
// lockers (the kernel trusts its word), which no check in userspace can prevent.
void sync_set(Segment& seg, Input& in) {
  struct Objects {
    ipckit::Event ev;
    ipckit::Mutex m;
    ipckit::Condition cv;
    ipckit::SharedMutex rw;
  };
  auto& o = seg.construct<Objects>("sync");
  const std::span<std::byte> object = seg.lookup_bytes("sync");
  const auto mutex_at =
      static_cast<std::size_t>(reinterpret_cast<std::byte*>(&o.m) - object.data());
  const auto after_mutex = mutex_at + sizeof(ipckit::Mutex);
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 8) {
        case 0: o.ev.set(); break;
        case 1: o.ev.clear(); break;
        case 2: (void)o.ev.wait_for(0ms); break;
        case 3: {
          ipckit::ScopedLock lk(o.m);
          (void)o.cv.wait_for(o.m, 0ms);
          break;
        }
        case 4: o.cv.notify_all(); break;
        case 5:
          if (!o.rw.lock_for(0ms)) o.rw.unlock();
          break;
        case 6:
          if (!o.rw.lock_shared_for(0ms)) o.rw.unlock_shared();
          break;
        case 7: {
          // Before or after the mutex, never on it.
          const bool before = in.take<std::uint8_t>() % 2 == 0 && mutex_at > 0;
          scribble(before ? object.first(mutex_at) : object.subspan(after_mutex), in);
          break;
        }
      }
    } catch (const Error& e) {
      allowed(e);
    }
  }
}

// Queue<T>: records of any length, a lock word, head and tail, a producer table.
void mp_queue(Segment& seg, Input& in) {
  std::optional<ipckit::Queue<std::string>> q;
  q.emplace(ipckit::Queue<std::string>::construct(seg, "Q", 256u << (in.take<std::uint8_t>() % 4)));
  const std::span<std::byte> object = seg.lookup_bytes("Q");
  for (std::size_t i = 0; i < kSteps && !in.empty(); ++i) {
    try {
      switch (in.take<std::uint8_t>() % 5) {
        case 0: {
          const auto b = in.bytes(in.take<std::uint8_t>() % 64);
          (void)q->try_put(std::string(reinterpret_cast<const char*>(b.data()), b.size()));
          break;
        }
        case 1:
          if (const auto v = q->try_get(); v && v->size() > q->max_message()) {
            fail("an item longer than max_message()");
          }
          break;
        case 2: (void)q->get_for(0ms); break;
        case 3: scribble(object, in); break;
        case 4: q.emplace(ipckit::Queue<std::string>::find(seg, "Q")); break;
      }
    } catch (const Error& e) {
      allowed(e);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  Segment seg = Segment::anonymous(1 << 16);
  switch (in.take<std::uint8_t>() % 8) {
    case 0: queues<ipckit::SpscQueue<std::uint64_t>>(seg, in); break;
    case 1: queues<ipckit::MpmcQueue<std::uint64_t>>(seg, in); break;
    case 2: queues<ipckit::SpscQueue<std::uint8_t>>(seg, in); break;
    case 3: rings(seg, in); break;
    case 4: barrier(seg, in); break;
    case 5: semaphore(seg, in); break;
    case 6: mp_queue(seg, in); break;
    case 7: sync_set(seg, in); break;
  }
  return 0;
}
