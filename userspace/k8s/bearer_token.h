// The bearer token of requests: fixed, or read from a file that is
// rewritten as the token rotates (a pod's bound service account token
// lives about an hour). The file is re-read when the copy is older than
// max_age, and on the next request after a 401 (invalidate()). A failed
// re-read keeps the last good token.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "status/status.h"

namespace kpx::k8s {

class BearerToken {
 public:
  using Clock = std::chrono::steady_clock;

  BearerToken() = default;  // no token
  static BearerToken fixed(std::string token);
  static BearerToken from_file(std::string path, Clock::duration max_age = std::chrono::minutes(1));

  BearerToken(BearerToken&& other) noexcept;
  BearerToken& operator=(BearerToken&& other) noexcept;

  // The token to send ("" for none). Reads the file when due.
  Result<std::string> get();
  // Makes the next get() re-read the file (after a 401). True when there is
  // a file to re-read.
  bool invalidate();
  bool empty() const { return token_.empty() && path_.empty(); }
  const std::string& path() const { return path_; }

 private:
  std::mutex mu_;
  std::string token_;
  std::string path_;
  Clock::duration max_age_{};
  Clock::time_point read_at_{};
  bool stale_ = true;  // the file must be read on the next get()
};

}  // namespace kpx::k8s
