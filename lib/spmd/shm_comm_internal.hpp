// What shm_comm.cpp (point-to-point, requests) and shm_collectives.cpp share: the state of a
// non-blocking collective request and the way a rank waits.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>

#include "ipckit/spmd/shm_comm.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit {

// A posted ibarrier/iallreduce. The rank has arrived at the collective's barrier (and
// written its values for the first round); the wait waits for the others, then combines.
// Dropped unwaited, it is finished by its destructor: the ranks' collectives stay in step.
struct ShmComm::CollOp final : Request::State {
  ~CollOp() override {
    if (owner == nullptr || done) return;
    if (std::uncaught_exceptions() > 0) {
      // The rank is failing: waiting here for ranks that may wait on it could hang it. Its
      // collectives are out of step from now on.
      owner->abandon_collective(*this);
      return;
    }
    owner->finish_collective(*this);  // its error is dropped
  }
  ShmComm* owner = nullptr;
  const char* what = "";
  std::byte* data = nullptr;  // iallreduce: the user's buffer (ibarrier: nullptr)
  std::size_t count = 0;      // elements
  DataType type = DataType::i32;
  ReduceOp op = ReduceOp::sum;
  std::size_t first = 0;  // elements in the round written at post
  unsigned parity = 0;
  std::uint32_t gen = 0;  // the barrier's generation at this rank's arrival
  bool done = false;
  std::exception_ptr error;
};

// How a rank waits. With no more ranks than CPUs: spin briefly, then sleep on the futex.
// With more (oversubscribed), spinning would hold the CPU the awaited rank needs: the rank
// yields it instead (sched_yield) for about a millisecond, then sleeps. False when the
// deadline passed first.
template <class Ready, class Check>
bool ShmComm::await(EventCount& ec, const Deadline& deadline, Ready&& ready, Check&& check) {
  if (yield_) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
      ::sched_yield();
      if ((i & 15) == 0) {
        check();
        const auto now = std::chrono::steady_clock::now();
        if (!deadline.is_never() && now >= deadline.when()) return ready();
        if (now >= end) break;
      }
    }
    return ec.await(ready, deadline, WaitPolicy::block(), check);
  }
  return ec.await(ready, deadline, policy_, check);
}

}  // namespace ipckit
