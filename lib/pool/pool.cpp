// The pool's machinery. One driver thread per pool owns the workers: it forks them, feeds
// each its own task ring (a ByteRing, parent -> worker), drains each result ring (worker ->
// parent), notices deaths through pidfds, and respawns. Because every worker has its own
// rings and runs its chunks in order, the driver always knows which chunk a dead worker was
// running: the last one it began (WorkerShared::started), and which chunks it had not begun
// (those go to other workers).
//
// The driver never blocks on a ring (only try_ calls), so a worker blocked on a full result
// ring always gets drained. It sleeps in poll() on an eventfd (the doorbell) and the workers'
// pidfds: workers ring the doorbell after publishing a result, but only while the driver has
// said it sleeps (a flag in shared memory, Dekker-style with a fence on each side), so a busy
// pool makes no system calls per task.
#include "ipckit/pool/pool.hpp"

#include <cxxabi.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/pool/detail/wire.hpp"

namespace ipckit {

namespace {
std::string remote_what(const std::string& type, const std::string& message, pid_t pid) {
  std::string s = "task raised " + type;
  if (!message.empty()) s += ": " + message;
  return s + " (in worker " + std::to_string(pid) + ")";
}
std::string lost_what(pid_t pid, const ExitStatus& st, int attempts) {
  std::string s = "worker " + std::to_string(pid) + " " + st.describe() + " while running the task";
  if (attempts > 1) s += " (" + std::to_string(attempts) + " attempts)";
  return s;
}

// Error(errno, "<context>: <attempted> failed (hint): <strerror>") for a worker or the driver
// thread that could not be started. EAGAIN from fork() or pthread_create() is a process
// limit: RLIMIT_NPROC (threads count), kernel.threads-max, kernel.pid_max or a cgroup's pids.max.
[[noreturn]] void throw_start_failure(const std::string& context, const std::system_error& e,
                                      const std::string& what) {
  const bool limit = e.code() == std::errc::resource_unavailable_try_again;
  throw Error(
      std::error_code(e.code().value(), std::system_category()),
      context + ": " + what + (limit ? " (a process limit such as RLIMIT_NPROC reached?)" : ""));
}
}  // namespace

RemoteError::RemoteError(std::string type_name, std::string message, pid_t worker)
    : Error(errc::remote_error, remote_what(type_name, message, worker)),
      type_(std::move(type_name)),
      message_(std::move(message)),
      worker_(worker) {}

WorkerLost::WorkerLost(pid_t worker, ExitStatus status, int attempts)
    : Error(errc::worker_lost, lost_what(worker, status, attempts)),
      worker_(worker),
      status_(status),
      attempts_(attempts) {}

namespace detail {

// ---- SIGINT ----------------------------------------------------------------------------------
namespace {

constexpr int kMaxPools = 64;
// Doorbell fds of pools that handle SIGINT, stored as fd + 1 (0: free slot).
std::atomic<int> g_doorbells[kMaxPools];
std::atomic<std::uint64_t> g_sigint_count{0};
std::mutex g_sig_mu;
int g_blocked = 0;
bool g_installed = false;
struct sigaction g_previous {};

// Handlers running now: unregister_doorbell() waits for them, so that a handler never
// writes to a descriptor that was closed and reused in the meantime.
std::atomic<int> g_in_handler{0};

extern "C" void on_sigint(int) {
  const int saved = errno;
  g_in_handler.fetch_add(1, std::memory_order_seq_cst);
  g_sigint_count.fetch_add(1, std::memory_order_seq_cst);
  for (auto& slot : g_doorbells) {
    const int v = slot.load(std::memory_order_seq_cst);
    if (v > 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t r = ::write(v - 1, &one, sizeof one);
    }
  }
  g_in_handler.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved;
}

void register_doorbell(int fd) {
  for (auto& slot : g_doorbells) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1, std::memory_order_seq_cst)) return;
  }
  // More than kMaxPools pools handling SIGINT at once: this one just is not interrupted.
}
void unregister_doorbell(int fd) {
  for (auto& slot : g_doorbells) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_seq_cst)) break;
  }
  // A handler that read the slot before it was cleared finishes its write first. (A handler
  // interrupting this very thread has returned before we get here.)
  while (g_in_handler.load(std::memory_order_seq_cst) != 0) cpu_relax();
}

// A child forked while a pool call waits (by the program, not the pool) gets the program's
// own SIGINT disposition back: the pool's handler means nothing there.
void restore_sigint_in_child() noexcept {
  if (g_installed) ::sigaction(SIGINT, &g_previous, nullptr);
  g_installed = false;
  g_blocked = 0;
  new (&g_sig_mu) std::mutex();  // another thread of the parent may have held it at fork
}

thread_local bool t_in_driver = false;

void write_doorbell(int fd) noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t r = ::write(fd, &one, sizeof one);
}

}  // namespace

void PoolLink::wake() const noexcept { write_doorbell(doorbell.get()); }

void check_may_block(const PoolLink* link, const char* what) {
  if (t_in_driver) {
    throw Error(errc::invalid_argument,
                std::string(what) +
                    ": a blocking pool call from a pool callback would wait for the thread "
                    "that runs it (callbacks run on the pool's driver thread)");
  }
  if (link != nullptr && current_pid() != link->owner) {
    throw Error(errc::invalid_argument,
                std::string(what) + ": this pool belongs to process " +
                    std::to_string(link->owner) +
                    " (a forked copy of a pool has no driver and no workers)");
  }
}

BlockingScope::BlockingScope(PoolLink* link) : link_(nullptr) {
  check_may_block(link, "a wait for a pool result");
  if (link == nullptr || !link->handle_sigint) return;
  static const bool atfork = [] {
    ::pthread_atfork(nullptr, nullptr, restore_sigint_in_child);
    return true;
  }();
  (void)atfork;
  link_ = link;
  link_->blocking.fetch_add(1, std::memory_order_seq_cst);
  std::lock_guard lk(g_sig_mu);
  if (g_blocked++ == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // other threads' system calls go on; the pool's poll() wakes
    if (::sigaction(SIGINT, &sa, &g_previous) == 0) {
      g_installed = true;
      if (g_previous.sa_handler == SIG_IGN) {  // the program ignores SIGINT: keep it so
        ::sigaction(SIGINT, &g_previous, nullptr);
        g_installed = false;
      }
    }
  }
}

BlockingScope::~BlockingScope() {
  if (link_ == nullptr) return;
  {
    // The handler goes first: while it is installed, this caller still counts as waiting,
    // so a SIGINT in between is not swallowed.
    std::lock_guard lk(g_sig_mu);
    if (--g_blocked == 0 && g_installed) {
      ::sigaction(SIGINT, &g_previous, nullptr);
      g_installed = false;
    }
  }
  link_->blocking.fetch_sub(1, std::memory_order_seq_cst);
}

void run_callback(const char* what, const std::function<void()>& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipckit::Pool: a %s threw (ignored): %s\n", what, e.what());
  } catch (...) {
    std::fprintf(stderr, "ipckit::Pool: a %s threw a non-standard exception (ignored)\n", what);
  }
}

std::size_t check_chunksize(std::optional<std::size_t> chunksize, std::size_t n,
                            std::size_t workers, const char* what) {
  if (chunksize) {
    if (*chunksize == 0) {
      throw Error(errc::invalid_argument, std::string(what) + ": chunksize must be at least 1");
    }
    if (*chunksize > UINT32_MAX) {
      throw Error(errc::invalid_argument, std::string(what) + ": chunksize " +
                                              std::to_string(*chunksize) + " exceeds 2^32 - 1");
    }
    return *chunksize;
  }
  // Python's rule: about four chunks per worker.
  const std::size_t per = 4 * std::max<std::size_t>(workers, 1);
  const std::size_t c = n / per + (n % per != 0 ? 1 : 0);
  return std::clamp<std::size_t>(c, 1, UINT32_MAX);
}

// ---- shared memory and wire helpers ------------------------------------------------------------
namespace {

constexpr std::uint64_t kRingBytes = std::uint64_t{1} << 20;
constexpr int kExitInitFailed = 71;
// How an idle worker waits for its next task: spin briefly, then sleep. A long spin keeps a
// worker awake through a short gap in the stream but takes the CPU from the driver and the
// caller when the workers have every core.
WaitPolicy worker_wait() {
  WaitPolicy p = WaitPolicy::hybrid();
  p.spin = std::chrono::microseconds(20);  // measured: 5, 20, 50 us; 20 was best
  return p;
}
constexpr int kExitProtocol = 72;

// Per worker, written by the worker, read by the driver (after the worker died).
struct alignas(kCacheLine) WorkerShared {
  // The id of the last chunk the worker began (ids grow along each worker's queue); a
  // chunk counts as begun from its first fragment.
  std::atomic<std::uint64_t> started{0};
  // 1 once the initializer has returned: a worker that dies before is not a task's fault.
  std::atomic<std::uint32_t> ready{0};
};
struct alignas(kCacheLine) PoolShared {
  std::atomic<std::uint32_t> driver_sleeping{0};
};
static_assert(std::is_standard_layout_v<WorkerShared> && std::is_standard_layout_v<PoolShared>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
              std::atomic<std::uint32_t>::is_always_lock_free);

// Rings the doorbell if the driver said it sleeps. Call after publishing.
void notify_driver(PoolShared* sh, int fd) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the driver's
  if (sh->driver_sleeping.load(std::memory_order_relaxed) != 0) write_doorbell(fd);
}

std::string demangle(const char* name) {
  int status = 0;
  char* s = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && s != nullptr) ? s : name;
  std::free(s);
  return out;
}

// The exception being handled, as type name and message.
void encode_current_exception(std::vector<std::byte>& out) {
  const std::type_info* t = abi::__cxa_current_exception_type();
  std::string type = t != nullptr ? demangle(t->name()) : "unknown exception";
  std::string message;
  try {
    throw;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  out.clear();
  encode_error_text(type, message, out);
}

std::exception_ptr decode_remote_error(std::span<const std::byte> in, pid_t pid) {
  ErrorText text = decode_error_text(in);
  return std::make_exception_ptr(RemoteError(std::move(text.type), std::move(text.message), pid));
}

// Sends one message (head then body) on a ring the caller produces into, in fragments when it
// is larger than one record. Blocks while the ring is full.
void send_message(ByteRing& ring, std::span<const std::byte> head, std::span<const std::byte> body,
                  PoolShared* sh, int fd) {
  const std::size_t total = head.size() + body.size();
  std::size_t done = 0;
  do {
    const std::size_t n = std::min(total - done, kFragmentBytes);
    const std::uint64_t word = done + n < total ? kMore : 0;
    std::span<std::byte> rec = ring.reserve(8 + n);
    std::memcpy(rec.data(), &word, 8);
    std::size_t at = 8;
    for (std::size_t k = done; k < done + n;) {  // copy [done, done + n) of head ++ body
      if (k < head.size()) {
        const std::size_t m = std::min(head.size() - k, done + n - k);
        std::memcpy(rec.data() + at, head.data() + k, m);
        at += m;
        k += m;
      } else {
        const std::size_t m = done + n - k;
        if (m != 0) std::memcpy(rec.data() + at, body.data() + (k - head.size()), m);
        at += m;
        k += m;
      }
    }
    done += n;
    ring.commit();
    notify_driver(sh, fd);
  } while (done < total);
}

// ---- the worker process ------------------------------------------------------------------------
struct WorkerEnv {
  ByteRing* tasks;
  ByteRing* results;
  WorkerShared* me;
  PoolShared* sh;
  int doorbell;
  const PoolOptions* options;
  int cpu;  // -1: not pinned
};

int worker_main(const WorkerEnv& env) {
  ::signal(SIGINT, SIG_IGN);
  if (env.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(env.cpu, &set);
    (void)::sched_setaffinity(0, sizeof set, &set);
  }
  ByteRing& tasks = *env.tasks;
  ByteRing& results = *env.results;
  std::vector<std::byte> out;
  std::vector<std::byte> acc;
  try {
    tasks.attach_consumer();
    results.attach_producer();
    if (env.options->initializer) {
      try {
        env.options->initializer();
      } catch (...) {
        encode_current_exception(out);
        const ResultFrame rf{0, ResultFrame::kInitError, 0, 0};
        send_message(results, std::as_bytes(std::span(&rf, 1)), out, env.sh, env.doorbell);
        return kExitInitFailed;
      }
    }
    env.me->ready.store(1, std::memory_order_release);
    const std::size_t max_tasks = env.options->maxtasksperchild;
    std::size_t done = 0;
    for (;;) {
      // Throws closed when the pool is done, peer_dead when the parent died.
      const std::span<const std::byte> rec = tasks.peek();
      Fragment frag;
      try {
        frag = parse_fragment(rec);
      } catch (const Error&) {
        return kExitProtocol;
      }
      const std::span<const std::byte> body = frag.body;
      bool in_ring = true;
      std::span<const std::byte> msg = body;
      if (frag.more || !acc.empty()) {
        if (acc.empty() && body.size() >= sizeof(TaskFrame)) {
          // The first fragment: the chunk counts as begun (dying while it arrives is its
          // fault as much as dying while it runs).
          TaskFrame first{};
          std::memcpy(&first, body.data(), sizeof first);
          env.me->started.store(first.id, std::memory_order_release);
        }
        acc.insert(acc.end(), body.begin(), body.end());
        tasks.release();
        if (frag.more) {
          // The driver waits for this room with nothing else to wake it: ring always (one
          // system call per 256 KiB).
          write_doorbell(env.doorbell);
          continue;
        }
        msg = acc;
        in_ring = false;
      }
      TaskMessage task;
      try {
        task = parse_task(msg);
      } catch (const Error&) {
        return kExitProtocol;
      }
      const TaskFrame& tf = task.frame;
      env.me->started.store(tf.id, std::memory_order_release);
      const auto t0 = std::chrono::steady_clock::now();
      ResultFrame rf{tf.id, ResultFrame::kOk, tf.count, 0};
      out.clear();
      try {
        // The driver sent the address of invoke_chunk<...> in this same binary (fork keeps
        // the layout), so the integer is a function pointer again.
        reinterpret_cast<Invoker>(tf.invoker)(  // NOLINT(performance-no-int-to-ptr)
            task.fn, task.args, tf.count, out);
      } catch (...) {
        rf.status = ResultFrame::kError;
        encode_current_exception(out);
      }
      rf.busy_ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                               t0)
              .count());
      if (in_ring) {
        tasks.release();
      } else {
        acc.clear();
      }
      // Published at once, never held back for a batch: a result that waited behind the next
      // task would be lost with the worker, and the driver would count its task as lost.
      send_message(results, std::as_bytes(std::span(&rf, 1)), out, env.sh, env.doorbell);
      if (max_tasks != 0 && ++done >= max_tasks) return 0;
    }
  } catch (const Error&) {
    // closed (the pool shut down) or peer_dead (the parent is gone): either way, done.
    return 0;
  }
}

}  // namespace

// ---- the wire ---------------------------------------------------------------------------------
Fragment parse_fragment(std::span<const std::byte> record) {
  if (record.size() < 8) throw_codec("pool: a record shorter than its fragment word");
  std::uint64_t word = 0;
  std::memcpy(&word, record.data(), 8);
  if ((word & ~kMore) != 0) {
    throw_codec("pool: a fragment word of " + std::to_string(word) + " (only 0 or 1 is sent)");
  }
  return {word == kMore, record.subspan(8)};
}

TaskMessage parse_task(std::span<const std::byte> msg) {
  TaskMessage t;
  if (msg.size() < sizeof t.frame) throw_codec("pool: a task message shorter than its frame");
  std::memcpy(&t.frame, msg.data(), sizeof t.frame);
  const std::size_t fn_end = sizeof t.frame + pad8(t.frame.fn_size);
  if (fn_end > msg.size()) {
    throw_codec("pool: a callable of " + std::to_string(t.frame.fn_size) +
                " bytes runs past the task message's " + std::to_string(msg.size()));
  }
  t.fn = msg.subspan(sizeof t.frame, t.frame.fn_size);
  t.args = msg.subspan(fn_end);
  return t;
}

ResultMessage parse_result(std::span<const std::byte> msg) {
  ResultMessage r;
  if (msg.size() < sizeof r.frame) throw_codec("pool: a result message shorter than its frame");
  std::memcpy(&r.frame, msg.data(), sizeof r.frame);
  const std::uint32_t st = r.frame.status;
  if (st != ResultFrame::kOk && st != ResultFrame::kError && st != ResultFrame::kInitError) {
    throw_codec("pool: a result of unknown status " + std::to_string(st));
  }
  if (r.frame.busy_ns > kMaxBusyNs) {
    throw_codec("pool: a result that ran " + std::to_string(r.frame.busy_ns) + " ns");
  }
  r.payload = msg.subspan(sizeof r.frame);
  return r;
}

namespace {
void put_string(std::vector<std::byte>& out, const std::string& s) {
  const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(s.size(), 1u << 20));
  const std::size_t at = out.size();
  out.resize(at + 4 + n);
  std::memcpy(out.data() + at, &n, 4);
  std::memcpy(out.data() + at + 4, s.data(), n);
}
std::string get_string(std::span<const std::byte>& in) {
  std::uint32_t n = 0;
  if (in.size() < 4) throw_codec("pool: truncated error record");
  std::memcpy(&n, in.data(), 4);
  if (in.size() - 4 < n) throw_codec("pool: truncated error record");
  std::string s(reinterpret_cast<const char*>(in.data() + 4), n);
  in = in.subspan(4 + n);
  return s;
}
}  // namespace

void encode_error_text(const std::string& type, const std::string& message,
                       std::vector<std::byte>& out) {
  put_string(out, type);
  put_string(out, message);
}

ErrorText decode_error_text(std::span<const std::byte> payload) {
  ErrorText t;
  t.type = get_string(payload);
  t.message = get_string(payload);
  if (!payload.empty()) {
    throw_codec("pool: " + std::to_string(payload.size()) + " bytes after an error record");
  }
  return t;
}

// ---- the driver ------------------------------------------------------------------------------
class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolOptions options);
  ~PoolCore();
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  void start();
  void submit(std::shared_ptr<JobBase> job, const char* what);
  void close();
  bool join(const Deadline& deadline);
  void terminate() noexcept;
  std::vector<WorkerStats> stats() const;

  const PoolOptions options;
  const std::size_t n;
  std::shared_ptr<PoolLink> link;

 private:
  enum class State { running, closed, stopping, done };

  struct Worker {
    std::size_t slot = 0;
    Process proc;
    pid_t pid = -1;
    std::optional<ByteRing> tasks;
    std::optional<ByteRing> results;
    std::deque<Chunk> inflight;  // dispatched, in the order the worker runs them
    std::uint64_t budget = UINT64_MAX;
    std::vector<std::byte> outbox;  // a task message too large for one record, being sent
    std::size_t out_pos = 0;
    bool staged = false;            // records staged on `tasks`, not yet published
    std::vector<std::byte> acc;     // fragments of a result
    double avg_ns = -1;
    std::size_t window = 2;
    bool alive = false;
    bool init_failed = false;
    // A replacement that could not be forked is tried again from this time on.
    std::optional<std::chrono::steady_clock::time_point> respawn_at;
  };

  void run() noexcept;
  void loop();
  void spawn(Worker& w, bool replacement);
  bool intake(State& st);
  bool collect(Worker& w);
  void handle_result(Worker& w, std::span<const std::byte> msg);
  bool check_deaths(int timeout_ms);
  void on_exit(Worker& w);
  bool respawn_pending();
  bool dispatch();
  bool next_chunk(Chunk& c);
  void send_chunk(Worker& w, Chunk c);
  bool flush_outbox(Worker& w);
  Worker* pick_worker();
  void resolve(Chunk& c);
  void fail(Chunk& c, std::exception_ptr e);
  bool idle() const;
  bool anything_ready();
  void sleep();
  void stop_all(const std::exception_ptr& e) noexcept;
  void shutdown_workers();
  void set_state(State s);

  detail::Region shared_;
  PoolShared* sh_ = nullptr;
  WorkerShared* slots_ = nullptr;

  mutable std::mutex mu_;
  std::condition_variable state_cv_;
  State state_ = State::running;
  std::deque<std::shared_ptr<JobBase>> submitted_;
  std::exception_ptr broken_;
  bool interrupted_ = false;
  std::atomic<bool> poke_{false};

  std::mutex join_mu_;
  std::thread driver_;
  const pid_t owner_ = current_pid();  // the process whose thread drives the pool

  // Driver thread only.
  std::vector<Worker> workers_;
  std::deque<std::shared_ptr<JobBase>> jobs_;  // may still give chunks
  std::deque<Chunk> retry_;                    // chunks to run again first
  std::uint64_t next_id_ = 1;
  std::uint64_t sigint_seen_ = 0;
  int init_deaths_ = 0;  // workers in a row that died before their initializer returned
  std::chrono::steady_clock::time_point next_death_check_{};
  bool stop_requested_ = false;

  mutable std::mutex stats_mu_;
  std::vector<WorkerStats> stats_;
};

PoolCore::PoolCore(PoolOptions opts)
    : options(std::move(opts)),
      n(options.processes != 0 ? options.processes
                               : std::max(1u, std::thread::hardware_concurrency())),
      link(std::make_shared<PoolLink>()) {
  if (options.task_retries < 0) {
    throw Error(errc::invalid_argument, "Pool: task_retries must not be negative");
  }
  if (n > 4096) {
    throw Error(errc::invalid_argument,
                "Pool: " + std::to_string(n) + " processes is more than the 4096 supported");
  }
  if (!options.cpu_affinity.empty()) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) throw_errno("sched_getaffinity");
    for (int cpu : options.cpu_affinity) {
      if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
        throw Error(errc::invalid_argument, "Pool: cpu_affinity names CPU " +
                                                std::to_string(cpu) +
                                                ", which this process may not run on");
      }
    }
  }
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw_errno("eventfd");
  link->doorbell.reset(fd);
  link->handle_sigint = options.handle_sigint;
  link->owner = current_pid();
  shared_ = Region::anonymous(sizeof(PoolShared) + n * sizeof(WorkerShared));
  sh_ = new (shared_.data()) PoolShared();
  slots_ = reinterpret_cast<WorkerShared*>(shared_.data() + sizeof(PoolShared));
  for (std::size_t i = 0; i < n; ++i) new (slots_ + i) WorkerShared();
  workers_.resize(n);
  stats_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    workers_[i].slot = i;
    stats_[i].slot = i;
  }
  if (options.handle_sigint) register_doorbell(fd);
}

PoolCore::~PoolCore() {
  terminate();
  // The last reference may be the driver's own (a callback destroyed the Pool): the thread
  // is ending and cannot join itself.
  if (driver_.joinable()) driver_.detach();
  if (options.handle_sigint) unregister_doorbell(link->doorbell.get());
}

void PoolCore::start() {
  auto started = std::make_shared<std::promise<void>>();
  auto ready = started->get_future();
  // The driver forks every worker (the first ones too): a child's parent-death signal
  // follows the thread that forked it, and the driver lives as long as the pool. It holds a
  // reference to the core, so that a callback that destroys the Pool does not pull the core
  // from under it.
  auto driver = [self = shared_from_this(), started] {
    t_in_driver = true;
    self->sigint_seen_ = g_sigint_count.load();
    std::size_t i = 0;
    try {
      try {
        for (; i < self->n; ++i) self->spawn(self->workers_[i], false);
      } catch (const std::system_error& e) {
        const std::string before =
            i == 0   ? ""
            : i == 1 ? " (worker 1, already running, was stopped)"
                     : " (workers 1-" + std::to_string(i) + ", already running, were stopped)";
        throw_start_failure("Pool: could not start worker " + std::to_string(i + 1) + " of " +
                                std::to_string(self->n) + before,
                            e, attempted(e));
      }
    } catch (...) {
      self->stop_all(std::current_exception());
      self->set_state(State::done);
      started->set_exception(std::current_exception());
      return;
    }
    started->set_value();
    self->run();
  };
  try {
    driver_ = std::thread(std::move(driver));
  } catch (const std::system_error& e) {
    // Nothing has started: the caller's reference to the core is the last one.
    throw_start_failure("Pool: could not start its driver thread", e, "pthread_create() failed");
  }
  try {
    ready.get();
  } catch (...) {
    driver_.join();
    throw;
  }
}

void PoolCore::set_state(State s) {
  {
    std::lock_guard lk(mu_);
    state_ = s;
  }
  state_cv_.notify_all();
}

void PoolCore::submit(std::shared_ptr<JobBase> job, const char* what) {
  if (current_pid() != owner_) {
    throw Error(errc::invalid_argument,
                std::string(what) + ": this Pool belongs to process " + std::to_string(owner_) +
                    " (a forked copy of a Pool has no driver and no workers)");
  }
  {
    std::lock_guard lk(mu_);
    if (broken_) {
      try {
        std::rethrow_exception(broken_);
      } catch (const Error& e) {
        throw Error(errc::child_failed, std::string(what) + ": " + e.what());
      }
    }
    if (state_ != State::running) {
      throw Error(errc::closed, std::string(what) + ": the pool is " +
                                    (interrupted_ ? "stopped (interrupted by SIGINT)"
                                                  : "closed or terminated"));
    }
    submitted_.push_back(std::move(job));
  }
  poke_.store(true, std::memory_order_release);
  notify_driver(sh_, link->doorbell.get());
}

void PoolCore::close() {
  if (current_pid() != owner_) {
    throw Error(errc::invalid_argument, "Pool::close: this Pool belongs to process " +
                                            std::to_string(owner_));
  }
  {
    std::lock_guard lk(mu_);
    if (state_ == State::running) state_ = State::closed;
  }
  poke_.store(true, std::memory_order_release);
  link->wake();
}

bool PoolCore::join(const Deadline& deadline) {
  BlockingScope scope(link.get());  // throws in a forked copy and on the driver thread
  {
    std::unique_lock lk(mu_);
    if (state_ == State::running) {
      throw Error(errc::invalid_argument, "Pool::join: call close() or terminate() first");
    }
    const auto done = [&] { return state_ == State::done; };
    if (deadline.is_never()) {
      state_cv_.wait(lk, done);
    } else if (!state_cv_.wait_until(lk, deadline.when(), done)) {
      return false;
    }
  }
  {
    std::lock_guard lk(join_mu_);
    if (driver_.joinable()) driver_.join();  // it has finished its work: returns at once
  }
  std::lock_guard lk(mu_);
  if (interrupted_) throw Error(errc::interrupted, "Pool::join: interrupted by SIGINT");
  return true;
}

void PoolCore::terminate() noexcept {
  if (current_pid() != owner_) {
    // A forked copy: the driver thread and the workers belong to the parent. Leave them be.
    if (driver_.joinable()) driver_.detach();
    return;
  }
  {
    std::lock_guard lk(mu_);
    if (state_ != State::done) state_ = State::stopping;
  }
  poke_.store(true, std::memory_order_release);
  link->wake();
  if (driver_.get_id() == std::this_thread::get_id()) return;  // a callback: the loop stops
  std::lock_guard lk(join_mu_);
  if (driver_.joinable()) driver_.join();
}

std::vector<WorkerStats> PoolCore::stats() const {
  std::lock_guard lk(stats_mu_);
  return stats_;
}

void PoolCore::spawn(Worker& w, bool replacement) {
  w.tasks.reset();
  w.results.reset();
  w.tasks.emplace(kRingBytes, worker_wait());
  w.results.emplace(kRingBytes, worker_wait());
  w.tasks->attach_producer();
  w.results->attach_consumer();
  slots_[w.slot].started.store(0, std::memory_order_relaxed);
  slots_[w.slot].ready.store(0, std::memory_order_relaxed);  // the new worker's, not the last one's
  w.inflight.clear();
  w.outbox.clear();
  w.out_pos = 0;
  w.staged = false;
  w.acc.clear();
  w.avg_ns = -1;
  w.window = 1;  // until its first result says how long tasks take
  w.init_failed = false;
  w.budget = options.maxtasksperchild != 0 ? options.maxtasksperchild : UINT64_MAX;
  const WorkerEnv env{&*w.tasks,
                      &*w.results,
                      &slots_[w.slot],
                      sh_,
                      link->doorbell.get(),
                      &options,
                      options.cpu_affinity.empty()
                          ? -1
                          : options.cpu_affinity[w.slot % options.cpu_affinity.size()]};
  w.proc = Process::spawn([env] { return worker_main(env); });
  w.pid = w.proc.pid();
  w.alive = true;
  std::lock_guard lk(stats_mu_);
  stats_[w.slot].pid = w.pid;
  if (replacement) ++stats_[w.slot].restarts;
}

void PoolCore::run() noexcept {
  try {
    loop();
  } catch (...) {
    // Not expected: a bug or resource exhaustion in the driver. Fail everything rather than
    // leave anyone waiting.
    std::string what = "unknown error";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "ipckit::Pool: driver failed: %s\n", what.c_str());
    stop_all(std::make_exception_ptr(Error(errc::closed, "Pool driver failed: " + what)));
  }
  set_state(State::done);
}

bool PoolCore::intake(State& st) {
  poke_.store(false, std::memory_order_relaxed);
  std::lock_guard lk(mu_);
  st = state_;
  if (submitted_.empty()) return false;
  for (auto& j : submitted_) jobs_.push_back(std::move(j));
  submitted_.clear();
  return true;
}

void PoolCore::loop() {
  using clock = std::chrono::steady_clock;
  for (;;) {
    State st;
    bool progress = intake(st);
    if (st == State::stopping) {
      stop_all(std::make_exception_ptr(Error(errc::closed, "the pool was terminated")));
      return;
    }
    const std::uint64_t sig = g_sigint_count.load(std::memory_order_acquire);
    if (sig != sigint_seen_) {
      sigint_seen_ = sig;
      if (link->blocking.load() > 0) {
        {
          std::lock_guard lk(mu_);
          interrupted_ = true;
          state_ = State::stopping;
        }
        stop_all(std::make_exception_ptr(Error(errc::interrupted, "interrupted by SIGINT")));
        return;
      }
    }
    for (Worker& w : workers_) {
      if (w.alive) progress |= collect(w);
    }
    if (broken_) {
      stop_all(broken_);
      return;
    }
    const auto now = clock::now();
    if (now >= next_death_check_) {
      progress |= check_deaths(0);
      next_death_check_ = now + std::chrono::milliseconds(1);
    }
    if (st == State::closed) {
      for (auto& j : jobs_) j->pool_closing = true;
    }
    progress |= respawn_pending();
    progress |= dispatch();
    if (st == State::closed && idle()) {
      shutdown_workers();
      return;
    }
    if (!progress) sleep();
  }
}

bool PoolCore::idle() const {
  if (!jobs_.empty() || !retry_.empty()) return false;
  for (const Worker& w : workers_) {
    if (!w.inflight.empty()) return false;
  }
  return true;
}

// ---- results ----
bool PoolCore::collect(Worker& w) {
  bool any = false;
  for (;;) {
    std::optional<std::span<const std::byte>> rec;
    try {
      rec = w.results->try_peek();
    } catch (const Error&) {  // a corrupt record: the worker is not trustworthy
      w.proc.kill(SIGKILL);
      return any;
    }
    if (!rec) return any;
    any = true;
    Fragment frag;
    try {
      frag = parse_fragment(*rec);
    } catch (const Error&) {  // out of protocol: treat the worker as lost
      w.results->release();
      w.proc.kill(SIGKILL);
      return any;
    }
    const auto body = frag.body;
    if (frag.more || !w.acc.empty()) {
      w.acc.insert(w.acc.end(), body.begin(), body.end());
      w.results->release();
      if (frag.more) continue;
      std::vector<std::byte> msg = std::move(w.acc);
      w.acc.clear();
      handle_result(w, msg);
    } else {
      handle_result(w, body);
      w.results->release();
    }
  }
}

void PoolCore::handle_result(Worker& w, std::span<const std::byte> msg) {
  ResultMessage m;
  try {
    m = parse_result(msg);
  } catch (const Error&) {  // out of protocol: treat the worker as lost
    w.proc.kill(SIGKILL);
    return;
  }
  const ResultFrame& rf = m.frame;
  const auto payload = m.payload;
  if (rf.status == ResultFrame::kInitError) {
    w.init_failed = true;
    std::exception_ptr e;
    try {
      const ErrorText text = decode_error_text(payload);
      e = std::make_exception_ptr(Error(
          errc::child_failed, "the pool's initializer raised " + text.type +
                                  (text.message.empty() ? "" : ": " + text.message) +
                                  " (in worker " + std::to_string(w.pid) + ")"));
    } catch (...) {
      e = std::make_exception_ptr(Error(errc::child_failed, "the pool's initializer failed"));
    }
    std::lock_guard lk(mu_);
    broken_ = e;
    return;
  }
  if (w.inflight.empty() || w.inflight.front().id != rf.id ||
      w.inflight.front().count != rf.count) {
    w.proc.kill(SIGKILL);  // out of protocol: treat the worker as lost
    return;
  }
  Chunk c = std::move(w.inflight.front());
  w.inflight.pop_front();
  {
    std::lock_guard lk(stats_mu_);
    WorkerStats& s = stats_[w.slot];
    ++s.tasks;
    s.items += rf.count;
    // Each report is at most kMaxBusyNs (parse_result), but the sum saturates: a worker
    // out of protocol may send many.
    const std::chrono::nanoseconds busy_ns(static_cast<std::int64_t>(rf.busy_ns));
    s.busy = s.busy > std::chrono::nanoseconds::max() - busy_ns ? std::chrono::nanoseconds::max()
                                                                 : s.busy + busy_ns;
  }
  const double busy = static_cast<double>(rf.busy_ns);
  w.avg_ns = w.avg_ns < 0 ? busy : 0.8 * w.avg_ns + 0.2 * busy;
  // Enough queued work per worker to cover ~100 us of driver latency, one when tasks are
  // long (a chunk queued behind a long one cannot move to an idle worker).
  if (w.avg_ns >= 10e6) {
    w.window = 1;
  } else {
    w.window = static_cast<std::size_t>(std::clamp(100e3 / std::max(w.avg_ns, 1.0), 2.0, 128.0));
  }
  if (rf.status == ResultFrame::kOk) {
    try {
      c.job->on_result(c, payload);
    } catch (...) {
      fail(c, std::current_exception());
      return;
    }
    resolve(c);
  } else {
    std::exception_ptr e;
    try {
      e = decode_remote_error(payload, w.pid);
    } catch (...) {
      e = std::current_exception();
    }
    fail(c, e);
  }
}

void PoolCore::resolve(Chunk& c) {
  JobBase& j = *c.job;
  if (--j.outstanding == 0 && j.drained()) {
    if (!j.finished) {
      j.finished = true;
      j.finish();
    }
  }
}

void PoolCore::fail(Chunk& c, std::exception_ptr e) {
  c.job->on_error(c, std::move(e));
  resolve(c);
}

// ---- deaths ----
bool PoolCore::check_deaths(int timeout_ms) {
  pollfd fds[64];
  bool any = false;
  for (std::size_t base = 0; base < workers_.size(); base += 64) {
    nfds_t k = 0;
    std::size_t idx[64];
    for (std::size_t i = base; i < std::min(base + 64, workers_.size()); ++i) {
      Worker& w = workers_[i];
      if (!w.alive) continue;
      if (w.proc.pidfd() < 0) {  // no pidfd (old kernel): ask waitpid
        if (w.proc.try_wait()) {
          on_exit(w);
          any = true;
        }
        continue;
      }
      fds[k] = {w.proc.pidfd(), POLLIN, 0};
      idx[k++] = i;
    }
    if (k == 0) continue;
    if (::poll(fds, k, timeout_ms) <= 0) continue;
    for (nfds_t i = 0; i < k; ++i) {
      if (fds[i].revents != 0) {
        on_exit(workers_[idx[i]]);
        any = true;
      }
    }
  }
  return any;
}

void PoolCore::on_exit(Worker& w) {
  const ExitStatus st = w.proc.wait();
  w.alive = false;
  collect(w);  // what it published before it died still counts
  const std::uint64_t started = slots_[w.slot].started.load(std::memory_order_acquire);
  std::deque<Chunk> lost = std::move(w.inflight);
  w.inflight.clear();
  std::deque<Chunk> again;
  for (Chunk& c : lost) {
    if (c.id != 0 && c.id <= started) {  // it began this one: its result is lost
      ++c.attempts;
      if (c.attempts <= options.task_retries) {
        again.push_back(std::move(c));
      } else {
        fail(c, std::make_exception_ptr(WorkerLost(w.pid, st, c.attempts)));
      }
    } else {
      again.push_back(std::move(c));  // never began: run it elsewhere, no attempt used
    }
  }
  for (auto it = again.rbegin(); it != again.rend(); ++it) retry_.push_front(std::move(*it));
  w.tasks.reset();
  w.results.reset();
  w.outbox.clear();
  w.acc.clear();
  if (w.init_failed) return;  // broken_ is set: the loop stops everything
  // Workers that keep dying before their initializer returns (it crashes, or calls exit)
  // would be replaced forever: after three in a row the pool is broken.
  if (slots_[w.slot].ready.load(std::memory_order_acquire) == 0) {
    if (++init_deaths_ >= 3) {
      std::lock_guard lk(mu_);
      broken_ = std::make_exception_ptr(
          Error(errc::child_failed, "pool workers die before their initializer returns (the "
                                    "last one " + st.describe() + ")"));
      return;
    }
  } else {
    init_deaths_ = 0;
  }
  {
    std::lock_guard lk(stats_mu_);
    stats_[w.slot].pid = -1;
  }
  w.respawn_at = std::chrono::steady_clock::now();  // respawn_pending() replaces it
}

// Replaces dead workers while there is a reason to (the pool runs, or closed work remains).
// A fork that fails (EAGAIN: a process limit) is tried again 100 ms later; the pool goes on
// with the workers it has.
bool PoolCore::respawn_pending() {
  bool any = false;
  State st;
  {
    std::lock_guard lk(mu_);
    st = state_;
  }
  const bool wanted = st == State::running || (st == State::closed && !idle());
  const auto now = std::chrono::steady_clock::now();
  for (Worker& w : workers_) {
    if (w.alive || !w.respawn_at || now < *w.respawn_at) continue;
    if (!wanted) {
      w.respawn_at.reset();
      continue;
    }
    try {
      spawn(w, true);
      w.respawn_at.reset();
      any = true;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ipckit::Pool: cannot replace worker %zu yet: %s\n", w.slot,
                   e.what());
      w.respawn_at = now + std::chrono::milliseconds(100);
    }
  }
  return any;
}

// ---- dispatch ----
bool PoolCore::next_chunk(Chunk& c) {
  while (!retry_.empty()) {
    Chunk r = std::move(retry_.front());
    retry_.pop_front();
    if (r.job->abandoned()) {  // its job failed or was dropped: nothing to run it for
      resolve(r);
      continue;
    }
    c = std::move(r);
    return true;
  }
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    JobBase& j = **it;
    Chunk fresh;
    if (j.next_chunk(fresh)) {
      fresh.job = *it;
      ++j.outstanding;
      c = std::move(fresh);
      return true;
    }
    if (j.drained()) {
      if (j.outstanding == 0 && !j.finished) {
        j.finished = true;
        j.finish();
      }
      it = jobs_.erase(it);
    } else {
      ++it;  // waiting for its consumer (imap): try the next job
    }
  }
  return false;
}

PoolCore::Worker* PoolCore::pick_worker() {
  Worker* best = nullptr;
  for (Worker& w : workers_) {
    if (!w.alive || !w.outbox.empty() || w.budget == 0 || w.inflight.size() >= w.window) continue;
    if (best == nullptr || w.inflight.size() < best->inflight.size()) best = &w;
  }
  return best;
}

bool PoolCore::dispatch() {
  bool any = false;
  for (;;) {
    Worker* w = pick_worker();
    if (w == nullptr) break;
    Chunk c;
    if (!next_chunk(c)) break;
    send_chunk(*w, std::move(c));
    any = true;
  }
  for (Worker& w : workers_) {
    if (!w.alive) continue;
    if (!w.outbox.empty()) any |= flush_outbox(w);
    if (w.staged) {
      w.tasks->publish();
      w.staged = false;
    }
  }
  return any;
}

void PoolCore::send_chunk(Worker& w, Chunk c) {
  c.id = next_id_++;
  const TaskFrame tf{c.id, reinterpret_cast<std::uint64_t>(c.job->invoker),
                     static_cast<std::uint32_t>(c.job->fn.size()), c.count};
  const std::size_t fn_padded = pad8(c.job->fn.size());
  const std::size_t total = 8 + sizeof tf + fn_padded + c.args.size();
  --w.budget;
  const auto write = [&](std::byte* p) {
    const std::uint64_t word = 0;
    std::memcpy(p, &word, 8);
    std::memcpy(p + 8, &tf, sizeof tf);
    if (!c.job->fn.empty()) std::memcpy(p + 8 + sizeof tf, c.job->fn.data(), c.job->fn.size());
    if (!c.args.empty())
      std::memcpy(p + 8 + sizeof tf + fn_padded, c.args.data(), c.args.size());
  };
  if (total - 8 <= kFragmentBytes) {
    if (auto span = w.tasks->try_reserve(total)) {
      write(span->data());
      w.tasks->stage(total);
      w.staged = true;
      w.inflight.push_back(std::move(c));
      return;
    }
  }
  // Too large for one record, or no room now: build the message and send it in pieces.
  w.outbox.assign(total - 8, std::byte{0});
  std::vector<std::byte> tmp(total);
  write(tmp.data());
  std::memcpy(w.outbox.data(), tmp.data() + 8, total - 8);
  w.out_pos = 0;
  w.inflight.push_back(std::move(c));
  flush_outbox(w);
}

bool PoolCore::flush_outbox(Worker& w) {
  bool any = false;
  while (w.out_pos < w.outbox.size()) {
    const std::size_t n = std::min(w.outbox.size() - w.out_pos, kFragmentBytes);
    auto span = w.tasks->try_reserve(8 + n);
    if (!span) break;
    const std::uint64_t word = w.out_pos + n < w.outbox.size() ? kMore : 0;
    std::memcpy(span->data(), &word, 8);
    std::memcpy(span->data() + 8, w.outbox.data() + w.out_pos, n);
    w.tasks->stage(8 + n);
    w.staged = true;
    w.out_pos += n;
    any = true;
  }
  if (w.out_pos == w.outbox.size()) {
    w.outbox.clear();
    w.out_pos = 0;
  }
  return any;
}

// ---- sleeping ----
bool PoolCore::anything_ready() {
  if (poke_.load(std::memory_order_acquire)) return true;
  for (Worker& w : workers_) {
    if (!w.alive) continue;
    try {
      if (w.results->try_peek()) return true;
    } catch (const Error&) {
      return true;  // collect() deals with it
    }
  }
  return false;
}

void PoolCore::sleep() {
  // A short spin first (about 5 us): a busy pool's next result is often that close. Longer
  // spins take the CPU from the workers when they have every core.
  for (int i = 0; i < 100; ++i) {
    if (anything_ready()) return;
    cpu_relax();
  }
  sh_->driver_sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with notify_driver()
  if (anything_ready()) {
    sh_->driver_sleeping.store(0, std::memory_order_relaxed);
    return;
  }
  std::vector<pollfd> fds;
  fds.reserve(workers_.size() + 1);
  fds.push_back({link->doorbell.get(), POLLIN, 0});
  bool polled_all = true;
  for (Worker& w : workers_) {
    if (!w.alive) continue;
    if (w.proc.pidfd() >= 0) {
      fds.push_back({w.proc.pidfd(), POLLIN, 0});
    } else {
      polled_all = false;
    }
  }
  // Without pidfds (old kernels), wake every 20 ms to look for deaths; with a replacement
  // worker to fork again, every 100 ms.
  int timeout = polled_all ? -1 : 20;
  for (const Worker& w : workers_) {
    if (w.respawn_at) timeout = timeout < 0 ? 100 : std::min(timeout, 100);
  }
  (void)::poll(fds.data(), fds.size(), timeout);
  sh_->driver_sleeping.store(0, std::memory_order_relaxed);
  std::uint64_t v;
  while (::read(link->doorbell.get(), &v, sizeof v) > 0) {
  }
  next_death_check_ = {};  // look at the pidfds on the next pass
}

// ---- stopping ----
void PoolCore::stop_all(const std::exception_ptr& e) noexcept {
  stop_requested_ = true;
  {
    // From here on submit() refuses: nothing can arrive after the sweep below.
    std::lock_guard lk(mu_);
    if (state_ != State::done) state_ = State::stopping;
  }
  for (Worker& w : workers_) {
    if (w.alive) {
      try {
        w.proc.kill(SIGKILL);
      } catch (const Error&) {  // already gone
      }
    }
  }
  std::unordered_set<JobBase*> seen;
  std::vector<std::shared_ptr<JobBase>> all;
  const auto add = [&](const std::shared_ptr<JobBase>& j) {
    if (j && seen.insert(j.get()).second) all.push_back(j);
  };
  {
    std::lock_guard lk(mu_);
    for (auto& j : submitted_) add(j);
    submitted_.clear();
  }
  for (auto& j : jobs_) add(j);
  for (auto& c : retry_) add(c.job);
  for (Worker& w : workers_) {
    for (auto& c : w.inflight) add(c.job);
  }
  for (Worker& w : workers_) {
    if (w.alive) {
      try {
        (void)w.proc.wait();
      } catch (const Error&) {  // reaped elsewhere (SIGCHLD ignored, a waitpid(-1))
      }
      w.alive = false;
    }
    w.respawn_at.reset();
    w.inflight.clear();
    w.tasks.reset();
    w.results.reset();
  }
  jobs_.clear();
  retry_.clear();
  for (auto& j : all) {
    if (!j->finished) {
      j->finished = true;
      j->abort(e);
    }
  }
  std::lock_guard lk(stats_mu_);
  for (auto& s : stats_) s.pid = -1;
}

void PoolCore::shutdown_workers() {
  for (Worker& w : workers_) {
    if (w.alive) w.tasks->close();
  }
  for (Worker& w : workers_) {
    while (w.alive) {
      if (w.proc.wait_for(std::chrono::milliseconds(10))) {
        w.alive = false;
        break;
      }
      std::lock_guard lk(mu_);
      if (state_ == State::stopping) w.proc.kill(SIGKILL);
    }
    w.tasks.reset();
    w.results.reset();
  }
  std::lock_guard lk(stats_mu_);
  for (auto& s : stats_) s.pid = -1;
}

// ---- the free functions Pool calls ----
std::shared_ptr<PoolCore> start_pool(PoolOptions options) {
  auto core = std::make_shared<PoolCore>(std::move(options));
  core->start();
  return core;
}
std::size_t pool_size(const PoolCore& core) noexcept { return core.n; }
const std::shared_ptr<PoolLink>& pool_link(const PoolCore& core) noexcept { return core.link; }
void pool_submit(PoolCore& core, std::shared_ptr<JobBase> job, const char* what) {
  core.submit(std::move(job), what);
}
void pool_close(PoolCore& core) { core.close(); }
bool pool_join(PoolCore& core, const Deadline& deadline) { return core.join(deadline); }
void pool_terminate(PoolCore& core) noexcept { core.terminate(); }
std::vector<WorkerStats> pool_stats(const PoolCore& core) { return core.stats(); }

}  // namespace detail
}  // namespace ipckit
