#include "proxy/compact.h"

#include "proxy/validate.h"

namespace kpx::proxy {

StringPool::StringPool() { intern(""); }

StringPool::Id StringPool::intern(std::string_view s) {
  if (auto it = index_.find(s); it != index_.end()) return it->second;
  const Id id = static_cast<Id>(strings_.size());
  strings_.emplace_back(s);
  index_.emplace(strings_.back(), id);
  return id;
}

std::optional<StringPool::Id> StringPool::find(std::string_view s) const {
  auto it = index_.find(s);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

const char* to_string(Protocol p) {
  switch (p) {
    case Protocol::kTCP:
      return "TCP";
    case Protocol::kUDP:
      return "UDP";
    case Protocol::kSCTP:
      return "SCTP";
  }
  return "?";
}

const ServiceInfo::External& ServiceInfo::ext() const {
  static const External kNone;
  return external ? *external : kNone;
}

void EndpointInfo::set_conditions(const k8s::EndpointConditions& c) {
  conditions_ = 0;
  int bit = 0;
  for (const std::optional<bool>& v : {c.ready, c.serving, c.terminating}) {
    if (v) conditions_ |= static_cast<uint8_t>((1u << bit) | (*v ? 2u << bit : 0u));
    bit += 2;
  }
}

namespace {

// The values validation allows (see proxy/validate.cpp).
Protocol protocol_of(const std::string& p) {
  return p == "UDP" ? Protocol::kUDP : p == "SCTP" ? Protocol::kSCTP : Protocol::kTCP;
}

TrafficPolicy policy_of(const std::string& p) {
  return p == "Local"     ? TrafficPolicy::kLocal
         : p == "Cluster" ? TrafficPolicy::kCluster
                          : TrafficPolicy::kUnset;
}

ServiceType type_of(const std::string& t) {
  if (t == "NodePort") return ServiceType::kNodePort;
  if (t == "LoadBalancer") return ServiceType::kLoadBalancer;
  if (t == "ExternalName") return ServiceType::kExternalName;
  return ServiceType::kClusterIP;
}

// The valid ones (validation reported the others as dropped).
std::vector<IpAddr> ips_of(const std::vector<std::string>& in) {
  std::vector<IpAddr> out;
  out.reserve(in.size());
  for (const auto& s : in)
    if (auto a = parse_ip_sloppy(s); a.family != IpAddr::Family::kNone) out.push_back(a);
  return out;
}

}  // namespace

ServiceInfo compact_service(const k8s::Service& s, StringPool& strings) {
  ServiceInfo out;
  out.type = type_of(s.type);
  out.session_affinity =
      s.session_affinity == "ClientIP" ? SessionAffinity::kClientIP : SessionAffinity::kNone;
  out.client_ip_timeout_seconds = s.client_ip_timeout_seconds;
  out.external_traffic_policy = policy_of(s.external_traffic_policy);
  out.internal_traffic_policy = policy_of(s.internal_traffic_policy);
  out.health_check_node_port = static_cast<uint16_t>(s.health_check_node_port);
  out.traffic_distribution = strings.intern(s.traffic_distribution);
  if (auto owner = s.metadata.label(k8s::kLabelServiceProxyName)) {
    out.other_proxy = true;
    out.proxy_name = strings.intern(*owner);
  }
  for (size_t i = 0; i < s.ip_families.size() && i < out.ip_families.size(); ++i)
    out.ip_families[i] = s.ip_families[i] == "IPv6" ? IpAddr::Family::kV6 : IpAddr::Family::kV4;
  out.headless = s.cluster_ip.empty() || s.cluster_ip == "None";
  if (!out.headless)
    out.cluster_ips = ips_of(s.cluster_ips.empty() ? std::vector{s.cluster_ip} : s.cluster_ips);
  out.ports.reserve(s.ports.size());
  for (const k8s::ServicePort& p : s.ports) {
    ServicePortInfo sp;
    sp.name = strings.intern(p.name);
    sp.protocol = protocol_of(p.protocol);
    sp.port = static_cast<uint16_t>(p.port);
    sp.node_port = static_cast<uint16_t>(p.node_port);
    if (p.target_port) {
      if (auto* n = std::get_if<int32_t>(&*p.target_port))
        sp.target_port = static_cast<uint16_t>(*n);
      else
        sp.target_port_name = strings.intern(std::get<std::string>(*p.target_port));
    }
    out.ports.push_back(sp);
  }
  if (!s.external_ips.empty() || !s.load_balancer_source_ranges.empty() || !s.load_balancer_ingress.empty()) {
    out.external = std::make_unique<ServiceInfo::External>();
    out.external->external_ips = ips_of(s.external_ips);
    out.external->restricts_sources = !s.load_balancer_source_ranges.empty();
    for (const auto& r : s.load_balancer_source_ranges)
      if (auto c = parse_cidr_sloppy(trim_spaces(r))) out.external->load_balancer_source_ranges.push_back(*c);
    for (const auto& in : s.load_balancer_ingress)
      out.external->load_balancer_ingress.push_back(
          {parse_ip_sloppy(in.ip), in.ip_mode == "VIP"     ? LoadBalancerIpMode::kVIP
                                   : in.ip_mode == "Proxy" ? LoadBalancerIpMode::kProxy
                                                           : LoadBalancerIpMode::kUnset});
  }
  return out;
}

SliceInfo compact_slice(const k8s::EndpointSlice& s, StringPool& strings) {
  SliceInfo out;
  out.address_type = s.address_type == "IPv6"   ? AddressType::kIPv6
                     : s.address_type == "FQDN" ? AddressType::kFQDN
                                                : AddressType::kIPv4;
  out.ports.reserve(s.ports.size());
  for (const k8s::EndpointPort& p : s.ports)
    if (usable_endpoint_port(p))
      out.ports.push_back(
          {strings.intern(p.name), static_cast<uint16_t>(p.port.value_or(0)), protocol_of(p.protocol)});
  out.endpoints.reserve(s.endpoints.size());
  for (const k8s::Endpoint& e : s.endpoints) {
    if (!usable_endpoint(e, s.address_type)) continue;
    EndpointInfo ep;
    if (out.address_type != AddressType::kFQDN) ep.address = parse_ip_sloppy(e.addresses.front());
    ep.set_conditions(e.conditions);
    ep.node_name = strings.intern(e.node_name);
    ep.zone = strings.intern(e.zone);
    if (e.hints) {
      ep.hints = std::make_unique<EndpointHintsInfo>();
      for (const auto& z : e.hints->for_zones) ep.hints->for_zones.push_back(strings.intern(z));
      for (const auto& n : e.hints->for_nodes) ep.hints->for_nodes.push_back(strings.intern(n));
    }
    out.endpoints.push_back(std::move(ep));
  }
  return out;
}

}  // namespace kpx::proxy
