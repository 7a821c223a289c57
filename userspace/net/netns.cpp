#include "net/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>

namespace kpx::net {

Result<NetnsScope> NetnsScope::enter(const std::string& name) {
  if (name.empty()) return NetnsScope(-1);
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    return invalid_argument("invalid network namespace name '" + name + "'");
  int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig < 0) return errno_error("open current netns", errno);
  std::string path = "/var/run/netns/" + name;
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(orig);
    if (e == ENOENT) return not_found("network namespace '" + name + "' does not exist");
    return errno_error("open " + path, e);
  }
  int rc = setns(target, CLONE_NEWNET);
  int e = errno;
  close(target);
  if (rc != 0) {
    close(orig);
    return errno_error("setns " + name, e);
  }
  return NetnsScope(orig);
}

NetnsScope::~NetnsScope() {
  if (orig_fd_ >= 0) {
    (void)setns(orig_fd_, CLONE_NEWNET);
    close(orig_fd_);
  }
}

}  // namespace kpx::net
