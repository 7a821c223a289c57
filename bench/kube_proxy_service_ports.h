// kpx's frontends as kube-proxy's proxiers see a Service port: its
// ServicePortName, ClusterIP, node port, external and load balancer IPs,
// traffic policies, affinity, and its endpoints categorized as
// proxy.CategorizeEndpoints() does; and the chain names both proxiers hash
// from them. Shared by the iptables and nftables writers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/frontend.h"
#include "kube_proxy_rules.h"
#include "net/endpoint.h"

namespace kpx::bench::kube_proxy {

struct Endpoint {
  uint32_t addr_be = 0;
  uint16_t port = 0;
  std::string ip;   // "10.180.0.1"
  std::string str;  // "10.180.0.1:80", BaseEndpointInfo.String()
};

struct ServicePort {
  std::string ns, name, port_name;
  std::string port_name_string;  // ServicePortName.String(): "ns1/svc1:p80" ("ns1/svc1" unnamed)
  const char* protocol = "tcp";  // lower case, as both proxiers write it
  uint32_t cluster_ip_be = 0;
  std::string cluster_ip;
  uint16_t port = 0;
  uint16_t node_port = 0;  // 0: none
  std::vector<std::string> external_ips;
  std::vector<std::string> load_balancer_ips;
  std::vector<net::Ipv4Cidr> source_ranges;  // loadBalancerSourceRanges
  bool internal_local = false;               // internalTrafficPolicy Local
  bool external_local = false;               // externalTrafficPolicy Local
  bool affinity = false;                     // sessionAffinity ClientIP
  uint32_t affinity_timeout_s = 10800;
  // Each sorted by str, as kube-proxy's EndpointsMap keeps them.
  std::vector<Endpoint> cluster;    // empty unless uses_cluster_endpoints()
  std::vector<Endpoint> local;      // empty unless uses_local_endpoints()
  std::vector<Endpoint> reachable;  // allLocallyReachableEndpoints: the union, sorted
  bool has_endpoints = false;       // any usable endpoint, on any node

  bool externally_accessible() const {
    return node_port != 0 || !external_ips.empty() || !load_balancer_ips.empty();
  }
  bool uses_cluster_endpoints() const {
    return !internal_local || (externally_accessible() && !external_local);
  }
  bool uses_local_endpoints() const { return internal_local || (externally_accessible() && external_local); }
};

// Endpoints are ordered by their string, as kube-proxy orders them.
inline bool by_string(const Endpoint& x, const Endpoint& y) { return x.str < y.str; }
// Where ep (one of sp.cluster or sp.local) stands in sp.reachable.
size_t reachable_index(const ServicePort& sp, const Endpoint& ep);

// One ServicePort per (Service, port name, protocol) with a ClusterIP
// frontend, in the table's order of those. A frontend without an owner
// (set by hand, or by frontends_of() for the bench) becomes Service
// "default/vip-A-B-C-D" with port name "p<port>". External frontends of a
// Service without its ClusterIP frontend are left out (kube-proxy has no
// such Service).
std::vector<ServicePort> service_ports(const dataplane::FrontendTable& frontends);

// The sum of every Service port's endpoints: kube-proxy's "totalEndpoints",
// which decides iptables' large-cluster mode.
size_t total_endpoints(const std::vector<ServicePort>& ports);

// The first `chars` characters of base32(sha256(s)), RFC 4648 alphabet, as
// Go's base32.StdEncoding writes it.
std::string hash_base32(std::string_view s, size_t chars);

// iptables chain names: prefix + 16 characters of the hash of
// servicePortName + protocol (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW-),
// or of servicePortName + protocol + endpoint (KUBE-SEP-).
std::string iptables_service_chain(const char* prefix, const ServicePort& sp);
std::string iptables_endpoint_chain(const ServicePort& sp, const Endpoint& ep);

// nftables chain name bases: "HASH8-ns/name/proto/port" and
// "HASH8-ns/name/proto/port__ip/port" (hash of the rest of the name).
std::string nft_service_base(const ServicePort& sp);
std::string nft_endpoint_base(const ServicePort& sp, const Endpoint& ep);

// Whether iptables mode accepts NodePorts on 127.0.0.1: localhostNodePorts,
// when --nodeport-addresses admits loopback (NewProxier() turns it off
// otherwise).
bool localhost_node_ports(const KubeProxyNode& node);

// Go's "%0.10f" of 1/n, as iptables' --probability takes it.
std::string probability(size_t n);

// The masquerade mark, fmt "%#08x" of 1 << bit: "0x00004000".
std::string masquerade_mark(int bit);

}  // namespace kpx::bench::kube_proxy
