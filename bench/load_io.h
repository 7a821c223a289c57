// Sockets and epoll as kpx-bench loadgen and loadserver use them.
#pragma once

#include <netinet/in.h>
#include <sys/epoll.h>

#include <cstdint>
#include <string>
#include <utility>

#include "bpf/fd.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::bench {

// CLOCK_MONOTONIC, ns.
uint64_t mono_ns();

// The soft RLIMIT_NOFILE raised to the hard limit: thousands of sockets in
// flight need more than the usual 1024.
void raise_fd_limit();

class Epoll {
 public:
  static Result<Epoll> create();
  Status add(int fd, uint32_t events, uint64_t data) { return ctl(EPOLL_CTL_ADD, fd, events, data); }
  Status mod(int fd, uint32_t events, uint64_t data) { return ctl(EPOLL_CTL_MOD, fd, events, data); }
  // epoll_pwait2: waits at most timeout_ns (ns resolution, which an open
  // loop's schedule needs; UINT64_MAX: no limit). The events ready, 0 on
  // timeout or EINTR, -1 on error.
  int wait(epoll_event* events, int max, uint64_t timeout_ns);

 private:
  Status ctl(int op, int fd, uint32_t events, uint64_t data);
  bpf::UniqueFd fd_;
};

// Run(o, epoll).run() with a new epoll instance and the fd limit raised:
// how loadgen's modes that keep many sockets start.
template <typename Run, typename Options>
auto run_on_epoll(const Options& o) -> decltype(std::declval<Run&>().run()) {
  raise_fd_limit();
  auto ep = Epoll::create();
  if (!ep) return ep.error();
  Run run(o, std::move(*ep));
  return run.run();
}

sockaddr_in to_sockaddr(const net::BackendAddr& a);

// A non-blocking TCP socket that closes with RST (SO_LINGER {1,0}), with
// TCP_NODELAY, its connect() to dst started. Invalid on failure, errno in
// *err; *connected when connect() finished at once.
bpf::UniqueFd start_connect(const sockaddr_in& dst, int* err, bool* connected);
// The same, waited for until connected or timeout_ms (then *err is
// ETIMEDOUT).
bpf::UniqueFd connect_within(const sockaddr_in& dst, uint32_t timeout_ms, int* err);

int socket_error(int fd);  // SO_ERROR, cleared by reading it

// size bytes: 'x's and a last '\n' (empty for 0).
std::string request_of_size(uint32_t size);

// One request/response exchange on a non-blocking socket, step by step.
enum class Io : uint8_t { kDone, kAgain, kFailed };
// Sends what is left of request after *sent. kFailed: errno in *err.
Io send_rest(int fd, const std::string& request, uint32_t* sent, int* err);

// What a response began with (for the "pod=NAME" that loadserver and the
// lab's echo server put first), and its length so far.
struct ResponseHead {
  char bytes[96];
  uint32_t len = 0;
  uint64_t received = 0;
  // NAME of a response that begins "pod=NAME ", else "".
  std::string pod() const;
};
// Reads until the response's '\n' (kDone). kFailed: *err is an errno,
// kClosedEarly or kBytesAfterResponse (load_stats.h).
Io read_response(int fd, ResponseHead* head, int* err);

}  // namespace kpx::bench
