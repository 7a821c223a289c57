// Enter a named network namespace (/var/run/netns/NAME, as `ip netns`
// makes them) for the lifetime of a scope, on the calling thread.
#pragma once

#include <cstdint>
#include <string>

#include "status/status.h"

namespace kpx::net {

class NetnsScope {
 public:
  // An empty name stays in the current namespace.
  static Result<NetnsScope> enter(const std::string& name);
  // The namespace at path (/proc/PID/ns/net, a bind mount of one).
  static Result<NetnsScope> enter_path(const std::string& path);
  NetnsScope(NetnsScope&& o) noexcept : orig_fd_(o.orig_fd_) { o.orig_fd_ = -1; }
  NetnsScope& operator=(NetnsScope&&) = delete;
  NetnsScope(const NetnsScope&) = delete;
  ~NetnsScope();

 private:
  explicit NetnsScope(int orig_fd) : orig_fd_(orig_fd) {}
  int orig_fd_;
};

// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE,
// Linux 5.14): what bpf_get_netns_cookie() gives programs for its sockets.
Result<uint64_t> netns_cookie();

}  // namespace kpx::net
