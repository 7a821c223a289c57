#include "kube_proxy_service_ports.h"

#include <arpa/inet.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

namespace kpx::bench::kube_proxy {
namespace {

using dataplane::Frontend;
using dataplane::FrontendKey;
using dataplane::Scope;

// Which ServicePort a frontend belongs to.
using PortKey = std::tuple<std::string, std::string, net::Proto>;  // service, port name, protocol

// A frontend's owner and port name, made up for one without an owner.
std::pair<std::string, std::string> owner_of(const FrontendKey& k, const Frontend& fe) {
  if (!fe.service.empty()) return {fe.service, fe.port_name};
  std::string name = "default/vip-" + k.addr.str();
  std::replace(name.begin(), name.end(), '.', '-');
  return {name, "p" + std::to_string(k.port)};
}

std::vector<Endpoint> endpoints_of(const std::vector<dataplane::Backend>& backends) {
  std::vector<Endpoint> out;
  out.reserve(backends.size());
  for (const auto& b : backends) {
    auto a = b.addr.v4();
    if (!a) continue;
    Endpoint e{*a, b.port, b.addr.str(), ""};
    e.str = e.ip + ":" + std::to_string(b.port);
    out.push_back(std::move(e));
  }
  // kube-proxy's EndpointSliceCache sorts a port's endpoints by String().
  std::sort(out.begin(), out.end(), by_string);
  return out;
}

ServicePort from_cluster_ip(const FrontendKey& k, const Frontend& fe, const std::string& service,
                            const std::string& port_name) {
  ServicePort sp;
  auto slash = service.find('/');
  sp.ns = slash == std::string::npos ? "" : service.substr(0, slash);
  sp.name = slash == std::string::npos ? service : service.substr(slash + 1);
  sp.port_name = port_name;
  sp.port_name_string = sp.ns + "/" + sp.name + (port_name.empty() ? "" : ":" + port_name);
  sp.protocol = k.proto == net::Proto::kUdp ? "udp" : "tcp";
  sp.cluster_ip_be = k.addr.v4().value_or(0);
  sp.cluster_ip = k.addr.str();
  sp.port = k.port;
  sp.internal_local = fe.flags & dataplane::kLocalOnly;
  sp.affinity = fe.flags & dataplane::kAffinity;
  if (sp.affinity && fe.affinity_timeout_s != 0) sp.affinity_timeout_s = fe.affinity_timeout_s;
  sp.cluster = endpoints_of(fe.cluster);
  sp.local = endpoints_of(fe.local);
  return sp;
}

// What CategorizeEndpoints() leaves of the two sets, and their union.
void categorize(ServicePort& sp) {
  sp.has_endpoints = !sp.cluster.empty() || !sp.local.empty();
  if (!sp.uses_cluster_endpoints()) sp.cluster.clear();
  if (!sp.uses_local_endpoints()) sp.local.clear();
  sp.reachable = sp.cluster;
  for (const Endpoint& e : sp.local)
    if (!std::binary_search(sp.cluster.begin(), sp.cluster.end(), e, by_string)) sp.reachable.push_back(e);
  std::sort(sp.reachable.begin(), sp.reachable.end(), by_string);
}

}  // namespace

std::vector<ServicePort> service_ports(const dataplane::FrontendTable& frontends) {
  std::vector<ServicePort> out;
  std::map<PortKey, size_t> index;
  for (const auto& [k, fe] : frontends) {
    if (k.scope != Scope::kClusterIP || !k.addr.v4()) continue;
    auto [service, port_name] = owner_of(k, fe);
    if (!index.try_emplace({service, port_name, k.proto}, out.size()).second) continue;
    out.push_back(from_cluster_ip(k, fe, service, port_name));
  }
  for (const auto& [k, fe] : frontends) {
    if (k.scope == Scope::kClusterIP || !k.addr.v4()) continue;
    auto [service, port_name] = owner_of(k, fe);
    auto it = index.find({service, port_name, k.proto});
    if (it == index.end()) continue;
    ServicePort& sp = out[it->second];
    if (fe.flags & dataplane::kLocalOnly) sp.external_local = true;
    switch (k.scope) {
      case Scope::kNodePort:
        sp.node_port = k.port;
        break;
      case Scope::kExternalIP:
        sp.external_ips.push_back(k.addr.str());
        break;
      case Scope::kLoadBalancer:
        sp.load_balancer_ips.push_back(k.addr.str());
        if (fe.flags & dataplane::kSourceRanges)
          for (const auto& r : fe.source_ranges)
            if (std::find(sp.source_ranges.begin(), sp.source_ranges.end(), r) == sp.source_ranges.end())
              sp.source_ranges.push_back(r);
        break;
      case Scope::kClusterIP:
        break;
    }
  }
  for (ServicePort& sp : out) categorize(sp);
  return out;
}

size_t reachable_index(const ServicePort& sp, const Endpoint& ep) {
  return static_cast<size_t>(std::lower_bound(sp.reachable.begin(), sp.reachable.end(), ep, by_string) -
                             sp.reachable.begin());
}

size_t total_endpoints(const std::vector<ServicePort>& ports) {
  size_t n = 0;
  for (const auto& sp : ports) n += sp.reachable.size();
  return n;
}

std::string hash_base32(std::string_view s, size_t chars) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  std::string out;
  out.reserve(chars);
  uint32_t buffer = 0;
  int bits = 0;
  for (size_t i = 0; i < sizeof digest && out.size() < chars; ++i) {
    buffer = (buffer << 8) | digest[i];
    bits += 8;
    while (bits >= 5 && out.size() < chars) {
      out += kAlphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

std::string iptables_service_chain(const char* prefix, const ServicePort& sp) {
  return prefix + hash_base32(sp.port_name_string + sp.protocol, 16);
}

std::string iptables_endpoint_chain(const ServicePort& sp, const Endpoint& ep) {
  return "KUBE-SEP-" + hash_base32(sp.port_name_string + sp.protocol + ep.str, 16);
}

namespace {

// knftables.NameLengthMax (256) less the longest prefix (16).
constexpr size_t kChainNameBaseLengthMax = 240;

std::string hash_and_truncate(const std::string& name) {
  std::string out = hash_base32(name, 8) + "-" + name;
  if (out.size() > kChainNameBaseLengthMax) out = out.substr(0, kChainNameBaseLengthMax - 3) + "...";
  return out;
}

}  // namespace

std::string nft_service_base(const ServicePort& sp) {
  return hash_and_truncate(sp.ns + "/" + sp.name + "/" + sp.protocol + "/" + sp.port_name);
}

std::string nft_endpoint_base(const ServicePort& sp, const Endpoint& ep) {
  return hash_and_truncate(sp.ns + "/" + sp.name + "/" + sp.protocol + "/" + sp.port_name + "__" + ep.ip +
                           "/" + std::to_string(ep.port));
}

bool localhost_node_ports(const KubeProxyNode& node) {
  if (!node.localhost_node_ports) return false;
  if (node.node_port_addresses.empty()) return true;
  const uint32_t loopback = htonl(0x7f000001);
  return std::any_of(node.node_port_addresses.begin(), node.node_port_addresses.end(),
                     [&](const net::Ipv4Cidr& c) { return c.contains(loopback); });
}

std::string probability(size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0.10f", 1.0 / static_cast<double>(n));
  return buf;
}

std::string masquerade_mark(int bit) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", 1u << bit);
  return buf;
}

}  // namespace kpx::bench::kube_proxy
