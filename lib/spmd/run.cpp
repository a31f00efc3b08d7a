// spmd::run: forks the ranks over one anonymous mapping laid out by shm_comm.cpp, waits for
// them (reaping, deadline, call_timeout after a failure) and tells how each ended.
#include "ipckit/spmd/run.hpp"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "ipckit/core/mapping.hpp"
#include "ipckit/pool/exceptions.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "shm_internal.hpp"
#include "shm_layout.hpp"

namespace ipckit {

using spmd::detail::Header;
using spmd::detail::process_stopped;
using spmd::detail::rank_list;
using spmd::detail::Slot;

namespace spmd {

namespace {

bool failed_by_itself(const RankOutcome& r) {
  return !r.status.success() && !r.peer_dead && !r.call_timed_out && !r.unfinished;
}

template <class Pred>
int first_rank(const std::vector<RankOutcome>& ranks, Pred&& pred) {
  for (const auto& r : ranks) {
    if (pred(r)) return r.rank;
  }
  return -1;
}

// RunError::failed_rank().
int cause_of(const std::vector<RankOutcome>& ranks) {
  for (int c : {first_rank(ranks, failed_by_itself),
                first_rank(ranks, [](const RankOutcome& r) { return r.stopped; }),
                first_rank(ranks, [](const RankOutcome& r) { return r.call_timed_out; }),
                first_rank(ranks, [](const RankOutcome& r) { return r.unfinished; })}) {
    if (c >= 0) return c;
  }
  return -1;
}

// "spmd::run: rank 2 failed (why); ranks 0, 1 ended too", led by the deadline when it passed
// ("deadline of 2000 ms passed; rank 1 (stopped) still running"), or followed by the ranks
// killed call_timeout after a failure.
std::string describe(const std::vector<RankOutcome>& ranks, bool deadline_passed,
                     const RunOptions& options) {
  std::vector<int> unfinished;
  std::vector<bool> stopped;
  for (const auto& r : ranks) {
    if (!r.unfinished) continue;
    unfinished.push_back(r.rank);
    stopped.push_back(r.stopped);
  }
  std::vector<std::string> parts;
  if (deadline_passed) {
    parts.push_back("deadline of " + std::to_string(options.timeout.count()) + " ms passed; " +
                    rank_list(unfinished, stopped) + " still running");
  }
  int failed = first_rank(ranks, failed_by_itself);
  if (failed < 0) failed = first_rank(ranks, [](const RankOutcome& r) { return r.call_timed_out; });
  if (failed < 0 && !deadline_passed) {
    failed = first_rank(ranks,
                        [](const RankOutcome& r) { return !r.status.success() && !r.unfinished; });
  }
  if (failed >= 0) {
    const RankOutcome& f = ranks[static_cast<std::size_t>(failed)];
    parts.push_back("rank " + std::to_string(failed) + " failed (" +
                    (f.error.empty() ? f.status.describe() : f.error) + ")");
  }
  std::vector<int> ended;
  for (const auto& r : ranks) {
    if (r.rank != failed && !r.status.success() && !r.unfinished) ended.push_back(r.rank);
  }
  if (!ended.empty()) {
    parts.push_back(rank_list(ended, std::vector<bool>(ended.size())) + " ended too");
  }
  if (!deadline_passed && !unfinished.empty()) {
    parts.push_back(rank_list(unfinished, stopped) + " still running " +
                    std::to_string(options.call_timeout.count()) +
                    " ms (call_timeout) after that; killed");
  }
  std::string msg = "spmd::run: ";
  if (parts.empty()) return msg + "ranks stopped";
  for (std::size_t i = 0; i < parts.size(); ++i) msg += (i == 0 ? "" : "; ") + parts[i];
  return msg;
}

// Reaps the ranks that have exited. True once all have; otherwise, when none exited just
// now, sleeps until one does or `until` passes (on the pidfds; 10 ms slices without them).
bool reap_some(std::vector<Process>& ranks, std::vector<std::optional<ExitStatus>>& status,
               const Deadline& until) {
  std::vector<pollfd> fds;
  bool reaped = false;
  bool running = false;
  bool all_pidfds = true;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    if (status[r]) continue;
    status[r] = ranks[r].try_wait();
    if (status[r]) {
      reaped = true;
      continue;
    }
    running = true;
    if (ranks[r].pidfd() >= 0) {
      fds.push_back({ranks[r].pidfd(), POLLIN, 0});
    } else {
      all_pidfds = false;
    }
  }
  if (!running) return true;
  if (reaped || until.expired()) return false;
  int ms = all_pidfds ? -1 : 10;
  if (!until.is_never()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until.remaining()).count();
    const int cap = static_cast<int>(std::min<std::chrono::milliseconds::rep>(left, 1000));
    ms = ms < 0 ? cap : std::min(ms, cap);
  }
  (void)::poll(fds.data(), fds.size(), ms);
  return false;
}

// The rank's exception rebuilt, when it wrote a registered one (its size and name length
// checked: the rank may have died mid-write or scribbled); nullptr otherwise.
std::exception_ptr registered_exception(const Slot& s, const std::string& message) {
  const std::uint32_t size = s.exception_size.load(std::memory_order_acquire);
  if (size < 4 || size > sizeof s.exception) return nullptr;
  std::uint32_t n = 0;
  std::memcpy(&n, s.exception, 4);
  if (n == 0 || n > size - 4) return nullptr;
  const std::string name(s.exception + 4, n);
  const auto* blob = reinterpret_cast<const std::byte*>(s.exception + 4 + n);
  return ipckit::detail::decode_registered(name, message, std::span(blob, size - 4 - n));
}

}  // namespace

RunError::RunError(const std::string& what, std::vector<RankOutcome> ranks, errc code)
    : Error(code, what), ranks_(std::move(ranks)), failed_(cause_of(ranks_)) {}

void run(int n, const std::function<void(Comm&)>& fn, const RunOptions& options) {
  const Deadline deadline =
      options.timeout.count() > 0 ? Deadline::after(options.timeout) : Deadline::never();
  if (n < 1 || n > 1024) {
    throw Error(errc::invalid_argument,
                "spmd::run: " + std::to_string(n) + " ranks (1 to 1024 allowed)");
  }
  const std::size_t rb = options.ring_bytes;
  if (rb < (std::size_t{1} << 16) || rb > (std::size_t{1} << 30) || (rb & (rb - 1)) != 0) {
    throw Error(errc::invalid_argument, "spmd::run: ring_bytes " + std::to_string(rb) +
                                            " is not a power of two in [64 KiB, 1 GiB]");
  }
  if (options.timeout.count() < 0 || options.call_timeout.count() < 0) {
    throw Error(errc::invalid_argument, "spmd::run: a negative timeout or call_timeout");
  }
  const auto layout = detail::Layout::of(n, rb);
  // Reserved, not committed: pages appear as they are touched.
  const ipckit::detail::Mapping map =
      ipckit::detail::Mapping::anonymous(layout.total, "spmd::run", /*reserve=*/false);
  Header* h = &detail::lay_out(map.data(), n, rb, layout);
  h->spin_ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, options.spin.count()));
  h->call_timeout_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options.call_timeout).count());
  {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    const int cpus =
        ::sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
    h->oversubscribed = n > cpus ? 1 : 0;
  }
  const auto slot_of = [&](int r) -> Slot& {
    return reinterpret_cast<Slot*>(map.data() + layout.slots_at)[r];
  };

  // Declared after the mapping: on any exit, the ranks are killed and reaped before it goes.
  std::vector<Process> ranks;
  ranks.reserve(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    const auto body = [&, r]() -> int {
      if (options.pin && h->oversubscribed == 0) {
        cpu_set_t allowed;
        CPU_ZERO(&allowed);
        if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
          int seen = 0;
          for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &allowed)) continue;
            if (seen++ == r) {
              cpu_set_t one;
              CPU_ZERO(&one);
              CPU_SET(cpu, &one);
              (void)::sched_setaffinity(0, sizeof one, &one);
              break;
            }
          }
        }
      }
      Slot& me = slot_of(r);
      me.id.store(current_identity(), std::memory_order_release);
      // In a catch block: the error's text, and its registered form if it has one.
      const auto note = [&](const std::string& what) {
        std::snprintf(me.error, sizeof me.error, "%s", what.c_str());
        std::string name;
        std::vector<std::byte> blob;
        if (!ipckit::detail::encode_current_registered(name, blob)) return;
        const auto n = static_cast<std::uint32_t>(name.size());
        if (4 + name.size() + blob.size() > sizeof me.exception) return;
        std::memcpy(me.exception, &n, 4);
        std::memcpy(me.exception + 4, name.data(), name.size());
        if (!blob.empty()) std::memcpy(me.exception + 4 + name.size(), blob.data(), blob.size());
        me.exception_size.store(static_cast<std::uint32_t>(4 + name.size() + blob.size()),
                                std::memory_order_release);
      };
      try {
        ShmComm comm(map.data(), r);
        fn(comm);
        me.finished.store(1, std::memory_order_release);
        return 0;
      } catch (const Error& e) {
        note(e.what());
        if (e.is(errc::peer_dead)) me.peer_dead.store(1, std::memory_order_release);
        if (e.is(errc::timeout)) me.timed_out.store(1, std::memory_order_release);
      } catch (const std::exception& e) {
        note(e.what());
      } catch (...) {
        note("an exception that is not a std::exception");
      }
      me.finished.store(1, std::memory_order_release);
      return 3;
    };
    try {
      ranks.push_back(Process::spawn(body));
    } catch (const std::system_error& e) {
      // `ranks` goes with the exception: the ranks already started are killed and reaped.
      const bool limit = e.code() == std::errc::resource_unavailable_try_again;
      const std::string before =
          r == 0   ? ""
          : r == 1 ? " (rank 0, already running, was killed)"
                   : " (ranks 0-" + std::to_string(r - 1) + ", already running, were killed)";
      throw Error(std::error_code(e.code().value(), std::system_category()),
                  "spmd::run: could not start rank " + std::to_string(r) + " of ranks 0-" +
                      std::to_string(n - 1) + before + ": " + attempted(e) +
                      (limit ? " (a process limit such as RLIMIT_NPROC reached?)" : ""));
    }
    // The rank stores its identity itself too; whichever comes first (0: not yet).
    ProcessIdentity none = 0;
    (void)slot_of(r).id.compare_exchange_strong(none, process_identity(ranks.back().pid()),
                                                std::memory_order_acq_rel);
  }

  // Wait for every rank; with call_timeout set, once one has failed the others get
  // call_timeout to end (healthy ones do at their next blocking call).
  const auto un = static_cast<std::size_t>(n);
  std::vector<std::optional<ExitStatus>> status(un);
  Deadline grace = Deadline::never();
  bool deadline_passed = false;
  for (;;) {
    if (reap_some(ranks, status, grace.when() < deadline.when() ? grace : deadline)) break;
    if (grace.is_never() && options.call_timeout.count() > 0 &&
        std::any_of(status.begin(), status.end(),
                    [](const auto& st) { return st && !st->success(); })) {
      grace = Deadline::after(options.call_timeout);
    }
    if (deadline.expired()) {
      deadline_passed = true;
      break;
    }
    if (grace.expired()) break;
  }
  std::vector<bool> unfinished(un);
  std::vector<bool> stopped(un);
  for (std::size_t r = 0; r < un; ++r) {
    if (status[r]) continue;
    unfinished[r] = true;
    stopped[r] = process_stopped(ranks[r].pid());
  }
  for (std::size_t r = 0; r < un; ++r) {
    if (unfinished[r]) ranks[r].kill(SIGKILL);  // also ends a stopped process
  }
  for (std::size_t r = 0; r < un; ++r) {
    if (unfinished[r]) status[r] = ranks[r].wait();
  }

  std::vector<RankOutcome> out;
  bool ok = true;
  bool timed = deadline_passed;
  for (int r = 0; r < n; ++r) {
    const auto ur = static_cast<std::size_t>(r);
    RankOutcome o;
    o.rank = r;
    o.status = *status[ur];
    o.unfinished = unfinished[ur];
    o.stopped = stopped[ur];
    Slot& s = slot_of(r);
    if (!o.status.success()) {
      ok = false;
      o.error = s.error[0] != '\0' ? std::string(s.error, strnlen(s.error, sizeof s.error))
                                   : std::string();
      o.peer_dead = s.peer_dead.load(std::memory_order_acquire) != 0;
      o.exception = registered_exception(s, o.error);
      o.call_timed_out = s.timed_out.load(std::memory_order_acquire) != 0;
    }
    timed = timed || o.unfinished || o.call_timed_out;
    out.push_back(std::move(o));
  }
  if (!ok) {
    // A timeout is the cause unless a rank failed by itself (threw, crashed, was killed).
    const int cause = cause_of(out);
    if (cause >= 0 && failed_by_itself(out[static_cast<std::size_t>(cause)])) timed = false;
    std::string msg = describe(out, deadline_passed, options);
    throw RunError(msg, std::move(out), timed ? errc::timeout : errc::child_failed);
  }
}

}  // namespace spmd
}  // namespace ipckit
