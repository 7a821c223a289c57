// The lab's wiring, done with iproute2 inside the lab's own namespaces (the
// CNI's part of the picture; kpx plays no role in it). Nothing is ever
// created in, or moved through, the root namespace: veth pairs are made
// with both ends already in their target namespaces.
#pragma once

#include <string>
#include <vector>

#include "lab/plan.h"
#include "status/status.h"

namespace kpx::lab {

// Fabric, gateway, internet, client and every node. Fails (having removed
// what it made) if any of the lab's namespaces already exists.
Status create_topology(const LabPlan& plan);

struct PodNetwork {
  std::string netns;    // the pod's namespace
  std::string host_if;  // the veth's end in the node namespace, on cbr0
  std::string ip;       // the pod's address
};
// A pod namespace with lo up and eth0 (ip/24) whose peer joins the node's cbr0.
Status add_pod_network(const NodePlan& node, const PodNetwork& pod);
// Deleting the namespace deletes the veth pair with it.
Status remove_netns(const std::string& netns);

// Every namespace whose name starts with `prefix` (under /var/run/netns).
std::vector<std::string> list_netns(const std::string& prefix);

// Write a sysctl under /proc/sys/net inside a namespace.
Status set_netns_sysctl(const std::string& netns, const std::string& key, const std::string& value);

}  // namespace kpx::lab
