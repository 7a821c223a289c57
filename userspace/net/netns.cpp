#include "net/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace kpx::net {

namespace {

// setns into the namespace at path, keeping the calling thread's to go
// back to; label names it in errors.
Result<int> enter_at(const std::string& path, const std::string& label) {
  int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig < 0) return errno_error("open current netns", errno);
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(orig);
    if (e == ENOENT) return not_found("network namespace '" + label + "' does not exist");
    return errno_error("open " + path, e);
  }
  int rc = setns(target, CLONE_NEWNET);
  int e = errno;
  close(target);
  if (rc != 0) {
    close(orig);
    return errno_error("setns " + label, e);
  }
  return orig;
}

}  // namespace

Result<NetnsScope> NetnsScope::enter(const std::string& name) {
  if (name.empty()) return NetnsScope(-1);
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    return invalid_argument("invalid network namespace name '" + name + "'");
  auto orig = enter_at("/var/run/netns/" + name, name);
  if (!orig) return orig.error();
  return NetnsScope(*orig);
}

Result<NetnsScope> NetnsScope::enter_path(const std::string& path) {
  auto orig = enter_at(path, path);
  if (!orig) return orig.error();
  return NetnsScope(*orig);
}

NetnsScope::~NetnsScope() {
  if (orig_fd_ >= 0) {
    (void)setns(orig_fd_, CLONE_NEWNET);
    close(orig_fd_);
  }
}

Result<uint64_t> netns_cookie() {
  constexpr int kSoNetnsCookie = 71;  // SO_NETNS_COOKIE
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  const bool ok = fd >= 0 && getsockopt(fd, SOL_SOCKET, kSoNetnsCookie, &cookie, &len) == 0;
  const int e = errno;
  if (fd >= 0) close(fd);
  if (!ok) return errno_error("read this network namespace's cookie (SO_NETNS_COOKIE)", e);
  return cookie;
}

}  // namespace kpx::net
