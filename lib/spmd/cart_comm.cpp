#include "ipckit/spmd/cart_comm.hpp"

#include <algorithm>
#include <string>

namespace ipckit {

std::vector<int> CartComm::dims_for(int nprocs, int ndims) {
  if (nprocs < 1 || ndims < 1 || ndims > 3) {
    throw Error(errc::invalid_argument, "CartComm::dims_for(" + std::to_string(nprocs) + ", " +
                                            std::to_string(ndims) +
                                            "): need nprocs >= 1 and "
                                            "1 <= ndims <= 3");
  }
  // Give each prime factor, largest first, to the axis with the smallest extent so far.
  std::vector<int> factors;
  int n = nprocs;
  for (int p = 2; p * p <= n; ++p) {
    while (n % p == 0) {
      factors.push_back(p);
      n /= p;
    }
  }
  if (n > 1) factors.push_back(n);
  std::sort(factors.rbegin(), factors.rend());
  std::vector<int> dims(static_cast<std::size_t>(ndims), 1);
  for (int f : factors) *std::min_element(dims.begin(), dims.end()) *= f;
  std::sort(dims.rbegin(), dims.rend());
  return dims;
}

std::vector<CartComm::Offset> CartComm::directions(int ndims) {
  std::vector<Offset> out;
  const int ymax = ndims >= 2 ? 1 : 0;
  const int zmax = ndims >= 3 ? 1 : 0;
  for (int dz = -zmax; dz <= zmax; ++dz) {
    for (int dy = -ymax; dy <= ymax; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        if (dx == 0 && dy == 0 && dz == 0) continue;
        out.push_back({dx, dy, dz});
      }
    }
  }
  return out;
}

CartComm::CartComm(Comm& comm, int ndims, std::vector<int> dims, std::vector<bool> periodic)
    : CartComm(comm, nullptr, ndims, std::move(dims), std::move(periodic)) {}

CartComm::CartComm(Comm& comm, std::shared_ptr<Comm> owned, int ndims, std::vector<int> dims,
                   std::vector<bool> periodic)
    : owned_(std::move(owned)), comm_(comm), ndims_(ndims) {
  if (ndims < 1 || ndims > 3) {
    throw Error(errc::invalid_argument,
                "CartComm: ndims must be 1, 2 or 3, not " + std::to_string(ndims));
  }
  const bool choose =
      dims.empty() || std::all_of(dims.begin(), dims.end(), [](int d) { return d == 0; });
  if (choose) {
    dims = dims_for(comm.size(), ndims);
  } else {
    long long product = 1;
    for (int d : dims) {
      if (d < 1) throw Error(errc::invalid_argument, "CartComm: an extent below 1");
      product *= d;
    }
    if (static_cast<int>(dims.size()) != ndims || product != comm.size()) {
      throw Error(errc::invalid_argument, "CartComm: " + std::to_string(dims.size()) +
                                              " extents with product " + std::to_string(product) +
                                              " for " + std::to_string(ndims) + " axes and " +
                                              std::to_string(comm.size()) + " ranks");
    }
  }
  if (periodic.empty()) periodic.assign(static_cast<std::size_t>(ndims), false);
  if (static_cast<int>(periodic.size()) != ndims) {
    throw Error(errc::invalid_argument, "CartComm: " + std::to_string(periodic.size()) +
                                            " periodic flags for " + std::to_string(ndims) +
                                            " axes");
  }
  dims_ = std::move(dims);
  periodic_ = std::move(periodic);
  dirs_ = directions(ndims);
}

CartComm::Offset CartComm::coords_of(int r) const {
  if (r < 0 || r >= size()) {
    throw Error(errc::invalid_argument, "CartComm::coords_of: rank " + std::to_string(r) +
                                            " is outside [0, " + std::to_string(size()) + ")");
  }
  Offset c{0, 0, 0};
  for (int a = 0; a < ndims_; ++a) {
    c[static_cast<std::size_t>(a)] = r % dims_[static_cast<std::size_t>(a)];
    r /= dims_[static_cast<std::size_t>(a)];
  }
  return c;
}

int CartComm::rank_at(Offset c) const {
  int r = 0;
  int stride = 1;
  for (int a = 0; a < ndims_; ++a) {
    const auto i = static_cast<std::size_t>(a);
    int v = c[i];
    const int d = dims_[i];
    if (v < 0 || v >= d) {
      if (!periodic_[i]) return -1;
      v = ((v % d) + d) % d;
    }
    r += v * stride;
    stride *= d;
  }
  for (int a = ndims_; a < 3; ++a) {
    if (c[static_cast<std::size_t>(a)] != 0) return -1;
  }
  return r;
}

int CartComm::neighbor(int dx, int dy, int dz) const {
  const Offset me = coords();
  return rank_at({me[0] + dx, me[1] + dy, me[2] + dz});
}

void CartComm::halo_exchange(std::span<const std::span<const std::byte>> send,
                             std::span<const std::span<std::byte>> recv) {
  Request r = ihalo_exchange(send, recv);
  comm_.wait(r);
}

Request CartComm::ihalo_exchange(std::span<const std::span<const std::byte>> send,
                                 std::span<const std::span<std::byte>> recv) {
  return halo_requests(send, recv, false, "CartComm::halo_exchange");
}

Request CartComm::halo_init(std::span<const std::span<const std::byte>> send,
                            std::span<const std::span<std::byte>> recv) {
  return halo_requests(send, recv, true, "CartComm::halo_init");
}

Request CartComm::halo_requests(std::span<const std::span<const std::byte>> send,
                                std::span<const std::span<std::byte>> recv, bool persistent,
                                const char* what) {
  const std::size_t k = dirs_.size();
  if (send.size() != k || recv.size() != k) {
    throw Error(errc::invalid_argument, std::string(what) + ": " + std::to_string(send.size()) +
                                            " send and " + std::to_string(recv.size()) +
                                            " receive buffers for " + std::to_string(k) +
                                            " directions");
  }
  // Messages between two ranks arrive in the order they were sent: each rank sends in
  // direction order, and receives from each neighbour in the order that neighbour sends
  // (the message it sent in direction d comes from our direction opposite(d) = k-1-d).
  std::vector<Request> reqs;
  reqs.reserve(2 * k);
  for (std::size_t d = 0; d < k; ++d) {
    const Offset& o = dirs_[d];
    const int to = neighbor(o[0], o[1], o[2]);
    if (to >= 0) {
      reqs.push_back(persistent ? comm_.send_init(to, send[d]) : comm_.isend(to, send[d]));
    }
  }
  for (std::size_t d = 0; d < k; ++d) {
    const std::size_t from_dir = k - 1 - d;  // the neighbour's direction d points at us
    const Offset& o = dirs_[from_dir];
    const int from = neighbor(o[0], o[1], o[2]);
    if (from >= 0) {
      reqs.push_back(persistent ? comm_.recv_init(from, recv[from_dir])
                                : comm_.irecv(from, recv[from_dir]));
    }
  }
  return persistent ? Request::persistent_group(std::move(reqs)) : Request::group(std::move(reqs));
}

std::pair<int, int> CartComm::shift(int axis, int disp) const {
  if (axis < 0 || axis >= ndims_) {
    throw Error(errc::invalid_argument, "CartComm::shift: axis " + std::to_string(axis) +
                                            " outside [0, " + std::to_string(ndims_) + ")");
  }
  Offset up{};
  up[static_cast<std::size_t>(axis)] = disp;
  return {neighbor(-up[0], -up[1], -up[2]), neighbor(up[0], up[1], up[2])};
}

CartComm CartComm::sub(const std::vector<bool>& remain) const {
  if (static_cast<int>(remain.size()) != ndims_ ||
      std::none_of(remain.begin(), remain.end(), [](bool b) { return b; })) {
    throw Error(errc::invalid_argument, "CartComm::sub: " + std::to_string(remain.size()) +
                                            " flags for " + std::to_string(ndims_) +
                                            " axes, or none kept");
  }
  // The color numbers the position on the dropped axes; within a color, ranks keep this
  // grid's row-major order, which is the kept axes' row-major order.
  const Offset me = coords();
  int color = 0;
  int stride = 1;
  std::vector<int> dims;
  std::vector<bool> periodic;
  for (std::size_t a = 0; a < remain.size(); ++a) {
    if (remain[a]) {
      dims.push_back(dims_[a]);
      periodic.push_back(periodic_[a]);
    } else {
      color += me[a] * stride;
      stride *= dims_[a];
    }
  }
  std::shared_ptr<Comm> part = comm_.split(color, rank());
  Comm& c = *part;
  const auto nd = static_cast<int>(dims.size());  // before the moves below
  return CartComm(c, std::move(part), nd, std::move(dims), std::move(periodic));
}

}  // namespace ipckit
