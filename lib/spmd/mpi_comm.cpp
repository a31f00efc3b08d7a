#include "ipckit/spmd/mpi_comm.hpp"

#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace ipckit::mpi {
namespace {

class MpiCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "ipckit.mpi"; }
  [[nodiscard]] std::string message(int error_class) const override {
    return error_string(error_class);
  }
};

bool is_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

bool is_finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

}  // namespace

const std::error_category& error_category() noexcept {
  static const MpiCategory category;
  return category;
}

std::string error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return {text, static_cast<std::size_t>(len)};
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  int cls = MPI_ERR_UNKNOWN;
  MPI_Error_class(rc, &cls);
  const std::string message = std::string(what) + " failed: " + error_string(rc);
  switch (cls) {
    case MPI_ERR_TRUNCATE: throw Error(errc::size_mismatch, message);
    case MPI_ERR_RANK:
    case MPI_ERR_COUNT:
    case MPI_ERR_BUFFER:
    case MPI_ERR_ROOT:
    case MPI_ERR_ARG: throw Error(errc::invalid_argument, message);
    default: throw Error(std::error_code(cls, error_category()), message);
  }
}

MPI_Datatype datatype_of(DataType type) noexcept {
  switch (type) {
    case DataType::i32: return MPI_INT32_T;
    case DataType::i64: return MPI_INT64_T;
    case DataType::u32: return MPI_UINT32_T;
    case DataType::u64: return MPI_UINT64_T;
    case DataType::f32: return MPI_FLOAT;
    case DataType::f64: return MPI_DOUBLE;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op op_of(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
  }
  return MPI_OP_NULL;
}

Environment::Environment() { init(nullptr, nullptr); }

Environment::Environment(int& argc, char**& argv) { init(&argc, &argv); }

void Environment::init(int* argc, char*** argv) {
  static_assert(sizeof(float) == 4 && sizeof(double) == 8);
  uncaught_ = std::uncaught_exceptions();
  if (is_finalized()) throw Error(errc::invalid_argument, "mpi::Environment: MPI was finalized");
  if (is_initialized()) {
    MPI_Query_thread(&provided_);
  } else {
    // MPI's default handler on MPI_COMM_WORLD aborts the job when this fails.
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided_);
    owns_ = true;
  }
  if (provided_ < MPI_THREAD_FUNNELED) {
    if (owns_) MPI_Finalize();
    throw Error(errc::invalid_argument,
                "mpi::Environment: the MPI library does not provide MPI_THREAD_FUNNELED");
  }
  check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
        "MPI_Comm_set_errhandler(MPI_COMM_WORLD)");
}

Environment::~Environment() {
  if (!owns_ || is_finalized()) return;
  if (std::uncaught_exceptions() > uncaught_) {
    MPI_Abort(MPI_COMM_WORLD, 1);
  } else {
    MPI_Finalize();
  }
}

}  // namespace ipckit::mpi

namespace ipckit {
namespace {

using mpi::check;

// A posted MPI operation. The buffer size is kept to check a receive's length afterwards.
struct MpiRequest final : Request::State {
  MPI_Request request = MPI_REQUEST_NULL;
  bool is_recv = false;
  int peer = 0;
  int bytes = 0;

  MpiRequest() = default;
  MpiRequest(const MpiRequest&) = delete;
  MpiRequest& operator=(const MpiRequest&) = delete;

  // A request dropped before wait_all(): a receive is cancelled (local, so the wait is
  // bounded); a send is left to complete on its own (its buffer must outlive it).
  ~MpiRequest() override {
    if (request == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized != 0) return;
    if (is_recv) {
      MPI_Cancel(&request);
      MPI_Wait(&request, MPI_STATUS_IGNORE);
    } else {
      MPI_Request_free(&request);
    }
  }
};

// MPI counts are ints.
int count_of(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw Error(errc::message_too_large, std::string(what) + ": " + std::to_string(n) +
                                             " bytes, MPI takes at most INT_MAX");
  }
  return static_cast<int>(n);
}

std::string size_mismatch_text(const char* what, int peer, std::size_t expected,
                               const std::string& got) {
  return std::string(what) + " from rank " + std::to_string(peer) + ": expected " +
         std::to_string(expected) + " bytes, the message has " + got;
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm) : comm_(comm) {
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void MpiComm::send(int dest, std::span<const std::byte> data) {
  check_rank(dest, "MpiComm::send");
  const int n = count_of(data.size(), "MpiComm::send");
  check(MPI_Send(data.data(), n, MPI_BYTE, dest, kTag, comm_), "MPI_Send");
}

void MpiComm::recv(int src, std::span<std::byte> data) {
  check_rank(src, "MpiComm::recv");
  const int n = count_of(data.size(), "MpiComm::recv");
  // A matched probe takes the message out of the matching queue, so the receive below gets
  // this very message even when other receives from `src` are posted.
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status status;
  check(MPI_Mprobe(src, kTag, comm_, &message, &status), "MPI_Mprobe");
  int got = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &got), "MPI_Get_count");
  if (got == n) {
    check(MPI_Mrecv(data.data(), n, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
    return;
  }
  std::vector<std::byte> scratch(static_cast<std::size_t>(got));
  check(MPI_Mrecv(scratch.data(), got, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
  throw Error(errc::size_mismatch, size_mismatch_text("MpiComm::recv", src, data.size(),
                                                      std::to_string(got) + " bytes"));
}

Request MpiComm::isend(int dest, std::span<const std::byte> data) {
  check_rank(dest, "MpiComm::isend");
  auto state = std::make_unique<MpiRequest>();
  state->peer = dest;
  state->bytes = count_of(data.size(), "MpiComm::isend");
  check(MPI_Isend(data.data(), state->bytes, MPI_BYTE, dest, kTag, comm_, &state->request),
        "MPI_Isend");
  return Request(std::move(state));
}

Request MpiComm::irecv(int src, std::span<std::byte> data) {
  check_rank(src, "MpiComm::irecv");
  auto state = std::make_unique<MpiRequest>();
  state->is_recv = true;
  state->peer = src;
  state->bytes = count_of(data.size(), "MpiComm::irecv");
  check(MPI_Irecv(data.data(), state->bytes, MPI_BYTE, src, kTag, comm_, &state->request),
        "MPI_Irecv");
  return Request(std::move(state));
}

void MpiComm::wait_all(std::span<Request> requests) {
  std::vector<MpiRequest*> states;
  states.reserve(requests.size());
  for (const Request& r : requests) {
    if (!r.valid()) continue;
    auto* s = dynamic_cast<MpiRequest*>(r.state());
    if (s == nullptr) {
      throw Error(errc::invalid_argument, "MpiComm::wait_all: a request of another backend");
    }
    states.push_back(s);
  }
  // Whatever happens below, every request is complete (or freed) when this returns.
  struct Reset {
    std::span<Request> requests;
    ~Reset() {
      for (Request& r : requests) r.reset();
    }
  } reset{requests};

  std::vector<MPI_Request> handles(states.size());
  std::vector<MPI_Status> statuses(states.size());
  std::vector<std::size_t> pending(states.size());
  for (std::size_t i = 0; i < states.size(); ++i) pending[i] = i;
  std::exception_ptr first;
  // MPI_Waitall may return with requests neither failed nor complete (MPI_ERR_PENDING) when
  // another failed: those are waited for again.
  while (!pending.empty()) {
    for (std::size_t j = 0; j < pending.size(); ++j) handles[j] = states[pending[j]]->request;
    const int rc = MPI_Waitall(static_cast<int>(pending.size()), handles.data(), statuses.data());
    if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) check(rc, "MPI_Waitall");
    std::vector<std::size_t> still;
    for (std::size_t j = 0; j < pending.size(); ++j) {
      MpiRequest& s = *states[pending[j]];
      s.request = handles[j];
      // The statuses' error fields are set only with MPI_ERR_IN_STATUS.
      const int err = rc == MPI_ERR_IN_STATUS ? statuses[j].MPI_ERROR : MPI_SUCCESS;
      if (err == MPI_ERR_PENDING) {
        still.push_back(pending[j]);
        continue;
      }
      if (first) continue;
      try {
        int cls = MPI_SUCCESS;
        if (err != MPI_SUCCESS) MPI_Error_class(err, &cls);
        if (s.is_recv && cls == MPI_ERR_TRUNCATE) {
          throw Error(errc::size_mismatch,
                      size_mismatch_text("MpiComm::wait_all (irecv)", s.peer,
                                         static_cast<std::size_t>(s.bytes), "more"));
        }
        check(err, s.is_recv ? "MPI_Irecv" : "MPI_Isend");
        int got = s.bytes;
        if (s.is_recv) check(MPI_Get_count(&statuses[j], MPI_BYTE, &got), "MPI_Get_count");
        if (got != s.bytes) {
          throw Error(errc::size_mismatch,
                      size_mismatch_text("MpiComm::wait_all (irecv)", s.peer,
                                         static_cast<std::size_t>(s.bytes),
                                         std::to_string(got) + " bytes"));
        }
      } catch (const Error&) {
        first = std::current_exception();
      }
    }
    pending = std::move(still);
  }
  if (first) std::rethrow_exception(first);
}

void MpiComm::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

void MpiComm::allreduce(void* inout, std::size_t count, DataType type, ReduceOp op) {
  const int n = count_of(count, "MpiComm::allreduce");
  check(MPI_Allreduce(MPI_IN_PLACE, inout, n, mpi::datatype_of(type), mpi::op_of(op), comm_),
        "MPI_Allreduce");
}

void MpiComm::gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) {
  check_rank(root, "MpiComm::gather");
  const int n = count_of(mine.size(), "MpiComm::gather");
  // {size, -size, root's buffer is wrong}: one MAX reduction gives the largest and the
  // smallest contribution and whether the root can take them.
  const auto mine_size = static_cast<std::int64_t>(mine.size());
  const bool bad_all = rank_ == root && all.size() != mine.size() * static_cast<std::size_t>(size_);
  std::int64_t agree[3] = {mine_size, -mine_size, bad_all ? 1 : 0};
  check(MPI_Allreduce(MPI_IN_PLACE, agree, 3, MPI_INT64_T, MPI_MAX, comm_),
        "MPI_Allreduce (gather sizes)");
  if (agree[0] != -agree[1]) {
    throw Error(errc::size_mismatch,
                "MpiComm::gather: the ranks contribute between " + std::to_string(-agree[1]) +
                    " and " + std::to_string(agree[0]) + " bytes (this rank " +
                    std::to_string(mine.size()) + ")");
  }
  if (agree[2] != 0) {
    throw Error(errc::invalid_argument,
                "MpiComm::gather: the root's buffer is not size() times " +
                    std::to_string(mine.size()) + " bytes");
  }
  check(MPI_Gather(mine.data(), n, MPI_BYTE, all.data(), n, MPI_BYTE, root, comm_),
        "MPI_Gather");
}

void MpiComm::broadcast(std::span<std::byte> data, int root) {
  check_rank(root, "MpiComm::broadcast");
  const int n = count_of(data.size(), "MpiComm::broadcast");
  check(MPI_Bcast(data.data(), n, MPI_BYTE, root, comm_), "MPI_Bcast");
}

}  // namespace ipckit
