#include "lab/echo.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

#include "bpf/fd.h"
#include "net/socket.h"

namespace kpx::lab {

namespace {

using bpf::UniqueFd;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

std::string peer_string(const sockaddr_in& a) {
  return net::format(net::BackendAddr{a.sin_addr.s_addr, ntohs(a.sin_port)});
}

// Wait for fd to become ready for `events` until deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

sockaddr_in to_sockaddr(const net::ServiceAddr& t) { return net::ipv4_sockaddr(t.addr_be, t.port); }

std::string probe_tcp(const net::ServiceAddr& t, std::chrono::milliseconds timeout, std::string* from) {
  auto deadline = Clock::now() + timeout;
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return std::string("fail socket: ") + std::strerror(errno);
  // Close with RST: no TIME_WAIT pile-up over many probes.
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  sockaddr_in a = to_sockaddr(t);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS)
    return std::string("fail connect: ") + std::strerror(errno);
  if (!wait_fd(fd.get(), POLLOUT, deadline)) return "fail connect: timeout";
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return std::string("fail connect: ") + std::strerror(err);
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen);
  *from = peer_string(peer);
  std::string reply;
  char buf[512];
  while (reply.find('\n') == std::string::npos) {
    if (!wait_fd(fd.get(), POLLIN, deadline)) return "fail read: timeout";
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (reply.empty()) return "fail read: empty reply";
  return "ok " + reply.substr(0, reply.find('\n'));
}

std::string probe_udp(const net::ServiceAddr& t, std::chrono::milliseconds timeout, std::string* from) {
  auto deadline = Clock::now() + timeout;
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return std::string("fail socket: ") + std::strerror(errno);
  sockaddr_in a = to_sockaddr(t);
  const char req[] = "hello\n";
  if (sendto(fd.get(), req, sizeof req - 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
    return std::string("fail send: ") + std::strerror(errno);
  char buf[512];
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  if (!wait_fd(fd.get(), POLLIN, deadline)) return "fail recv: timeout";
  ssize_t n = recvfrom(fd.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &plen);
  if (n <= 0) return std::string("fail recv: ") + std::strerror(errno);
  *from = peer_string(peer);
  std::string reply(buf, static_cast<size_t>(n));
  return "ok " + reply.substr(0, reply.find('\n'));
}

// One request on a kept, connected UDP socket (fd: -1 connects a new one;
// closed again after an error, as a resolver reopens its socket).
std::string probe_udp_connected(UniqueFd& fd, const net::ServiceAddr& t, std::chrono::milliseconds timeout,
                                std::string* from) {
  auto deadline = Clock::now() + timeout;
  auto fail = [&fd](const std::string& what, int err) {
    fd = UniqueFd();
    return "fail " + what + ": " + std::strerror(err);
  };
  if (!fd.valid()) {
    fd = UniqueFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return fail("socket", errno);
    sockaddr_in a = to_sockaddr(t);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return fail("connect", errno);
  }
  const char req[] = "hello\n";
  if (send(fd.get(), req, sizeof req - 1, 0) < 0) return fail("send", errno);
  char buf[512];
  // POLLERR wakes the wait too (a destroyed socket's error is read by recv).
  if (!wait_fd(fd.get(), POLLIN, deadline)) return "fail recv: timeout";
  ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
  if (n < 0) return fail("recv", errno);
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  if (getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen) != 0) return fail("getpeername", errno);
  *from = peer_string(peer);
  std::string reply(buf, static_cast<size_t>(n));
  return "ok " + reply.substr(0, reply.find('\n'));
}

}  // namespace

namespace {

std::string reply_for(const EchoServerOptions& o, const std::string& peer, const char* proto, std::ostream& out) {
  std::string r = echo_reply(o.name, peer);
  if (!o.container.empty()) r += " container=" + o.container;
  if (o.log_requests) out << proto << " request from=" << peer << std::endl;
  return r;
}

}  // namespace

std::string echo_reply(const std::string& name, const std::string& client) {
  return "pod=" + name + " client=" + client;
}

Status run_echo_server(const EchoServerOptions& o, std::ostream& out) {
  auto tcp = net::bound_socket(SOCK_STREAM, INADDR_ANY, o.port);
  if (!tcp) return tcp.error();
  auto udp = net::bound_socket(SOCK_DGRAM, INADDR_ANY, o.port);
  if (!udp) return udp.error();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  out << "ready" << std::endl;
  const auto end = Clock::now() + std::chrono::seconds(o.exit_after_s);
  while (!g_stop && (o.exit_after_s == 0 || Clock::now() < end)) {
    pollfd p[2] = {{tcp->get(), POLLIN, 0}, {udp->get(), POLLIN, 0}};
    if (poll(p, 2, 200) <= 0) continue;
    if (p[0].revents & POLLIN) {
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      UniqueFd c(accept4(tcp->get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
      if (c.valid()) {
        std::string r = reply_for(o, peer_string(peer), "tcp", out) + "\n";
        (void)!write(c.get(), r.data(), r.size());
        shutdown(c.get(), SHUT_WR);
      }
    }
    if (p[1].revents & POLLIN) {
      char buf[2048];
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      ssize_t n = recvfrom(udp->get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &len);
      if (n >= 0) {
        std::string r = reply_for(o, peer_string(peer), "udp", out) + "\n";
        sendto(udp->get(), r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&peer), len);
      }
    }
  }
  return {};
}

int run_probe(const ProbeOptions& o, std::ostream& out) {
  int answered = 0;
  UniqueFd kept;
  for (int i = 0; i < o.count; ++i) {
    std::string from;
    std::string r = o.target.proto != net::Proto::kUdp ? probe_tcp(o.target, o.timeout, &from)
                    : o.keep_socket                    ? probe_udp_connected(kept, o.target, o.timeout, &from)
                                                       : probe_udp(o.target, o.timeout, &from);
    bool ok = r.rfind("ok ", 0) == 0;
    if (ok) {
      ++answered;
      out << i << " ok from=" << from << " " << r.substr(3) << "\n";
    } else {
      out << i << " " << r << "\n";
    }
    if (o.interval.count() > 0 && i + 1 < o.count) {
      out.flush();
      std::this_thread::sleep_for(o.interval);
    }
  }
  out.flush();
  return answered;
}

std::vector<ProbeAnswer> parse_probe_output(const std::string& text) {
  std::vector<ProbeAnswer> rs;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string n, status, word;
    if (!(l >> n >> status) || n.find_first_not_of("0123456789") != std::string::npos) continue;
    ProbeAnswer r;
    r.line = line;
    r.ok = status == "ok";
    while (l >> word) {
      auto eq = word.find('=');
      if (eq == std::string::npos) continue;
      std::string k = word.substr(0, eq), v = word.substr(eq + 1);
      if (k == "from") r.from = v;
      if (k == "pod") r.pod = v;
      if (k == "client") r.client = v;
      if (k == "container") r.container = v;
    }
    rs.push_back(r);
  }
  return rs;
}

}  // namespace kpx::lab
