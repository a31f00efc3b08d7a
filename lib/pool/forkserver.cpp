// StartMethod::forkserver, both sides: the driver's ForkServer and WorkerProcess, and the
// helper's loop, entered from a constructor when the program is exec'd as a helper. The
// design: forkserver.hpp.
#include "forkserver.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ios>
#include <string>
#include <unordered_map>

#include "ipckit/core/error.hpp"
#include "ipckit/pool/exceptions.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): <unistd.h> may not

namespace ipckit::detail {
namespace {

constexpr const char* kArg = "--ipckit-forkserver";
constexpr int kServerFd = 3;
constexpr std::uint32_t kMagic = 0x49464b53;  // "IFKS"
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kMaxInitBytes = std::size_t{64} * 1024;

struct Hello {  // driver -> helper, with two descriptors: the pool's memfd and its doorbell
  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::uint64_t n = 0;
  std::uint64_t header = 0;
  std::uint64_t ring_bytes = 0;
  std::uint64_t max_tasks = 0;
  std::uint64_t max_rss = 0;
  CodeAddress init_invoker{};
  std::uint64_t init_size = 0;   // the initializer's bytes follow
  std::uint64_t table_size = 0;  // then the registered exceptions (exception_table())
};

// The registered exception types for the helper: per type (latest first) a u32 name length,
// the mangled name, and the CodeAddresses of its encoder and decoder.
std::vector<std::byte> exception_table() {
  std::vector<std::byte> out;
  for (const ExceptionCodec& c : exception_codecs()) {
    const auto n = static_cast<std::uint32_t>(c.name.size());
    const CodeAddress fns[2] = {code_address_of(c.encode), code_address_of(c.decode)};
    const std::size_t at = out.size();
    out.resize(at + 4 + n + sizeof fns);
    std::memcpy(out.data() + at, &n, 4);
    std::memcpy(out.data() + at + 4, c.name.data(), n);
    std::memcpy(out.data() + at + 4 + n, fns, sizeof fns);
  }
  return out;
}

// Registers, in the helper, the types of a table exception_table() wrote (skipping those whose
// code this image lacks); false when it is malformed.
bool adopt_exception_table(std::span<const std::byte> t) {
  struct Entry {
    std::string name;
    CodeAddress fns[2];
  };
  std::vector<Entry> entries;
  while (!t.empty()) {
    std::uint32_t n = 0;
    if (t.size() < 4) return false;
    std::memcpy(&n, t.data(), 4);
    if (t.size() - 4 < std::size_t{n} + sizeof(Entry::fns)) return false;
    Entry e;
    e.name.assign(reinterpret_cast<const char*>(t.data() + 4), n);
    std::memcpy(e.fns, t.data() + 4 + n, sizeof e.fns);
    entries.push_back(std::move(e));
    t = t.subspan(4 + n + sizeof(Entry::fns));
  }
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {  // oldest first
    try {
      add_exception_codec(it->name.c_str(),
                          function_at<std::remove_pointer_t<ExceptionEncoder>>(it->fns[0]),
                          function_at<std::remove_pointer_t<ExceptionDecoder>>(it->fns[1]));
    } catch (const Error&) {
      // Its code is not in this image (a library the caller loaded with dlopen): that type
      // crosses as RemoteError.
    }
  }
  return true;
}
struct Request {
  static constexpr std::uint32_t kSpawn = 1;
  static constexpr std::uint32_t kReap = 2;
  std::uint32_t kind = 0;
  std::int32_t cpu = -1;
  std::uint64_t slot = 0;
  std::int64_t pid = 0;
};
struct Reply {  // helper -> driver; a spawn's carries the worker's pidfd
  std::int64_t pid = 0;
  std::int32_t err = 0;   // an errno, 0 on success
  std::int32_t kind = 0;  // ExitStatus::Kind of a reaped worker
  std::int32_t value = 0;
  std::int32_t pad = 0;
};

// One message and up to two descriptors; returns the bytes sent, -1 with errno.
ssize_t send_with_fds(int sock, const void* data, std::size_t n, const int* fds, int nfds) {
  iovec iov{const_cast<void*>(data), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(2 * sizeof(int))]{};
  if (nfds > 0) {
    msg.msg_control = ctl;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  ssize_t r;
  do {
    r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  return r;
}

// One message into `buf` and up to two descriptors into `fds` (-1 when absent; extra ones
// are closed). Returns the bytes read (0 at end of stream), -1 with errno.
ssize_t recv_with_fds(int sock, void* buf, std::size_t n, int* fds, int nfds) {
  for (int i = 0; i < nfds; ++i) fds[i] = -1;
  iovec iov{buf, n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(4 * sizeof(int))]{};
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return r;
  int got = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (got < nfds) {
        fds[got++] = fd;
      } else {
        ::close(fd);
      }
    }
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) {
    errno = EMSGSIZE;
    return -1;
  }
  return r;
}

// ---- the helper ---------------------------------------------------------------------------

// The helper's life, after the exec: returns its exit code. Parent-death signal first, so
// that it never outlives the driver thread that started it.
int serve(int sock, pid_t parent) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) return 1;
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C is the driver's to handle, as in workers
  std::vector<std::byte> buf(sizeof(Hello) + 2 * kMaxInitBytes);
  int fds[2];
  const ssize_t got = recv_with_fds(sock, buf.data(), buf.size(), fds, 2);
  Hello h;
  if (got < static_cast<ssize_t>(sizeof h) || fds[0] < 0 || fds[1] < 0) return 2;
  std::memcpy(&h, buf.data(), sizeof h);
  if (h.magic != kMagic || h.version != kVersion || h.init_size > kMaxInitBytes ||
      h.table_size > kMaxInitBytes ||
      static_cast<std::size_t>(got) != sizeof h + h.init_size + h.table_size || h.n == 0 ||
      h.n > 4096) {
    return 2;
  }
  if (!adopt_exception_table(
          std::span<const std::byte>(buf.data() + sizeof h + h.init_size, h.table_size))) {
    return 2;
  }
  PoolLayout layout;
  layout.n = h.n;
  layout.header = h.header;
  layout.ring_bytes = h.ring_bytes;
  if (layout.header != PoolLayout::for_workers(h.n).header ||
      layout.ring_bytes != PoolLayout::for_workers(h.n).ring_bytes) {
    return 2;
  }
  void* base = ::mmap(nullptr, layout.total(), PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  if (base == MAP_FAILED) return 3;
  ::close(fds[0]);
  const int doorbell = fds[1];
  const Initializer init =
      h.init_invoker.module != 0
          ? Initializer::from_portable(
                h.init_invoker, std::span<const std::byte>(buf.data() + sizeof h, h.init_size))
          : Initializer();
  {
    const Reply ready{::getpid(), 0, 0, 0, 0};
    if (send_with_fds(sock, &ready, sizeof ready, nullptr, 0) < 0) return 4;
  }
  prime_code_addresses();  // the workers inherit it (and never take one: see worker_main)
  std::unordered_map<pid_t, Process> workers;
  for (;;) {
    Request req;
    int none[1];
    const ssize_t r = recv_with_fds(sock, &req, sizeof req, none, 0);
    if (r == 0) return 0;  // the driver closed: our workers die with us (parent-death signal)
    if (r != static_cast<ssize_t>(sizeof req)) return 5;
    Reply rep{};
    if (req.kind == Request::kSpawn && req.slot < layout.n) {
      const WorkerEnv env{static_cast<std::byte*>(base),
                          layout,
                          static_cast<std::size_t>(req.slot),
                          doorbell,
                          req.cpu,
                          static_cast<std::size_t>(h.max_tasks),
                          &init,
                          static_cast<std::size_t>(h.max_rss)};
      try {
        Process p = Process::spawn([env, sock] {
          ::close(sock);
          return worker_main(env);
        });
        rep.pid = p.pid();
        const int pidfd = p.pidfd();
        if (pidfd < 0) {
          p.kill(SIGKILL);
          rep.err = ENOSYS;  // no pidfd_open (Linux < 5.3)
          if (send_with_fds(sock, &rep, sizeof rep, nullptr, 0) < 0) return 4;
          continue;
        }
        const pid_t pid = p.pid();
        workers.emplace(pid, std::move(p));
        if (send_with_fds(sock, &rep, sizeof rep, &pidfd, 1) < 0) return 4;
      } catch (const Error& e) {
        rep.pid = -1;
        rep.err = e.code().category() == std::system_category() ? e.code().value() : EAGAIN;
        if (send_with_fds(sock, &rep, sizeof rep, nullptr, 0) < 0) return 4;
      }
    } else if (req.kind == Request::kReap) {
      const auto it = workers.find(static_cast<pid_t>(req.pid));
      if (it == workers.end()) {
        rep.err = ECHILD;
      } else {
        // Never blocks: a worker that has not exited (the driver asked too early) is EAGAIN.
        try {
          if (const auto st = it->second.try_wait()) {
            rep.pid = req.pid;
            rep.kind = static_cast<std::int32_t>(st->kind);
            rep.value = st->value;
            workers.erase(it);
          } else {
            rep.err = EAGAIN;
          }
        } catch (const Error&) {
          rep.err = ECHILD;
          workers.erase(it);
        }
      }
      if (send_with_fds(sock, &rep, sizeof rep, nullptr, 0) < 0) return 4;
    } else {
      return 5;
    }
  }
}

// Runs in every program that links the pool, during static initialisation (glibc hands
// constructors argc, argv and envp): diverts a helper exec (`<program> --ipckit-forkserver
// 3:<driver pid>`, with our socket as descriptor 3) into serve(); does nothing otherwise. The
// mark is in argv, not the environment: the workers' environment is the caller's, untouched.
__attribute__((constructor)) void forkserver_entry(int argc, char** argv, char** /*envp*/) {
  if (argc != 3 || argv == nullptr || argv[1] == nullptr || std::strcmp(argv[1], kArg) != 0) {
    return;
  }
  int fd = -1;
  long parent = 0;
  if (std::sscanf(argv[2], "%d:%ld", &fd, &parent) != 2 || fd != kServerFd || parent <= 0) {
    return;
  }
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) return;
  // The standard streams, which a worker flushes, may belong to objects initialised after
  // this one: make sure they exist.
  static const std::ios_base::Init streams;
  ::_exit(serve(fd, static_cast<pid_t>(parent)));
}

}  // namespace

// ---- the driver's side ------------------------------------------------------------------------

ForkServer::ForkServer(const PoolLayout& layout, int memfd, int doorbell, std::size_t max_tasks,
                       std::size_t max_rss, const Initializer& initializer)
    : layout_(layout),
      memfd_(memfd),
      doorbell_(doorbell),
      max_tasks_(max_tasks),
      max_rss_(max_rss) {
  if (initializer) {
    if (!initializer.portable()) {
      throw Error(errc::invalid_argument,
                  "Pool: under StartMethod::forkserver the initializer must cross by value (a "
                  "function pointer, or a lambda capturing trivially copyable or "
                  "cereal-serialisable values); use StartMethod::fork for this one");
    }
    if (initializer.bytes().size() > kMaxInitBytes) {
      throw Error(errc::invalid_argument, "Pool: an initializer of " +
                                              std::to_string(initializer.bytes().size()) +
                                              " bytes is more than the forkserver takes (" +
                                              std::to_string(kMaxInitBytes) + ")");
    }
    init_invoker_ = initializer.invoker();
    init_bytes_.assign(initializer.bytes().begin(), initializer.bytes().end());
  }
  launch();
}

ForkServer::~ForkServer() { stop(); }

void ForkServer::stop() noexcept {
  // shutdown() ends the stream even while a forked child of this process (another pool's
  // fork worker, an spmd rank) still holds a copy of our descriptor.
  if (sock_.valid()) (void)::shutdown(sock_.get(), SHUT_RDWR);
  sock_.reset();
  if (pid_ <= 0) return;
  // It exits at once; should it not within 2 s (stopped, say), it is killed.
  for (int i = 0; i < 2000; ++i) {
    int st;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) {
      pid_ = -1;
      return;
    }
    ::usleep(1000);
  }
  ::kill(pid_, SIGKILL);
  int st;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void ForkServer::launch() {
  ++generation_;
  const std::vector<std::byte> table = exception_table();
  if (table.size() > kMaxInitBytes) {
    throw Error(errc::invalid_argument, "Pool forkserver: too many registered exception types");
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    throw_errno("Pool forkserver: socketpair()");
  }
  UniqueFd mine(sv[0]);
  UniqueFd theirs(sv[1]);
  // Both above the standard descriptors: a program that closed stdin/stdout/stderr gets 0-2
  // from socketpair(), which the file actions below would overwrite.
  for (UniqueFd* f : {&mine, &theirs}) {
    if (f->get() > kServerFd) continue;
    const int moved = ::fcntl(f->get(), F_DUPFD_CLOEXEC, kServerFd + 1);
    if (moved < 0) throw_errno("Pool forkserver: fcntl(F_DUPFD_CLOEXEC)");
    f->reset(moved);
  }
  // The helper gets stdin from /dev/null (were the exec to run main after all, it would not
  // read the caller's input), the socket as descriptor 3, and no other descriptor.
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&fa, theirs.get(), kServerFd);
  ::posix_spawn_file_actions_addclosefrom_np(&fa, kServerFd + 1);
  std::string arg0 = program_invocation_name != nullptr ? program_invocation_name : "ipckit";
  std::string arg1 = kArg;
  std::string arg2 = std::to_string(kServerFd) + ":" + std::to_string(::getpid());
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  // Default dispositions and an empty mask, whatever the caller set: a SIGCHLD the caller
  // ignores would have the kernel reap workers behind the helper's back.
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t all;
  sigset_t empty;
  ::sigfillset(&all);
  ::sigemptyset(&empty);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  ::posix_spawnattr_setsigmask(&attr, &empty);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
  ::posix_spawnattr_destroy(&attr);
  ::posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    throw Error(std::error_code(rc, std::system_category()),
                "Pool forkserver: posix_spawn(\"/proc/self/exe\") failed");
  }
  pid_ = pid;
  theirs.reset();
  sock_ = std::move(mine);
  std::vector<std::byte> hello(sizeof(Hello) + init_bytes_.size() + table.size());
  Hello h;
  h.n = layout_.n;
  h.header = layout_.header;
  h.ring_bytes = layout_.ring_bytes;
  h.max_tasks = max_tasks_;
  h.max_rss = max_rss_;
  h.init_invoker = init_invoker_;
  h.init_size = init_bytes_.size();
  h.table_size = table.size();
  std::memcpy(hello.data(), &h, sizeof h);
  if (!init_bytes_.empty()) {
    std::memcpy(hello.data() + sizeof h, init_bytes_.data(), init_bytes_.size());
  }
  if (!table.empty()) {
    std::memcpy(hello.data() + sizeof h + init_bytes_.size(), table.data(), table.size());
  }
  const int fds[2] = {memfd_, doorbell_};
  const auto fail = [&](const std::string& why) {
    ::kill(pid_, SIGKILL);
    stop();
    throw Error(errc::child_failed,
                "Pool forkserver: the helper (an exec of this program) " + why +
                    "; is libipckit part of the program's startup (not loaded with dlopen)? "
                    "StartMethod::fork needs no helper");
  };
  if (send_with_fds(sock_.get(), hello.data(), hello.size(), fds, 2) < 0) {
    fail(std::string("did not take its setup: ") + std::strerror(errno));
  }
  pollfd p{sock_.get(), POLLIN, 0};
  int pr;
  do {
    pr = ::poll(&p, 1, static_cast<int>(kStartTimeout.count() * 1000));
  } while (pr < 0 && errno == EINTR);
  if (pr == 0) fail("did not answer within " + std::to_string(kStartTimeout.count()) + " s");
  Reply ready;
  int none[1];
  const ssize_t got = recv_with_fds(sock_.get(), &ready, sizeof ready, none, 0);
  if (got != static_cast<ssize_t>(sizeof ready) || ready.pid != pid_) {
    fail("exited before it served");
  }
}

bool ForkServer::exchange(const void* req, std::size_t n, void* reply, std::size_t reply_n,
                          UniqueFd* fd_out) {
  if (!sock_.valid()) return false;
  if (send_with_fds(sock_.get(), req, n, nullptr, 0) < 0) return false;
  int fd[1] = {-1};
  const ssize_t got = recv_with_fds(sock_.get(), reply, reply_n, fd, fd_out ? 1 : 0);
  UniqueFd received(fd[0]);  // closed unless handed out
  if (got != static_cast<ssize_t>(reply_n)) return false;
  if (fd_out != nullptr) *fd_out = std::move(received);
  return true;
}

ForkServer::Child ForkServer::fork_worker(std::size_t slot, int cpu) {
  Request req;
  req.kind = Request::kSpawn;
  req.slot = slot;
  req.cpu = cpu;
  Reply rep;
  UniqueFd pidfd;
  if (!exchange(&req, sizeof req, &rep, sizeof rep, &pidfd)) {
    // The helper died (killed, say): its workers went with it. Start another, once.
    if (sock_.valid()) ::kill(pid_, SIGKILL);
    stop();
    launch();
    if (!exchange(&req, sizeof req, &rep, sizeof rep, &pidfd)) {
      throw Error(errc::child_failed, "Pool forkserver: the helper stopped answering");
    }
  }
  if (rep.err != 0) {
    throw Error(std::error_code(rep.err, std::system_category()),
                rep.err == ENOSYS ? "Pool forkserver: no pidfd_open (Linux 5.3 or later is "
                                    "needed; StartMethod::fork works without)"
                                  : "Pool forkserver: fork() in the helper failed");
  }
  if (!pidfd.valid() || rep.pid <= 0) {
    throw Error(errc::child_failed, "Pool forkserver: the helper's answer had no worker");
  }
  return {static_cast<pid_t>(rep.pid), std::move(pidfd), generation_};
}

ForkServer::Reaped ForkServer::reap(pid_t pid, std::uint64_t generation) {
  if (generation != generation_) return {};  // its helper is gone; this one has other pids
  Request req;
  req.kind = Request::kReap;
  req.pid = pid;
  Reply rep;
  if (!exchange(&req, sizeof req, &rep, sizeof rep, nullptr)) return {};
  if (rep.err == EAGAIN) return {Reaped::running, {}};
  if (rep.err != 0 || (rep.kind != 0 && rep.kind != 1)) return {};
  return {Reaped::exited, ExitStatus{static_cast<ExitStatus::Kind>(rep.kind), rep.value}};
}

// ---- WorkerProcess ------------------------------------------------------------------------------

std::optional<ExitStatus> WorkerProcess::wait_for(std::chrono::milliseconds timeout) {
  if (server_ == nullptr) return proc_.wait_for(timeout);
  if (status_) return status_;
  pollfd p{pidfd_.get(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r <= 0 || (p.revents & (POLLIN | POLLHUP)) == 0) return std::nullopt;
  // Exited. Without its helper (it died, and its workers with it by their parent-death
  // signal) the status is gone: that signal is what ended it.
  status_ = ExitStatus{ExitStatus::Kind::signaled, SIGKILL};
  for (int i = 0; i < 1000; ++i) {
    const ForkServer::Reaped got = server_->reap(pid_, generation_);
    if (got.state == ForkServer::Reaped::exited) status_ = got.status;
    if (got.state != ForkServer::Reaped::running) break;
    ::usleep(1000);  // the helper does not see the exit yet
  }
  pidfd_.reset();
  return status_;
}

ExitStatus WorkerProcess::wait() {
  if (server_ == nullptr) return proc_.wait();
  if (status_) return *status_;
  return *wait_for(std::chrono::milliseconds(-1));
}

void WorkerProcess::kill(int sig) {
  if (server_ == nullptr) {
    proc_.kill(sig);
    return;
  }
  // Through the pidfd: the pid may be recycled once the worker is reaped (by init, when its
  // helper died). An error can only mean it is gone already.
  if (!status_ && pidfd_.valid()) {
    (void)::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0);
  }
}

}  // namespace ipckit::detail
