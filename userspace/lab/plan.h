// The lab's names and addresses, all derived from the lab's name and node
// count, so that every command (and `kpx lab down` after a crash) finds the
// same namespaces, pin dirs and cgroups without asking a running process.
//
//   fabric   kpxlab-L-fabric   bridge br0, 10.0.0.0/24
//   gateway  kpxlab-L-gw       eth0 10.0.0.1 (fabric), eth1 203.0.113.1,
//                              198.51.100.0/24 (load balancer IPs) and
//                              192.0.2.0/24 (external IPs) via the nodes
//   internet kpxlab-L-inet     eth0 203.0.113.10, no route back to the cluster
//   client   kpxlab-L-client   eth0 10.0.0.100, outside the cluster
//   nodeN    kpxlab-L-nodeN    eth0 10.0.0.(10+N), cbr0 10.244.N.1/24,
//                              host-gw routes to the other nodes' pod CIDRs
//   pods     kpxlab-L-pod-NS.NAME, eth0 10.244.N.x/24 on the node's cbr0
#pragma once

#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::lab {

inline constexpr const char* kNetnsPrefix = "kpxlab-";
inline constexpr const char* kStateRoot = "/run/kpx-lab";
inline constexpr const char* kFabricCidr = "10.0.0.0/24";
inline constexpr const char* kGatewayIp = "10.0.0.1";
inline constexpr const char* kClientIp = "10.0.0.100";
inline constexpr const char* kInternetGatewayIp = "203.0.113.1";
inline constexpr const char* kInternetIp = "203.0.113.10";
inline constexpr const char* kClusterCidr = "10.244.0.0/16";
inline constexpr const char* kServiceCidr = "10.96.0.0/16";
inline constexpr const char* kApiServiceIp = "10.96.0.1";  // the `kubernetes` Service
inline constexpr const char* kDnsServiceIp = "10.96.0.10";
// Routed by the gateway to the nodes (ECMP): the load-balancer controller's
// pool (LoadBalancer Services' IPs) and the range for spec.externalIPs.
inline constexpr const char* kLoadBalancerPool = "198.51.100.0/24";
inline constexpr const char* kExternalIpRange = "192.0.2.0/24";
inline constexpr const char* kDnsDomain = "cluster.local";
inline constexpr int kNodeApiPort = 6443;  // the API server inside each node: 127.0.0.1:6443
inline constexpr int kMaxNodes = 50;
inline constexpr int kMaxPodsPerNode = 200;

struct LabSpec {
  std::string name = "lab";
  int nodes = 2;
  int pods_per_node = 3;
  // Extra flags for every node's kpx agent (`kpx lab up --agent-arg`),
  // after the lab's own: e.g. --masquerade-all.
  std::vector<std::string> agent_args;
};
// Names: 1–12 of [a-z0-9], starting with a letter (they end up in
// namespace, pin dir and cgroup names).
Status validate_name(const std::string& name);
Status validate(const LabSpec& spec);

struct NodePlan {
  int index = 0;          // 1-based
  std::string name;       // "node1"
  std::string netns;      // "kpxlab-L-node1"
  std::string ip;         // eth0 on the fabric
  std::string pod_cidr;   // "10.244.1.0/24"
  std::string pod_gateway;  // cbr0's address, "10.244.1.1"
  std::string pin_dir;    // "/sys/fs/bpf/kpx-L-node1"
};

struct LabPlan {
  std::string name;
  std::string fabric_ns, gateway_ns, internet_ns, client_ns;
  std::vector<NodePlan> nodes;

  std::string state_dir() const;    // /run/kpx-lab/L
  std::string cgroup_name() const;  // kpx-lab-L (under the cgroup v2 mount)
  // kpx-lab-L/node-N/pods: where node N's pods' processes run.
  std::string pods_cgroup_name(const std::string& node) const;
  std::string pod_netns(const std::string& ns, const std::string& pod) const;
  const NodePlan* node(const std::string& name) const;
};

LabPlan plan_lab(const std::string& name, int nodes);

}  // namespace kpx::lab
