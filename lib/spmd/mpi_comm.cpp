#include "ipckit/spmd/mpi_comm.hpp"

#include "mpi_internal.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <deque>
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
    // what() ends with the category's text for the class: say the code's own text only
    // when it differs.
    default:
      throw Error(std::error_code(cls, error_category()),
                  error_string(rc) == error_string(cls) ? std::string(what) + " failed" : message);
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
    case DataType::f32_index: return MPI_FLOAT_INT;
    case DataType::f64_index: return MPI_DOUBLE_INT;
    case DataType::i32_index: return MPI_2INT;
    case DataType::i64_index: return MPI_LONG_INT;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op op_of(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::prod: return MPI_PROD;
    case ReduceOp::land: return MPI_LAND;
    case ReduceOp::lor: return MPI_LOR;
    case ReduceOp::lxor: return MPI_LXOR;
    case ReduceOp::band: return MPI_BAND;
    case ReduceOp::bor: return MPI_BOR;
    case ReduceOp::bxor: return MPI_BXOR;
    case ReduceOp::minloc: return MPI_MINLOC;
    case ReduceOp::maxloc: return MPI_MAXLOC;
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
    // MPI's default handler on MPI_COMM_WORLD aborts the job when this fails. SERIALIZED:
    // mpi::Pool calls MPI from its driver thread (FUNNELED is all MpiComm needs).
    MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided_);
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
namespace detail {

// (Used by MpiComm::iprobe too.)
inline bool wants(const MpiRequest& r, int source, int tag) {
  return (r.peer == kAnySource || r.peer == source) && (r.tag == kAnyTag || r.tag == tag);
}
inline int mpi_source(int s) { return s == kAnySource ? MPI_ANY_SOURCE : s; }
inline int mpi_tag(int t) { return t == kAnyTag ? MPI_ANY_TAG : t; }

void MpiMatcher::match() {
  if (comm == MPI_COMM_NULL) return;  // its MpiComm is gone (its receives were ended)
  // Each receive in posting order looks (MPI_Iprobe) for its source and tag. A message
  // seen goes to the earliest receive it matches; that receive's own earliest message may
  // be an earlier one, so it looks again, until the pair settles; then MPI_Improbe with the
  // message's exact source and tag takes that very message (the earliest with them), and
  // the scan starts over.
  for (bool again = true; again && count != 0;) {
    again = false;
    for (MpiRequest* want : unmatched) {
      int found = 0;
      MPI_Status status;
      mpi::check(MPI_Iprobe(mpi_source(want->peer), mpi_tag(want->tag), comm, &found, &status),
                 "MPI_Iprobe");
      if (found == 0) continue;
      auto it = unmatched.end();
      for (;;) {
        const auto first = std::find_if(
            unmatched.begin(), unmatched.end(),
            [&](const MpiRequest* r) { return wants(*r, status.MPI_SOURCE, status.MPI_TAG); });
        if (first == it) break;
        it = first;
        mpi::check(MPI_Iprobe(mpi_source((*it)->peer), mpi_tag((*it)->tag), comm, &found, &status),
                   "MPI_Iprobe");
      }
      MpiRequest& r = **it;
      unmatched.erase(it);
      --count;
      r.phase = MpiRequest::Phase::posted;
      try {
        MPI_Message message = MPI_MESSAGE_NULL;
        mpi::check(MPI_Improbe(status.MPI_SOURCE, status.MPI_TAG, comm, &found, &message, &status),
                   "MPI_Improbe");
        r.peer = status.MPI_SOURCE;
        r.tag = status.MPI_TAG;
        int got = 0;
        mpi::check(MPI_Get_count(&status, MPI_BYTE, &got), "MPI_Get_count");
        r.got = got;
        std::byte* into = r.data;
        if (got > r.bytes) {
          r.scratch.resize(static_cast<std::size_t>(got));
          into = r.scratch.data();
        }
        mpi::check(MPI_Imrecv(into, got, MPI_BYTE, &message, &r.request), "MPI_Imrecv");
      } catch (...) {  // the receive ends with the error (never left posted without a request)
        r.phase = MpiRequest::Phase::done;
        r.error = std::current_exception();
      }
      again = true;
      break;
    }
  }
}

void MpiMatcher::withdraw(MpiRequest* r) noexcept {
  const auto it = std::find(unmatched.begin(), unmatched.end(), r);
  if (it == unmatched.end()) return;
  unmatched.erase(it);
  --count;
}

}  // namespace detail

namespace {

using detail::count_of;
using detail::MpiRequest;
using mpi::check;

Error size_mismatch_error(int src, int expected, int got) {
  return Error(errc::size_mismatch, "MpiComm: receive from rank " + std::to_string(src) +
                                        ": expected " + std::to_string(expected) +
                                        " bytes, the message has " + std::to_string(got));
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm) : MpiComm(comm, std::make_shared<detail::MpiFamily>()) {}

MpiComm::MpiComm(MPI_Comm comm, std::shared_ptr<detail::MpiFamily> family)
    : matcher_(std::make_shared<detail::MpiMatcher>()), family_(std::move(family)) {
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  // A communicator of its own: the program's other MPI traffic on `comm` (mpi::Pool's, its
  // own) never meets this comm's tags, any-tag receives or collectives.
  check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  matcher_->comm = comm_;
  family_->matchers.push_back(matcher_.get());
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized == 0) MPI_Comm_free(&comm_);
  std::erase(family_->matchers, matcher_.get());
  // Requests may outlive the comm: its queued receives end with an error, and nothing
  // probes the freed communicator again.
  matcher_->comm = MPI_COMM_NULL;
  for (MpiRequest* r : matcher_->unmatched) {
    r->phase = MpiRequest::Phase::done;
    r->error = std::make_exception_ptr(
        Error(errc::invalid_argument, "MpiComm: a receive whose MpiComm was destroyed"));
  }
  matcher_->unmatched.clear();
  matcher_->count = 0;
}

// With no receive queued, nothing waits to be matched, and the blocking MPI calls can be
// used directly (no allocation, MPI's own wait).
void MpiComm::send(int dest, std::span<const std::byte> data, int tag) {
  if (family_->unmatched() == 0) {
    check_rank(dest, "MpiComm::send");
    check_tag(tag, false, "MpiComm::send");
    const int n = count_of(data.size(), "MpiComm::send");
    check(MPI_Send(data.data(), n, MPI_BYTE, dest, tag, comm_), "MPI_Send");
    return;
  }
  Request r[1] = {isend(dest, data, tag)};
  wait_all(r);
}

Status MpiComm::recv(int src, std::span<std::byte> data, int tag) {
  Status got;
  if (family_->unmatched() != 0) {
    Request r[1] = {irecv(src, data, tag, &got)};
    wait_all(r);
    return got;
  }
  check_source(src, "MpiComm::recv");
  check_tag(tag, true, "MpiComm::recv");
  const int n = count_of(data.size(), "MpiComm::recv");
  // MpiComm never posts an MPI receive ahead, and only this thread calls MPI, so the
  // receive of the probed source and tag takes the probed message.
  MPI_Status status;
  check(MPI_Probe(src == kAnySource ? MPI_ANY_SOURCE : src, tag == kAnyTag ? MPI_ANY_TAG : tag,
                  comm_, &status),
        "MPI_Probe");
  int bytes = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &bytes), "MPI_Get_count");
  std::vector<std::byte> scratch;
  std::byte* into = data.data();
  if (bytes > n) {
    scratch.resize(static_cast<std::size_t>(bytes));
    into = scratch.data();
  }
  check(
      MPI_Recv(into, bytes, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, comm_, MPI_STATUS_IGNORE),
      "MPI_Recv");
  got = Status{status.MPI_SOURCE, status.MPI_TAG, static_cast<std::size_t>(bytes)};
  if (bytes != n) throw size_mismatch_error(status.MPI_SOURCE, n, bytes);
  return got;
}

Request MpiComm::isend(int dest, std::span<const std::byte> data, int tag) {
  check_rank(dest, "MpiComm::isend");
  check_tag(tag, false, "MpiComm::isend");
  auto state = std::make_unique<MpiRequest>();
  state->matcher = matcher_;
  state->family = family_;
  state->peer = dest;
  state->tag = tag;
  state->bytes = count_of(data.size(), "MpiComm::isend");
  check(MPI_Isend(data.data(), state->bytes, MPI_BYTE, dest, tag, comm_, &state->request),
        "MPI_Isend");
  return Request(std::move(state));
}

Request MpiComm::irecv(int src, std::span<std::byte> data, int tag, Status* status) {
  check_source(src, "MpiComm::irecv");
  check_tag(tag, true, "MpiComm::irecv");
  auto state = std::make_unique<MpiRequest>();
  state->matcher = matcher_;
  state->family = family_;
  state->phase = MpiRequest::Phase::unmatched;
  state->is_recv = true;
  state->peer = src;
  state->tag = tag;
  state->status = status;
  state->data = data.data();
  state->bytes = count_of(data.size(), "MpiComm::irecv");
  matcher_->unmatched.push_back(state.get());
  ++matcher_->count;
  return Request(std::move(state));
}

std::optional<Status> MpiComm::iprobe(int src, int tag) {
  using detail::mpi_source;
  using detail::mpi_tag;
  using detail::wants;
  check_source(src, "MpiComm::iprobe");
  check_tag(tag, true, "MpiComm::iprobe");
  family_->match_all();  // messages the posted receives match are theirs, not the probe's
  int found = 0;
  MPI_Status status;
  check(MPI_Iprobe(mpi_source(src), mpi_tag(tag), comm_, &found, &status), "MPI_Iprobe");
  if (found == 0) return std::nullopt;
  // A message that came after match() looked, for a posted receive, is that receive's.
  if (std::any_of(matcher_->unmatched.begin(), matcher_->unmatched.end(), [&](const MpiRequest* r) {
        return wants(*r, status.MPI_SOURCE, status.MPI_TAG);
      })) {
    return iprobe(src, tag);
  }
  int bytes = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &bytes), "MPI_Get_count");
  return Status{status.MPI_SOURCE, status.MPI_TAG, static_cast<std::size_t>(bytes)};
}

Status MpiComm::probe(int src, int tag) {
  for (;;) {
    if (auto found = iprobe(src, tag)) return *found;
  }
}

void MpiComm::complete(std::span<Request> requests) {
  std::vector<MpiRequest*> states;
  states.reserve(requests.size());
  for (const Request& r : requests) {
    if (!r.valid()) continue;
    auto* s = dynamic_cast<MpiRequest*>(r.state());
    if (s == nullptr) {
      for (Request& q : requests) q.reset();
      throw Error(errc::invalid_argument, "MpiComm::wait_all: a request of another backend");
    }
    states.push_back(s);
  }
  // The requests may come from other MpiComms too: each one's receives are matched.
  std::vector<detail::MpiMatcher*> matchers = family_->matchers;
  for (const MpiRequest* s : states) {
    if (std::find(matchers.begin(), matchers.end(), s->matcher.get()) == matchers.end()) {
      matchers.push_back(s->matcher.get());
    }
  }
  // Whatever happens below, the requests are reset when this returns (a request an MPI
  // error left unfinished is withdrawn or waited for by its destructor).
  struct Reset {
    std::span<Request> requests;
    ~Reset() {
      for (Request& r : requests) r.reset();
    }
  } reset{requests};

  // Spins like MPI_Waitall does: each pass matches the receives whose messages have come
  // (any of this comm's, not only these: a sender may be waiting for one of them) and
  // completes what it can.
  for (;;) {
    for (detail::MpiMatcher* m : matchers) m->match();
    if (!test_some(states)) break;
  }
  for (const MpiRequest* s : states) {
    if (s->error) std::rethrow_exception(s->error);
  }
}

// One MPI_Testsome over the posted ones among `states`; those it completes are marked done,
// with their error. False when none is left unfinished.
bool MpiComm::test_some(std::span<detail::MpiRequest* const> states) {
  std::vector<MPI_Request> handles;
  std::vector<std::size_t> which;
  bool waiting = false;
  for (std::size_t i = 0; i < states.size(); ++i) {
    if (states[i]->phase == MpiRequest::Phase::done) continue;
    waiting = true;
    if (states[i]->phase == MpiRequest::Phase::posted) {
      handles.push_back(states[i]->request);
      which.push_back(i);
    }
  }
  if (handles.empty()) return waiting;
  std::vector<int> indices(handles.size());
  std::vector<MPI_Status> statuses(handles.size());
  int completed = 0;
  const int rc = MPI_Testsome(static_cast<int>(handles.size()), handles.data(), &completed,
                              indices.data(), statuses.data());
  if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) check(rc, "MPI_Testsome");
  if (completed == MPI_UNDEFINED) return waiting;
  for (int j = 0; j < completed; ++j) {
    const auto h = static_cast<std::size_t>(indices[static_cast<std::size_t>(j)]);
    MpiRequest& s = *states[which[h]];
    s.request = handles[h];
    s.phase = MpiRequest::Phase::done;
    // The statuses' error fields are set only with MPI_ERR_IN_STATUS.
    const int err =
        rc == MPI_ERR_IN_STATUS ? statuses[static_cast<std::size_t>(j)].MPI_ERROR : MPI_SUCCESS;
    try {
      check(err, s.collective ? "a non-blocking collective"
                 : s.is_recv  ? "MPI_Imrecv"
                              : "MPI_Isend");
      if (s.is_recv && s.status != nullptr) {
        *s.status = Status{s.peer, s.tag, static_cast<std::size_t>(s.got)};
      }
      if (s.is_recv && s.got != s.bytes) throw size_mismatch_error(s.peer, s.bytes, s.got);
    } catch (const Error&) {
      s.error = std::current_exception();
    }
  }
  return true;
}

void MpiComm::poll(std::span<Request* const> requests, std::vector<bool>& done) {
  std::vector<MpiRequest*> states;
  states.reserve(requests.size());
  for (Request* r : requests) {
    auto* s = dynamic_cast<MpiRequest*>(r->state());
    if (s == nullptr)
      throw Error(errc::invalid_argument, "MpiComm::test: a request of another backend");
    states.push_back(s);
  }
  family_->match_all();
  for (const MpiRequest* s : states) {
    if (std::find(family_->matchers.begin(), family_->matchers.end(), s->matcher.get()) ==
        family_->matchers.end()) {
      s->matcher->match();
    }
  }
  (void)test_some(states);
  for (std::size_t i = 0; i < states.size(); ++i) {
    done[i] = states[i]->phase == MpiRequest::Phase::done;
  }
}

// Waits for a non-blocking MPI call, matching this comm's queued receives meanwhile: a peer
// may be blocked sending one of them before it can reach the collective.
void MpiComm::progress_until(MPI_Request& request, const char* what) {
  for (;;) {
    family_->match_all();
    int flag = 0;
    check(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), what);
    if (flag != 0) return;
  }
}

}  // namespace ipckit
