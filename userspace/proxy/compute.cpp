#include "proxy/compute.h"

#include <arpa/inet.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "proxy/topology.h"

namespace kpx::proxy {

namespace {

// Why kpx leaves a whole Service alone, or nullopt when it proxies it.
std::optional<std::string> not_proxied_reason(const ServiceInfo& s, const StringPool& strings) {
  if (s.type == ServiceType::kExternalName) return "type ExternalName: a DNS alias, nothing to proxy";
  if (s.other_proxy)
    return "labelled " + std::string(k8s::kLabelServiceProxyName) + "=" + strings[s.proxy_name] +
           ": another proxy's";
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

// One endpoint of a Service port: a slice endpoint with the slice port's
// number (which is how a targetPort by name resolves).
struct PortEndpoint {
  const EndpointInfo* e;
  uint16_t port;
};

// The endpoints of the slice ports named `name` over `protocol`, as
// kube-proxy's EndpointSliceCache gathers them: IPv4 slices only (IPv6
// later; FQDN never), ports without a number skipped, each endpoint by its
// first address (the others are fungible with it). The same address and
// port seen twice (an endpoint moving between slices, or a terminating
// pod's IP reused by a new one) counts once: a later entry replaces an
// earlier one unless it is terminating, so the live pod wins. Slices are
// taken in name order, which makes kube-proxy's map order deterministic.
std::vector<PortEndpoint> port_endpoints(const Model::Slices& slices, StringPool::Id name,
                                         Protocol protocol) {
  std::vector<PortEndpoint> all;
  for (const auto& [slice_name, slice] : slices) {
    if (slice.address_type != AddressType::kIPv4) continue;
    for (const EndpointPortInfo& p : slice.ports) {
      if (p.name != name || p.protocol != protocol || p.port == 0) continue;  // names interned in one pool
      for (const EndpointInfo& e : slice.endpoints)
        if (e.address.v4()) all.push_back({&e, p.port});
    }
  }
  // Sorted by address and port, the slices' order kept within each: of
  // every run of one endpoint, the last not terminating entry (else the
  // first) is what kube-proxy's replace-unless-terminating leaves.
  auto key = [](const PortEndpoint& pe) { return std::pair(*pe.e->address.v4(), pe.port); };
  std::stable_sort(all.begin(), all.end(), [&](const auto& x, const auto& y) { return key(x) < key(y); });
  std::vector<PortEndpoint> out;
  out.reserve(all.size());
  for (size_t i = 0; i < all.size();) {
    size_t end = i, keep = i;
    for (; end < all.size() && key(all[end]) == key(all[i]); ++end)
      if (!all[end].e->is_terminating()) keep = end;
    out.push_back(all[keep]);
    i = end;
  }
  return out;
}

// What topology needs to know of this node, as pool ids (nullopt: a name
// no object mentions, so no hint can name it).
struct Here {
  std::optional<StringPool::Id> node, zone;
};

Here here_of(const Model& model, const ComputeConfig& config) {
  Here h;
  if (!config.node_name.empty()) h.node = model.strings().find(config.node_name);
  // Only the zone label matters (kube-proxy reads nothing else of the Node).
  if (model.node() && !model.node()->zone().empty()) h.zone = model.strings().find(model.node()->zone());
  return h;
}

Hint hint_of(const std::vector<StringPool::Id>& hints, std::optional<StringPool::Id> here) {
  if (hints.empty()) return Hint::kNone;
  return here && std::find(hints.begin(), hints.end(), *here) != hints.end() ? Hint::kThis : Hint::kOther;
}

EndpointFacts facts_of(const EndpointInfo& e, const Here& here) {
  EndpointFacts f;
  f.ready = e.is_ready();
  f.serving = e.is_serving();
  f.terminating = e.is_terminating();
  f.local = here.node && e.node_name == *here.node;
  if (e.hints) {
    f.node_hint = hint_of(e.hints->for_nodes, here.node);
    f.zone_hint = hint_of(e.hints->for_zones, here.zone);
  }
  return f;
}

dataplane::Backend backend_of(const PortEndpoint& pe, const StringPool& strings) {
  const EndpointInfo& e = *pe.e;
  dataplane::Backend b;
  b.addr = e.address;
  b.port = pe.port;
  b.node = strings[e.node_name];
  b.zone = strings[e.zone];
  b.ready = e.is_ready();
  b.serving = e.is_serving();
  b.terminating = e.is_terminating();
  return b;
}

// A Service port's cluster and local sets (proxy/topology.h).
void fill_backends(const Model::Slices& slices, const ServicePortInfo& sp, const StringPool& strings,
                   const Here& here, dataplane::Frontend& fe) {
  const std::vector<PortEndpoint> eps = port_endpoints(slices, sp.name, sp.protocol);
  std::vector<EndpointFacts> facts;
  facts.reserve(eps.size());
  for (const PortEndpoint& pe : eps) facts.push_back(facts_of(*pe.e, here));
  const Categorized c = categorize(facts);
  auto pick = [&](const std::vector<uint32_t>& idx) {
    std::vector<dataplane::Backend> out;
    out.reserve(idx.size());
    for (uint32_t i : idx) out.push_back(backend_of(eps[i], strings));
    dataplane::normalize(out);  // sorts; duplicates are gone already
    return out;
  };
  fe.cluster = pick(c.cluster);
  fe.local = pick(c.local);
  // The serving endpoints neither set took: their flows finish on them.
  std::vector<bool> in_set(eps.size(), false);
  for (const auto* set_of : {&c.cluster, &c.local})
    for (uint32_t i : *set_of) in_set[i] = true;
  std::vector<uint32_t> draining;
  for (uint32_t i = 0; i < eps.size(); ++i)
    if (!in_set[i] && facts[i].serving) draining.push_back(i);
  fe.draining = pick(draining);
}

// kube-proxy's LocalReadyEndpoints(): the ready endpoints on this node, by
// address, over every port of the Service's slices (a Service's ports share
// its pods). Terminating ones do not count, even while they still serve:
// the load balancer should leave the node before they stop.
uint32_t local_ready_endpoints(const Model::Slices& slices, const Here& here) {
  if (!here.node) return 0;
  std::set<std::pair<StringPool::Id, Protocol>> ports;
  for (const auto& [name, slice] : slices)
    for (const EndpointPortInfo& p : slice.ports) ports.insert({p.name, p.protocol});
  std::set<uint32_t> addrs;
  for (const auto& [name, protocol] : ports)
    for (const PortEndpoint& pe : port_endpoints(slices, name, protocol))
      if (pe.e->is_ready() && pe.e->node_name == *here.node) addrs.insert(*pe.e->address.v4());
  return static_cast<uint32_t>(addrs.size());
}

}  // namespace

namespace {

// One Service's addresses into out (skips with their reasons).
void compute_service(const Model& model, const std::string& key, const ServiceInfo& svc,
                     const ComputeConfig& config, DesiredState& out) {
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
  const Here here = here_of(model, config);
  // Only these have one (kube-proxy's NeedsHealthCheck()).
  if (svc.type == ServiceType::kLoadBalancer && svc.external_traffic_policy == TrafficPolicy::kLocal &&
      svc.health_check_node_port != 0 && !svc.ports.empty())
    out.health_checks[key] = {svc.health_check_node_port, local_ready_endpoints(slices, here)};
  for (const ServicePortInfo& sp : svc.ports) {
    auto proto = proto_of(sp.protocol);
    if (!proto) {
      out.skipped.push_back(
          {key, describe(sp, strings) + ": " + to_string(sp.protocol) + " is not supported yet"});
      continue;
    }
    const dataplane::FrontendKey fk{net::IpAddr::from_v4(*vip), sp.port, *proto,
                                    dataplane::Scope::kClusterIP};
    auto [it, added] = out.frontends.try_emplace(fk);
    if (!added) {
      // Two Services on one address: only a broken allocator does that.
      // The first by name keeps it, so the outcome does not depend on order.
      out.skipped.push_back({key,
                             describe(sp, strings) + ": " +
                                 net::format(net::ServiceAddr{*vip, sp.port, *proto}) + " is already " +
                                 it->second.service + "'s",
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
    fill_backends(slices, sp, strings, here, fe);
    // The ways in from outside: the NodePort (every node address, address
    // 0), the external IPs and the load balancer's IPs, each with the same
    // backends and the external traffic policy; the ClusterIP has the
    // internal one.
    const uint32_t ext_flags =
        svc.external_traffic_policy == TrafficPolicy::kLocal ? uint32_t{dataplane::kLocalOnly} : 0u;
    auto add_external = [&](const dataplane::FrontendKey& k, const std::string& what, uint32_t extra) {
      auto [xit, xadded] = out.frontends.try_emplace(k, fe);
      if (!xadded) {
        out.skipped.push_back(
            {key, describe(sp, strings) + ": " + what + " is already " + xit->second.service + "'s", true});
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
      // IPv6 ranges admit no IPv4 client: with only those (or only invalid
      // ones), IPv4 is refused. kube-proxy would then admit everyone.
      std::vector<net::Ipv4Cidr> source_ranges;
      for (const Cidr& c : ext.load_balancer_source_ranges)
        if (auto a = c.addr.v4()) {
          const uint32_t mask = c.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - c.prefix_len);
          source_ranges.push_back({htonl(ntohl(*a) & mask), c.prefix_len});
        }
      std::sort(source_ranges.begin(), source_ranges.end());
      source_ranges.erase(std::unique(source_ranges.begin(), source_ranges.end()), source_ranges.end());
      const uint32_t ranges = ext.restricts_sources ? uint32_t{dataplane::kSourceRanges} : 0u;
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
