#include "apiserver/api_status.h"

namespace kpx::apiserver {

namespace {

ApiStatus make(int code, std::string reason, std::string message) {
  return ApiStatus{code, std::move(reason), std::move(message), Json(), 0};
}

Json name_details(const std::string& resource, const std::string& group, const std::string& name) {
  Json d = Json::object();
  d["name"] = name;
  if (!group.empty()) d["group"] = group;
  // The real server names the resource (plural) in details.kind here.
  d["kind"] = resource.substr(0, resource.find('.'));
  return d;
}

}  // namespace

std::string to_text(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json status_json(const ApiStatus& s) {
  Json j = Json::object();
  j["kind"] = "Status";
  j["apiVersion"] = "v1";
  j["metadata"] = Json::object();
  j["status"] = "Failure";
  j["message"] = s.message;
  if (!s.reason.empty()) j["reason"] = s.reason;
  if (!s.details.is_null()) j["details"] = s.details;
  j["code"] = s.code;
  return j;
}

ApiStatus not_found_status(const std::string& resource, const std::string& group, const std::string& name) {
  ApiStatus s = make(404, "NotFound", resource + " \"" + name + "\" not found");
  s.details = name_details(resource, group, name);
  return s;
}

ApiStatus already_exists_status(const std::string& resource, const std::string& group,
                                const std::string& name) {
  ApiStatus s = make(409, "AlreadyExists", resource + " \"" + name + "\" already exists");
  s.details = name_details(resource, group, name);
  return s;
}

ApiStatus conflict_status(const std::string& resource, const std::string& group, const std::string& name,
                          const std::string& why) {
  ApiStatus s =
      make(409, "Conflict", "Operation cannot be fulfilled on " + resource + " \"" + name + "\": " + why);
  s.details = name_details(resource, group, name);
  return s;
}

ApiStatus bad_request_status(std::string message) { return make(400, "BadRequest", std::move(message)); }

ApiStatus invalid_status(const std::string& kind, const std::string& name, std::string field_error) {
  ApiStatus s = make(422, "Invalid", kind + " \"" + name + "\" is invalid: " + field_error);
  s.details = {{"name", name}, {"kind", kind}, {"causes", Json::array({{{"message", field_error}}})}};
  return s;
}

ApiStatus expired_status(std::string message) { return make(410, "Expired", std::move(message)); }
ApiStatus gone_status(std::string message) { return make(410, "Gone", std::move(message)); }

ApiStatus method_not_allowed_status() {
  return make(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
}

ApiStatus path_not_found_status() {
  ApiStatus s = make(404, "NotFound", "the server could not find the requested resource");
  s.details = Json::object();
  return s;
}

ApiStatus unsupported_media_type_status(const std::string& content_type) {
  return make(415, "UnsupportedMediaType",
              "the body of the request was in an unknown format (" + content_type +
                  ") - accepted media types include: application/json, application/merge-patch+json, "
                  "application/json-patch+json");
}

ApiStatus not_acceptable_status() {
  return make(406, "NotAcceptable",
              "the server was unable to respond with a content type that the client supports (accepted: "
              "application/json)");
}

ApiStatus too_large_status() {
  return make(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728");
}

ApiStatus too_large_resource_version_status(uint64_t wanted, uint64_t current) {
  ApiStatus s =
      make(504, "Timeout",
           "Too large resource version: " + std::to_string(wanted) + ", current: " + std::to_string(current));
  s.details = {
      {"causes",
       Json::array({{{"reason", "ResourceVersionTooLarge"}, {"message", "Too large resource version"}}})},
      {"retryAfterSeconds", 1}};
  return s;
}

ApiStatus internal_error_status(std::string message) {
  ApiStatus s = make(500, "InternalError", "Internal error occurred: " + message);
  s.details = {{"causes", Json::array({{{"message", message}}})}};
  return s;
}

ApiStatus status_for_code(int code, int retry_after_s) {
  ApiStatus s;
  switch (code) {
    case 400:
      s = make(code, "BadRequest", "injected bad request");
      break;
    case 401:
      s = make(code, "Unauthorized", "Unauthorized");
      break;
    case 403:
      s = make(code, "Forbidden", "forbidden: injected fault");
      break;
    case 404:
      s = path_not_found_status();
      break;
    case 409:
      s = make(code, "Conflict", "injected conflict");
      break;
    case 410:
      s = expired_status("too old resource version: injected fault");
      break;
    case 429:
      s = make(code, "TooManyRequests", "Too many requests, please try again later.");
      break;
    case 500:
      s = internal_error_status("injected fault");
      break;
    case 503:
      s = make(code, "ServiceUnavailable", "the server is currently unable to handle the request");
      break;
    case 504:
      s = make(code, "Timeout", "the server was unable to return a response in the time allotted");
      break;
    default:
      s = make(code, "", "injected fault (HTTP " + std::to_string(code) + ")");
      break;
  }
  if ((code == 429 || code == 503) && retry_after_s > 0) {
    s.retry_after_s = retry_after_s;
    if (!s.details.is_object()) s.details = Json::object();
    s.details["retryAfterSeconds"] = retry_after_s;
  }
  return s;
}

}  // namespace kpx::apiserver
