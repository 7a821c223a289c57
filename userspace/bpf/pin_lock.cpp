#include "bpf/pin_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

namespace kpx::bpf {

Result<UniqueFd> lock_pin_dir(const std::string& pin_dir, const std::string& holder_hint) {
  UniqueFd fd(open(pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return errno_error("open " + pin_dir, errno);
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return system_error("the maps in " + pin_dir + " are being changed by " + holder_hint);
    return errno_error("lock " + pin_dir, errno);
  }
  return fd;
}

}  // namespace kpx::bpf
