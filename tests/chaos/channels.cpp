// Channel scenarios: one producer process and one consumer process, one of them killed. The
// producer raises `attempted` before each message and `acked` after its send returned; the
// consumer checks every message it gets (sequence, size, checksum) in a Ledger. Afterwards:
// a killed producer's consumer must have received every acked message (else LOST) and then
// raised peer_dead (or bad_frame for a frame cut short on a pipe); a killed consumer's
// producer must have returned or raised peer_dead, and what it had acked beyond the
// consumer's count died with the consumer (reported lost).
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/channel/queue.hpp"
#include "ipckit/channel/socket_channel.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/shm/segment.hpp"
#include "scenarios.hpp"

namespace ipckit::chaos {
namespace {

enum Role : std::int32_t { kProducer = 0, kConsumer = 1 };

// Where a victim raises its own signal (SelfRaise::point).
enum Point : std::int32_t {
  kBeforeSend = 0,   // producer, before it begins message `at`
  kMidCopy = 1,      // producer, ByteRing: part of the payload written into the reservation
  kAfterCommit = 2,  // producer, after the send returned, before `acked` counts it
  kAfterAck = 3,     // producer, after `acked` counts it
  kMidRead = 4,      // consumer, ByteRing: peeked, checked, not released
  kAfterRecv = 5,    // consumer, after it recorded the message
};

struct Board {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  Party party[2];
  SelfRaise raise;
  Ledger ledger;
  // Set by the producer just before it closes: a producer killed after close() sent its
  // close frame but before it recorded its return has still closed the channel.
  std::atomic<std::uint32_t> closing{0};
};

WaitPolicy random_policy(Ctx& ctx) {
  switch (ctx.uniform(0, 2)) {
    case 0: return WaitPolicy::spin_only();
    case 1: return WaitPolicy::block();
    default: return WaitPolicy::hybrid();
  }
}

// A fixed-size message for the queues: 1 KiB, so that a kill may land in its copy.
struct QueueMsg {
  std::byte bytes[1024];
};
static_assert(std::is_trivially_copyable_v<QueueMsg>);

// ---- adapters: the same producer/consumer loops over each channel ---------------------------
// Each has attach_producer/attach_consumer, send(seq, board), recv(fn) (fn gets the message's
// bytes; false: the channel closed), close(), parent_done() (what the parent does after it
// forked both sides) and sizes (the SizeRule its messages follow).

template <class Queue>
struct QueueAdapter {
  Queue q;
  SizeRule sizes{sizeof(QueueMsg), true, false};
  std::uint64_t seed;
  QueueMsg buf{};

  void attach_producer() { q.attach_producer(); }
  void attach_consumer() { q.attach_consumer(); }
  void send(std::uint64_t seq, Board&) {
    fill_message(std::as_writable_bytes(std::span(&buf, 1)), seed, seq);
    q.push(buf);
  }
  template <class F>
  bool recv(F&& fn, Board&, std::uint64_t) {
    try {
      const QueueMsg m = q.pop();
      fn(std::as_bytes(std::span(&m, 1)));
      return true;
    } catch (const Error& e) {
      if (e.is(errc::closed)) return false;
      throw;
    }
  }
  void close() { q.close(); }
  void parent_done() {}
};

struct RingAdapter {
  std::optional<Segment> seg;  // named mode: the parent's segment (it unlinks the name)
  std::string seg_name;
  std::optional<ByteRing> ring;
  SizeRule sizes;
  std::uint64_t seed;
  std::uint64_t partial_at = 0;  // kMidCopy: bytes written before the victim dies

  // Named mode: a child opens the segment by name, as an unrelated process would.
  void reopen() {
    if (seg_name.empty()) return;
    seg.reset();  // the child's copy of the parent's handle: drop it without unlinking
    seg.emplace(Segment::open(seg_name));
    ring.emplace(ByteRing::open(*seg, "ring"));
  }
  void attach_producer() {
    reopen();
    ring->attach_producer();
  }
  void attach_consumer() {
    reopen();
    ring->attach_consumer();
  }
  void send(std::uint64_t seq, Board& b) {
    const std::size_t n = sizes.of(seed, seq);
    std::span<std::byte> buf = ring->reserve(n);
    if (b.raise.role.load() == kProducer && b.raise.at.load() == seq &&
        b.raise.point.load() == kMidCopy) {
      fill_message(buf, seed, seq, partial_at % (n + 1));
      b.raise.now();
    }
    fill_message(buf, seed, seq);
    ring->commit();
  }
  template <class F>
  bool recv(F&& fn, Board& b, std::uint64_t k) {
    try {
      const auto msg = ring->peek();
      fn(msg);
      b.raise.maybe(kConsumer, k, kMidRead);
      ring->release();
      return true;
    } catch (const Error& e) {
      if (e.is(errc::closed)) return false;
      throw;
    }
  }
  void close() { ring->close(); }
  void parent_done() {}
};

struct PipeAdapter {
  SocketChannel ch;
  SizeRule sizes;
  std::uint64_t seed;
  std::vector<std::byte> buf;

  void attach_producer() { ch.attach_sender(); }
  void attach_consumer() { ch.attach_receiver(); }
  void send(std::uint64_t seq, Board&) {
    buf.resize(sizes.of(seed, seq));
    fill_message(buf, seed, seq);
    ch.send(buf);
  }
  template <class F>
  bool recv(F&& fn, Board&, std::uint64_t) {
    try {
      ch.recv_until(buf, Deadline::never()) ? fn(std::span<const std::byte>(buf)) : void();
      return true;
    } catch (const Error& e) {
      if (e.is(errc::closed)) return false;
      throw;
    }
  }
  void close() { ch.close(); }
  void parent_done() { ch.disown(); }
};

// Channel<T>, Queue<T> and JoinableQueue<T> of word vectors of varying length (one producer,
// one consumer: the ledger needs one order). The joinable queue's consumer marks each item
// done, so its counters move through the redo record while processes are killed.
template <class Q>
struct WordsAdapter {
  Q q;
  SizeRule sizes;
  std::uint64_t seed;
  std::vector<std::uint64_t> buf;

  void attach_producer() {
    if constexpr (requires { q.attach_sender(); }) {
      q.attach_sender();
    } else {
      q.attach_producer();
    }
  }
  void attach_consumer() {
    if constexpr (requires { q.attach_receiver(); }) {
      q.attach_receiver();
    } else {
      q.attach_consumer();
    }
  }
  void send(std::uint64_t seq, Board&) {
    buf.resize(sizes.of(seed, seq) / 8);
    fill_message(std::as_writable_bytes(std::span(buf)), seed, seq);
    if constexpr (requires { q.send(buf); }) {
      q.send(buf);
    } else {
      q.put(buf);
    }
  }
  template <class F>
  bool recv(F&& fn, Board&, std::uint64_t) {
    try {
      if constexpr (requires { q.recv(); }) {
        buf = q.recv();
      } else {
        buf = q.get();
      }
      fn(std::as_bytes(std::span(buf)));
      if constexpr (requires { q.task_done(); }) q.task_done();
      return true;
    } catch (const Error& e) {
      if (e.is(errc::closed)) return false;
      throw;
    }
  }
  void close() { q.close(); }
  void parent_done() {
    if constexpr (requires { q.socket(); }) {
      if (q.socket()) q.socket()->disown();
    }
  }
};

// ---- the two-party iteration ----------------------------------------------------------------

template <class Adapter>
int producer_main(Adapter& ad, Board& b, std::uint64_t messages) {
  Party& me = b.party[kProducer];
  me.pid.store(::getpid());
  try {
    ad.attach_producer();
    b.ready.fetch_add(1, std::memory_order_acq_rel);
    wait_for_go(b.go);
    for (std::uint64_t k = 0; k < messages; ++k) {
      b.raise.maybe(kProducer, k, kBeforeSend);
      b.ledger.attempted.store(k + 1, std::memory_order_release);
      ad.send(k, b);
      b.raise.maybe(kProducer, k, kAfterCommit);
      b.ledger.acked.store(k + 1, std::memory_order_release);
      b.raise.maybe(kProducer, k, kAfterAck);
    }
    b.closing.store(1, std::memory_order_release);
    ad.close();
    me.finish(kReturned);
  } catch (const Error& e) {
    me.finish(outcome_of(e), e.what());
  }
  return 0;
}

template <class Adapter>
int consumer_main(Adapter& ad, Board& b, std::uint64_t seed) {
  Party& me = b.party[kConsumer];
  me.pid.store(::getpid());
  try {
    ad.attach_consumer();
    b.ready.fetch_add(1, std::memory_order_acq_rel);
    wait_for_go(b.go);
    for (std::uint64_t k = 0;; ++k) {
      const auto record = [&](std::span<const std::byte> m) {
        if (planted == "lose" && k == 3) return;  // --plant lose: dropped unrecorded
        b.ledger.check(m, seed, ad.sizes);
      };
      if (!ad.recv(record, b, k)) {
        me.finish(kClosed);
        return 0;
      }
      b.raise.maybe(kConsumer, k, kAfterRecv);
    }
  } catch (const Error& e) {
    if (planted == "hang" && e.is(errc::peer_dead)) ::pause();  // --plant hang
    me.finish(outcome_of(e), e.what());
  }
  return 0;
}

// Runs one iteration over `ad` (made by the caller before the fork). `self_points` are the
// points at which a victim may raise its own signal, per role.
template <class Adapter>
void two_party(Ctx& ctx, Adapter& ad, std::span<const std::int32_t> producer_points,
               std::span<const std::int32_t> consumer_points, bool pipe_like) {
  Row& row = *ctx.row;
  auto mem = Segment::anonymous(1 << 16);
  Board& b = mem.make<Board>();

  // Mostly an endless stream the kill interrupts; sometimes a short one that may end (and
  // close) first, so that the clean ending is checked under the same rules.
  const bool finite = ctx.chance(0.2);
  const std::uint64_t messages = finite ? ctx.uniform(0, 300) : UINT64_MAX;
  const Role victim = ctx.chance(0.5) ? kProducer : kConsumer;
  const int sig = ctx.random_signal();
  const bool self = ctx.chance(0.4);
  if (self) {
    const auto& points = victim == kProducer ? producer_points : consumer_points;
    b.raise.sig.store(sig);
    b.raise.point.store(points[ctx.uniform(0, points.size() - 1)]);
    b.raise.at.store(ctx.chance(0.2) ? ctx.uniform(0, 3) : ctx.uniform(0, 400));
    b.raise.role.store(victim);
  }
  if constexpr (requires { ad.partial_at; }) ad.partial_at = ctx.uniform(0, 1 << 20);

  Process kids[2];
  kids[kConsumer] = Process::spawn([&] { return consumer_main(ad, b, ad.seed); });
  kids[kProducer] = Process::spawn([&] { return producer_main(ad, b, messages); });
  ad.parent_done();

  const auto abandon = [&](const std::string& why) {
    row.fail(row.hangs, ctx.where() + ": " + why);
    for (auto& k : kids) {
      k.kill(SIGKILL);
      k.wait();
    }
  };
  if (!poll_until([&] {
        return b.ready.load() == 2 || b.party[0].outcome.load() != kRunning ||
               b.party[1].outcome.load() != kRunning;
      })) {
    return abandon("the children never got ready");
  }
  if (b.ready.load() != 2) {
    row.fail(row.failures, ctx.where() + ": a child failed before it started: " + b.party[0].error +
                               b.party[1].error);
  }
  b.go.store(1, std::memory_order_release);

  std::int64_t kill_ns = 0;
  if (!self) {
    sleep_for(ctx.kill_delay());
    kill_ns = now_ns();
    kids[victim].kill(sig);
  }
  const Role survivor = victim == kProducer ? kConsumer : kProducer;
  const auto vst = wait_or_kill(kids[victim], now_ns() + 5'000'000'000);
  if (!vst) {
    kids[survivor].kill(SIGKILL);
    kids[survivor].wait();
    return row.fail(row.hangs, ctx.where() + ": the victim never reached its point");
  }
  const bool killed = vst->signaled() && vst->value == sig;
  if (killed) {
    row.count_kill(sig);
    if (self) kill_ns = b.raise.raised_ns.load();
  } else {
    ++row.no_kill;
    if (!vst->success() || b.party[victim].outcome.load() != kReturned) {
      if (!(victim == kConsumer && b.party[victim].outcome.load() == kClosed)) {
        row.fail(row.failures, ctx.where() + ": the victim ended unexpectedly: " + vst->describe() +
                                   ", " + outcome_name(b.party[victim].outcome.load()) + " " +
                                   b.party[victim].error);
      }
    }
  }
  const std::int64_t from = killed ? kill_ns : now_ns();
  const auto sst = wait_or_kill(kids[survivor], from + kSurvivorBound.count() * 1'000'000);
  Party& sp = b.party[survivor];
  const std::int32_t so = sp.outcome.load();
  const std::string who = survivor == kProducer ? "producer" : "consumer";
  if (!sst) {
    return row.fail(row.hangs, ctx.where() + ": the " + who + " was still blocked " +
                                   std::to_string(kSurvivorBound.count()) +
                                   " ms after its peer died (" + b.ledger.describe() + ")");
  }
  if (!sst->success()) {
    row.fail(row.failures, ctx.where() + ": the " + who + " died: " + sst->describe());
  }
  if (killed && sp.end_ns.load() > kill_ns) row.latency(sp.end_ns.load() - kill_ns);

  // The survivor's ending must be a documented one.
  bool documented = false;
  const bool producer_closed =
      b.party[kProducer].outcome.load() == kReturned || b.closing.load() != 0;
  if (survivor == kConsumer) {
    documented = (killed && so == kPeerDead) || (killed && pipe_like && so == kBadFrame) ||
                 (so == kClosed && producer_closed);
  } else {
    documented = so == kReturned || (killed && so == kPeerDead);
  }
  if (!documented) {
    row.fail(row.failures,
             ctx.where() + ": the " + who + " ended with " + outcome_name(so) + " " + sp.error);
  }

  // Messages.
  const std::uint64_t acked = b.ledger.acked.load();
  const std::uint64_t received = b.ledger.received.load();
  row.acked += acked;
  row.received += std::min(received, acked + 1);
  row.lost += b.ledger.gaps.load();  // skipped over while later ones arrived
  if (b.ledger.bad() != 0) {
    row.fail(row.failures, ctx.where() + ": " + b.ledger.describe());
  }
  if (received < acked) {
    if (survivor == kConsumer || !killed) {
      row.lost += acked - received;
      if (row.notes.size() < 8) {
        row.notes.push_back(ctx.where() + ": lost " + std::to_string(acked - received) +
                            " acked messages (" + b.ledger.describe() + ", consumer " +
                            outcome_name(so) + ")");
      }
    } else {
      row.reported_lost += acked - received;  // they died with the consumer
    }
  }
  if (ctx.verbose) {
    std::printf("  %s: victim %s sig %d %s killed=%d survivor %s, %s\n", row.name.c_str(),
                victim == kProducer ? "producer" : "consumer", sig, self ? "self" : "external",
                killed, outcome_name(so), b.ledger.describe().c_str());
  }
}

constexpr std::int32_t kQueueProducerPoints[] = {kBeforeSend, kAfterCommit, kAfterAck};
constexpr std::int32_t kQueueConsumerPoints[] = {kAfterRecv};
constexpr std::int32_t kRingProducerPoints[] = {kBeforeSend, kMidCopy, kAfterCommit, kAfterAck};
constexpr std::int32_t kRingConsumerPoints[] = {kMidRead, kAfterRecv};

}  // namespace

void spsc_queue_scenario(Ctx& ctx) {
  QueueAdapter<SpscQueue<QueueMsg>> ad{
      SpscQueue<QueueMsg>(std::uint64_t{1} << ctx.uniform(0, 8), random_policy(ctx)),
      {sizeof(QueueMsg), true, false},
      ctx.seed,
      {}};
  two_party(ctx, ad, kQueueProducerPoints, kQueueConsumerPoints, false);
}

void mpmc_queue_scenario(Ctx& ctx) {
  QueueAdapter<MpmcQueue<QueueMsg>> ad{
      MpmcQueue<QueueMsg>(std::uint64_t{1} << ctx.uniform(1, 8), random_policy(ctx)),
      {sizeof(QueueMsg), true, false},
      ctx.seed,
      {}};
  two_party(ctx, ad, kQueueProducerPoints, kQueueConsumerPoints, false);
}

void byte_ring_scenario(Ctx& ctx) {
  const std::uint64_t capacity = std::uint64_t{1} << ctx.uniform(12, 20);  // 4 KiB .. 1 MiB
  const WaitPolicy policy = random_policy(ctx);
  RingAdapter ad;
  ad.seed = ctx.seed;
  // Half the time in a named segment that the children open by name.
  if (ctx.chance(0.5)) {
    ad.seg_name = ctx.segment_name();
    ad.seg.emplace(Segment::create(ad.seg_name, ByteRing::bytes_for(capacity) + (1 << 16)));
    ad.ring.emplace(ByteRing::create(*ad.seg, "ring", capacity, policy));
  } else {
    ad.ring.emplace(capacity, policy);
  }
  ad.sizes = {std::min<std::size_t>(ad.ring->max_message_size(), 256 << 10), false, false};
  two_party(ctx, ad, kRingProducerPoints, kRingConsumerPoints, false);
}

void socket_channel_scenario(Ctx& ctx) {
  PipeAdapter ad{
      SocketChannel{}, {std::size_t{1} << ctx.uniform(10, 19), false, false}, ctx.seed, {}};
  two_party(ctx, ad, kQueueProducerPoints, kQueueConsumerPoints, true);
}

template <class Q>
void queue_iteration(Ctx& ctx) {
  WordsAdapter<Q> ad{
      Q(std::size_t{1} << ctx.uniform(12, 20), random_policy(ctx)), {}, ctx.seed, {}};
  // The encoded vector carries a length word: keep it below the queue's limit.
  const std::size_t max = std::min<std::size_t>(ad.q.max_message() - 64, 256 << 10);
  ad.sizes = {max / 8 * 8, false, true};
  two_party(ctx, ad, kQueueProducerPoints, kQueueConsumerPoints, false);
}

void queue_scenario(Ctx& ctx) {
  using V = std::vector<std::uint64_t>;
  if (ctx.chance(0.5)) {
    queue_iteration<JoinableQueue<V>>(ctx);
  } else {
    queue_iteration<Queue<V>>(ctx);
  }
}

void channel_scenario(Ctx& ctx) {
  ChannelOptions opt;
  const bool pipe = ctx.chance(0.3);
  opt.transport = pipe ? Transport::socket : Transport::shm;
  opt.mode = static_cast<WaitMode>(ctx.uniform(0, 2));
  opt.capacity = std::uint64_t{1} << ctx.uniform(12, 20);
  WordsAdapter<Channel<std::vector<std::uint64_t>>> ad{
      Channel<std::vector<std::uint64_t>>(opt), {}, ctx.seed, {}};
  // The encoded vector carries a length word: keep the payload below the ring's limit.
  const std::size_t max = std::min<std::size_t>(ad.q.max_message_size() - 64, 256 << 10);
  ad.sizes = {max / 8 * 8, false, true};
  two_party(ctx, ad, kQueueProducerPoints, kQueueConsumerPoints, pipe);
}

}  // namespace ipckit::chaos
