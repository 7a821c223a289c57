#include "proxy/compute.h"

#include <algorithm>
#include <optional>

namespace kpx::proxy {

namespace {

// Why kpx leaves a whole Service alone, or nullopt when it proxies it.
std::optional<std::string> not_proxied_reason(const k8s::Service& s) {
  if (s.type == "ExternalName") return "type ExternalName: a DNS alias, nothing to proxy";
  if (auto owner = s.metadata.label(k8s::kLabelServiceProxyName))
    return "labelled " + std::string(k8s::kLabelServiceProxyName) + "=" + *owner + ": another proxy's";
  if (s.cluster_ip.empty() || s.cluster_ip == "None") return "headless: no clusterIP";
  return std::nullopt;
}

// The Service's IPv4 cluster IP: clusterIPs holds one per family (the first
// is clusterIP), older objects only clusterIP.
std::optional<uint32_t> ipv4_cluster_ip(const k8s::Service& s) {
  const std::vector<std::string> only_one{s.cluster_ip};
  for (const std::string& ip : s.cluster_ips.empty() ? only_one : s.cluster_ips)
    if (auto a = net::parse_ipv4(ip)) return *a;
  return std::nullopt;
}

std::optional<net::Proto> proto_of(const std::string& protocol) {
  if (protocol == "TCP") return net::Proto::kTcp;
  if (protocol == "UDP") return net::Proto::kUdp;
  return std::nullopt;
}

std::string describe(const k8s::ServicePort& p) {
  std::string s = "port ";
  if (!p.name.empty()) s += "'" + p.name + "' ";
  return s + std::to_string(p.port) + "/" + p.protocol;
}

struct Candidates {
  std::vector<net::BackendAddr> ready;
  std::vector<net::BackendAddr> serving_terminating;
};

// The slice's endpoints for one Service port: the slice port with the same
// name and protocol gives the backend port (this is how a targetPort by
// name resolves). A slice without that port contributes nothing.
void collect(const k8s::EndpointSlice& slice, const k8s::ServicePort& sp, Candidates& out) {
  if (slice.address_type != "IPv4") return;  // IPv6 later; FQDN never
  auto match = std::find_if(slice.ports.begin(), slice.ports.end(), [&](const k8s::EndpointPort& p) {
    return p.name == sp.name && p.protocol == sp.protocol && p.port.has_value();
  });
  if (match == slice.ports.end()) return;
  auto port = static_cast<uint16_t>(*match->port);  // 1..65535: validated
  for (const k8s::Endpoint& e : slice.endpoints) {
    // The other addresses are fungible with the first; kube-proxy uses it alone.
    if (e.addresses.empty()) continue;
    auto ip = net::parse_ipv4(e.addresses.front());
    if (!ip) continue;
    net::BackendAddr b{*ip, port};
    if (e.conditions.is_ready())
      out.ready.push_back(b);
    else if (e.conditions.is_serving() && e.conditions.is_terminating())
      out.serving_terminating.push_back(b);
  }
}

std::vector<net::BackendAddr> backends_for(const Model::Slices& slices, const k8s::ServicePort& sp) {
  Candidates c;
  for (const auto& [key, slice] : slices) collect(slice, sp, c);
  // Terminating fallback (as kube-proxy): when no endpoint is ready, keep
  // sending new connections to the ones still serving while they drain,
  // rather than dropping them.
  std::vector<net::BackendAddr> out = c.ready.empty() ? std::move(c.serving_terminating) : std::move(c.ready);
  // The same endpoint shows up in two slices while the controller moves it.
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

namespace {

// One Service's addresses into out (skips with their reasons).
void compute_service(const Model& model, const std::string& key, const k8s::Service& svc, DesiredState& out) {
  if (auto why = not_proxied_reason(svc)) {
    out.skipped.push_back({key, *why});
    return;
  }
  auto vip = ipv4_cluster_ip(svc);
  if (!vip) {
    out.skipped.push_back({key, "no IPv4 clusterIP ('" + svc.cluster_ip + "'): IPv6 is not supported yet"});
    return;
  }
  const Model::Slices& slices = model.slices_of(key);
  for (const k8s::ServicePort& sp : svc.ports) {
    auto proto = proto_of(sp.protocol);
    if (!proto) {
      out.skipped.push_back({key, describe(sp) + ": " + sp.protocol + " is not supported yet"});
      continue;
    }
    net::ServiceAddr addr{*vip, static_cast<uint16_t>(sp.port), *proto};
    auto [it, added] = out.services.try_emplace(addr, ServiceBackends{key, sp.name, {}});
    if (!added) {
      // Two Services on one address: only a broken allocator does that.
      // The first by name keeps it, so the outcome does not depend on order.
      out.skipped.push_back(
          {key, describe(sp) + ": " + net::format(addr) + " is already " + it->second.service + "'s", true});
      continue;
    }
    it->second.backends = backends_for(slices, sp);
  }
}

}  // namespace

DesiredState compute(const Model& model, const ComputeConfig& /*config*/) {
  DesiredState out;
  for (const auto& [key, svc] : model.services()) compute_service(model, key, svc, out);
  return out;
}

DesiredState compute_services(const Model& model, const std::set<std::string>& keys,
                              const ComputeConfig& /*config*/) {
  DesiredState out;
  for (const std::string& key : keys) {
    auto it = model.services().find(key);
    if (it != model.services().end()) compute_service(model, key, it->second, out);
  }
  return out;
}

}  // namespace kpx::proxy
