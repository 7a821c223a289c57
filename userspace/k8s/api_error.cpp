#include "k8s/api_error.h"

namespace kpx::k8s {

std::string ApiError::to_string() const {
  std::string s = request.empty() ? "" : request + ": ";
  if (code != 0) {
    s += std::to_string(code);
    if (!reason.empty()) s += " " + reason;
    s += ": ";
  }
  s += message;
  if (retry_after.count() > 0) s += " (retry after " + std::to_string(retry_after.count()) + "s)";
  return s;
}

Error ApiError::to_error() const {
  if (code == 404) return not_found(to_string());
  if (code == 400 || code == 422) return invalid_argument(to_string());
  return system_error(to_string());
}

}  // namespace kpx::k8s
