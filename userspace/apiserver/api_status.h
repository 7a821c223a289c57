// The metav1.Status answers of the API server: every non-2xx response carries
// one, and ERROR watch events wrap one. ApiResult<T> carries either a value or
// such a Status between the server's own modules (no exceptions).
#pragma once

#include "status/status.h"

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>

namespace kpx::apiserver {

// Objects keep the order their fields were written in, as the real server's
// serializer does (kind, apiVersion, metadata, spec, status).
using Json = nlohmann::ordered_json;

struct ApiStatus {
  int code = 500;
  std::string reason;  // metav1.StatusReason: NotFound, AlreadyExists, Conflict, Expired, ...
  std::string message;
  Json details;           // null or {"name":..,"group":..,"kind":..,"retryAfterSeconds":..}
  int retry_after_s = 0;  // > 0: also sent as the Retry-After header
};

// Reading API objects that may lack any field or hold the wrong type
// (Json::value() and const operator[] throw or assert there). Templates:
// they serve the server's ordered Json and the client's plain json alike.
// obj[key] when obj is an object holding key, else null.
template <typename J>
const J& member(const J& obj, const char* key) {
  static const J kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}
// obj[key] when it is a string, else "".
template <typename J>
std::string string_at(const J& obj, const char* key) {
  const J& v = member(obj, key);
  return v.is_string() ? v.template get<std::string>() : "";
}
// Compact JSON text; invalid UTF-8 (from a URL, say) is replaced, not thrown on.
std::string to_text(const Json& j);

// {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",...}
Json status_json(const ApiStatus& s);

// Plain Status errors by reason. `resource` is the qualified resource name as
// the real server prints it ("services", "endpointslices.discovery.k8s.io").
ApiStatus not_found_status(const std::string& resource, const std::string& group, const std::string& name);
ApiStatus already_exists_status(const std::string& resource, const std::string& group,
                                const std::string& name);
ApiStatus conflict_status(const std::string& resource, const std::string& group, const std::string& name,
                          const std::string& why);
ApiStatus bad_request_status(std::string message);
ApiStatus invalid_status(const std::string& kind, const std::string& name, std::string field_error);
ApiStatus expired_status(std::string message);  // 410, reason Expired
ApiStatus gone_status(std::string message);     // 410, reason Gone
ApiStatus method_not_allowed_status();
ApiStatus path_not_found_status();
ApiStatus unsupported_media_type_status(const std::string& content_type);
ApiStatus not_acceptable_status();
ApiStatus too_large_status();
// 504 Timeout with cause ResourceVersionTooLarge: a list at a version the
// server has not reached.
ApiStatus too_large_resource_version_status(uint64_t wanted, uint64_t current);
ApiStatus internal_error_status(std::string message);
// An answer for an arbitrary code, as fault injection makes them (429 and
// 503 get Retry-After when retry_after_s > 0).
ApiStatus status_for_code(int code, int retry_after_s);

template <typename T>
using ApiResult = Result<T, ApiStatus>;  // .error() is the Status to answer with

}  // namespace kpx::apiserver
