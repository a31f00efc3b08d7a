// fuzz_spmd_header: what a ShmComm rank reads that a peer rank wrote. spmd::run's mapping is
// laid (lay_out) for two ranks; rank 0 sends a few real messages with ShmComm::send, then
// the input appends raw records to its ring (pieces: a size word, then payload) and may
// overwrite the ring's offset in the directory, and rank 0 is marked finished (dead). Rank 1
// then receives (recv or irecv + wait_all, buffers sized by the input) until it gets an
// error: only errc::size_mismatch (the message is consumed, the next one arrives),
// errc::bad_frame, errc::bad_layout (an offset outside the arena) and errc::peer_dead (all
// delivered) are allowed. In mode 1 the input instead writes rank 0's collective size words
// (size, signature, root, the code of a malformed argument) and buffer, and rank 1 runs one
// collective against them (every kind: reductions, the gathers, scatters and all-to-alls
// and their v forms, whose count tables come from rank 0's buffer): size_mismatch,
// invalid_argument or peer_dead.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "ipckit/shm/arena.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "spmd/shm_layout.hpp"

namespace {

using ipckit::ByteRing;
using ipckit::errc;
using ipckit::Error;
using ipckit::ShmComm;
using ipckit::fuzz::expect;
using ipckit::fuzz::Input;
namespace sd = ipckit::spmd::detail;

constexpr std::size_t kRingBytes = std::size_t{1} << 16;  // the smallest spmd::run allows

class Mapping {
 public:
  explicit Mapping(std::size_t n) : n_(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) ipckit::fuzz::fail("mmap");
    p_ = static_cast<std::byte*>(p);
  }
  ~Mapping() { ::munmap(p_, n_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* data() const { return p_; }

 private:
  std::size_t n_;
  std::byte* p_;
};

sd::Slot& slot(std::byte* base, const sd::Header& h, int r) {
  return reinterpret_cast<sd::Slot*>(base + h.slots_at)[r];
}
std::atomic<std::uint64_t>& dir(std::byte* base, const sd::Header& h, int from, int to) {
  return reinterpret_cast<std::atomic<std::uint64_t>*>(base + h.dir_at)[from * h.n + to];
}

void point_to_point(std::byte* base, sd::Header& h, Input& in) {
  {
    ShmComm rank0(base, 0);
    const std::uint8_t real = in.take<std::uint8_t>() % 8;
    for (std::uint8_t i = 0; i < real; ++i) {  // far less than the ring holds: never blocks
      std::vector<std::byte> msg(in.take<std::uint8_t>(), std::byte{i});
      rank0.send(1, msg);
    }
  }
  const std::uint8_t raw = in.take<std::uint8_t>() % 16;
  if (raw != 0) {
    std::uint64_t at = dir(base, h, 0, 1).load(std::memory_order_relaxed);
    if (at == 0) {  // lay the ring as rank 0's first send would
      auto& arena = *reinterpret_cast<ipckit::Arena*>(base + h.arena_at);
      const std::size_t bytes = ByteRing::bytes_for(h.ring_bytes);
      const std::size_t off = arena.allocate(bytes, 64);
      (void)ByteRing::at(std::span(arena.at(off), bytes), h.ring_bytes,
                         ipckit::WaitPolicy::spin_only());
      at = h.arena_at + off;
      dir(base, h, 0, 1).store(at, std::memory_order_relaxed);
    }
    ByteRing ring = ByteRing::attach(std::span(base + at, ByteRing::bytes_for(h.ring_bytes)));
    for (std::uint8_t i = 0; i < raw; ++i) {
      const auto rec = in.bytes(in.take<std::uint16_t>() % 2048);
      if (!ring.try_send(rec)) break;
    }
  }
  if ((in.take<std::uint8_t>() & 7) == 0) {  // a directory entry the peer scribbled on
    dir(base, h, 0, 1).store(in.take<std::uint64_t>(), std::memory_order_relaxed);
  }
  slot(base, h, 0).finished.store(1, std::memory_order_release);

  ShmComm rank1(base, 1);
  for (int i = 0; i < 64; ++i) {
    try {
      const std::uint8_t how = in.take<std::uint8_t>();
      std::vector<std::byte> a(in.take<std::uint8_t>());
      if ((how & 1) == 0) {
        rank1.recv(0, a);
      } else {
        std::vector<std::byte> b(in.take<std::uint16_t>() % 4096);
        ipckit::Request reqs[2] = {rank1.irecv(0, a), rank1.irecv(0, b)};
        rank1.wait_all(reqs);
      }
    } catch (const Error& e) {
      expect(e, {errc::size_mismatch, errc::bad_frame, errc::bad_layout, errc::peer_dead});
      if (!e.is(errc::size_mismatch)) return;
    }
  }
}

void collective(std::byte* base, sd::Header& h, Input& in) {
  sd::Slot& peer = slot(base, h, 0);
  for (unsigned p = 0; p < 2; ++p) {
    peer.coll.size[p].store(in.take<std::uint64_t>() % 4096 *
                            (in.take<std::uint8_t>() & 1 ? 1 : 8));
    peer.coll.sig[p].store(in.take<std::uint8_t>() & 1 ? in.take<std::uint64_t>() : 0);
    peer.coll.root[p].store(in.take<std::int8_t>());
    peer.coll.bad[p].store(in.take<std::uint8_t>() & 1 ? in.take<std::uint32_t>() : 0);
  }
  const auto buf = in.bytes(in.take<std::uint16_t>());
  std::memcpy(base + h.coll_buf_at, buf.data(), std::min(buf.size(), sd::kCollBytes));
  peer.finished.store(1, std::memory_order_release);
  h.coll.arrived.store(1, std::memory_order_relaxed);  // rank 0 "arrived" before it died

  ShmComm rank1(base, 1);
  const std::uint8_t what = in.take<std::uint8_t>();
  const std::size_t n = in.take<std::uint16_t>() % 2048;
  try {
    const int root = (what >> 4) & 1;
    const std::vector<std::size_t> counts = {n / 3, n - n / 3};
    const std::vector<std::size_t> displs = {0, n / 3};
    switch (what % 10) {
      case 0: {
        std::vector<double> v(n, 1.0);
        rank1.allreduce(v.data(), v.size(), ipckit::DataType::f64, ipckit::ReduceOp::sum);
        break;
      }
      case 1: {
        std::vector<std::int32_t> v(n, 1);
        rank1.allreduce(v.data(), v.size(), ipckit::DataType::i32, ipckit::ReduceOp::max);
        break;
      }
      case 2: {
        std::vector<std::byte> mine(n), all(2 * n);
        rank1.gather(std::span<const std::byte>(mine), std::span<std::byte>(all), root);
        break;
      }
      case 3: {
        std::vector<std::byte> data(n);
        rank1.broadcast(std::span<std::byte>(data), 0);
        break;
      }
      case 4: {
        std::vector<std::byte> out(2 * n), back(2 * n);
        rank1.alltoall(std::span<const std::byte>(out), std::span<std::byte>(back));
        break;
      }
      case 5: {  // counts from rank 0's buffer, checked against the sizes
        std::vector<std::byte> mine(counts[1]), all(n);
        rank1.gatherv(std::span<const std::byte>(mine), std::span<std::byte>(all), counts, displs,
                      root);
        break;
      }
      case 6: {
        std::vector<std::byte> all(n), mine(counts[1]);
        rank1.scatterv(std::span<const std::byte>(all), counts, displs, std::span<std::byte>(mine),
                       root);
        break;
      }
      case 7: {  // both ranks' count tables from the buffers
        std::vector<std::byte> out(n), back(n);
        rank1.alltoallv(std::span<const std::byte>(out), counts, displs, std::span<std::byte>(back),
                        counts, displs);
        break;
      }
      case 8: {
        std::vector<std::int64_t> v(n, 2);
        rank1.scan(v.data(), v.size(),
                   ipckit::Reduction(ipckit::DataType::i64, ipckit::ReduceOp::prod));
        break;
      }
      default: {
        std::vector<std::byte> mine(counts[1]), all(n);
        rank1.allgatherv(std::span<const std::byte>(mine), std::span<std::byte>(all), counts,
                         displs);
        break;
      }
    }
    rank1.barrier();  // rank 0 is gone: this one cannot pass
  } catch (const Error& e) {
    expect(e, {errc::size_mismatch, errc::invalid_argument, errc::peer_dead});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return -1;
  Input in(data, size);
  const std::uint8_t mode = in.take<std::uint8_t>();
  const sd::Layout l = sd::Layout::of(2, kRingBytes);
  Mapping map(l.total);
  sd::Header& h = sd::lay_out(map.data(), 2, kRingBytes, l);
  h.oversubscribed = 1;  // waits yield and check peers at once rather than sleep 20 ms first
  if ((mode & 1) == 0) {
    point_to_point(map.data(), h, in);
  } else {
    collective(map.data(), h, in);
  }
  return 0;
}
