#include "solver.hpp"

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "ipckit/spmd/cart_comm.hpp"

namespace fluid {

void split(int len, int n, int i, int& offset, int& extent) {
  const int base = len / n, extra = len % n;
  extent = base + (i < extra ? 1 : 0);
  offset = i * base + (i < extra ? i : extra);
}

// The process grid: CartComm's balanced factors, the larger along the longer axis of the
// lattice, along y on a square one. Rows of a block are contiguous in memory, so a side
// facing a y-neighbour is packed at copy speed, one facing an x-neighbour one cache line per
// cell: with two processes on a square lattice, only y-sides.
std::vector<int> process_dims(int procs, int nx, int ny) {
  auto d = ipckit::CartComm::dims_for(procs, 2);  // d[0] >= d[1]
  if (ny >= nx) std::swap(d[0], d[1]);
  return d;
}

void validate(const Params& p, int procs) {
  // BGK is unstable as tau approaches 0.5 (viscosity to zero): keep a margin.
  if (p.tau <= 0.5) {
    throw std::invalid_argument("relaxation time tau = " + std::to_string(p.tau) +
                                " must be above 0.5 (raise the grid size or lower Re)");
  }
  if (p.tau < 0.505) {
    throw std::invalid_argument("relaxation time tau = " + std::to_string(p.tau) +
                                " is too close to 0.5 to be stable (raise the grid size or "
                                "lower Re)");
  }
  if (p.tau > 5.0)
    throw std::invalid_argument("relaxation time tau above 5: lower the grid or raise Re");
  if (p.nx < 2 || p.ny < 2) throw std::invalid_argument("the grid needs at least 2 x 2 cells");
  if (procs < 1) throw std::invalid_argument("at least one process");
  const auto dims = process_dims(procs, p.nx, p.ny);
  if (dims[0] > p.nx || dims[1] > p.ny) {
    throw std::invalid_argument("a " + std::to_string(p.nx) + " x " + std::to_string(p.ny) +
                                " grid is smaller than the " + std::to_string(dims[0]) + " x " +
                                std::to_string(dims[1]) + " process grid");
  }
  if (p.flow == Case::cavity && std::abs(p.u_lid) > 0.3) {
    throw std::invalid_argument("lid speed above 0.3 lattice units: compressibility errors");
  }
}

namespace {

template <class Real>
SolveResult solve_t(ipckit::Comm& comm, Params p, const SolveOptions& o) {
  using clock = std::chrono::steady_clock;
  const bool px = p.flow != Case::cavity;
  const bool py = p.flow == Case::taylor_green;
  ipckit::CartComm grid(comm, 2, process_dims(comm.size(), p.nx, p.ny), {px, py});
  const auto c = grid.coords();
  int x0, nx, y0, ny;
  split(p.nx, grid.dims()[0], c[0], x0, nx);
  split(p.ny, grid.dims()[1], c[1], y0, ny);
  BlockT<Real> block(p, x0, y0, nx, ny);

  const auto dirs = ipckit::CartComm::directions(2);
  std::vector<std::vector<Real>> out(dirs.size()), in(dirs.size());
  std::vector<std::span<const std::byte>> send(dirs.size());
  std::vector<std::span<std::byte>> recv(dirs.size());
  for (std::size_t k = 0; k < dirs.size(); ++k) {
    in[k].resize(block.halo_values(dirs[k][0], dirs[k][1]));
  }
  // A block that is its own x-neighbour fills its x-halo in the interior sweep (no messages
  // for the two x-sides; the corners still come from the y-neighbours).
  const bool self_x = px && grid.dims()[0] == 1;
  const auto by_sweep = [&](std::size_t k) { return self_x && dirs[k][1] == 0; };
  for (std::size_t k = 0; k < dirs.size(); ++k) {
    if (by_sweep(k)) in[k].clear();
  }
  // Posts the halo of the current populations (only what crosses to each neighbour).
  const auto post = [&] {
    for (std::size_t k = 0; k < dirs.size(); ++k) {
      if (by_sweep(k)) {
        out[k].clear();
      } else {
        block.pack(dirs[k][0], dirs[k][1], out[k]);
      }
      send[k] = std::as_bytes(std::span(out[k]));
      recv[k] = std::as_writable_bytes(std::span(in[k]));
    }
    return grid.ihalo_exchange(send, recv);
  };
  const auto complete = [&](ipckit::Request& halo) {
    comm.wait(halo);
    for (std::size_t k = 0; k < dirs.size(); ++k) {
      if (!by_sweep(k) && grid.neighbor(dirs[k][0], dirs[k][1]) >= 0) {
        block.unpack(dirs[k][0], dirs[k][1], in[k]);
      }
    }
  };

  SolveResult r;
  r.dims = grid.dims();
  double comm_s = 0;
  // The ranks set up their blocks (allocation, first touch, the initial field) at their own
  // pace: meet first, so that the first step's wait for a later neighbour is not counted as
  // communication, nor the set-up as stepping.
  comm.barrier();
  const auto t0 = clock::now();
  for (int s = 1; s <= o.steps; ++s) {
    // The exchange runs while the interior (which reads no halo) is updated; what is
    // counted as communication is the time it takes beyond that.
    auto c0 = clock::now();
    ipckit::Request halo = post();
    comm_s += std::chrono::duration<double>(clock::now() - c0).count();
    block.step_interior(self_x);
    c0 = clock::now();
    complete(halo);
    comm_s += std::chrono::duration<double>(clock::now() - c0).count();
    block.step_rim();
    block.finish_step();
    r.steps = s;
    if (s % o.check_every == 0 || s == o.steps) {
      Diagnostics d = block.diagnostics();
      const auto c1 = clock::now();
      double sums[4] = {d.mass, d.kinetic, d.residual, 0};
      comm.allreduce(std::span(sums, 3), ipckit::ReduceOp::sum);
      d.max_speed = comm.allreduce(d.max_speed, ipckit::ReduceOp::max);
      comm_s += std::chrono::duration<double>(clock::now() - c1).count();
      d.mass = sums[0];
      d.kinetic = sums[1];
      d.residual = sums[2];
      r.last = d;
      // Relative change of the velocity field since the last check.
      r.residual = d.kinetic > 0 ? std::sqrt(d.residual / (2.0 * d.kinetic)) : 0.0;
      if (comm.rank() == 0 && o.progress) o.progress(s, d, r.residual);
      if (o.tol > 0 && s > o.check_every && r.residual < o.tol) break;
    }
  }
  r.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  r.comm_seconds = comm_s;
  r.mlups = static_cast<double>(p.nx) * p.ny * r.steps / r.seconds / 1e6;
  // How evenly the ranks computed: the time outside communication, slowest over fastest. A
  // rank that waits for a slower one shows the difference as communication.
  double busy[2] = {r.seconds - comm_s, -(r.seconds - comm_s)};
  comm.allreduce(std::span(busy, 2), ipckit::ReduceOp::max);
  r.imbalance = -busy[1] > 0 ? busy[0] / -busy[1] : 1.0;

  // Gather the field on rank 0: each rank sends its block (extents known from the split).
  std::vector<double> mine(3 * static_cast<std::size_t>(nx) * ny);
  for (int y = 0; y < ny; ++y) {
    for (int x = 0; x < nx; ++x) {
      const auto u = block.velocity(x, y);
      const std::size_t k = 3 * (static_cast<std::size_t>(y) * nx + x);
      mine[k] = u[0];
      mine[k + 1] = u[1];
      mine[k + 2] = block.rho(x, y);
    }
  }
  if (comm.rank() != 0) {
    comm.send(0, std::span<const double>(mine));
    return r;
  }
  r.field.nx = p.nx;
  r.field.ny = p.ny;
  const std::size_t n = static_cast<std::size_t>(p.nx) * p.ny;
  r.field.ux.assign(n, 0);
  r.field.uy.assign(n, 0);
  r.field.rho.assign(n, 0);
  for (int q = 0; q < comm.size(); ++q) {
    const auto cq = grid.coords_of(q);
    int qx0, qnx, qy0, qny;
    split(p.nx, grid.dims()[0], cq[0], qx0, qnx);
    split(p.ny, grid.dims()[1], cq[1], qy0, qny);
    std::vector<double> buf(3 * static_cast<std::size_t>(qnx) * qny);
    if (q == 0) {
      buf = mine;
    } else {
      comm.recv(q, std::span(buf));
    }
    for (int y = 0; y < qny; ++y) {
      for (int x = 0; x < qnx; ++x) {
        const std::size_t k = 3 * (static_cast<std::size_t>(y) * qnx + x);
        const std::size_t g = static_cast<std::size_t>(qy0 + y) * p.nx + (qx0 + x);
        r.field.ux[g] = buf[k];
        r.field.uy[g] = buf[k + 1];
        r.field.rho[g] = buf[k + 2];
      }
    }
  }
  return r;
}

}  // namespace

SolveResult solve(ipckit::Comm& comm, const Params& p, const SolveOptions& o) {
  return p.single ? solve_t<float>(comm, p, o) : solve_t<double>(comm, p, o);
}

}  // namespace fluid
