// Enter a named network namespace (/var/run/netns/NAME, as `ip netns`
// makes them) for the lifetime of a scope, on the calling thread.
#pragma once

#include <string>

#include "status/status.h"

namespace kpx::net {

class NetnsScope {
 public:
  // An empty name stays in the current namespace.
  static Result<NetnsScope> enter(const std::string& name);
  NetnsScope(NetnsScope&& o) noexcept : orig_fd_(o.orig_fd_) { o.orig_fd_ = -1; }
  NetnsScope& operator=(NetnsScope&&) = delete;
  NetnsScope(const NetnsScope&) = delete;
  ~NetnsScope();

 private:
  explicit NetnsScope(int orig_fd) : orig_fd_(orig_fd) {}
  int orig_fd_;
};

}  // namespace kpx::net
