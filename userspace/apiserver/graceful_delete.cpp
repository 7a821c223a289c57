#include "apiserver/graceful_delete.h"

#include <ctime>

#include "apiserver/media.h"

namespace kpx::apiserver {

namespace {

std::optional<int64_t> parse_int64(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size() || s.find_first_not_of("0123456789", i) != std::string::npos) return std::nullopt;
  return std::stoll(s);
}

const Json* field(const Json& obj, const char* a, const char* b) {
  auto x = obj.find(a);
  if (x == obj.end() || !x->is_object()) return nullptr;
  auto y = x->find(b);
  return y == x->end() ? nullptr : &*y;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& s) {
  tm utc{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  if (!end || *end) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&utc));
}

ApiResult<DeleteOptions> parse_delete_options(const http::Request& req) {
  DeleteOptions o;
  if (req.has_query("gracePeriodSeconds")) {
    o.grace_period_seconds = parse_int64(req.query_value("gracePeriodSeconds"));
    if (!o.grace_period_seconds)
      return bad_request_status("invalid gracePeriodSeconds '" + req.query_value("gracePeriodSeconds") +
                                "': not an integer");
  }
  if (req.body.empty()) return o;
  std::string ct = media_type(req.header("content-type"));
  if (!ct.empty() && ct != "application/json") return unsupported_media_type_status(ct);
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return bad_request_status("the DeleteOptions could not be decoded");
  if (auto p = body.find("preconditions"); p != body.end() && p->is_object()) {
    o.preconditions.uid = string_at(*p, "uid");
    o.preconditions.resource_version = string_at(*p, "resourceVersion");
  }
  if (auto g = body.find("gracePeriodSeconds"); g != body.end() && !g->is_null()) {
    if (!g->is_number_integer()) return bad_request_status("DeleteOptions.gracePeriodSeconds must be an integer");
    o.grace_period_seconds = g->get<int64_t>();
  }
  return o;
}

std::optional<Json> pod_graceful_delete(const Json& pod, std::optional<int64_t> grace,
                                        std::chrono::system_clock::time_point now) {
  const Json* ts = field(pod, "metadata", "deletionTimestamp");
  if (ts && ts->is_string()) {
    // Already terminating: only a shorter grace period changes anything.
    const Json* cur = field(pod, "metadata", "deletionGracePeriodSeconds");
    int64_t current = cur && cur->is_number_integer() ? cur->get<int64_t>() : 0;
    if (current <= 0) return std::nullopt;
    if (!grace || *grace >= current) return pod;
    if (*grace <= 0) return std::nullopt;
    auto since = parse_rfc3339(ts->get<std::string>());
    Json next = pod;
    auto start = since ? *since - std::chrono::seconds(current) : now;
    next["metadata"]["deletionTimestamp"] = rfc3339(start + std::chrono::seconds(*grace));
    next["metadata"]["deletionGracePeriodSeconds"] = *grace;
    return next;
  }
  int64_t period = 0;
  if (grace) {
    period = *grace;
  } else if (const Json* t = field(pod, "spec", "terminationGracePeriodSeconds"); t && t->is_number_integer()) {
    period = t->get<int64_t>();
  }
  if (period < 0) period = 1;  // as the real Pod strategy: a negative grace is the shortest positive one
  std::string node = field(pod, "spec", "nodeName") ? string_at(pod["spec"], "nodeName") : "";
  std::string phase = field(pod, "status", "phase") ? string_at(pod["status"], "phase") : "";
  if (node.empty() || phase == "Succeeded" || phase == "Failed") period = 0;  // no kubelet to wait for
  if (period == 0) return std::nullopt;
  Json next = pod;
  next["metadata"]["deletionTimestamp"] = rfc3339(now + std::chrono::seconds(period));
  next["metadata"]["deletionGracePeriodSeconds"] = period;
  return next;
}

}  // namespace kpx::apiserver
