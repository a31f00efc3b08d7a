#include "ipckit/spmd/comm.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
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

Request Request::group(std::vector<Request> parts) {
  auto g = std::make_unique<RequestGroup>();
  g->parts = std::move(parts);
  return Request(std::move(g));
}

namespace {
// Moves the requests a group stands for (and theirs) into `out`.
void flatten(Request& r, std::vector<Request>& out) {
  if (auto* g = dynamic_cast<RequestGroup*>(r.state())) {
    for (Request& part : g->parts) flatten(part, out);
    r.reset();
  } else if (r.valid()) {
    out.push_back(std::move(r));
  }
}
}  // namespace

void Comm::wait_all(std::span<Request> requests) {
  const bool grouped = std::any_of(requests.begin(), requests.end(), [](const Request& r) {
    return dynamic_cast<const RequestGroup*>(r.state()) != nullptr;
  });
  if (!grouped) {
    complete(requests);
    return;
  }
  std::vector<Request> flat;
  for (Request& r : requests) flatten(r, flat);
  complete(flat);
}

namespace {
// The operations a request stands for (a group's parts, recursively), by pointer.
void leaves(Request& r, std::vector<Request*>& out) {
  if (auto* g = dynamic_cast<RequestGroup*>(r.state())) {
    for (Request& part : g->parts) leaves(part, out);
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
    if (!requests[i].valid()) all[i] = false;
  }
  for (std::size_t j = 0; j < flat.size(); ++j) {
    if (!done[j]) all[owner[j]] = false;
  }
  return all;
}

bool Comm::test(Request& request) {
  if (!request.valid()) return true;
  if (!ready(std::span(&request, 1))[0]) return false;
  wait(request);  // complete: reports and resets at once
  return true;
}

namespace {
// The waits of wait_any/wait_some: spin, then yield, then sleep 50 us a pass.
void back_off(unsigned pass) {
  if (pass < 64) return;
  if (pass < 1024) {
    ::sched_yield();
    return;
  }
  ::usleep(50);
}
}  // namespace

std::size_t Comm::wait_any(std::span<Request> requests) {
  if (std::none_of(requests.begin(), requests.end(), [](const Request& r) { return r.valid(); })) {
    return requests.size();
  }
  for (unsigned pass = 0;; ++pass) {
    const std::vector<bool> done = ready(requests);
    const auto it = std::find(done.begin(), done.end(), true);
    if (it != done.end()) {
      const auto i = static_cast<std::size_t>(it - done.begin());
      wait(requests[i]);
      return i;
    }
    back_off(pass);
  }
}

std::vector<std::size_t> Comm::wait_some(std::span<Request> requests) {
  std::vector<std::size_t> which;
  if (std::none_of(requests.begin(), requests.end(), [](const Request& r) { return r.valid(); })) {
    return which;
  }
  for (unsigned pass = 0;; ++pass) {
    const std::vector<bool> done = ready(requests);
    for (std::size_t i = 0; i < done.size(); ++i) {
      if (done[i]) which.push_back(i);
    }
    if (!which.empty()) break;
    back_off(pass);
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
