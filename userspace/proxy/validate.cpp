#include "proxy/validate.h"

#include <algorithm>
#include <set>
#include <utility>

#include "proxy/ip_parse.h"

namespace kpx::proxy {

bool is_ipv4(std::string_view s) { return parse_ip_sloppy(s).family == net::IpAddr::Family::kV4; }
bool is_ipv6(std::string_view s) { return parse_ip_sloppy(s).family == net::IpAddr::Family::kV6; }
bool is_ip(std::string_view s) { return parse_ip_sloppy(s).family != net::IpAddr::Family::kNone; }
bool is_cidr(std::string_view s) { return parse_cidr_sloppy(s).has_value(); }

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

namespace {

// Collects "field: problem" lines, keeping messages short for objects with
// thousands of bad values.
class Problems {
 public:
  void add(std::string field, std::string problem) { add_line(std::move(field) + ": " + std::move(problem)); }
  void add_line(std::string line) {
    if (lines_.size() < kMax)
      lines_.push_back(std::move(line));
    else
      ++dropped_;
  }
  std::vector<std::string> take() && {
    if (dropped_)
      lines_.push_back("and " + std::to_string(dropped_) + " more problem" + (dropped_ > 1 ? "s" : ""));
    return std::move(lines_);
  }

 private:
  static constexpr size_t kMax = 10;
  std::vector<std::string> lines_;
  size_t dropped_ = 0;
};

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string at(const std::string& field, size_t i) { return field + "[" + std::to_string(i) + "]"; }

bool one_of(std::string_view v, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

void check_enum(Problems& p, const std::string& field, std::string_view v,
                std::initializer_list<std::string_view> allowed) {
  if (one_of(v, allowed)) return;
  std::string list;
  for (auto a : allowed)
    list += (list.empty() ? "" : ", ") + (a.empty() ? std::string("\"\"") : std::string(a));
  p.add(field, "unsupported value " + quoted(v) + " (expected one of " + list + ")");
}

void check_protocol(Problems& p, const std::string& field, std::string_view v) {
  // Case-sensitive, as the API server checks it.
  check_enum(p, field, v, {"TCP", "UDP", "SCTP"});
}

void check_port(Problems& p, const std::string& field, int32_t v, bool zero_allowed) {
  if ((v == 0 && zero_allowed) || (v >= 1 && v <= 65535)) return;
  p.add(field, "port " + std::to_string(v) + " out of range (expected 1-65535)");
}

void check_meta(Problems& p, const k8s::ObjectMeta& m) {
  if (m.name.empty()) p.add("metadata.name", "missing");
  if (m.namespace_.empty()) p.add("metadata.namespace", "missing");
}

void check_service_ports(Problems& p, const std::vector<k8s::ServicePort>& ports) {
  std::set<std::string> names;
  std::set<std::pair<int32_t, std::string>> port_protocols;
  for (size_t i = 0; i < ports.size(); ++i) {
    const k8s::ServicePort& sp = ports[i];
    std::string field = at("spec.ports", i);
    check_protocol(p, field + ".protocol", sp.protocol);
    check_port(p, field + ".port", sp.port, false);
    check_port(p, field + ".nodePort", sp.node_port, true);
    if (sp.target_port) {
      if (auto* n = std::get_if<int32_t>(&*sp.target_port))
        check_port(p, field + ".targetPort", *n, false);
      else if (std::get<std::string>(*sp.target_port).empty())
        p.add(field + ".targetPort", "empty port name");
    }
    // Names pick the slice port: two equal names would be ambiguous.
    if (!names.insert(sp.name).second) p.add(field + ".name", "duplicate port name " + quoted(sp.name));
    if (!port_protocols.insert({sp.port, sp.protocol}).second)
      p.add(field, "duplicate port " + std::to_string(sp.port) + "/" + sp.protocol);
  }
}

}  // namespace

Findings check_service(const k8s::Service& s) {
  Problems p, dropped;
  check_meta(p, s.metadata);
  check_enum(p, "spec.type", s.type, {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"});
  // An ExternalName Service is a DNS alias that kpx ignores: nothing else of
  // it is used, so nothing else can break kpx.
  if (s.type == "ExternalName") return {std::move(p).take(), {}};

  if (!s.cluster_ip.empty() && s.cluster_ip != "None" && !is_ip(s.cluster_ip))
    p.add("spec.clusterIP", quoted(s.cluster_ip) + " is not an IP address");
  for (size_t i = 0; i < s.cluster_ips.size(); ++i) {
    const std::string& ip = s.cluster_ips[i];
    bool headless_alone = ip == "None" && s.cluster_ips.size() == 1;
    if (!headless_alone && !is_ip(ip)) p.add(at("spec.clusterIPs", i), quoted(ip) + " is not an IP address");
  }
  for (size_t i = 0; i < s.ip_families.size(); ++i)
    check_enum(p, at("spec.ipFamilies", i), s.ip_families[i], {"IPv4", "IPv6"});
  check_service_ports(p, s.ports);
  for (size_t i = 0; i < s.external_ips.size(); ++i)
    if (!is_ip(s.external_ips[i]))
      dropped.add(at("spec.externalIPs", i), quoted(s.external_ips[i]) + " is not an IP address");
  check_enum(p, "spec.sessionAffinity", s.session_affinity, {"None", "ClientIP"});
  if (s.session_affinity == "ClientIP" &&
      (s.client_ip_timeout_seconds < 1 || s.client_ip_timeout_seconds > 86400))
    p.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds",
          std::to_string(s.client_ip_timeout_seconds) + " out of range (expected 1-86400)");
  check_enum(p, "spec.externalTrafficPolicy", s.external_traffic_policy, {"", "Cluster", "Local"});
  check_enum(p, "spec.internalTrafficPolicy", s.internal_traffic_policy, {"", "Cluster", "Local"});
  check_port(p, "spec.healthCheckNodePort", s.health_check_node_port, true);
  for (size_t i = 0; i < s.load_balancer_source_ranges.size(); ++i) {
    // The API allows space padding here (a leftover of the annotation form).
    std::string_view r = trim_spaces(s.load_balancer_source_ranges[i]);
    if (!is_cidr(r)) dropped.add(at("spec.loadBalancerSourceRanges", i), quoted(r) + " is not a CIDR");
  }
  for (size_t i = 0; i < s.load_balancer_ingress.size(); ++i) {
    const std::string& ip = s.load_balancer_ingress[i].ip;
    if (!ip.empty() && !is_ip(ip))
      dropped.add(at("status.loadBalancer.ingress", i) + ".ip", quoted(ip) + " is not an IP address");
  }
  // trafficDistribution and ipMode are not checked: values kpx does not know
  // yet are treated as unset, as kube-proxy does.
  return {std::move(p).take(), std::move(dropped).take()};
}

bool usable_endpoint(const k8s::Endpoint& e, std::string_view address_type) {
  if (e.addresses.empty()) return false;
  // The first address alone is used (the others are fungible with it).
  if (address_type == "IPv4") return is_ipv4(e.addresses.front());
  if (address_type == "IPv6") return is_ipv6(e.addresses.front());
  return true;  // FQDN: ignored anyway
}

bool usable_endpoint_port(const k8s::EndpointPort& p) {
  const bool known = p.protocol == "TCP" || p.protocol == "UDP" || p.protocol == "SCTP";
  return known && (!p.port || (*p.port >= 1 && *p.port <= 65535));
}

Findings check_endpoint_slice(const k8s::EndpointSlice& s) {
  Problems p, dropped;
  check_meta(p, s.metadata);
  if (s.service_name().empty())
    p.add("metadata.labels", "no " + std::string(k8s::kLabelServiceName) + " label: no Service to attach to");
  check_enum(p, "addressType", s.address_type, {"IPv4", "IPv6", "FQDN"});
  const bool known_type = one_of(s.address_type, {"IPv4", "IPv6", "FQDN"});
  for (size_t i = 0; known_type && i < s.endpoints.size(); ++i) {
    const k8s::Endpoint& e = s.endpoints[i];
    if (usable_endpoint(e, s.address_type)) continue;
    if (e.addresses.empty())
      dropped.add(at("endpoints", i) + ".addresses", "no address");
    else
      dropped.add(at("endpoints", i) + ".addresses[0]",
                  quoted(e.addresses.front()) + " is not an " + s.address_type + " address");
  }
  for (size_t i = 0; i < s.ports.size(); ++i) {
    if (usable_endpoint_port(s.ports[i])) continue;
    Problems why;
    check_protocol(why, at("ports", i) + ".protocol", s.ports[i].protocol);
    if (s.ports[i].port) check_port(why, at("ports", i) + ".port", *s.ports[i].port, false);
    for (auto& line : std::move(why).take()) dropped.add_line(std::move(line));
  }
  return {std::move(p).take(), std::move(dropped).take()};
}

}  // namespace kpx::proxy
