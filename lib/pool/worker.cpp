// The worker process: runs the initializer, then takes task messages from its task ring, runs
// each chunk through the trampoline the driver named, and sends the result message back on
// its result ring, until the ring is closed (the pool is done) or the parent dies.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "../channel/fragment.hpp"
#include "internal.hpp"
#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/codec.hpp"
#include "ipckit/core/code_address.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "wire.hpp"

namespace ipckit::detail {

namespace {

void pin_to(int cpu) noexcept {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)::sched_setaffinity(0, sizeof set, &set);
}

// Resident bytes now (the second field of /proc/self/statm, in pages), from a descriptor
// kept open; 0 when it cannot be read.
std::size_t resident_bytes(int statm) noexcept {
  char buf[128];
  const ssize_t n = ::pread(statm, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
  return static_cast<std::size_t>(resident) * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

ResultFrame run_task(const TaskMessage& task, std::vector<std::byte>& out) {
  const TaskFrame& tf = task.frame;
  const auto t0 = std::chrono::steady_clock::now();
  ResultFrame rf{tf.id, ResultFrame::kOk, tf.count, 0};
  out.clear();
  try {
    // invoke_chunk<...> in this same program (throws not_found for another build).
    function_at<std::remove_pointer_t<Invoker>>(tf.invoker)(task.fn, task.args, tf.count, out);
  } catch (...) {
    rf.status = ResultFrame::kError;
    encode_current_exception(out);
  }
  rf.busy_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  return rf;
}

int worker_main(const WorkerEnv& env) {
  ::signal(SIGINT, SIG_IGN);
  freeze_code_addresses();  // see PoolCore's constructor
  pin_to(env.cpu);
  const PoolLayout& lay = env.layout;
  auto* sh = reinterpret_cast<PoolShared*>(env.base);
  auto* me = reinterpret_cast<WorkerShared*>(env.base + sizeof(PoolShared)) + env.slot;
  std::optional<ByteRing> task_ring;
  std::optional<ByteRing> result_ring;
  try {
    task_ring.emplace(ByteRing::attach({env.base + lay.tasks_at(env.slot), lay.ring_bytes}));
    result_ring.emplace(ByteRing::attach({env.base + lay.results_at(env.slot), lay.ring_bytes}));
  } catch (const Error&) {
    return kExitProtocol;
  }
  ByteRing& tasks = *task_ring;
  ByteRing& results = *result_ring;
  std::vector<std::byte> out;  // kept across tasks: its memory is warm for the next result
  FragmentReader in(kMaxMessage);
  FragmentWriter writer;
  const auto send = [&](const ResultFrame& rf) {
    writer.start({std::as_bytes(std::span(&rf, 1)), std::span<const std::byte>(out)});
    writer.write_all(results, kRecordBytes, [&] { notify_driver(sh, env.doorbell); });
  };
  try {
    tasks.attach_consumer();
    results.attach_producer();
    if (env.initializer != nullptr && *env.initializer) {
      try {
        (*env.initializer)();
      } catch (...) {
        encode_current_exception(out);
        send(ResultFrame{0, ResultFrame::kInitError, 0, 0});
        return kExitInitFailed;
      }
    }
    me->ready.store(1, std::memory_order_release);
    const std::size_t max_tasks = env.max_tasks;
    UniqueFd statm;
    if (env.max_rss != 0) statm.reset(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC));
    std::size_t done = 0;
    for (;;) {
      // Throws closed when the pool is done, peer_dead when the parent died.
      const std::span<const std::byte> rec = tasks.peek();
      if (!in.in_progress() && rec.size() >= kFragmentHeader + sizeof(TaskFrame)) {
        // A first fragment: the chunk counts as begun, before anything can fail (dying
        // while it arrives, or failing to make room for it, is its fault as much as dying
        // while it runs: it uses an attempt and ends in WorkerLost, never loops).
        TaskFrame head{};
        std::memcpy(&head, rec.data() + kFragmentHeader, sizeof head);
        me->started.store(head.id, std::memory_order_release);
      }
      std::optional<FragmentReader::Message> msg;
      try {
        msg = in.feed(rec, "Pool worker: a task");
      } catch (const Error&) {
        return kExitProtocol;
      }
      if (!msg) {
        tasks.release();
        // The driver waits for this room with nothing else to wake it: ring always (one
        // system call per record of a large message).
        write_doorbell(env.doorbell);
        continue;
      }
      if (!msg->in_record) tasks.release();  // the message is in the reader's buffer
      TaskMessage task;
      try {
        task = parse_task(msg->bytes);
      } catch (const Error&) {
        return kExitProtocol;
      }
      me->started.store(task.frame.id, std::memory_order_release);
      const ResultFrame rf = run_task(task, out);
      if (msg->in_record) tasks.release();
      in.trim();  // a huge task's buffer does not stay with the worker
      // Published at once, never held back for a batch: a result that waited behind the next
      // task would be lost with the worker, and the driver would count its task as lost.
      send(rf);
      if (out.capacity() > kLargeBlock) std::vector<std::byte>().swap(out);  // likewise
      if (max_tasks != 0 && ++done >= max_tasks) return 0;
      // Over its memory limit: exit after the result is out; the driver replaces it.
      if (statm.valid() && resident_bytes(statm.get()) > env.max_rss) return 0;
    }
  } catch (const Error&) {
    // closed (the pool shut down) or peer_dead (the parent is gone): either way, done.
    return 0;
  }
}

}  // namespace ipckit::detail
