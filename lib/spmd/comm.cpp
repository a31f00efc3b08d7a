#include "ipckit/spmd/comm.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace ipckit {

std::size_t size_of(DataType t) noexcept {
  switch (t) {
    case DataType::i32:
    case DataType::u32:
    case DataType::f32: return 4;
    case DataType::i64:
    case DataType::u64:
    case DataType::f64: return 8;
  }
  return 0;
}

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
template <class T>
void combine(void* acc, const void* in, std::size_t count, ReduceOp op) {
  // memcpy in and out: the buffers need not be aligned for T.
  auto* a = static_cast<unsigned char*>(acc);
  const auto* b = static_cast<const unsigned char*>(in);
  for (std::size_t i = 0; i < count; ++i) {
    T x;
    T y;
    std::memcpy(&x, a + i * sizeof(T), sizeof(T));
    std::memcpy(&y, b + i * sizeof(T), sizeof(T));
    switch (op) {
      case ReduceOp::sum: x = static_cast<T>(x + y); break;
      case ReduceOp::min: x = std::min(x, y); break;
      case ReduceOp::max: x = std::max(x, y); break;
    }
    std::memcpy(a + i * sizeof(T), &x, sizeof(T));
  }
}
}  // namespace

void reduce_into(void* acc, const void* in, std::size_t count, DataType type, ReduceOp op) {
  switch (type) {
    case DataType::i32: combine<std::int32_t>(acc, in, count, op); break;
    case DataType::i64: combine<std::int64_t>(acc, in, count, op); break;
    case DataType::u32: combine<std::uint32_t>(acc, in, count, op); break;
    case DataType::u64: combine<std::uint64_t>(acc, in, count, op); break;
    case DataType::f32: combine<float>(acc, in, count, op); break;
    case DataType::f64: combine<double>(acc, in, count, op); break;
  }
}

}  // namespace ipckit
