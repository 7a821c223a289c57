// kube-proxy's service health checks (pkg/proxy/healthcheck/service_health.go):
// each LoadBalancer Service with externalTrafficPolicy Local gets an HTTP
// listener on its healthCheckNodePort, on every NodePort address, that tells
// the cloud's load balancer whether this node has ready endpoints of it (200)
// or not (503), so that it sends the Service's traffic only to nodes that
// keep it. Listeners follow the synced Services; counts change in place.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "apiserver/http.h"
#include "proxy/compute.h"

namespace kpx::agent {

// kube-proxy's answer to any request: 200 when the node has local endpoints
// and the proxy is healthy, else 503; its headers and its JSON body, byte
// for byte.
apiserver::http::Response service_health_response(std::string_view ns, std::string_view name,
                                                  uint32_t local_endpoints, bool proxy_healthy);

class ServiceHealthServer {
 public:
  // addresses: the NodePort addresses (network byte order) to listen on;
  // nullopt: every address (0.0.0.0), as with --nodeport-addresses unset.
  // proxy_healthy is asked at each request (kube-proxy's proxier health).
  // A port that cannot be had is tried again every retry_period.
  ServiceHealthServer(std::optional<std::vector<uint32_t>> addresses, std::function<bool()> proxy_healthy,
                      std::chrono::milliseconds retry_period = std::chrono::seconds(5));
  ~ServiceHealthServer();
  ServiceHealthServer(const ServiceHealthServer&) = delete;
  ServiceHealthServer& operator=(const ServiceHealthServer&) = delete;

  // Serve exactly `want`: the listeners of Services gone (or moved to
  // another port) close, new ones open, the others keep theirs and take
  // the new counts.
  void sync(const proxy::HealthChecks& want);
  // Close every listener and stop retrying. Idempotent.
  void stop();

  struct Served {
    uint16_t port = 0;
    uint32_t local_endpoints = 0;
    bool listening = false;  // false while its port could not be had
  };
  std::map<std::string, Served> served() const;  // by "namespace/name"

 private:
  struct Instance {
    std::string namespace_, name;
    uint16_t port = 0;
    std::atomic<uint32_t> local_endpoints{0};
    bool listening = false;
    std::string last_error;  // logged once, not at every retry
    // Last: stopped (their handlers joined) before the rest goes.
    std::vector<std::unique_ptr<apiserver::http::Server>> servers;
  };

  // On every address or on none (kube-proxy's listenAndServeAll).
  void listen(Instance& inst);
  void retry(std::stop_token stop);

  const std::optional<std::vector<uint32_t>> addresses_;
  const std::function<bool()> proxy_healthy_;
  const std::chrono::milliseconds retry_period_;
  mutable std::mutex mu_;
  std::condition_variable_any wake_;
  std::map<std::string, std::unique_ptr<Instance>> instances_;  // under mu_
  bool stopped_ = false;
  std::jthread retrier_;  // last: stops before the rest goes
};

}  // namespace kpx::agent
