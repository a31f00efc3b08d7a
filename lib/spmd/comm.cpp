#include "ipckit/spmd/comm.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "collective_checks.hpp"

namespace ipckit {

void Comm::check_rank(int r, const char* what) const {
  if (r < 0 || r >= size()) {
    throw Error(errc::invalid_argument, std::string(what) + ": rank " + std::to_string(r) +
                                            " is outside [0, " + std::to_string(size()) + ")");
  }
}

void Comm::check_source(int r, const char* what) const {
  if (r != kAnySource) check_rank(r, what);
}

void Comm::check_tag(int tag, bool any, const char* what) {
  if ((tag < 0 || tag > kMaxTag) && !(any && tag == kAnyTag)) {
    throw Error(errc::invalid_argument, std::string(what) + ": tag " + std::to_string(tag) +
                                            " is outside [0, " + std::to_string(kMaxTag) + "]" +
                                            (any ? " (or kAnyTag)" : ""));
  }
}

Request Request::group(std::vector<Request> parts) {
  auto g = std::make_unique<RequestGroup>();
  g->parts = std::move(parts);
  return Request(std::move(g));
}

Request Request::persistent_group(std::vector<Request> parts) {
  auto g = std::make_unique<RequestGroup>();
  g->parts = std::move(parts);
  g->persistent = true;
  return Request(std::move(g));
}

namespace {

// True while a request has an operation in flight: a plain one while valid, a persistent one
// while started, a group while any part is.
bool live(const Request& r) {
  if (const auto* p = dynamic_cast<const PersistentRequest*>(r.state())) return p->active.valid();
  if (const auto* g = dynamic_cast<const RequestGroup*>(r.state())) {
    return std::any_of(g->parts.begin(), g->parts.end(), live);
  }
  return r.valid();
}

bool composite(const Request& r) {
  return dynamic_cast<const RequestGroup*>(r.state()) != nullptr ||
         dynamic_cast<const PersistentRequest*>(r.state()) != nullptr;
}

// Moves the operations a request stands for into `out`: a group's parts (the group is reset
// once none is left valid: a group of persistent requests stays), a persistent request's
// operation in flight (the request stays, inactive).
void flatten(Request& r, std::vector<Request>& out) {
  if (auto* g = dynamic_cast<RequestGroup*>(r.state())) {
    for (Request& part : g->parts) flatten(part, out);
    const bool left =
        std::any_of(g->parts.begin(), g->parts.end(), [](const Request& q) { return q.valid(); });
    if (!g->persistent && !left) r.reset();
  } else if (auto* p = dynamic_cast<PersistentRequest*>(r.state())) {
    if (p->active.valid()) flatten(p->active, out);
  } else if (r.valid()) {
    out.push_back(std::move(r));
  }
}

// Error(errc::invalid_argument) for a persistent request of another comm among `r`'s
// (before anything is taken apart: a wait on the wrong comm must not cancel it).
void check_owner(const Request& r, const Comm* comm) {
  if (const auto* g = dynamic_cast<const RequestGroup*>(r.state())) {
    for (const Request& part : g->parts) check_owner(part, comm);
  } else if (const auto* p = dynamic_cast<const PersistentRequest*>(r.state())) {
    if (p->comm != comm) {
      throw Error(errc::invalid_argument, "Comm::wait_all: a persistent request of another comm");
    }
  }
}
}  // namespace

bool Request::active() const { return live(*this); }

void Comm::wait_all(std::span<Request> requests) {
  if (std::none_of(requests.begin(), requests.end(), composite)) {
    complete(requests);
    return;
  }
  for (const Request& r : requests) check_owner(r, this);
  std::vector<Request> flat;
  for (Request& r : requests) flatten(r, flat);
  complete(flat);
}

Request Comm::send_init(int dest, std::span<const std::byte> data, int tag) {
  check_rank(dest, "Comm::send_init");
  check_tag(tag, false, "Comm::send_init");
  auto p = std::make_unique<PersistentRequest>();
  p->comm = this;
  p->is_send = true;
  p->peer = dest;
  p->tag = tag;
  p->out = data;
  return Request(std::move(p));
}

Request Comm::recv_init(int src, std::span<std::byte> data, int tag) {
  check_source(src, "Comm::recv_init");
  check_tag(tag, true, "Comm::recv_init");
  auto p = std::make_unique<PersistentRequest>();
  p->comm = this;
  p->peer = src;
  p->tag = tag;
  p->in = data;
  return Request(std::move(p));
}

namespace {
// The persistent requests `r` stands for; Error(errc::invalid_argument) for anything else.
void persistent_parts(Request& r, const Comm* comm, std::vector<PersistentRequest*>& out) {
  if (auto* g = dynamic_cast<RequestGroup*>(r.state())) {
    for (Request& part : g->parts) persistent_parts(part, comm, out);
    return;
  }
  auto* p = dynamic_cast<PersistentRequest*>(r.state());
  if (p == nullptr || p->comm != comm) {
    throw Error(errc::invalid_argument,
                "Comm::start: not a persistent request of this communicator");
  }
  if (p->active.valid()) throw Error(errc::invalid_argument, "Comm::start: the request is active");
  out.push_back(p);
}
}  // namespace

void Comm::start_all(std::span<Request> requests) {
  std::vector<PersistentRequest*> parts;
  for (Request& r : requests) persistent_parts(r, this, parts);
  std::size_t posted = 0;
  try {
    for (; posted < parts.size(); ++posted) {
      PersistentRequest* p = parts[posted];
      p->active =
          p->is_send ? isend(p->peer, p->out, p->tag) : irecv(p->peer, p->in, p->tag, nullptr);
    }
  } catch (...) {
    for (std::size_t i = 0; i < posted; ++i) parts[i]->active.reset();
    throw;
  }
}

void Comm::start(Request& request) { start_all(std::span(&request, 1)); }

namespace {
// The operations a request stands for (a group's parts, recursively), by pointer.
void leaves(Request& r, std::vector<Request*>& out) {
  if (auto* g = dynamic_cast<RequestGroup*>(r.state())) {
    for (Request& part : g->parts) leaves(part, out);
  } else if (auto* p = dynamic_cast<PersistentRequest*>(r.state())) {
    if (p->active.valid()) out.push_back(&p->active);
  } else if (r.valid()) {
    out.push_back(&r);
  }
}
}  // namespace

// Which of the requests have completed (a group: all its parts), after one poll of all.
std::vector<bool> Comm::ready(std::span<Request> requests) {
  std::vector<Request*> flat;
  std::vector<std::size_t> owner;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    leaves(requests[i], flat);
    owner.resize(flat.size(), i);
  }
  std::vector<bool> done(flat.size());
  if (!flat.empty()) poll(flat, done);
  std::vector<bool> all(requests.size(), true);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (!live(requests[i])) all[i] = false;
  }
  for (std::size_t j = 0; j < flat.size(); ++j) {
    if (!done[j]) all[owner[j]] = false;
  }
  return all;
}

bool Comm::test(Request& request) {
  if (!live(request)) return true;
  if (!ready(std::span(&request, 1))[0]) return false;
  wait(request);  // complete: reports and resets at once
  return true;
}

namespace {
// The waits of wait_any/wait_some: spin, then yield, then sleep 50 us a pass; past the
// backend's call timeout (when it has one), Error(errc::timeout).
class BackOff {
 public:
  BackOff(std::chrono::nanoseconds limit, const char* what)
      : limit_(limit), end_(std::chrono::steady_clock::now() + limit), what_(what) {}
  void pass() {
    ++pass_;
    if (pass_ < 64) return;
    if (limit_.count() > 0 && std::chrono::steady_clock::now() >= end_) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit_).count();
      throw Error(errc::timeout, std::string(what_) + ": call_timeout of " + std::to_string(ms) +
                                     " ms passed with none of the requests complete");
    }
    if (pass_ < 1024) {
      ::sched_yield();
      return;
    }
    ::usleep(50);
  }

 private:
  std::chrono::nanoseconds limit_;
  std::chrono::steady_clock::time_point end_;
  const char* what_;
  unsigned pass_ = 0;
};
}  // namespace

std::size_t Comm::wait_any(std::span<Request> requests) {
  if (std::none_of(requests.begin(), requests.end(), live)) return requests.size();
  BackOff back_off(call_timeout(), "Comm::wait_any");
  for (;;) {
    const std::vector<bool> done = ready(requests);
    const auto it = std::find(done.begin(), done.end(), true);
    if (it != done.end()) {
      const auto i = static_cast<std::size_t>(it - done.begin());
      wait(requests[i]);
      return i;
    }
    back_off.pass();
  }
}

std::vector<std::size_t> Comm::wait_some(std::span<Request> requests) {
  std::vector<std::size_t> which;
  if (std::none_of(requests.begin(), requests.end(), live)) return which;
  BackOff back_off(call_timeout(), "Comm::wait_some");
  for (;;) {
    const std::vector<bool> done = ready(requests);
    for (std::size_t i = 0; i < done.size(); ++i) {
      if (done[i]) which.push_back(i);
    }
    if (!which.empty()) break;
    back_off.pass();
  }
  std::exception_ptr first;
  for (const std::size_t i : which) {
    try {
      wait(requests[i]);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
  return which;
}

void Comm::bad_typed_arguments(const char* what) {
  throw Error(errc::invalid_argument,
              std::string(what) + ": the reduction's element size is not the type's");
}

namespace detail {

bool blocks_fit(std::span<const std::size_t> counts, std::span<const std::size_t> displs,
                std::size_t bytes, int n) noexcept {
  if (n < 0 || counts.size() != static_cast<std::size_t>(n) || displs.size() != counts.size()) {
    return false;
  }
  for (std::size_t r = 0; r < counts.size(); ++r) {
    if (displs[r] > bytes || counts[r] > bytes - displs[r]) return false;
  }
  return true;
}

std::uint64_t hash_of(std::span<const std::size_t> counts) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ counts.size();
  for (const std::size_t c : counts) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

}  // namespace detail
}  // namespace ipckit
