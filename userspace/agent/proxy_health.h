// kube-proxy's proxier health (pkg/proxy/healthcheck/proxy_health.go): what
// /healthz and /livez answer. The proxy is healthy while it starts, and
// after, until a change queued once every source was listed has waited
// longer than the health timeout without a successful sync. /healthz also
// needs the node to be eligible for load balancer traffic: not being
// deleted, not tainted for deletion by the cluster autoscaler. /livez
// ignores the node, so a node being drained does not get its proxy killed.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

#include "apiserver/http.h"

namespace kpx::agent {

class ProxyHealth {
 public:
  using Clock = std::chrono::system_clock;
  using Now = std::function<Clock::time_point()>;

  explicit ProxyHealth(
      std::chrono::milliseconds timeout, Now now = [] { return Clock::now(); });

  // A change the next sync must program (kube-proxy's QueuedUpdate): the
  // oldest such change since the last sync is what the timeout runs from.
  void queued_update();
  // A sync programmed everything queued (kube-proxy's Updated; also called
  // when the sync loop starts).
  void updated();
  // From the Node's state (kube-proxy's SyncNode), or false once it is
  // deleted. Whether that changed it.
  bool set_node_eligible(bool eligible);

  struct State {
    bool healthy = true;  // the proxier alone (kube-proxy's IsHealthy)
    bool node_eligible = true;
    Clock::time_point last_updated{}, current_time{};
  };
  State state() const;

 private:
  const std::chrono::milliseconds timeout_;
  const Now now_;
  mutable std::mutex mu_;
  std::optional<Clock::time_point> last_updated_, oldest_pending_;
  bool node_eligible_ = true;  // until a Node event says otherwise, as kube-proxy starts
};

// kube-proxy's rule for a Node object: not eligible with a deletionTimestamp
// or the ToBeDeletedByClusterAutoscaler taint.
bool node_eligible(const nlohmann::json& node);

// RFC 3339 with nanoseconds, UTC.
std::string rfc3339(ProxyHealth::Clock::time_point t);

// 200 or 503 with kube-proxy's headers and JSON body; as kube-proxy does, a
// healthy answer reports lastUpdated as the current time.
apiserver::http::Response healthz_response(const ProxyHealth::State& s);
apiserver::http::Response livez_response(const ProxyHealth::State& s);

}  // namespace kpx::agent
