// PoolCore's traffic: chunks out to the workers (dispatch, one fragmented task message each)
// and results back (collect, handle_result), with what a result or a failure resolves.
#include <signal.h>

#include <algorithm>
#include <string>

#include "driver.hpp"

namespace ipckit::detail {

// ---- results ----
bool PoolCore::collect(Worker& w) {
  bool any = false;
  for (;;) {
    std::optional<std::span<const std::byte>> rec;
    std::optional<FragmentReader::Message> msg;
    try {
      rec = w.results->try_peek();
      if (!rec) return any;
      any = true;
      msg = w.in.feed(*rec, "Pool: a worker's result");
    } catch (const Error&) {  // a corrupt record or fragment: the worker is not trustworthy
      w.proc.kill(SIGKILL);
      return any;
    }
    if (!msg) {
      w.results->release();
    } else if (msg->in_record) {
      handle_result(w, msg->bytes);
      w.results->release();
    } else {
      w.results->release();
      handle_result(w, msg->bytes);
      w.in.trim();  // one huge result does not stay resident for the worker's whole life
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
      e = std::make_exception_ptr(
          Error(errc::child_failed, "the pool's initializer raised " + text.type +
                                        (text.message.empty() ? "" : ": " + text.message) +
                                        " (in worker " + std::to_string(w.pid) + ")"));
    } catch (...) {
      e = std::make_exception_ptr(Error(errc::child_failed, "the pool's initializer failed"));
    }
    std::lock_guard lk(mu_);
    broken_ = e;
    return;
  }
  // A result for the chunk whose task message is still being written is out of protocol
  // too (the worker cannot have read it whole): taking it would free the chunk under the
  // writer.
  if (w.inflight.empty() || w.inflight.front().id != rf.id ||
      w.inflight.front().count != rf.count || (w.out.active() && w.inflight.size() == 1)) {
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
  w.window = queue_window(w.avg_ns, static_cast<double>(rf.busy_ns));
  if (rf.status == ResultFrame::kOk) {
    try {
      c.job->on_result(c, payload);
    } catch (...) {
      fail_chunk(c, std::current_exception());
      return;
    }
    resolve_chunk(c);
  } else {
    std::exception_ptr e;
    try {
      e = decode_remote_error(payload, w.pid);
    } catch (...) {
      e = std::current_exception();
    }
    fail_chunk(c, e);
  }
}

// ---- dispatch ----
bool PoolCore::next_chunk(Chunk& c) {
  while (!retry_.empty()) {
    Chunk r = std::move(retry_.front());
    retry_.pop_front();
    if (r.job->abandoned()) {  // its job failed or was dropped: nothing to run it for
      resolve_chunk(r);
      continue;
    }
    c = std::move(r);
    return true;
  }
  return take_chunk(jobs_, c);
}

PoolCore::Worker* PoolCore::pick_worker() {
  Worker* best = nullptr;
  for (Worker& w : workers_) {
    if (!w.alive || w.out.active() || w.budget == 0 || w.inflight.size() >= w.window) continue;
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
    if (w.out.active() && w.out.write(*w.tasks, kRecordBytes, FragmentWriter::Mode::stage)) {
      w.staged = true;
      any = true;
    }
    if (w.staged) {
      w.tasks->publish();
      w.staged = false;
    }
  }
  return any;
}

// Starts the chunk's task message (TaskFrame, the callable padded to 8 bytes, the inputs) and
// stages as much of it as the ring has room for; dispatch() moves the rest as room appears.
void PoolCore::send_chunk(Worker& w, Chunk c) {
  c.id = next_id_++;
  const std::vector<std::byte>& fn = c.job->fn;
  w.frame = TaskFrame{c.id, c.job->invoker, static_cast<std::uint32_t>(fn.size()), c.count};
  --w.budget;
  static constexpr std::byte kZeros[8]{};
  w.out.start({std::as_bytes(std::span(&w.frame, 1)), std::span(fn),
               std::span(kZeros, pad8(fn.size()) - fn.size()), c.args});
  w.inflight.push_back(std::move(c));  // c.args points into the job or c.owned: stays put
  if (w.out.write(*w.tasks, kRecordBytes, FragmentWriter::Mode::stage)) w.staged = true;
}
}  // namespace ipckit::detail
