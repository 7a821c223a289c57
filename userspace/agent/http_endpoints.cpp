#include "agent/http_endpoints.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace kpx::agent {

namespace http = apiserver::http;

std::string rfc3339(SyncLoop::Clock::time_point t) {
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

http::Response healthz_response(const SyncLoop::Health& h) {
  http::Response r;
  r.code = h.healthy ? 200 : 503;
  nlohmann::json body = {{"lastUpdated", h.last_updated == SyncLoop::Clock::time_point{} ? "" : rfc3339(h.last_updated)},
                         {"currentTime", rfc3339(h.current_time)},
                         {"nodeEligible", true}};
  r.body = body.dump();
  return r;
}

namespace {

Result<std::unique_ptr<http::Server>> listen_on(const BindAddress& b, http::Server::Handler h) {
  sockaddr_storage ss{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(b.port);
  if (b.host.empty()) sin->sin_addr.s_addr = htonl(INADDR_ANY);
  else inet_pton(AF_INET, b.host.c_str(), &sin->sin_addr);
  auto server = http::Server::listen(ss, sizeof(sockaddr_in), std::move(h));
  if (server) (*server)->start();
  return server;
}

http::Response not_found() {
  http::Response r;
  r.code = 404;
  r.content_type = "text/plain";
  r.body = "404 page not found\n";
  return r;
}

}  // namespace

Result<std::unique_ptr<HttpEndpoints>> HttpEndpoints::start(const BindAddress& healthz, const BindAddress& metrics,
                                                            const SyncLoop& sync, const Metrics& m,
                                                            DatapathCounters counters) {
  auto ep = std::unique_ptr<HttpEndpoints>(new HttpEndpoints());
  auto hz = listen_on(healthz, [&sync](const http::Request& req, http::Connection& c) {
    if (req.path != "/healthz" && req.path != "/livez") return c.send(not_found(), true);
    return c.send(healthz_response(sync.health()), true);
  });
  if (!hz) return Error{hz.error().kind, "healthz listener: " + hz.error().message};
  ep->healthz_ = std::move(*hz);
  auto mx = listen_on(metrics, [&sync, &m, counters](const http::Request& req, http::Connection& c) {
    if (req.path == "/healthz") return c.send(healthz_response(sync.health()), true);
    if (req.path != "/metrics") return c.send(not_found(), true);
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = m.render(counters ? counters() : std::vector<std::pair<std::string, uint64_t>>{});
    return c.send(r, true);
  });
  if (!mx) return Error{mx.error().kind, "metrics listener: " + mx.error().message};
  ep->metrics_ = std::move(*mx);
  return ep;
}

void HttpEndpoints::stop() {
  if (healthz_) healthz_->stop();
  if (metrics_) metrics_->stop();
}

}  // namespace kpx::agent
