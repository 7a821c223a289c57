#include "status/status.h"

#include <cstring>

namespace kpx {

Error errno_error(const std::string& what, int err) {
  if (err < 0) err = -err;
  return system_error(what + ": " + std::strerror(err));
}

}  // namespace kpx
