// A failed API call as the caller must react to it: the HTTP code, the
// Status body's reason and message, Retry-After. ApiResult<T> carries a value
// or an ApiError (no exceptions); to_error() turns it into a kpx::Error.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "status/status.h"

namespace kpx::k8s {

struct ApiError {
  int code = 0;                         // HTTP status; 0: no answer (connection, TLS, timeout, broken stream)
  std::string reason;                   // metav1.Status reason: Expired, Gone, NotFound, TooManyRequests, ...
  std::string message;                  // the Status message, or what went wrong locally
  std::chrono::seconds retry_after{0};  // Retry-After of a 429 or 503 (0: none)
  std::string request;                  // "GET /api/v1/services?limit=500"

  bool is_gone() const { return code == 410; }  // resourceVersion compacted / continue expired
  bool is_auth() const { return code == 401 || code == 403; }
  // "GET /api/v1/services: 410 Expired: too old resource version: 5 (10)"
  std::string to_string() const;
  Error to_error() const;
};

template <typename T>
class [[nodiscard]] ApiResult {
 public:
  ApiResult(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  ApiResult(ApiError e) : v_(std::move(e)) {}   // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const ApiError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, ApiError> v_;
};

}  // namespace kpx::k8s
