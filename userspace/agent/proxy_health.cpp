#include "agent/proxy_health.h"

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

namespace kpx::agent {

namespace http = apiserver::http;

ProxyHealth::ProxyHealth(std::chrono::milliseconds timeout, Now now)
    : timeout_(timeout), now_(std::move(now)) {}

void ProxyHealth::queued_update() {
  std::lock_guard lk(mu_);
  if (!oldest_pending_) oldest_pending_ = now_();
}

void ProxyHealth::updated() {
  std::lock_guard lk(mu_);
  oldest_pending_.reset();
  last_updated_ = now_();
}

bool ProxyHealth::set_node_eligible(bool eligible) {
  std::lock_guard lk(mu_);
  return std::exchange(node_eligible_, eligible) != eligible;
}

ProxyHealth::State ProxyHealth::state() const {
  std::lock_guard lk(mu_);
  State s;
  s.current_time = now_();
  s.node_eligible = node_eligible_;
  // kube-proxy judges only a proxier that reported once; one never updated
  // counts as starting, whatever is queued.
  if (last_updated_) {
    s.last_updated = *last_updated_;
    s.healthy = !oldest_pending_ || s.current_time - *oldest_pending_ < timeout_;
  }
  return s;
}

bool node_eligible(const nlohmann::json& node) {
  if (!node.is_object()) return true;
  auto md = node.find("metadata");
  if (md != node.end() && md->is_object()) {
    auto dt = md->find("deletionTimestamp");
    if (dt != md->end() && dt->is_string() && !dt->get<std::string>().empty()) return false;
  }
  auto spec = node.find("spec");
  if (spec == node.end() || !spec->is_object()) return true;
  auto taints = spec->find("taints");
  if (taints == spec->end() || !taints->is_array()) return true;
  for (const auto& t : *taints)
    if (t.is_object() && t.value("key", "") == "ToBeDeletedByClusterAutoscaler") return false;
  return true;
}

std::string rfc3339(ProxyHealth::Clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ns / 1000000000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  char out[96];
  snprintf(out, sizeof out, "%s.%09lldZ", buf, static_cast<long long>(ns % 1000000000));
  return out;
}

namespace {

http::Response health_answer(bool healthy, const ProxyHealth::State& s, const std::string& extra) {
  http::Response r;
  r.code = healthy ? 200 : 503;
  r.headers = {{"X-Content-Type-Options", "nosniff"}};
  r.cache_control = false;
  const auto last = healthy ? s.current_time : s.last_updated;
  // kube-proxy's layout, spaces included.
  r.body = "{\"lastUpdated\": " + nlohmann::json(rfc3339(last)).dump() +
           ",\"currentTime\": " + nlohmann::json(rfc3339(s.current_time)).dump() + extra + "}";
  return r;
}

}  // namespace

http::Response healthz_response(const ProxyHealth::State& s) {
  return health_answer(s.healthy && s.node_eligible, s,
                       std::string(", \"nodeEligible\": ") + (s.node_eligible ? "true" : "false"));
}

http::Response livez_response(const ProxyHealth::State& s) { return health_answer(s.healthy, s, ""); }

}  // namespace kpx::agent
