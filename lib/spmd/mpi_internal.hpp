// What mpi_comm.cpp (point-to-point, requests) and mpi_collectives.cpp share: the state of
// a request and the matcher of queued receives.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "ipckit/spmd/mpi_comm.hpp"

namespace ipckit::detail {

struct MpiRequest;

// The receives of one MpiComm that are posted but not yet matched to a message, in posting
// order (a message goes to the earliest one whose source and tag it matches).
struct MpiMatcher {
  MPI_Comm comm = MPI_COMM_NULL;
  std::deque<MpiRequest*> unmatched;
  std::size_t count = 0;  // unmatched.size()

  // Matches every receive whose message has arrived: MPI_Improbe says its source, tag and
  // size, MPI_Imrecv takes that very message (into a scratch buffer when it is larger than
  // the receive's) for the earliest receive it matches.
  void match();
  void withdraw(MpiRequest* r) noexcept;
};

// The matchers of MpiComms made from one another (split, dup).
struct MpiFamily {
  std::vector<MpiMatcher*> matchers;
  [[nodiscard]] std::size_t unmatched() const noexcept {
    std::size_t n = 0;
    for (const MpiMatcher* m : matchers) n += m->count;
    return n;
  }
  void match_all() {
    for (MpiMatcher* m : matchers) m->match();
  }
};

struct MpiRequest final : Request::State {
  enum class Phase { unmatched, posted, done };

  std::shared_ptr<MpiMatcher> matcher;
  std::shared_ptr<MpiFamily> family;  // whose queued receives its waits match
  Phase phase = Phase::posted;
  bool is_recv = false;
  bool collective = false;  // a non-blocking collective (MPI_Ibarrier, MPI_Ibcast, ...)
  int peer = 0;             // send: the destination; receive: the source asked for, then the sender
  int tag = 0;  // send: the tag; receive: the tag asked for (or kAnyTag), then the message's
  Status* status = nullptr;  // receive: filled when it completes
  std::byte* data = nullptr;
  int bytes = 0;
  int got = -1;  // the matched message's size
  std::vector<std::byte> scratch;
  MPI_Request request = MPI_REQUEST_NULL;
  std::exception_ptr error;  // how it ended (set with Phase::done)

  MpiRequest() = default;
  MpiRequest(const MpiRequest&) = delete;
  MpiRequest& operator=(const MpiRequest&) = delete;

  // Dropped before wait_all() finished it: an unmatched receive is withdrawn; a matched one
  // is waited for (its message is already on its way into our buffer), and so is a
  // collective (every rank's collectives stay in step); a send is left to complete on its
  // own.
  ~MpiRequest() override {
    if (phase == Phase::unmatched) {
      matcher->withdraw(this);
      return;
    }
    if (request == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized != 0) return;
    if (collective) {
      // Waited for while matching the comm's queued receives (a peer may be blocked sending
      // one before it reaches the collective); not while the rank unwinds an exception,
      // where the Environment aborts the job.
      if (std::uncaught_exceptions() > 0) return;
      for (int flag = 0; flag == 0;) {
        try {
          if (family) {
            family->match_all();
          } else {
            matcher->match();
          }
        } catch (...) {  // NOLINT(bugprone-empty-catch): MPI_Test below reports the state
        }
        if (MPI_Test(&request, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
      }
    } else if (is_recv) {
      MPI_Wait(&request, MPI_STATUS_IGNORE);
    } else {
      MPI_Request_free(&request);
    }
  }
};

// MPI counts are ints: Error(errc::message_too_large) above INT_MAX.
inline int count_of(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw Error(errc::message_too_large,
                std::string(what) + ": " + std::to_string(n) + " bytes, MPI takes at most INT_MAX");
  }
  return static_cast<int>(n);
}

}  // namespace ipckit::detail
