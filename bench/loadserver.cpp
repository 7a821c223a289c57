#include "loadserver.h"

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "load_io.h"

namespace kpx::bench {

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

enum class Mode : uint8_t { kLines, kDiscard, kSource };

struct Conn {
  bpf::UniqueFd fd;
  Mode mode = Mode::kLines;
  std::string line;      // the current line's first bytes: enough to tell a command
  std::string response;  // this client's, made at accept
  uint64_t owed = 0;     // responses not written yet
  uint32_t off = 0;      // written of the one being written
  bool out_watched = false;
};
constexpr size_t kLineKept = 16;

class LoadServer {
 public:
  LoadServer(const LoadServerOptions& o, std::string name, bpf::UniqueFd listener, Epoll ep)
      : o_(o),
        name_(std::move(name)),
        listener_(std::move(listener)),
        ep_(std::move(ep)),
        bulk_(128 * 1024, '.') {}

  Status serve();
  nlohmann::json served() const {
    return {{"accepted", accepted_},
            {"requests", requests_},
            {"discarded_bytes", discarded_},
            {"sourced_bytes", sourced_}};
  }

 private:
  void accept_all();
  void on_readable(Conn& c);
  void on_line(Conn& c);
  void flush(Conn& c);
  void watch_out(Conn& c, bool on);
  void close(Conn& c) { by_fd_[c.fd.get()].reset(); }  // destroys c

  const LoadServerOptions& o_;
  const std::string name_;
  bpf::UniqueFd listener_;
  Epoll ep_;
  const std::string bulk_;
  std::vector<std::unique_ptr<Conn>> by_fd_;
  char buf_[64 * 1024];
  uint64_t accepted_ = 0, requests_ = 0, discarded_ = 0, sourced_ = 0;
  bool said_emfile_ = false;
};

std::string response_for(const std::string& name, const sockaddr_in& peer, uint32_t size) {
  std::string r =
      "pod=" + name + " client=" + net::format(net::BackendAddr{peer.sin_addr.s_addr, ntohs(peer.sin_port)});
  r.resize(size - 1, '.');
  r += '\n';
  return r;
}

void LoadServer::accept_all() {
  for (;;) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    const int fd =
        accept4(listener_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if ((errno == EMFILE || errno == ENFILE) && !said_emfile_) {
        said_emfile_ = true;
        std::fprintf(stderr, "kpx-bench loadserver: accept: %s\n", std::strerror(errno));
      }
      return;  // EAGAIN, or try again on the next event
    }
    ++accepted_;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Conn>();
    c->fd = bpf::UniqueFd(fd);
    c->response = response_for(name_, peer, o_.response_size);
    if (!ep_.add(fd, EPOLLIN, static_cast<uint64_t>(fd))) continue;  // c closes it
    if (by_fd_.size() <= static_cast<size_t>(fd)) by_fd_.resize(fd + 1);
    by_fd_[fd] = std::move(c);
  }
}

void LoadServer::watch_out(Conn& c, bool on) {
  if (c.out_watched == on) return;
  c.out_watched = on;
  (void)ep_.mod(c.fd.get(), on ? EPOLLIN | EPOLLOUT : EPOLLIN, static_cast<uint64_t>(c.fd.get()));
}

void LoadServer::on_line(Conn& c) {
  if (c.line == "discard") {
    c.mode = Mode::kDiscard;
  } else if (c.line == "source") {
    c.mode = Mode::kSource;
    watch_out(c, true);
  } else {
    ++c.owed;
    ++requests_;
  }
  c.line.clear();
}

void LoadServer::on_readable(Conn& c) {
  // A bounded number of reads, so a fast stream does not starve the rest
  // (epoll is level-triggered: what is left wakes it again).
  for (int reads = 0; reads < 16; ++reads) {
    const ssize_t n = recv(c.fd.get(), buf_, sizeof buf_, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) return close(c);  // the client closed or reset it
    const char *p = buf_, *end = buf_ + n;
    if (c.mode == Mode::kDiscard) discarded_ += static_cast<uint64_t>(n);
    while (c.mode == Mode::kLines && p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const char* stop = nl ? nl : end;
      c.line.append(
          p, std::min<size_t>(static_cast<size_t>(stop - p), kLineKept - std::min(kLineKept, c.line.size())));
      p = stop;
      if (!nl) break;
      ++p;
      on_line(c);
      if (c.mode == Mode::kDiscard) discarded_ += static_cast<uint64_t>(end - p);
    }
  }
  flush(c);
}

void LoadServer::flush(Conn& c) {
  if (c.mode == Mode::kSource) {
    for (;;) {
      const ssize_t n = send(c.fd.get(), bulk_.data(), bulk_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0) return close(c);
      sourced_ += static_cast<uint64_t>(n);
    }
  }
  while (c.owed > 0) {
    const ssize_t n =
        send(c.fd.get(), c.response.data() + c.off, c.response.size() - c.off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return watch_out(c, true);
    if (n < 0) return close(c);
    c.off += static_cast<uint32_t>(n);
    if (c.off == c.response.size()) {
      c.off = 0;
      --c.owed;
    }
  }
  watch_out(c, false);
}

Status LoadServer::serve() {
  KPX_TRY(ep_.add(listener_.get(), EPOLLIN, static_cast<uint64_t>(listener_.get())));
  const uint64_t end = o_.exit_after_s ? mono_ns() + uint64_t{o_.exit_after_s} * 1'000'000'000u : UINT64_MAX;
  epoll_event events[256];
  while (!g_stop && mono_ns() < end) {
    const int n = ep_.wait(events, 256, 200'000'000);
    if (n < 0) return errno_error("epoll_pwait2", errno);
    for (int i = 0; i < n; ++i) {
      const int fd = static_cast<int>(events[i].data.u64);
      if (fd == listener_.get()) {
        accept_all();
        continue;
      }
      // A connection closed earlier in this batch (its fd maybe taken by a
      // new one since: then the spurious wake finds nothing to do).
      if (static_cast<size_t>(fd) >= by_fd_.size() || !by_fd_[fd]) continue;
      Conn& c = *by_fd_[fd];
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(c);  // may close it
        if (!by_fd_[fd]) continue;
      }
      if (events[i].events & EPOLLOUT) flush(c);
    }
  }
  return {};
}

Result<bpf::UniqueFd> listen_on(uint32_t addr_be, uint16_t port) {
  bpf::UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error("socket", errno);
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in a = to_sockaddr({addr_be, port});
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
    return errno_error("bind " + net::format(net::BackendAddr{addr_be, port}), errno);
  // A deep backlog (the kernel caps it at net.core.somaxconn): an open-loop
  // burst of SYNs is queued, not refused.
  if (listen(fd.get(), 4096) != 0) return errno_error("listen", errno);
  return fd;
}

}  // namespace

int run_loadserver(const LoadServerOptions& o, std::ostream& out, std::ostream& err) {
  std::string name = o.name;
  if (name.empty() && std::getenv("HOSTNAME")) name = std::getenv("HOSTNAME");
  if (name.empty()) name = "loadserver";
  raise_fd_limit();
  auto listener = listen_on(o.addr_be, o.port);
  auto ep = Epoll::create();
  if (!listener || !ep) {
    err << "kpx-bench loadserver: " << (!listener ? listener.error() : ep.error()).message << "\n";
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: the wait returns
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto server = std::make_unique<LoadServer>(o, name, std::move(*listener), std::move(*ep));
  out << "ready" << std::endl;
  const Status st = server->serve();
  out << server->served().dump() << std::endl;
  if (!st) {
    err << "kpx-bench loadserver: " << st.error().message << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kpx::bench
