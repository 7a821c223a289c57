#include "apiserver/faults.h"

#include <thread>

#include "apiserver/media.h"

namespace kpx::apiserver {

namespace {

// A non-negative decimal query parameter, or fallback when absent; nullopt
// when present but not a number.
std::optional<long> number_param(const http::Request& req, const std::string& key, long fallback) {
  if (!req.has_query(key)) return fallback;
  std::string v = req.query_value(key);
  if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stol(v);
}

http::Response bad_param(const std::string& key) {
  return status_response(bad_request_status("query parameter '" + key + "' must be a non-negative integer"));
}

constexpr size_t kMaxRequests = 1000;

}  // namespace

void Faults::record(const http::Request& req) {
  Json query = Json::object();
  for (const auto& [k, v] : req.query) query[k] = v;
  requests_.push_back({{"method", req.method}, {"path", req.path}, {"query", std::move(query)}});
  if (requests_.size() > kMaxRequests) requests_.pop_front();
}

std::optional<http::Response> Faults::before_request(const http::Request& req) {
  std::chrono::milliseconds delay;
  std::optional<ApiStatus> injected;
  {
    std::lock_guard lk(mu_);
    record(req);
    delay = delay_;
    for (auto it = injections_.begin(); it != injections_.end(); ++it) {
      if (req.path.rfind(it->path_prefix, 0) != 0) continue;
      injected = status_for_code(it->code, it->retry_after_s);
      if (--it->remaining <= 0) injections_.erase(it);
      break;
    }
  }
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
  if (injected) return status_response(*injected);
  return std::nullopt;
}

void Faults::set_delay(std::chrono::milliseconds d) {
  std::lock_guard lk(mu_);
  delay_ = d;
}

void Faults::inject(int code, int count, const std::string& path_prefix, int retry_after_s) {
  std::lock_guard lk(mu_);
  if (count > 0) injections_.push_back(Injection{code, count, path_prefix, retry_after_s});
}

void Faults::clear() {
  std::lock_guard lk(mu_);
  delay_ = std::chrono::milliseconds(0);
  injections_.clear();
}

Json Faults::state() const {
  std::lock_guard lk(mu_);
  Json inj = Json::array();
  for (const auto& i : injections_)
    inj.push_back({{"code", i.code},
                   {"remaining", i.remaining},
                   {"pathPrefix", i.path_prefix},
                   {"retryAfterSeconds", i.retry_after_s}});
  return {{"delayMs", delay_.count()},
          {"injections", inj},
          {"openWatches", store_.open_watches()},
          {"resourceVersion", std::to_string(store_.current_rv())},
          {"compactedResourceVersion", std::to_string(store_.compacted_rv())},
          {"compactionWindow", store_.compaction_window()}};
}

http::Response Faults::handle(const http::Request& req) {
  std::string path = req.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::string action = path.size() > 12 ? path.substr(12) : "";  // after "/kpx/faults/"
  if (path == "/kpx/faults") {
    if (req.method == "GET") return json_response(200, state());
    if (req.method == "DELETE") {
      clear();
      return json_response(200, state());
    }
    return status_response(method_not_allowed_status());
  }
  if (path.rfind("/kpx/faults/", 0) != 0) return status_response(path_not_found_status());
  if (action == "requests" && req.method == "GET") {
    std::lock_guard lk(mu_);
    Json list = Json::array();
    for (const auto& r : requests_) list.push_back(r);
    return json_response(200, {{"requests", std::move(list)}});
  }
  if (req.method != "POST") return status_response(method_not_allowed_status());

  if (action == "drop-watches") {
    int open = store_.open_watches();
    store_.drop_watches();
    return json_response(200, {{"dropped", open}});
  }
  if (action == "delay") {
    auto ms = number_param(req, "ms", 0);
    if (!ms) return bad_param("ms");
    set_delay(std::chrono::milliseconds(*ms));
    return json_response(200, state());
  }
  if (action == "respond") {
    auto code = number_param(req, "code", 0);
    auto count = number_param(req, "count", 1);
    auto retry = number_param(req, "retryAfter", 0);
    if (!code || *code < 400 || *code > 599)
      return status_response(
          bad_request_status("query parameter 'code' must be an HTTP error code (400-599)"));
    if (!count) return bad_param("count");
    if (!retry) return bad_param("retryAfter");
    inject(static_cast<int>(*code), static_cast<int>(*count), req.query_value("pathPrefix"),
           static_cast<int>(*retry));
    return json_response(200, state());
  }
  if (action == "compact") {
    std::optional<uint64_t> upto;
    if (req.has_query("resourceVersion")) {
      auto rv = number_param(req, "resourceVersion", 0);
      if (!rv) return bad_param("resourceVersion");
      upto = static_cast<uint64_t>(*rv);
    }
    store_.compact(upto);
    std::string expire = req.query_value("expireWatches");
    if (expire == "true" || expire == "1") store_.expire_watches();
    return json_response(200, state());
  }
  if (action == "expire-continue") {
    tokens_.expire_all();
    return json_response(200, state());
  }
  if (action == "compaction-window") {
    auto n = number_param(req, "events", 0);
    if (!n || *n < 1)
      return status_response(bad_request_status("query parameter 'events' must be at least 1"));
    store_.set_compaction_window(static_cast<size_t>(*n));
    return json_response(200, state());
  }
  return status_response(path_not_found_status());
}

}  // namespace kpx::apiserver
