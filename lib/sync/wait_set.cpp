#include "ipckit/sync/wait_set.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "ipckit/core/error.hpp"
#include "ipckit/core/unique_fd.hpp"

namespace ipckit {

namespace {

using Clock = std::chrono::steady_clock;

// One futex word to sleep on, and the value it must still hold for the sleep to begin.
struct Word {
  const std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
};

// Sleeps until one of `words` no longer holds its value, or the deadline; false when the
// kernel has no futex_waitv (Linux < 5.16): the caller then sleeps briefly instead.
bool futex_waitv_until(const std::vector<Word>& words, const Deadline& deadline) {
  std::vector<futex_waitv> w(words.size());
  for (std::size_t i = 0; i < words.size(); ++i) {
    w[i].val = words[i].expected;
    w[i].uaddr = reinterpret_cast<std::uintptr_t>(words[i].word);
    w[i].flags = FUTEX_32;  // process-shared: no FUTEX_PRIVATE_FLAG
    w[i].__reserved = 0;
  }
  timespec ts{};
  if (!deadline.is_never()) ts = deadline.to_timespec();
  const long r = ::syscall(SYS_futex_waitv, w.data(), static_cast<unsigned>(w.size()), 0U,
                           deadline.is_never() ? nullptr : &ts, CLOCK_MONOTONIC);
  return !(r < 0 && errno == ENOSYS);
}

// The earlier of two deadlines.
Deadline earlier(const Deadline& a, const Deadline& b) { return a.when() <= b.when() ? a : b; }

int epoll_ms(const Deadline& d) {
  if (d.is_never()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(d.remaining()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

}  // namespace

// The registrations of one look (prepare_wait() on each shared source's EventCount), cancelled
// when it goes (an exception included) unless handed to the bridge, which cancels them itself.
struct Registered {
  std::vector<EventCount*> regs;
  Registered() = default;
  Registered(const Registered&) = delete;
  Registered& operator=(const Registered&) = delete;
  ~Registered() { cancel(); }
  void cancel() noexcept {
    for (EventCount* ev : regs) ev->cancel_wait();
    regs.clear();
  }
  std::vector<EventCount*> hand_over() noexcept { return std::exchange(regs, {}); }
};

struct WaitSet::Impl {
  struct Entry {
    Key key;
    WaitSource src;
    std::shared_ptr<void> keep;  // what subscribe() returned
    UniqueFd dup;                // a duplicate, when the descriptor was in the epoll already
    dev_t dev = 0;               // what the descriptor was when added: the same number may
    ino_t ino = 0;               // mean another file by the time it is removed
  };

  // The helper thread that sleeps on the shared-memory words for an epoll-based wait (a set
  // with descriptors, or one whose fd() is in use), and makes `efd` readable when one moves.
  struct Bridge {
    std::thread thread;
    std::mutex mu;
    std::condition_variable cv;
    std::atomic<std::uint32_t> ctl{0};  // bumped to cut a sleep short
    std::uint32_t ctl_seen = 0;
    std::vector<Word> job;
    std::vector<EventCount*> registered;  // cancel_wait() once the sleep ends
    bool armed = false;
    bool stop = false;
    int efd = -1;

    void run() {
      std::unique_lock lk(mu);
      for (;;) {
        cv.wait(lk, [&] { return armed || stop; });
        if (stop) return;
        std::vector<Word> words{{&ctl, ctl_seen}};
        words.insert(words.end(), job.begin(), job.end());
        lk.unlock();
        if (!futex_waitv_until(words, Deadline::after(kPeerCheck))) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        lk.lock();
        const bool cut = ctl.load(std::memory_order_acquire) != ctl_seen;
        for (EventCount* ev : registered) ev->cancel_wait();
        registered.clear();
        armed = false;
        if (!cut) {
          const std::uint64_t one = 1;
          (void)!::write(efd, &one, sizeof one);
        }
        cv.notify_all();
      }
    }
    // Hands over a sleep on `words`, the caller's registrations with it.
    void arm(std::vector<Word> words, std::vector<EventCount*> regs) {
      std::lock_guard lk(mu);
      job = std::move(words);
      registered = std::move(regs);
      ctl_seen = ctl.load(std::memory_order_acquire);
      armed = true;
      cv.notify_all();
    }
    // Ends a sleep handed over (its registrations cancelled) before returning.
    void disarm() {
      std::unique_lock lk(mu);
      if (!armed) return;
      ctl.fetch_add(1, std::memory_order_release);
      futex_wake_all(ctl);
      cv.wait(lk, [&] { return !armed; });
    }
    void shut() {
      {
        std::lock_guard lk(mu);
        stop = true;
        ctl.fetch_add(1, std::memory_order_release);
      }
      futex_wake_all(ctl);
      cv.notify_all();
      if (thread.joinable()) thread.join();
      for (EventCount* ev : registered) ev->cancel_wait();
      registered.clear();
    }
  };

  std::vector<Entry> entries;
  Key next_key = 1;
  std::size_t shared = 0;  // sources with an EventCount
  std::size_t fds = 0;     // sources with a descriptor
  std::shared_ptr<detail::LocalWaker> waker = std::make_shared<detail::LocalWaker>();
  UniqueFd epfd;
  UniqueFd efd;    // the bridge's signal, in the epoll
  UniqueFd timer;  // timers and peer checks for fd() users, in the epoll
  bool exported = false;
  std::size_t subscribed = 0;  // sources woken through `waker`
  std::unique_ptr<Bridge> bridge;

  Impl() {
    epfd.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd) throw_errno("WaitSet: epoll_create1");
    efd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) throw_errno("WaitSet: eventfd");
    watch(efd.get(), EPOLLIN, 0);
  }
  ~Impl() {
    if (bridge) bridge->shut();
  }

  // Adds `fd` to the epoll; false when it is there already (EEXIST), throws otherwise.
  bool watch(int fd, std::uint32_t events, Key key) const {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, fd, &ev) == 0) return true;
    if (errno != EEXIST) throw_errno("WaitSet: epoll_ctl(fd " + std::to_string(fd) + ")");
    return false;
  }
  bool needs_bridge() const noexcept { return fds > 0 || exported; }
  void start_bridge() {
    if (bridge) return;
    auto b = std::make_unique<Bridge>();  // kept only once its thread runs
    b->efd = efd.get();
    b->thread = std::thread([p = b.get()] { p->run(); });
    bridge = std::move(b);
  }
  // Before the set changes: no registration or sleep may refer to what goes.
  void quiesce() {
    if (bridge) bridge->disarm();
  }
  void poke() const noexcept {  // makes fd() readable: "evaluate again"
    const std::uint64_t one = 1;
    (void)!::write(efd.get(), &one, sizeof one);
  }
  void drain() const noexcept {
    std::uint64_t n = 0;
    (void)!::read(efd.get(), &n, sizeof n);
    if (timer) (void)!::read(timer.get(), &n, sizeof n);
  }

  Deadline next_timer() const {
    Deadline d = Deadline::never();
    for (const auto& e : entries) d = earlier(d, e.src.at);
    return d;
  }

  // The keys ready now. Registers on every EventCount first (into `regs`), so that a notify
  // after the look is not lost by the sleep that follows.
  std::vector<Key> evaluate(bool check_peers, std::vector<EventCount*>& regs,
                            std::vector<Word>& words) {
    regs.clear();
    words.clear();
    for (auto& e : entries) {
      if (e.src.event != nullptr) {
        const EventCount::Key k = e.src.event->prepare_wait();
        regs.push_back(e.src.event);
        words.push_back({&e.src.event->word(), k.epoch});
      }
    }
    words.push_back({&waker->word(), waker->word().load(std::memory_order_acquire)});
    std::vector<pollfd> polls;
    for (const auto& e : entries) {
      if (!e.src.ready && e.src.fd >= 0) polls.push_back({e.src.fd, e.src.events, 0});
    }
    if (!polls.empty()) {
      while (::poll(polls.data(), polls.size(), 0) < 0 && errno == EINTR) {
      }
    }
    std::vector<Key> ready;
    std::size_t p = 0;
    for (auto& e : entries) {
      bool r = false;
      if (e.src.ready) {
        try {
          r = e.src.ready(check_peers);
        } catch (...) {  // the call would throw: that is what the waiter must see
          r = true;
        }
      } else if (e.src.fd >= 0) {
        r = polls[p++].revents != 0;
      }
      if (!e.src.at.is_never() && e.src.at.expired()) r = true;
      if (r) ready.push_back(e.key);
    }
    return ready;
  }

  void set_timer(const Deadline& d) {
    if (!timer) {
      timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      if (!timer) throw_errno("WaitSet: timerfd_create");
      watch(timer.get(), EPOLLIN, 0);
    }
    itimerspec its{};
    if (!d.is_never()) {
      its.it_value = d.to_timespec();
      if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    }
    (void)::timerfd_settime(timer.get(), TFD_TIMER_ABSTIME, &its, nullptr);
  }

  std::vector<Key> wait_until(const Deadline& deadline) {
    if (entries.empty()) throw_error(errc::invalid_argument, "WaitSet::wait: the set is empty");
    quiesce();
    drain();
    Registered reg;
    std::vector<Word> words;
    bool check_peers = true;
    auto next_check = Clock::now() + kPeerCheck;
    // The bridge has something to sleep on: shared words, or in-process completions.
    const bool bridged = shared > 0 || subscribed > 0;
    for (;;) {
      std::vector<Key> ready = evaluate(check_peers, reg.regs, words);
      const bool done = !ready.empty() || deadline.expired();
      // The set's own next reason to look: a timer, or the next look for dead peers.
      Deadline wake = next_timer();
      if (shared > 0) wake = earlier(wake, Deadline::at(next_check));
      const Deadline sleep = earlier(deadline, wake);
      if (done) {
        if (exported && ready.empty()) {  // fd() mode: the outer loop sleeps for us
          set_timer(wake);
          if (bridged) {
            start_bridge();
            bridge->arm(std::move(words), reg.hand_over());
          }
        } else {
          reg.cancel();
          if (exported) poke();  // level-triggered: fd() stays readable while one is ready
        }
        return ready;
      }
      if (!needs_bridge()) {
        if (!futex_waitv_until(words, sleep)) {  // no futex_waitv: look again soon
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        reg.cancel();
      } else {
        if (bridged) {
          start_bridge();
          bridge->arm(std::move(words), reg.hand_over());
        } else {
          reg.cancel();
        }
        epoll_event evs[8];
        (void)::epoll_wait(epfd.get(), evs, 8, epoll_ms(sleep));
        if (bridged) bridge->disarm();
        drain();
      }
      check_peers = Clock::now() >= next_check;
      if (check_peers) next_check = Clock::now() + kPeerCheck;
    }
  }
};

WaitSet::WaitSet() : impl_(std::make_unique<Impl>()) {}
WaitSet::WaitSet(WaitSet&&) noexcept = default;
WaitSet& WaitSet::operator=(WaitSet&&) noexcept = default;
WaitSet::~WaitSet() = default;

WaitSet::Key WaitSet::add_source(WaitSource source) {
  Impl& m = *impl_;
  if (source.event != nullptr && m.shared >= kMaxShared) {
    throw_error(errc::invalid_argument,
                "WaitSet::add: more than " + std::to_string(kMaxShared) + " shared-memory sources");
  }
  if (!source.ready && source.fd < 0 && source.event == nullptr && source.at.is_never() &&
      !source.subscribe) {
    throw_error(errc::invalid_argument, "WaitSet::add: a source with nothing to wait for");
  }
  m.quiesce();
  Impl::Entry e{m.next_key, std::move(source), nullptr, UniqueFd()};
  if (e.src.subscribe) e.keep = e.src.subscribe(m.waker);  // dropped again if epoll refuses
  if (e.src.fd >= 0) {
    struct stat st {};
    if (::fstat(e.src.fd, &st) != 0) {
      throw_errno("WaitSet::add: fstat(fd " + std::to_string(e.src.fd) + ")");
    }
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    const auto events = static_cast<std::uint32_t>(e.src.events == 0 ? POLLIN : e.src.events);
    e.src.events = static_cast<short>(events);
    if (!m.watch(e.src.fd, events, e.key)) {  // there already: a duplicate goes in instead
      e.dup.reset(::fcntl(e.src.fd, F_DUPFD_CLOEXEC, 0));
      if (!e.dup) throw_errno("WaitSet::add: dup");
      m.watch(e.dup.get(), events, e.key);
    }
  }
  ++m.next_key;
  m.shared += e.src.event != nullptr ? 1 : 0;
  m.fds += e.src.fd >= 0 ? 1 : 0;
  m.subscribed += e.src.subscribe ? 1 : 0;
  m.entries.push_back(std::move(e));
  if (m.exported) m.poke();
  return m.entries.back().key;
}

WaitSet::Key WaitSet::add_fd(int fd, short events) {
  if (fd < 0) throw_error(errc::invalid_argument, "WaitSet::add_fd: no descriptor");
  WaitSource s;
  s.fd = fd;
  s.events = events;
  return add_source(std::move(s));
}

WaitSet::Key WaitSet::add_timer(const Deadline& at) {
  WaitSource s;
  s.at = at;
  s.ready = [](bool) { return false; };  // the time alone makes it ready
  return add_source(std::move(s));
}

bool WaitSet::remove(Key key) noexcept {
  Impl& m = *impl_;
  const auto it = std::find_if(m.entries.begin(), m.entries.end(),
                               [&](const Impl::Entry& e) { return e.key == key; });
  if (it == m.entries.end()) return false;
  try {
    m.quiesce();
  } catch (...) {
  }
  if (it->dup) {
    ::epoll_ctl(m.epfd.get(), EPOLL_CTL_DEL, it->dup.get(), nullptr);
  } else if (it->src.fd >= 0) {
    // Only if the number still names the file added: closed and reused since, it is another
    // source's (closing the old file took it out of the epoll already).
    struct stat st {};
    if (::fstat(it->src.fd, &st) == 0 && st.st_dev == it->dev && st.st_ino == it->ino) {
      ::epoll_ctl(m.epfd.get(), EPOLL_CTL_DEL, it->src.fd, nullptr);
    }
  }
  m.shared -= it->src.event != nullptr ? 1 : 0;
  m.fds -= it->src.fd >= 0 ? 1 : 0;
  m.subscribed -= it->src.subscribe ? 1 : 0;
  m.entries.erase(it);
  if (m.exported) m.poke();
  return true;
}

std::size_t WaitSet::size() const noexcept { return impl_->entries.size(); }

std::vector<WaitSet::Key> WaitSet::wait_until(const Deadline& deadline) {
  return impl_->wait_until(deadline);
}

int WaitSet::fd() {
  Impl& m = *impl_;
  if (!m.exported) {
    m.exported = true;
    m.poke();  // the first look is the caller's
  }
  return m.epfd.get();
}

WaitSource wait_source(const Process& p) {
  if (p.pidfd() < 0) {
    throw_error(errc::invalid_argument,
                "WaitSet::add(Process): no pidfd for pid " + std::to_string(p.pid()));
  }
  WaitSource s;
  s.fd = p.pidfd();
  s.events = POLLIN;
  return s;
}

WaitSource wait_source(Event& e) {
  WaitSource s;
  s.ready = [&e](bool) { return e.is_set(); };
  s.event = &e.ec_;
  return s;
}

}  // namespace ipckit
