// A failed API call as the caller must react to it: the HTTP code, the
// Status body's reason and message, Retry-After. ApiResult<T> carries a value
// or an ApiError (no exceptions); to_error() turns it into a kpx::Error.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "status/status.h"

namespace kpx::k8s {

struct ApiError {
  int code = 0;                         // HTTP status; 0: no answer (connection, TLS, timeout, broken stream)
  std::string reason;                   // metav1.Status reason: Expired, Gone, NotFound, TooManyRequests, ...
  std::string message;                  // the Status message, or what went wrong locally
  std::chrono::seconds retry_after{0};  // Retry-After of a 429 or 503 (0: none)
  std::string request;                  // "GET /api/v1/services?limit=500"
  std::string cause;                    // the first details.causes[].reason, e.g. ResourceVersionTooLarge

  bool is_gone() const { return code == 410; }  // resourceVersion compacted / continue expired
  // The list asked for a version the server has not reached (another API
  // server behind a balancer): client-go's isTooLargeResourceVersionError,
  // by cause or, from older servers, by a Timeout's message.
  bool is_resource_version_too_large() const {
    return cause == "ResourceVersionTooLarge" ||
           ((code == 504 || reason == "Timeout") &&
            message.find("Too large resource version") != std::string::npos);
  }
  bool is_auth() const { return code == 401 || code == 403; }
  // "GET /api/v1/services: 410 Expired: too old resource version: 5 (10)"
  std::string to_string() const;
  Error to_error() const;
};

template <typename T>
using ApiResult = Result<T, ApiError>;

}  // namespace kpx::k8s
