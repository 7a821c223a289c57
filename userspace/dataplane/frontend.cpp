#include "dataplane/frontend.h"

#include <algorithm>

namespace kpx::dataplane {

const char* to_string(Scope s) {
  switch (s) {
    case Scope::kClusterIP: return "ClusterIP";
    case Scope::kNodePort: return "NodePort";
    case Scope::kExternalIP: return "ExternalIP";
    case Scope::kLoadBalancer: return "LoadBalancer";
  }
  return "?";
}

std::string format(const FrontendKey& k) {
  return k.addr.str() + ":" + std::to_string(k.port) + "/" + net::proto_name(k.proto) + " (" + to_string(k.scope) +
         ")";
}

FrontendKey cluster_ip_key(const net::ServiceAddr& svc) {
  return {net::IpAddr::from_v4(svc.addr_be), svc.port, svc.proto, Scope::kClusterIP};
}

Backend backend(const net::BackendAddr& b) {
  Backend out;
  out.addr = net::IpAddr::from_v4(b.addr_be);
  out.port = b.port;
  return out;
}

Frontend frontend_of(std::vector<net::BackendAddr> backends, std::string service) {
  Frontend f;
  f.service = std::move(service);
  for (const auto& b : backends) f.cluster.push_back(backend(b));
  normalize(f.cluster);
  return f;
}

FrontendTable frontends_of(const ServiceTable& t) {
  FrontendTable out;
  for (const auto& [svc, backends] : t) out.emplace(cluster_ip_key(svc), frontend_of(backends));
  return out;
}

FrontendDelta frontends_of(const ServiceDelta& d) {
  FrontendDelta out;
  for (const auto& [svc, backends] : d)
    out.emplace(cluster_ip_key(svc), backends ? std::optional<Frontend>(frontend_of(*backends)) : std::nullopt);
  return out;
}

void normalize(std::vector<Backend>& b) {
  std::stable_sort(b.begin(), b.end(),
                   [](const Backend& x, const Backend& y) { return std::tie(x.addr, x.port) < std::tie(y.addr, y.port); });
  b.erase(std::unique(b.begin(), b.end(),
                      [](const Backend& x, const Backend& y) { return x.addr == y.addr && x.port == y.port; }),
          b.end());
}

}  // namespace kpx::dataplane
