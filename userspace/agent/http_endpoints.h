// The agent's HTTP endpoints, as kube-proxy serves them: on the healthz
// address /healthz and /livez (ProxyHealth); on the metrics address
// /metrics (Prometheus text), /healthz (a plain "ok": the process answers),
// /configz (the effective configuration) and /proxyMode. An empty address
// serves nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/metrics.h"
#include "agent/options.h"
#include "agent/proxy_health.h"
#include "apiserver/http.h"

namespace kpx::agent {

using DatapathCounters = std::function<std::vector<std::pair<std::string, uint64_t>>()>;

// What /proxyMode prints. kube-proxy prints its mode (iptables, ipvs,
// nftables); kpx programs none of those, so a tool that reads the mode to
// find the rules must not be told one of them.
inline constexpr const char* kProxyMode = "kpx";

// kube-proxy's deprecated --healthz-port / --metrics-port applied to a bind
// address: port 0 disables the server (""); an address without a port
// gets this one; one with a port keeps it.
std::string address_from_deprecated_port(const std::string& address, int port);

// One request to the metrics address (path and query as sent).
apiserver::http::Response metrics_server_response(const apiserver::http::Request& req, const Metrics& m,
                                                  const DatapathCounters& counters,
                                                  const std::string& configz);

// What a listener that cannot bind does. kube-proxy's bindAddressHardFail:
// true exits (start fails); false (its default) logs the error and tries
// again every 5 s, serving the other listener meanwhile.
struct BindPolicy {
  bool hard_fail = true;
  std::chrono::milliseconds retry{5000};
};

class HttpEndpoints {
 public:
  // Starts the listeners given (nullopt: that server is off).
  static Result<std::unique_ptr<HttpEndpoints>> start(const std::optional<BindAddress>& healthz,
                                                      const std::optional<BindAddress>& metrics,
                                                      const ProxyHealth& health, Metrics& m,
                                                      DatapathCounters counters, std::string configz,
                                                      BindPolicy policy = {});
  ~HttpEndpoints();
  // 0 while that listener is off or not bound yet.
  uint16_t healthz_port() const;
  uint16_t metrics_port() const;
  void stop();

 private:
  struct Listener {
    const char* name;  // "healthz", "metrics"
    BindAddress addr;
    apiserver::http::Server::Handler handler;
    std::unique_ptr<apiserver::http::Server> server;
  };
  HttpEndpoints() = default;
  void retry_loop(std::chrono::milliseconds every);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  Listener healthz_{"healthz", {}, {}, {}}, metrics_{"metrics", {}, {}, {}};
  std::thread retry_;
};

}  // namespace kpx::agent
