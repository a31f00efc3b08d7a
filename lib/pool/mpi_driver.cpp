// MpiCore: mpi::Pool's driver on rank 0. One driver thread, the only one that calls MPI while
// the pool lives, hands each worker rank task messages (MPI_Isend, a queue of them ahead as a
// local worker gets), takes result messages as they come (MPI_Improbe + MPI_Mrecv), and
// delivers them to the same jobs a local Pool runs. MPI has no descriptor to sleep on: the
// thread spins while results come, then polls in growing steps (MpiBackoff), sleeping in
// ppoll() on the pool's doorbell so that a submit, a cancel or a close wakes it at once.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "backend.hpp"
#include "internal.hpp"
#include "ipckit/pool/errors.hpp"
#include "ipckit/spmd/mpi_comm.hpp"
#include "mpi_internal.hpp"
#include "wire.hpp"

namespace ipckit::detail {
namespace {

using clock = std::chrono::steady_clock;

class MpiCore final : public DriverBackend, public std::enable_shared_from_this<MpiCore> {
 public:
  MpiCore(std::vector<RankInfo> ranks, std::optional<std::chrono::nanoseconds> task_timeout)
      : DriverBackend(ranks.size(), std::make_shared<PoolLink>(), task_timeout) {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw_errno("mpi::Pool: eventfd");
    link->doorbell.reset(fd);
    link->handle_sigint = false;
    link->owner = current_pid();
    workers_.resize(ranks.size());
    stats_.resize(ranks.size());
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      stats_[i].slot = i;
      stats_[i].pid = ranks[i].pid;
      workers_[i].info = std::move(ranks[i]);
    }
  }
  ~MpiCore() override { terminate(); }

  void start() {
    driver_ = std::thread([self = shared_from_this()] {
      mark_driver_thread();
      self->run();
    });
  }

  [[nodiscard]] std::vector<WorkerStats> stats() const override {
    std::lock_guard lk(stats_mu_);
    return stats_;
  }

 private:
  // A task message sent and not yet answered. `msg` is the send buffer: it lives until the
  // send completes (at the latest when the result comes, or when the rank has stopped).
  struct Sent {
    Chunk chunk;  // moved out when the chunk goes to another rank (`dropped` then)
    std::uint64_t id = 0;
    std::uint32_t count = 0;
    std::vector<std::byte> msg;
    MPI_Request req = MPI_REQUEST_NULL;
    bool dropped = false;  // resolved already (timed out, aborted): its result is dropped
  };
  struct Worker {
    RankInfo info;
    std::deque<Sent> inflight;  // in the order the rank runs them
    double avg_ns = -1;
    std::size_t window = 1;  // until the first result says how long chunks take
    std::uint64_t sent = 0;  // task messages sent in this pool
    std::uint64_t results = 0;
    clock::time_point head_since{};         // when inflight.front() became the rank's current chunk
    bool lost = false;                      // spoke out of protocol: no more chunks
    std::uint64_t stop_counts[2] = {0, 0};  // kStop's payload: task and skip messages sent
    MPI_Request stop_req = MPI_REQUEST_NULL;
    std::optional<std::uint64_t> stopped;  // kStopped's payload: results it sent
    // kSkip messages in flight (ids of chunks moved off this rank) and their requests.
    std::deque<std::vector<std::uint64_t>> skips;
    std::deque<MPI_Request> skip_reqs;
  };

  void wake_driver() noexcept override {
    if (sleeping_.load(std::memory_order_seq_cst)) link->wake();
  }

  void run() noexcept {
    try {
      loop();
      stop_ranks();
    } catch (...) {
      const std::string what = describe(std::current_exception());
      std::fprintf(stderr, "ipckit::mpi::Pool: driver failed: %s\n", what.c_str());
      abort_all(std::make_exception_ptr(Error(errc::closed, "mpi::Pool driver failed: " + what)));
      try {
        stop_ranks();  // else the ranks serve forever, and sends are left pending
      } catch (...) {
        std::fprintf(stderr, "ipckit::mpi::Pool: cannot stop the worker ranks (%s): aborting\n",
                     describe(std::current_exception()).c_str());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
    {
      std::lock_guard lk(stats_mu_);
      for (auto& s : stats_) s.pid = -1;
    }
    g_driving.store(false);  // the next mpi::Pool may start
    set_state(State::done);
  }
  static std::string describe(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown error";
    }
  }

  void loop() {
    for (;;) {
      State st;
      bool progress = intake(st, jobs_, took_cancelled_);
      if (st == State::stopping) {
        abort_all(std::make_exception_ptr(Error(errc::closed, "the pool was terminated")));
        break;
      }
      progress |= receive();
      if (broken_) {
        abort_all(broken_);
        break;
      }
      progress |= apply_cancels();
      progress |= check_timeouts(clock::now());
      if (st == State::closed) {
        for (auto& j : jobs_) j->pool_closing = true;
      }
      if (stopping()) continue;  // a callback terminated the pool: send nothing more
      progress |= dispatch();
      if (st == State::closed && idle()) break;
      if (progress) {
        backoff_.reset();
      } else {
        sleep();
      }
    }
  }
  bool stopping() {
    std::lock_guard lk(mu_);
    return state_ == State::stopping;
  }

  [[nodiscard]] bool idle() const {
    if (!jobs_.empty() || !retry_.empty()) return false;
    for (const Worker& w : workers_) {
      for (const Sent& s : w.inflight) {
        if (!s.dropped) return false;
      }
    }
    return true;
  }
  [[nodiscard]] bool anything_in_flight() const {
    for (const Worker& w : workers_) {
      if (!w.inflight.empty()) return true;
    }
    return false;
  }

  // ---- results ----
  bool receive() {
    bool any = false;
    for (;;) {
      int flag = 0;
      MPI_Message m;
      MPI_Status status;
      mpi::check(MPI_Improbe(MPI_ANY_SOURCE, kResultTag, MPI_COMM_WORLD, &flag, &m, &status),
                 "mpi::Pool: MPI_Improbe");
      if (flag == 0) return any;
      any = true;
      int count = 0;
      mpi::check(MPI_Get_count(&status, MPI_BYTE, &count), "mpi::Pool: MPI_Get_count");
      buf_.resize(static_cast<std::size_t>(std::max(count, 0)));
      mpi::check(MPI_Mrecv(buf_.data(), count, MPI_BYTE, &m, MPI_STATUS_IGNORE),
                 "mpi::Pool: MPI_Mrecv");
      const int src = status.MPI_SOURCE;
      if (src < 1 || static_cast<std::size_t>(src) > workers_.size()) continue;
      Worker& w = workers_[static_cast<std::size_t>(src) - 1];
      ++w.results;
      handle_result(w, buf_);
      if (buf_.capacity() > kLargeBlock) std::vector<std::byte>().swap(buf_);
    }
  }

  void handle_result(Worker& w, std::span<const std::byte> msg) {
    ResultMessage m;
    try {
      m = parse_result(msg);
    } catch (const Error& e) {
      lose(w, e.what());
      return;
    }
    const ResultFrame& rf = m.frame;
    if (rf.status == ResultFrame::kInitError) {
      std::string what = "the pool's initializer failed";
      try {
        const ErrorText text = decode_error_text(m.payload);
        what = "the pool's initializer raised " + text.type +
               (text.message.empty() ? "" : ": " + text.message);
      } catch (const Error&) {
      }
      std::lock_guard lk(mu_);
      broken_ =
          std::make_exception_ptr(Error(errc::child_failed, what + " (on " + w.info.where() + ")"));
      return;
    }
    if (w.inflight.empty() || w.inflight.front().id != rf.id ||
        w.inflight.front().count != rf.count) {
      lose(w, "a result for a chunk it was not running");
      return;
    }
    Sent s = std::move(w.inflight.front());
    w.inflight.pop_front();
    w.head_since = clock::now();
    mpi::check(MPI_Wait(&s.req, MPI_STATUS_IGNORE), "mpi::Pool: MPI_Wait");  // it was received
    {
      std::lock_guard lk(stats_mu_);
      WorkerStats& st = stats_[w.info.rank - 1];
      ++st.tasks;
      st.items += rf.count;
      const std::chrono::nanoseconds busy(static_cast<std::int64_t>(rf.busy_ns));
      st.busy = st.busy > std::chrono::nanoseconds::max() - busy ? std::chrono::nanoseconds::max()
                                                                 : st.busy + busy;
    }
    w.window = queue_window(w.avg_ns, static_cast<double>(rf.busy_ns));
    if (s.dropped) return;
    if (rf.status == ResultFrame::kOk) {
      try {
        s.chunk.job->on_result(s.chunk, m.payload);
      } catch (...) {
        fail_chunk(s.chunk, std::current_exception());
        return;
      }
      resolve_chunk(s.chunk);
      return;
    }
    std::exception_ptr e;
    try {
      e = decode_remote_error(m.payload, w.info.pid, w.info.where());
    } catch (...) {
      e = std::current_exception();
    }
    fail_chunk(s.chunk, e);
  }

  // A rank that spoke out of protocol: its chunks fail, it gets no more (it still stops with
  // the pool).
  void lose(Worker& w, const std::string& why) {
    std::fprintf(stderr, "ipckit::mpi::Pool: %s is out of protocol (%s); it gets no more tasks\n",
                 w.info.where().c_str(), why.c_str());
    w.lost = true;
    const auto e = std::make_exception_ptr(
        Error(errc::bad_frame, "mpi::Pool: " + w.info.where() + " is out of protocol: " + why));
    for (Sent& s : w.inflight) {
      if (!s.dropped) fail_chunk(s.chunk, e);
      s.dropped = true;
    }
    if (std::all_of(workers_.begin(), workers_.end(), [](const Worker& x) { return x.lost; })) {
      std::lock_guard lk(mu_);
      broken_ = e;  // nothing is left to run anything: the loop fails everything
    }
  }

  // ---- dispatch ----
  Worker* pick_worker() {
    Worker* best = nullptr;
    for (Worker& w : workers_) {
      if (w.lost || w.inflight.size() >= w.window) continue;
      if (!w.inflight.empty() && w.inflight.front().dropped) continue;  // still running it
      if (best == nullptr || w.inflight.size() < best->inflight.size()) best = &w;
    }
    return best;
  }
  bool dispatch() {
    bool any = false;
    for (;;) {
      Worker* w = pick_worker();
      if (w == nullptr) return any;
      Chunk c;
      if (!next_chunk(c)) return any;
      send_chunk(*w, std::move(c));
      any = true;
    }
  }
  bool next_chunk(Chunk& c) {
    while (!retry_.empty()) {
      Chunk r = std::move(retry_.front());
      retry_.pop_front();
      if (r.job->abandoned()) {  // its job failed or was cancelled meanwhile
        resolve_chunk(r);
        continue;
      }
      c = std::move(r);
      return true;
    }
    return take_chunk(jobs_, c);
  }
  void send_chunk(Worker& w, Chunk c) {
    c.id = next_id_++;
    const std::vector<std::byte>& fn = c.job->fn;
    const TaskFrame frame{c.id, c.job->invoker, static_cast<std::uint32_t>(fn.size()), c.count};
    const std::size_t total = sizeof frame + pad8(fn.size()) + c.args.size();
    if (total > kMaxMpiMessage) {
      fail_chunk(c, std::make_exception_ptr(Error(
                        errc::message_too_large,
                        "mpi::Pool: a task message of " + std::to_string(total) +
                            " bytes is more than MPI's 2^31 - 1 (give it a smaller chunksize)")));
      return;
    }
    Sent s;
    s.msg.resize(total);
    std::byte* p = s.msg.data();
    std::memcpy(p, &frame, sizeof frame);
    if (!fn.empty()) std::memcpy(p + sizeof frame, fn.data(), fn.size());
    if (!c.args.empty()) {
      std::memcpy(p + sizeof frame + pad8(fn.size()), c.args.data(), c.args.size());
    }
    mpi::check(MPI_Isend(s.msg.data(), static_cast<int>(total), MPI_BYTE, w.info.rank, kTaskTag,
                         MPI_COMM_WORLD, &s.req),
               "mpi::Pool: MPI_Isend");
    if (w.inflight.empty()) w.head_since = clock::now();
    s.id = c.id;
    s.count = c.count;
    s.chunk = std::move(c);
    w.inflight.push_back(std::move(s));  // the buffer moves with the vector: stays put
    ++w.sent;
  }

  // ---- cancels, timeouts ----
  // Running chunks cannot be stopped: a cancelled job's chunks run on, their results dropped.
  bool apply_cancels() {
    const std::uint64_t now = link->cancels.load(std::memory_order_acquire);
    if (now == cancels_seen_ && !took_cancelled_) return false;
    cancels_seen_ = now;
    took_cancelled_ = false;
    const auto cancelled =
        std::make_exception_ptr(Error(errc::cancelled, "the call was cancelled"));
    for (auto& j : jobs_) settle_if_cancelled(*j, cancelled);
    for (auto& c : retry_) settle_if_cancelled(*c.job, cancelled);
    for (Worker& w : workers_) {
      for (Sent& s : w.inflight) {
        if (s.chunk.job) settle_if_cancelled(*s.chunk.job, cancelled);
      }
    }
    return true;
  }
  // A chunk's clock runs from when it became its rank's current one (sent to an idle rank, or
  // the result before it came).
  bool check_timeouts(clock::time_point now) {
    bool any = false;
    for (Worker& w : workers_) {
      if (w.inflight.empty() || w.inflight.front().dropped) continue;
      Sent& s = w.inflight.front();
      if (!s.chunk.job->timeout || now - w.head_since <= *s.chunk.job->timeout) continue;
      s.dropped = true;
      fail_chunk(s.chunk, std::make_exception_ptr(
                              TaskTimeout(w.info.pid, *s.chunk.job->timeout, w.info.where())));
      move_queued(w);
      any = true;
    }
    return any;
  }
  // The chunks queued behind a timed-out one would wait for a rank that may never finish it:
  // they go to other ranks, and this one is told to skip them (it answers a skipped chunk
  // with an empty error, which is dropped). If it took one before the message came, that
  // chunk runs twice; only the first result counts.
  void move_queued(Worker& w) {
    std::vector<std::uint64_t> ids;
    for (auto it = w.inflight.begin() + 1; it != w.inflight.end(); ++it) {
      if (it->dropped) continue;
      it->dropped = true;
      ids.push_back(it->id);
      retry_.push_back(std::move(it->chunk));
    }
    if (ids.empty()) return;
    w.skips.push_back(std::move(ids));
    w.skip_reqs.push_back(MPI_REQUEST_NULL);
    const auto& v = w.skips.back();
    mpi::check(MPI_Isend(v.data(), static_cast<int>(v.size()), MPI_UINT64_T, w.info.rank, kSkipTag,
                         MPI_COMM_WORLD, &w.skip_reqs.back()),
               "mpi::Pool: MPI_Isend(skip)");
  }
  [[nodiscard]] std::chrono::nanoseconds to_next_timeout(clock::time_point now) const {
    auto best = std::chrono::nanoseconds::max();
    for (const Worker& w : workers_) {
      if (w.inflight.empty() || w.inflight.front().dropped) continue;
      const auto& t = w.inflight.front().chunk.job->timeout;
      if (t)
        best = std::min(best, std::max(std::chrono::nanoseconds(0), *t - (now - w.head_since)));
    }
    return best;
  }

  // ---- sleeping ----
  void sleep() {
    const auto now = clock::now();
    std::chrono::nanoseconds d = backoff_.step();
    if (!anything_in_flight()) d = std::chrono::nanoseconds::max();  // only the doorbell
    d = std::min(d, to_next_timeout(now));
    if (d.count() == 0) {
      std::this_thread::yield();
      return;
    }
    sleeping_.store(true, std::memory_order_seq_cst);
    if (poke_.load(std::memory_order_seq_cst)) {
      sleeping_.store(false, std::memory_order_relaxed);
      return;
    }
    pollfd fd{link->doorbell.get(), POLLIN, 0};
    if (d == std::chrono::nanoseconds::max()) {
      (void)::ppoll(&fd, 1, nullptr, nullptr);
    } else {
      const auto capped = std::min(d, std::chrono::nanoseconds(std::chrono::seconds(1)));
      const timespec ts{0, static_cast<long>(capped.count() % 1000000000)};
      const timespec whole{1, 0};
      (void)::ppoll(&fd, 1, capped.count() >= 1000000000 ? &whole : &ts, nullptr);
    }
    sleeping_.store(false, std::memory_order_relaxed);
    std::uint64_t v;
    while (::read(link->doorbell.get(), &v, sizeof v) > 0) {
    }
  }

  // ---- stopping ----
  // Fails every job not done with `e`; chunks in flight are dropped when their results come.
  void abort_all(const std::exception_ptr& e) noexcept {
    JobSweep sweep;
    sweep_submitted(sweep);
    for (auto& j : jobs_) sweep.add(j);
    for (auto& c : retry_) sweep.add(c.job);
    for (Worker& w : workers_) {
      for (Sent& s : w.inflight) {
        sweep.add(s.chunk.job);
        s.dropped = true;
      }
    }
    jobs_.clear();
    retry_.clear();
    sweep.abort_all(e);
  }

  // Tells every rank the pool is over and waits until each has answered every task message
  // it took and said it stopped: nothing of this pool stays in flight.
  void stop_ranks() {
    for (Worker& w : workers_) {
      w.stop_counts[0] = w.sent;
      w.stop_counts[1] = w.skips.size();
      mpi::check(MPI_Isend(w.stop_counts, 2, MPI_UINT64_T, w.info.rank, kStopTag, MPI_COMM_WORLD,
                           &w.stop_req),
                 "mpi::Pool: MPI_Isend(stop)");
    }
    const auto all_stopped = [&] {
      for (const Worker& w : workers_) {
        if (!w.stopped || w.results < *w.stopped) return false;
      }
      return true;
    };
    backoff_.reset();
    while (!all_stopped()) {
      bool any = receive();
      int flag = 0;
      MPI_Status status;
      std::uint64_t results = 0;
      mpi::check(MPI_Iprobe(MPI_ANY_SOURCE, kStoppedTag, MPI_COMM_WORLD, &flag, &status),
                 "mpi::Pool: MPI_Iprobe");
      if (flag != 0) {
        mpi::check(MPI_Recv(&results, 1, MPI_UINT64_T, status.MPI_SOURCE, kStoppedTag,
                            MPI_COMM_WORLD, MPI_STATUS_IGNORE),
                   "mpi::Pool: MPI_Recv(stopped)");
        const int src = status.MPI_SOURCE;
        if (src >= 1 && static_cast<std::size_t>(src) <= workers_.size()) {
          workers_[static_cast<std::size_t>(src) - 1].stopped = results;
        }
        any = true;
      }
      if (any) {
        backoff_.reset();
      } else {
        backoff_.wait();
      }
    }
    for (Worker& w : workers_) {
      for (Sent& s : w.inflight) {
        mpi::check(MPI_Wait(&s.req, MPI_STATUS_IGNORE), "mpi::Pool: MPI_Wait");
      }
      w.inflight.clear();
      for (MPI_Request& r : w.skip_reqs) {
        mpi::check(MPI_Wait(&r, MPI_STATUS_IGNORE), "mpi::Pool: MPI_Wait(skip)");
      }
      w.skip_reqs.clear();
      w.skips.clear();
      mpi::check(MPI_Wait(&w.stop_req, MPI_STATUS_IGNORE), "mpi::Pool: MPI_Wait(stop)");
    }
  }

  std::atomic<bool> sleeping_{false};

  // Driver thread only.
  std::deque<Worker> workers_;  // a deque: Worker (with its deque of Sent) does not relocate
  std::deque<std::shared_ptr<JobBase>> jobs_;
  std::deque<Chunk> retry_;  // moved off a rank whose chunk timed out: sent first
  std::uint64_t next_id_ = 1;
  std::uint64_t cancels_seen_ = 0;
  bool took_cancelled_ = false;
  std::vector<std::byte> buf_;
  MpiBackoff backoff_;

  mutable std::mutex stats_mu_;
  std::vector<WorkerStats> stats_;
};

}  // namespace

std::shared_ptr<PoolBackend> start_mpi_driver(std::vector<RankInfo> ranks,
                                              std::optional<std::chrono::nanoseconds> timeout) {
  auto core = std::make_shared<MpiCore>(std::move(ranks), timeout);
  core->start();
  return core;
}

}  // namespace ipckit::detail
