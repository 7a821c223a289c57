#include "load_io.h"

#include <linux/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "load_stats.h"
#include "net/socket.h"

namespace kpx::bench {

uint64_t mono_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_nsec);
}

void raise_fd_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

Result<Epoll> Epoll::create() {
  Epoll e;
  e.fd_ = bpf::UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!e.fd_.valid()) return errno_error("epoll_create1", errno);
  return e;
}

Status Epoll::ctl(int op, int fd, uint32_t events, uint64_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  if (epoll_ctl(fd_.get(), op, fd, &ev) != 0) return errno_error("epoll_ctl", errno);
  return {};
}

int Epoll::wait(epoll_event* events, int max, uint64_t timeout_ns) {
  timespec t{static_cast<time_t>(timeout_ns / 1'000'000'000u),
             static_cast<long>(timeout_ns % 1'000'000'000u)};
  const int n = epoll_pwait2(fd_.get(), events, max, timeout_ns == UINT64_MAX ? nullptr : &t, nullptr);
  if (n < 0 && errno == EINTR) return 0;
  return n;
}

sockaddr_in to_sockaddr(const net::BackendAddr& a) { return net::ipv4_sockaddr(a.addr_be, a.port); }

bpf::UniqueFd start_connect(const sockaddr_in& dst, int* err, bool* connected) {
  *connected = false;
  bpf::UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    *err = errno;
    return fd;
  }
  const linger rst{1, 0};
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&dst), sizeof dst) == 0) {
    *connected = true;
  } else if (errno != EINPROGRESS) {
    *err = errno;
    return bpf::UniqueFd();
  }
  return fd;
}

bpf::UniqueFd connect_within(const sockaddr_in& dst, uint32_t timeout_ms, int* err) {
  bool connected = false;
  bpf::UniqueFd fd = start_connect(dst, err, &connected);
  if (!fd.valid() || connected) return fd;
  const uint64_t end = mono_ns() + uint64_t{timeout_ms} * 1'000'000u;
  for (;;) {
    const uint64_t now = mono_ns();
    if (now >= end) {
      *err = ETIMEDOUT;
      return bpf::UniqueFd();
    }
    pollfd p{fd.get(), POLLOUT, 0};
    const int n = poll(&p, 1, static_cast<int>((end - now + 999'999) / 1'000'000));
    if (n < 0 && errno != EINTR) {
      *err = errno;
      return bpf::UniqueFd();
    }
    if (n > 0) break;
  }
  if (int e = socket_error(fd.get()); e != 0) {
    *err = e;
    return bpf::UniqueFd();
  }
  return fd;
}

int socket_error(int fd) {
  int e = 0;
  socklen_t len = sizeof e;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) return errno;
  return e;
}

std::string request_of_size(uint32_t size) {
  if (size == 0) return {};
  std::string r(size - 1, 'x');
  r += '\n';
  return r;
}

Io send_rest(int fd, const std::string& request, uint32_t* sent, int* err) {
  while (*sent < request.size()) {
    const ssize_t n = send(fd, request.data() + *sent, request.size() - *sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Io::kAgain;
      *err = errno;
      return Io::kFailed;
    }
    *sent += static_cast<uint32_t>(n);
  }
  return Io::kDone;
}

std::string ResponseHead::pod() const {
  const std::string_view h(bytes, len);
  if (h.substr(0, 4) != "pod=") return "";
  const size_t end = h.find_first_of(" \n", 4);
  return end == std::string_view::npos ? "" : std::string(h.substr(4, end - 4));
}

Io read_response(int fd, ResponseHead* head, int* err) {
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Io::kAgain;
      *err = errno;
      return Io::kFailed;
    }
    if (n == 0) {
      *err = kClosedEarly;
      return Io::kFailed;
    }
    const size_t got = static_cast<size_t>(n);
    const size_t keep = std::min(got, sizeof head->bytes - head->len);
    std::memcpy(head->bytes + head->len, buf, keep);
    head->len += static_cast<uint32_t>(keep);
    head->received += got;
    if (const void* nl = std::memchr(buf, '\n', got)) {
      if (static_cast<const char*>(nl) != buf + got - 1) {
        *err = kBytesAfterResponse;
        return Io::kFailed;
      }
      return Io::kDone;
    }
  }
}

}  // namespace kpx::bench
