// The agent's HTTP endpoints: /healthz (as kube-proxy answers it) on the
// healthz address and /metrics (Prometheus text) on the metrics address.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent/metrics.h"
#include "agent/options.h"
#include "agent/sync_loop.h"
#include "apiserver/http.h"

namespace kpx::agent {

using DatapathCounters = std::function<std::vector<std::pair<std::string, uint64_t>>()>;

// RFC 3339 with nanoseconds, UTC, as Go's time.Time marshals.
std::string rfc3339(SyncLoop::Clock::time_point t);

// 200 or 503 and kube-proxy's JSON body.
apiserver::http::Response healthz_response(const SyncLoop::Health& h);

class HttpEndpoints {
 public:
  // Starts both listeners (the same address may serve both).
  static Result<std::unique_ptr<HttpEndpoints>> start(const BindAddress& healthz, const BindAddress& metrics,
                                                      const SyncLoop& sync, const Metrics& m,
                                                      DatapathCounters counters);
  uint16_t healthz_port() const { return healthz_->port(); }
  uint16_t metrics_port() const { return metrics_->port(); }
  void stop();

 private:
  std::unique_ptr<apiserver::http::Server> healthz_, metrics_;
};

}  // namespace kpx::agent
