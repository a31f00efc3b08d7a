// mpi::Pool's constructor (collective) and the worker ranks' side: each serves task messages
// from rank 0 until rank 0's pool stops, running them through the same trampolines a local
// worker does (run_task). While a rank serves, a fatal signal or exit() prints which rank,
// pid and host died and whether it was running a task, before MPI ends the job.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "backend.hpp"
#include "driver.hpp"
#include "internal.hpp"
#include "ipckit/pool/mpi_pool.hpp"
#include "ipckit/spmd/mpi_comm.hpp"
#include "mpi_internal.hpp"
#include "wire.hpp"

namespace ipckit::detail {

namespace {

// ---- what a dying worker rank says -----------------------------------------------------------
constexpr std::array<int, 5> kFatal{SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
char g_who[384];  // "ipckit::mpi::Pool: worker rank 2 (pid 4242) on node7"
std::size_t g_who_len = 0;
volatile sig_atomic_t g_serving = 0;  // 1: between tasks, 2: in a task, 3: in the initializer
struct sigaction g_old[kFatal.size()];
alignas(16) char g_alt_stack[64 * 1024];  // the handler's stack while a rank serves

void put(const char* s) noexcept {
  const std::size_t n = std::strlen(s);
  [[maybe_unused]] const ssize_t r = ::write(STDERR_FILENO, s, n);
}
const char* state_text() noexcept {
  switch (g_serving) {
    case 2: return " while running a task";
    case 3: return " in the pool's initializer";
    default: return " between tasks";
  }
}

const char* signal_name(int sig) noexcept {
  switch (sig) {
    case SIGSEGV: return "SEGV";
    case SIGBUS: return "BUS";
    case SIGFPE: return "FPE";
    case SIGILL: return "ILL";
    case SIGABRT: return "ABRT";
    default: return "a signal";
  }
}

void on_fatal(int sig) {
  [[maybe_unused]] const ssize_t r = ::write(STDERR_FILENO, g_who, g_who_len);
  put(" died of ");
  put(signal_name(sig));
  put(state_text());
  put("; MPI ends the whole job\n");
  for (std::size_t i = 0; i < kFatal.size(); ++i) {
    if (kFatal[i] == sig) ::sigaction(sig, &g_old[i], nullptr);  // the program's own, or default
  }
  ::raise(sig);
}

void on_exit_while_serving() {
  if (g_serving == 0) return;
  [[maybe_unused]] const ssize_t r = ::write(STDERR_FILENO, g_who, g_who_len);
  put(" called exit()");
  put(state_text());
  put("; MPI ends the whole job\n");
}

// Installs the reports for the time a rank serves.
class DeathReport {
 public:
  explicit DeathReport(const RankInfo& me) {
    const int n = std::snprintf(g_who, sizeof g_who, "ipckit::mpi::Pool: worker %s (pid %d)",
                                me.where().c_str(), static_cast<int>(me.pid));
    g_who_len = n < 0 ? 0 : std::min(static_cast<std::size_t>(n), sizeof g_who - 1);
    static const bool registered = std::atexit(on_exit_while_serving) == 0;
    (void)registered;
    // On a stack of its own: a task that overflowed the stack still gets its report.
    stack_t ss{};
    ss.ss_sp = g_alt_stack;
    ss.ss_size = sizeof g_alt_stack;
    has_old_stack_ = ::sigaltstack(&ss, &old_stack_) == 0;
    struct sigaction sa {};
    sa.sa_handler = on_fatal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NODEFER | SA_ONSTACK;
    for (std::size_t i = 0; i < kFatal.size(); ++i) ::sigaction(kFatal[i], &sa, &g_old[i]);
    g_serving = 1;
  }
  ~DeathReport() {
    g_serving = 0;
    for (std::size_t i = 0; i < kFatal.size(); ++i) ::sigaction(kFatal[i], &g_old[i], nullptr);
    if (has_old_stack_) ::sigaltstack(&old_stack_, nullptr);
  }
  DeathReport(const DeathReport&) = delete;
  DeathReport& operator=(const DeathReport&) = delete;

 private:
  stack_t old_stack_{};
  bool has_old_stack_ = false;
};

// ---- the serve loop ---------------------------------------------------------------------------
class Server {
 public:
  explicit Server(const RankInfo& me) : me_(me) {}

  void run(const Initializer& init) {
    const DeathReport report(me_);
    if (init) {
      g_serving = 3;
      try {
        init();
      } catch (...) {
        encode_current_exception(out_);
        send(ResultFrame{0, ResultFrame::kInitError, 0, 0});
        init_failed_ = true;
      }
      g_serving = 1;
    }
    MpiBackoff backoff;
    // Rank 0's control messages (kStop, kSkip) are looked for when the rank is idle, after a
    // chunk of 10 us or more, and every 32 chunks: two probes per chunk would cost tiny tasks
    // a third of their time. A kSkip only follows a chunk that ran past its timeout, so it is
    // seen before the chunks it names unless that timeout was under 10 us.
    bool look = true;
    unsigned since_look = 0;
    for (;;) {
      if (look || ++since_look >= 32) {
        if (stop_requested()) return;
        take_skips();
        look = false;
        since_look = 0;
      }
      if (init_failed_) {  // the driver stops the pool when it sees the error
        look = true;
        backoff.wait();
        continue;
      }
      if (!take_task()) {
        look = true;
        backoff.wait();
        continue;
      }
      backoff.reset();
      TaskMessage task;
      try {
        task = parse_task(in_);
        if (skip_.erase(task.frame.id) != 0) {  // moved to another rank: answer, do not run
          out_.clear();
          send(ResultFrame{task.frame.id, ResultFrame::kError, task.frame.count, 0});
          continue;
        }
      } catch (const Error& e) {
        // Only rank 0's driver sends tasks: a malformed one means memory was corrupted there.
        std::fprintf(stderr, "%.*s: a malformed task message from rank 0 (%s); aborting\n",
                     static_cast<int>(g_who_len), g_who, e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      g_serving = 2;
      ResultFrame rf = run_task(task, out_);
      look = rf.busy_ns >= 10'000;
      g_serving = 1;
      if (sizeof rf + out_.size() > kMaxMpiMessage) {
        const std::size_t size = out_.size();
        out_.clear();
        encode_error_text("ipckit::Error",
                          "mpi::Pool: the chunk's result of " + std::to_string(size) +
                              " bytes is more than one MPI message carries (2^31 - 1): give "
                              "it a smaller chunksize",
                          out_);
        rf.status = ResultFrame::kError;
      }
      send(rf);
      if (in_.capacity() > kLargeBlock) std::vector<std::byte>().swap(in_);
      if (out_.capacity() > kLargeBlock) std::vector<std::byte>().swap(out_);
    }
  }

 private:
  // Takes the ids rank 0 moved off this rank (kSkip).
  void take_skips() {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      mpi::check(MPI_Iprobe(0, kSkipTag, MPI_COMM_WORLD, &flag, &status),
                 "mpi::Pool worker: MPI_Iprobe(skip)");
      if (flag == 0) return;
      int count = 0;
      mpi::check(MPI_Get_count(&status, MPI_UINT64_T, &count), "mpi::Pool worker: MPI_Get_count");
      std::vector<std::uint64_t> ids(static_cast<std::size_t>(std::max(count, 0)));
      mpi::check(
          MPI_Recv(ids.data(), count, MPI_UINT64_T, 0, kSkipTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
          "mpi::Pool worker: MPI_Recv(skip)");
      skip_.insert(ids.begin(), ids.end());
      ++skips_taken_;
    }
  }
  // Receives the next task message into in_; false when none has come.
  bool take_task() {
    int flag = 0;
    MPI_Message m;
    MPI_Status status;
    mpi::check(MPI_Improbe(0, kTaskTag, MPI_COMM_WORLD, &flag, &m, &status),
               "mpi::Pool worker: MPI_Improbe");
    if (flag == 0) return false;
    int count = 0;
    mpi::check(MPI_Get_count(&status, MPI_BYTE, &count), "mpi::Pool worker: MPI_Get_count");
    in_.resize(static_cast<std::size_t>(std::max(count, 0)));
    mpi::check(MPI_Mrecv(in_.data(), count, MPI_BYTE, &m, MPI_STATUS_IGNORE),
               "mpi::Pool worker: MPI_Mrecv");
    ++taken_;
    return true;
  }
  void send(const ResultFrame& rf) {
    msg_.resize(sizeof rf + out_.size());
    std::memcpy(msg_.data(), &rf, sizeof rf);
    if (!out_.empty()) std::memcpy(msg_.data() + sizeof rf, out_.data(), out_.size());
    mpi::check(MPI_Send(msg_.data(), static_cast<int>(msg_.size()), MPI_BYTE, 0, kResultTag,
                        MPI_COMM_WORLD),
               "mpi::Pool worker: MPI_Send");
    ++sent_;
    if (msg_.capacity() > kLargeBlock) std::vector<std::byte>().swap(msg_);
  }
  // The pool is over: drop the task messages not taken yet and say so.
  bool stop_requested() {
    int flag = 0;
    mpi::check(MPI_Iprobe(0, kStopTag, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE),
               "mpi::Pool worker: MPI_Iprobe");
    if (flag == 0) return false;
    std::uint64_t counts[2] = {0, 0};  // task messages, skip messages rank 0 sent
    mpi::check(MPI_Recv(counts, 2, MPI_UINT64_T, 0, kStopTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
               "mpi::Pool worker: MPI_Recv(stop)");
    while (taken_ < counts[0]) {
      if (!take_task()) std::this_thread::yield();  // sent before the stop: on its way
    }
    while (skips_taken_ < counts[1]) {  // none may reach a later pool
      take_skips();
      if (skips_taken_ < counts[1]) std::this_thread::yield();
    }
    mpi::check(MPI_Send(&sent_, 1, MPI_UINT64_T, 0, kStoppedTag, MPI_COMM_WORLD),
               "mpi::Pool worker: MPI_Send(stopped)");
    return true;
  }

  const RankInfo& me_;
  std::vector<std::byte> in_;
  std::vector<std::byte> out_;
  std::vector<std::byte> msg_;
  std::unordered_set<std::uint64_t> skip_;  // ids not to run
  std::uint64_t taken_ = 0;
  std::uint64_t skips_taken_ = 0;
  std::uint64_t sent_ = 0;
  bool init_failed_ = false;
};

// A worker rank's pool after it served: every call says so.
class ServedBackend final : public PoolBackend {
 public:
  explicit ServedBackend(int rank) : PoolBackend(0, std::make_shared<PoolLink>()), rank_(rank) {
    link->handle_sigint = false;
    link->owner = current_pid();
  }
  void submit(std::shared_ptr<JobBase>, const char* what) override { refuse(what); }
  void close() override { refuse("Pool::close"); }
  bool join(const Deadline&) override { refuse("Pool::join"); }
  void terminate() noexcept override {}
  [[nodiscard]] std::vector<WorkerStats> stats() const override { return {}; }

 private:
  [[noreturn]] void refuse(const char* what) const {
    throw Error(errc::invalid_argument,
                std::string(what) + ": rank " + std::to_string(rank_) +
                    " served tasks for this mpi::Pool; only rank 0 drives it (is_driver())");
  }
  int rank_;
};

// Rank 0 could not start its driver: an empty pool for the ranks that wait to serve. Results
// they send meanwhile (an initializer's error) are taken and dropped, so that none reaches a
// later pool.
void release_ranks(int size) noexcept {
  std::uint64_t none[2] = {0, 0};
  std::vector<MPI_Request> reqs(static_cast<std::size_t>(size - 1), MPI_REQUEST_NULL);
  for (int r = 1; r < size; ++r) {
    MPI_Isend(none, 2, MPI_UINT64_T, r, kStopTag, MPI_COMM_WORLD,
              &reqs[static_cast<std::size_t>(r - 1)]);
  }
  std::vector<std::byte> junk;
  for (int left = size - 1; left > 0;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kResultTag, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) break;
    if (flag != 0) {
      int count = 0;
      MPI_Get_count(&st, MPI_BYTE, &count);
      junk.resize(static_cast<std::size_t>(std::max(count, 0)));
      MPI_Recv(junk.data(), count, MPI_BYTE, st.MPI_SOURCE, kResultTag, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      continue;
    }
    if (MPI_Iprobe(MPI_ANY_SOURCE, kStoppedTag, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) break;
    if (flag != 0) {
      std::uint64_t results = 0;
      MPI_Recv(&results, 1, MPI_UINT64_T, st.MPI_SOURCE, kStoppedTag, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      --left;
      continue;
    }
    std::this_thread::yield();
  }
  MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
}

struct Identity {
  std::int32_t pid;
  char host[MPI_MAX_PROCESSOR_NAME + 1];
};

}  // namespace
}  // namespace ipckit::detail

namespace ipckit::mpi {

Pool::Started Pool::start(PoolOptions options) {
  using namespace detail;
  int flag = 0;
  MPI_Finalized(&flag);
  if (flag == 0) MPI_Initialized(&flag);
  if (flag == 0) {
    throw Error(errc::invalid_argument,
                "mpi::Pool: MPI is not initialised (or already finalised): make an "
                "ipckit::mpi::Environment first");
  }
  // One mpi::Pool at a time on rank 0: two drivers would take each other's results. Only
  // rank 0 sets the flag, so it is checked before any other MPI call: this thread may not
  // call MPI while a live pool's driver thread does (MPI_THREAD_SERIALIZED).
  if (g_driving.load()) {
    throw Error(errc::invalid_argument,
                "mpi::Pool: rank 0 already drives an mpi::Pool; make one at a time (join or "
                "terminate the other first)");
  }
  int size = 0, rank = 0, level = 0;
  check(MPI_Comm_size(MPI_COMM_WORLD, &size), "mpi::Pool: MPI_Comm_size");
  check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "mpi::Pool: MPI_Comm_rank");
  if (size == 1) {  // no mpirun: a local pool
    ipckit::PoolOptions local = std::move(options.single_rank);
    if (!local.initializer) local.initializer = std::move(options.initializer);
    if (!local.task_timeout) local.task_timeout = options.task_timeout;
    auto core = std::make_shared<PoolCore>(std::move(local));
    core->start();
    return {std::move(core), true, 0};
  }
  check(MPI_Query_thread(&level), "mpi::Pool: MPI_Query_thread");
  if (level < MPI_THREAD_SERIALIZED) {  // the same answer on every rank: all throw
    throw Error(errc::invalid_argument,
                "mpi::Pool: MPI was initialised below MPI_THREAD_SERIALIZED (rank 0's pool "
                "calls MPI from its driver thread): initialise it with mpi::Environment");
  }
  if (options.task_timeout && options.task_timeout->count() <= 0) {
    throw Error(errc::invalid_argument, "mpi::Pool: task_timeout must be positive");
  }
  if (rank == 0 && g_driving.exchange(true)) {  // another thread made one just now
    throw Error(errc::invalid_argument, "mpi::Pool: rank 0 already drives an mpi::Pool");
  }
  struct Release {  // rank 0: the flag goes down unless the driver took over
    bool armed;
    ~Release() {
      if (armed) g_driving.store(false);
    }
  } release{rank == 0};
  // The broadcast holds the worker ranks until rank 0 is here, after its previous pool has
  // stopped: nothing of this pool can reach that one's driver.
  int go = 1;
  check(MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD), "mpi::Pool: MPI_Bcast");
  Identity mine{};
  mine.pid = static_cast<std::int32_t>(::getpid());
  int len = 0;
  check(MPI_Get_processor_name(mine.host, &len), "mpi::Pool: MPI_Get_processor_name");
  std::vector<Identity> all(rank == 0 ? static_cast<std::size_t>(size) : 0);
  check(MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0,
                   MPI_COMM_WORLD),
        "mpi::Pool: MPI_Gather");
  if (rank != 0) {
    RankInfo me{rank, mine.pid, mine.host};
    Server(me).run(options.initializer);
    return {std::make_shared<ServedBackend>(rank), false, rank};
  }
  std::vector<RankInfo> ranks;
  for (int r = 1; r < size; ++r) {
    Identity& id = all[static_cast<std::size_t>(r)];
    id.host[MPI_MAX_PROCESSOR_NAME] = '\0';
    ranks.push_back({r, id.pid, id.host});
  }
  try {
    Started started{start_mpi_driver(std::move(ranks), options.task_timeout), true, 0};
    release.armed = false;  // the driver lowers it when it has stopped the ranks
    return started;
  } catch (...) {
    release_ranks(size);
    throw;
  }
}

Pool::Pool(PoolOptions options) : Pool(start(std::move(options))) {}

}  // namespace ipckit::mpi
