#include "proxy/compute.h"

#include <arpa/inet.h>

#include <algorithm>
#include <optional>

namespace kpx::proxy {

namespace {

// Why kpx leaves a whole Service alone, or nullopt when it proxies it.
std::optional<std::string> not_proxied_reason(const ServiceInfo& s, const StringPool& strings) {
  if (s.type == ServiceType::kExternalName) return "type ExternalName: a DNS alias, nothing to proxy";
  if (s.other_proxy)
    return "labelled " + std::string(k8s::kLabelServiceProxyName) + "=" + strings[s.proxy_name] + ": another proxy's";
  if (s.headless) return "headless: no clusterIP";
  return std::nullopt;
}

// The Service's IPv4 cluster IP: clusterIPs holds one per family.
std::optional<uint32_t> ipv4_cluster_ip(const ServiceInfo& s) {
  for (const IpAddr& ip : s.cluster_ips)
    if (auto a = ip.v4()) return *a;
  return std::nullopt;
}

std::optional<net::Proto> proto_of(Protocol protocol) {
  if (protocol == Protocol::kTCP) return net::Proto::kTcp;
  if (protocol == Protocol::kUDP) return net::Proto::kUdp;
  return std::nullopt;
}

std::string describe(const ServicePortInfo& p, const StringPool& strings) {
  std::string s = "port ";
  if (p.name != StringPool::kEmpty) s += "'" + strings[p.name] + "' ";
  return s + std::to_string(p.port) + "/" + to_string(p.protocol);
}

struct Candidates {
  std::vector<dataplane::Backend> ready;
  std::vector<dataplane::Backend> serving_terminating;
};

dataplane::Backend backend_of(const EndpointInfo& e, uint16_t port, const StringPool& strings) {
  dataplane::Backend b;
  b.addr = e.address;
  b.port = port;
  b.node = strings[e.node_name];
  b.zone = strings[e.zone];
  b.ready = e.is_ready();
  b.serving = e.is_serving();
  b.terminating = e.is_terminating();
  return b;
}

// The slice's endpoints for one Service port: the slice port with the same
// name and protocol gives the backend port (this is how a targetPort by
// name resolves). A slice without that port contributes nothing. Only
// endpoints on `node` when it is given.
void collect(const SliceInfo& slice, const ServicePortInfo& sp, const StringPool& strings, const std::string* node,
             Candidates& out) {
  if (slice.address_type != AddressType::kIPv4) return;  // IPv6 later; FQDN never
  auto match = std::find_if(slice.ports.begin(), slice.ports.end(), [&](const EndpointPortInfo& p) {
    return p.name == sp.name && p.protocol == sp.protocol && p.port != 0;  // names interned in one pool
  });
  if (match == slice.ports.end()) return;
  for (const EndpointInfo& e : slice.endpoints) {
    // The other addresses are fungible with the first; kube-proxy uses it alone.
    if (!e.address.v4()) continue;
    if (node && strings[e.node_name] != *node) continue;
    if (e.is_ready())
      out.ready.push_back(backend_of(e, match->port, strings));
    else if (e.is_serving() && e.is_terminating())
      out.serving_terminating.push_back(backend_of(e, match->port, strings));
  }
}

// The endpoints new connections may go to (of `node` only when given):
// the ready ones; when none is ready, kube-proxy's terminating fallback
// keeps sending them to the ones still serving while they drain, rather
// than dropping them.
std::vector<dataplane::Backend> backends_for(const Model::Slices& slices, const ServicePortInfo& sp,
                                             const StringPool& strings, const std::string* node) {
  Candidates c;
  for (const auto& [key, slice] : slices) collect(slice, sp, strings, node, c);
  std::vector<dataplane::Backend> out = c.ready.empty() ? std::move(c.serving_terminating) : std::move(c.ready);
  // The same endpoint shows up in two slices while the controller moves it.
  dataplane::normalize(out);
  return out;
}

// kube-proxy's LocalReadyEndpoints(): the ready endpoints on `node`, by
// address, since a Service's ports share its pods. Terminating ones do not
// count, even while they still serve: the load balancer should leave the
// node before they stop.
uint32_t local_ready_endpoints(const Model::Slices& slices, const StringPool& strings, const std::string& node) {
  if (node.empty()) return 0;
  std::set<uint32_t> addrs;
  for (const auto& [name, slice] : slices) {
    if (slice.address_type != AddressType::kIPv4) continue;
    // kube-proxy sees a slice's endpoints through its ports (those without a
    // number are skipped): a slice with none contributes nothing.
    if (std::none_of(slice.ports.begin(), slice.ports.end(), [](const EndpointPortInfo& p) { return p.port != 0; }))
      continue;
    for (const EndpointInfo& e : slice.endpoints) {
      auto a = e.address.v4();
      if (a && e.is_ready() && strings[e.node_name] == node) addrs.insert(*a);
    }
  }
  return static_cast<uint32_t>(addrs.size());
}

}  // namespace

namespace {

// One Service's addresses into out (skips with their reasons).
void compute_service(const Model& model, const std::string& key, const ServiceInfo& svc, const ComputeConfig& config,
                     DesiredState& out) {
  const StringPool& strings = model.strings();
  if (auto why = not_proxied_reason(svc, strings)) {
    out.skipped.push_back({key, *why});
    return;
  }
  auto vip = ipv4_cluster_ip(svc);
  if (!vip) {
    std::string ip = svc.cluster_ips.empty() ? "" : svc.cluster_ips.front().str();
    out.skipped.push_back({key, "no IPv4 clusterIP ('" + ip + "'): IPv6 is not supported yet"});
    return;
  }
  const Model::Slices& slices = model.slices_of(key);
  // Only these have one (kube-proxy's NeedsHealthCheck()).
  if (svc.type == ServiceType::kLoadBalancer && svc.external_traffic_policy == TrafficPolicy::kLocal &&
      svc.health_check_node_port != 0 && !svc.ports.empty())
    out.health_checks[key] = {svc.health_check_node_port, local_ready_endpoints(slices, strings, config.node_name)};
  for (const ServicePortInfo& sp : svc.ports) {
    auto proto = proto_of(sp.protocol);
    if (!proto) {
      out.skipped.push_back({key, describe(sp, strings) + ": " + to_string(sp.protocol) + " is not supported yet"});
      continue;
    }
    const dataplane::FrontendKey fk{net::IpAddr::from_v4(*vip), sp.port, *proto, dataplane::Scope::kClusterIP};
    auto [it, added] = out.frontends.try_emplace(fk);
    if (!added) {
      // Two Services on one address: only a broken allocator does that.
      // The first by name keeps it, so the outcome does not depend on order.
      out.skipped.push_back({key, describe(sp, strings) + ": " + net::format(net::ServiceAddr{*vip, sp.port, *proto}) +
                                      " is already " + it->second.service + "'s",
                             true});
      continue;
    }
    dataplane::Frontend& fe = it->second;
    fe.service = key;
    fe.port_name = strings[sp.name];
    // kube-proxy rejects connections to a Service without usable endpoints
    // (with traffic policy Local and endpoints elsewhere only, it drops).
    fe.flags = dataplane::kRejectEmpty;
    if (svc.session_affinity == SessionAffinity::kClientIP) {
      fe.flags |= dataplane::kAffinity;
      fe.affinity_timeout_s = static_cast<uint32_t>(std::max<int32_t>(svc.client_ip_timeout_seconds, 0));
    }
    fe.cluster = backends_for(slices, sp, strings, nullptr);
    if (!config.node_name.empty()) fe.local = backends_for(slices, sp, strings, &config.node_name);
    // The ways in from outside: the NodePort (every node address, address
    // 0), the external IPs and the load balancer's IPs, each with the same
    // backends and the external traffic policy; the ClusterIP has the
    // internal one.
    const uint32_t ext_flags = svc.external_traffic_policy == TrafficPolicy::kLocal ? uint32_t{dataplane::kLocalOnly} : 0u;
    auto add_external = [&](const dataplane::FrontendKey& k, const std::string& what, uint32_t extra) {
      auto [xit, xadded] = out.frontends.try_emplace(k, fe);
      if (!xadded) {
        out.skipped.push_back({key, describe(sp, strings) + ": " + what + " is already " + xit->second.service + "'s",
                               true});
        return;
      }
      xit->second.flags |= ext_flags | extra;
    };
    if ((svc.type == ServiceType::kNodePort || svc.type == ServiceType::kLoadBalancer) && sp.node_port != 0)
      add_external({net::IpAddr::from_v4(0), sp.node_port, *proto, dataplane::Scope::kNodePort},
                   "node port " + std::to_string(sp.node_port) + "/" + to_string(sp.protocol), 0);
    const auto& ext = svc.ext();
    for (const IpAddr& ip : ext.external_ips)
      if (auto a = ip.v4())
        add_external({ip, sp.port, *proto, dataplane::Scope::kExternalIP},
                     "external IP " + net::format(net::ServiceAddr{*a, sp.port, *proto}), 0);
    if (svc.type == ServiceType::kLoadBalancer) {
      // IPv6 ranges admit no IPv4 client: with only those, IPv4 is refused.
      std::vector<net::Ipv4Cidr> source_ranges;
      for (const Cidr& c : ext.load_balancer_source_ranges)
        if (auto a = c.addr.v4()) {
          const uint32_t mask = c.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - c.prefix_len);
          source_ranges.push_back({htonl(ntohl(*a) & mask), c.prefix_len});
        }
      std::sort(source_ranges.begin(), source_ranges.end());
      source_ranges.erase(std::unique(source_ranges.begin(), source_ranges.end()), source_ranges.end());
      const uint32_t ranges = ext.load_balancer_source_ranges.empty() ? 0u : uint32_t{dataplane::kSourceRanges};
      for (const auto& ing : ext.load_balancer_ingress) {
        auto a = ing.ip.v4();
        // ipMode Proxy: the load balancer proxies to the nodes, which must
        // not capture its IP (kube-proxy does not either).
        if (!a || ing.ip_mode == LoadBalancerIpMode::kProxy) continue;
        const dataplane::FrontendKey lk{ing.ip, sp.port, *proto, dataplane::Scope::kLoadBalancer};
        add_external(lk, "load balancer IP " + net::format(net::ServiceAddr{*a, sp.port, *proto}), ranges);
        auto lit = out.frontends.find(lk);
        if (ranges && lit != out.frontends.end() && lit->second.service == key)
          lit->second.source_ranges = source_ranges;
      }
    }
    if (svc.internal_traffic_policy == TrafficPolicy::kLocal) fe.flags |= dataplane::kLocalOnly;
  }
}

}  // namespace

DesiredState compute(const Model& model, const ComputeConfig& config) {
  DesiredState out;
  for (const auto& [key, svc] : model.services()) compute_service(model, key, svc, config, out);
  return out;
}

DesiredState compute_services(const Model& model, const std::set<std::string>& keys,
                              const ComputeConfig& config) {
  DesiredState out;
  for (const std::string& key : keys) {
    auto it = model.services().find(key);
    if (it != model.services().end()) compute_service(model, key, it->second, config, out);
  }
  return out;
}

}  // namespace kpx::proxy
