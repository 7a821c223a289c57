#include "agent/http_endpoints.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace kpx::agent {

namespace http = apiserver::http;

std::string address_from_deprecated_port(const std::string& address, int port) {
  if (port == 0) return "";
  if (parse_bind_address(address).ok()) return address;
  in_addr a{};
  if (inet_pton(AF_INET, address.c_str(), &a) != 1) return address;  // left to the address's own check
  return address + ":" + std::to_string(port);
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

// As a plain Go handler answers: no Cache-Control, nosniff.
http::Response plain(int code, std::string content_type, std::string body) {
  http::Response r;
  r.code = code;
  r.content_type = std::move(content_type);
  r.headers = {{"X-Content-Type-Options", "nosniff"}};
  r.cache_control = false;
  r.body = std::move(body);
  return r;
}

http::Response not_found() { return plain(404, "text/plain; charset=utf-8", "404 page not found\n"); }

}  // namespace

http::Response metrics_server_response(const http::Request& req, const Metrics& m,
                                       const DatapathCounters& counters, const std::string& configz) {
  // component-base's healthz with its only check, ping: the process answers.
  if (req.path == "/healthz")
    return plain(200, "text/plain; charset=utf-8",
                 req.has_query("verbose") ? "[+]ping ok\nhealthz check passed\n" : "ok");
  if (req.path == "/healthz/ping") return plain(200, "text/plain; charset=utf-8", "ok");
  if (req.path == "/proxyMode") return plain(200, "text/plain; charset=utf-8", kProxyMode);
  if (req.path == "/configz") return plain(200, "application/json", configz);
  if (req.path != "/metrics") return not_found();
  http::Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = m.render(counters ? counters() : std::vector<std::pair<std::string, uint64_t>>{});
  return r;
}

Result<std::unique_ptr<HttpEndpoints>> HttpEndpoints::start(const std::optional<BindAddress>& healthz,
                                                            const std::optional<BindAddress>& metrics,
                                                            const ProxyHealth& health, Metrics& m,
                                                            DatapathCounters counters, std::string configz) {
  auto ep = std::unique_ptr<HttpEndpoints>(new HttpEndpoints());
  if (healthz) {
    auto hz = listen_on(*healthz, [&health, &m](const http::Request& req, http::Connection& c) {
      if (req.path == "/healthz") {
        auto r = healthz_response(health.state());
        m.healthz_answers.inc(r.code);
        return c.send(r, true);
      }
      if (req.path == "/livez") {
        auto r = livez_response(health.state());
        m.livez_answers.inc(r.code);
        return c.send(r, true);
      }
      return c.send(not_found(), true);
    });
    if (!hz) return Error{hz.error().kind, "healthz listener: " + hz.error().message};
    ep->healthz_ = std::move(*hz);
  }
  if (metrics) {
    auto mx = listen_on(*metrics, [&m, counters, configz = std::move(configz)](const http::Request& req,
                                                                               http::Connection& c) {
      return c.send(metrics_server_response(req, m, counters, configz), true);
    });
    if (!mx) return Error{mx.error().kind, "metrics listener: " + mx.error().message};
    ep->metrics_ = std::move(*mx);
  }
  return ep;
}

void HttpEndpoints::stop() {
  if (healthz_) healthz_->stop();
  if (metrics_) metrics_->stop();
}

}  // namespace kpx::agent
