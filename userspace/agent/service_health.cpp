#include "agent/service_health.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>

#include "log/log.h"
#include "net/endpoint.h"

namespace kpx::agent {

namespace http = apiserver::http;

namespace {

// Go's %q (strconv.Quote) of an ASCII string; names are DNS labels, the
// escapes are for whatever else an API server lets through.
std::string go_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char hex[8];
          snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
          out += hex;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string describe(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + " s" : std::to_string(d.count()) + " ms";
}

}  // namespace

http::Response service_health_response(std::string_view ns, std::string_view name, uint32_t local_endpoints,
                                       bool proxy_healthy) {
  http::Response r;
  r.code = local_endpoints != 0 && proxy_healthy ? 200 : 503;
  r.cache_control = false;
  r.headers = {{"X-Content-Type-Options", "nosniff"},
               {"X-Load-Balancing-Endpoint-Weight", std::to_string(local_endpoints)}};
  // kube-proxy prints a dedented template: tab-indented, no final newline.
  r.body = "{\n\t\"service\": {\n\t\t\"namespace\": " + go_quote(ns) + ",\n\t\t\"name\": " + go_quote(name) +
           "\n\t},\n\t\"localEndpoints\": " + std::to_string(local_endpoints) + ",\n\t\"serviceProxyHealthy\": " +
           (proxy_healthy ? "true" : "false") + "\n}";
  return r;
}

ServiceHealthServer::ServiceHealthServer(std::optional<std::vector<uint32_t>> addresses,
                                         std::function<bool()> proxy_healthy, std::chrono::milliseconds retry_period)
    : addresses_(std::move(addresses)),
      proxy_healthy_(std::move(proxy_healthy)),
      retry_period_(retry_period),
      retrier_([this](std::stop_token st) { retry(st); }) {}

ServiceHealthServer::~ServiceHealthServer() { stop(); }

void ServiceHealthServer::sync(const proxy::HealthChecks& want) {
  std::lock_guard lk(mu_);
  if (stopped_) return;
  // Closed first: a port another Service gave up in this sync is free.
  for (auto it = instances_.begin(); it != instances_.end();) {
    auto w = want.find(it->first);
    if (w != want.end() && w->second.node_port == it->second->port) {
      ++it;
      continue;
    }
    if (it->second->listening)
      log::info("closing health check node port " + std::to_string(it->second->port) + " of Service " + it->first);
    it = instances_.erase(it);  // its servers stop (and join their handlers) here
  }
  for (const auto& [key, hc] : want) {
    std::unique_ptr<Instance>& inst = instances_[key];
    if (!inst) {
      inst = std::make_unique<Instance>();
      const size_t slash = key.find('/');
      inst->namespace_ = key.substr(0, slash);
      inst->name = slash == std::string::npos ? "" : key.substr(slash + 1);
      inst->port = hc.node_port;
    }
    // Before it listens: its first answer already has the count.
    inst->local_endpoints = hc.local_endpoints;
    // A port that could not be had is tried at every sync too, as kube-proxy does.
    if (!inst->listening) listen(*inst);
  }
}

void ServiceHealthServer::listen(Instance& inst) {
  const std::vector<uint32_t> every = {htonl(INADDR_ANY)};
  std::vector<std::unique_ptr<http::Server>> servers;
  for (uint32_t addr : addresses_ ? *addresses_ : every) {
    sockaddr_storage ss{};
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(inst.port);
    sin->sin_addr.s_addr = addr;
    // The handler reads the instance: its servers stop before it goes.
    auto server = http::Server::listen(ss, sizeof(sockaddr_in), [this, &inst](const http::Request&, http::Connection& c) {
      return c.send(service_health_response(inst.namespace_, inst.name, inst.local_endpoints, proxy_healthy_()), true);
    });
    if (!server) {
      // Nothing stays open (the ones already made close with `servers`),
      // so that another owner of the port, or the next try, finds it free.
      std::string err = "health check node port " + std::to_string(inst.port) + " of Service " + inst.namespace_ +
                        "/" + inst.name + " on " + net::format_ipv4(addr) + ": " + server.error().message;
      if (err != inst.last_error)
        log::error(err + "; the load balancer sees this node as down for it; retrying every " +
                   describe(retry_period_));
      inst.last_error = std::move(err);
      return;
    }
    servers.push_back(std::move(*server));
  }
  for (auto& s : servers) s->start();
  inst.servers = std::move(servers);
  inst.listening = true;
  log::info("health check node port " + std::to_string(inst.port) + " of Service " + inst.namespace_ + "/" +
            inst.name + (inst.last_error.empty() ? ": listening" : ": listening now"));
  inst.last_error.clear();
}

void ServiceHealthServer::retry(std::stop_token stop) {
  std::unique_lock lk(mu_);
  while (!stop.stop_requested()) {
    wake_.wait_for(lk, stop, retry_period_, [] { return false; });
    if (stop.stop_requested() || stopped_) return;
    for (auto& [key, inst] : instances_)
      if (!inst->listening) listen(*inst);
  }
}

void ServiceHealthServer::stop() {
  retrier_.request_stop();
  if (retrier_.joinable()) retrier_.join();
  std::lock_guard lk(mu_);
  stopped_ = true;
  instances_.clear();
}

std::map<std::string, ServiceHealthServer::Served> ServiceHealthServer::served() const {
  std::lock_guard lk(mu_);
  std::map<std::string, Served> out;
  for (const auto& [key, inst] : instances_) out[key] = {inst->port, inst->local_endpoints, inst->listening};
  return out;
}

}  // namespace kpx::agent
