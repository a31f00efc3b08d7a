#include "ipckit/spmd/comm.hpp"

#include "collective_checks.hpp"

#include <algorithm>
#include <cstring>
#include <string>

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
