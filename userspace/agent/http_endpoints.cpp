#include "agent/http_endpoints.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "log/log.h"

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
                                                            DatapathCounters counters, std::string configz,
                                                            BindPolicy policy) {
  auto ep = std::unique_ptr<HttpEndpoints>(new HttpEndpoints());
  if (healthz) {
    ep->healthz_.addr = *healthz;
    ep->healthz_.handler = [&health, &m](const http::Request& req, http::Connection& c) {
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
    };
  }
  if (metrics) {
    ep->metrics_.addr = *metrics;
    ep->metrics_.handler = [&m, counters, configz = std::move(configz)](const http::Request& req,
                                                                        http::Connection& c) {
      return c.send(metrics_server_response(req, m, counters, configz), true);
    };
  }
  bool pending = false;
  for (Listener* l : {&ep->healthz_, &ep->metrics_}) {
    if (!l->handler) continue;
    auto server = listen_on(l->addr, l->handler);
    if (server) {
      l->server = std::move(*server);
      continue;
    }
    const std::string what = std::string(l->name) + " listener: " + server.error().message;
    if (policy.hard_fail) return Error{server.error().kind, what + " (bindAddressHardFail)"};
    log::error(what + "; trying again every " + std::to_string(policy.retry.count()) +
               " ms (bindAddressHardFail is false)");
    pending = true;
  }
  if (pending) {
    HttpEndpoints* self = ep.get();
    ep->retry_ = std::thread([self, every = policy.retry] { self->retry_loop(every); });
  }
  return ep;
}

void HttpEndpoints::retry_loop(std::chrono::milliseconds every) {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, every, [&] { return stopping_; });
    if (stopping_) return;
    bool pending = false;
    for (Listener* l : {&healthz_, &metrics_}) {
      if (!l->handler || l->server) continue;
      auto server = listen_on(l->addr, l->handler);
      if (!server) {
        pending = true;
        continue;
      }
      l->server = std::move(*server);
      log::info(std::string(l->name) + " listener bound at last, on port " + std::to_string(l->server->port()));
    }
    if (!pending) return;
  }
}

uint16_t HttpEndpoints::healthz_port() const {
  std::lock_guard lock(mu_);
  return healthz_.server ? healthz_.server->port() : 0;
}

uint16_t HttpEndpoints::metrics_port() const {
  std::lock_guard lock(mu_);
  return metrics_.server ? metrics_.server->port() : 0;
}

void HttpEndpoints::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (retry_.joinable()) retry_.join();
  std::lock_guard lock(mu_);
  if (healthz_.server) healthz_.server->stop();
  if (metrics_.server) metrics_.server->stop();
}

HttpEndpoints::~HttpEndpoints() { stop(); }

}  // namespace kpx::agent
