// The frontend contract: what compute() emits and Dataplane programs, one
// type from the model to the maps. A frontend is an address, port and
// protocol in a scope (how traffic reaches it: a ClusterIP, a NodePort on
// the node's addresses, an ExternalIP, a LoadBalancer ingress IP); its value
// names the Service that owns it, how it behaves (flags, affinity timeout)
// and its two backend sets: every usable endpoint (the cluster set) and
// this node's (the local set, for traffic policy Local).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kpx/abi.h"
#include "net/endpoint.h"

namespace kpx::dataplane {

enum class Scope : uint8_t {
  kClusterIP = KPX_SCOPE_CLUSTER_IP,
  kNodePort = KPX_SCOPE_NODE_PORT,
  kExternalIP = KPX_SCOPE_EXTERNAL_IP,
  kLoadBalancer = KPX_SCOPE_LOAD_BALANCER,
};
const char* to_string(Scope s);  // "ClusterIP", ...

struct FrontendKey {
  net::IpAddr addr;
  uint16_t port = 0;  // host order; a NodePort's node port
  net::Proto proto = net::Proto::kTcp;
  Scope scope = Scope::kClusterIP;
  auto operator<=>(const FrontendKey&) const = default;
};
std::string format(const FrontendKey& k);  // "10.96.0.10:53/UDP (ClusterIP)"

// Frontend::flags: the map ABI's enum kpx_service_flags.
enum FrontendFlags : uint32_t {
  kAffinity = KPX_SVC_F_AFFINITY,          // sessionAffinity ClientIP
  kLocalOnly = KPX_SVC_F_LOCAL_ONLY,       // the traffic policy of this scope is Local
  kRejectEmpty = KPX_SVC_F_REJECT_EMPTY,   // no usable backend: reject (kube-proxy), else drop
  kMasquerade = KPX_SVC_F_MASQUERADE,      // source NAT to the node's address
  kSourceRanges = KPX_SVC_F_SOURCE_RANGES, // loadBalancerSourceRanges present
};

struct Backend {
  net::IpAddr addr;
  uint16_t port = 0;
  std::string node;  // the endpoint's nodeName ("" unknown)
  std::string zone;  // its zone ("" unknown)
  bool ready = true, serving = true, terminating = false;
  auto operator<=>(const Backend&) const = default;
};

struct Frontend {
  std::string service;    // owner, "namespace/name" ("" for a frontend set by hand with the CLI)
  std::string port_name;  // the Service port's name ("" if unnamed)
  uint32_t flags = 0;     // FrontendFlags
  uint32_t affinity_timeout_s = 0;
  // Each sorted and deduplicated by (address, port). An empty cluster set:
  // traffic to the frontend is dropped (or rejected) and counted.
  std::vector<Backend> cluster;
  std::vector<Backend> local;
  // Endpoints that still serve but are in neither set (terminating while
  // ready ones exist, or given to other zones or nodes by topology hints):
  // no new flow goes to them, and the flows they have are left to finish.
  // kube-proxy flushes UDP flows only to endpoints that stop serving; so
  // does Dataplane. Sorted, deduplicated; in memory only (not in the maps).
  std::vector<Backend> draining;
  // loadBalancerSourceRanges (IPv4), with kSourceRanges: new flows from
  // other sources are dropped. Sorted, deduplicated.
  std::vector<net::Ipv4Cidr> source_ranges;
  bool operator==(const Frontend&) const = default;
};

using FrontendTable = std::map<FrontendKey, Frontend>;
// Some frontends only: set to this value, or removed (nullopt).
using FrontendDelta = std::map<FrontendKey, std::optional<Frontend>>;

// A ClusterIP frontend's key, and a hand-programmed frontend (the CLI's
// `svc set`): the cluster set from addresses alone, ready.
FrontendKey cluster_ip_key(const net::ServiceAddr& svc);
Backend backend(const net::BackendAddr& b);
Frontend frontend_of(std::vector<net::BackendAddr> backends, std::string service = "");

// Frontends from addresses alone: ClusterIP frontends without an owner,
// as the CLI, tests and the bench name them.
using ServiceTable = std::map<net::ServiceAddr, std::vector<net::BackendAddr>>;
using ServiceDelta = std::map<net::ServiceAddr, std::optional<std::vector<net::BackendAddr>>>;
FrontendTable frontends_of(const ServiceTable& t);
FrontendDelta frontends_of(const ServiceDelta& d);

// Sort and deduplicate a backend set by (address, port): of two entries for
// one endpoint (an endpoint in two slices), the first in `b`'s order stays.
void normalize(std::vector<Backend>& b);

}  // namespace kpx::dataplane
