// The objects every lab starts with: its Nodes, the cluster DNS (the
// kube-dns Service at 10.96.0.10 and its pod), and the default workload
// (`--pods-per-node`): an `echo` Service over echo pods spread on every node.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "lab/plan.h"
#include "status/status.h"

namespace kpx::k8s {
class Client;
}

namespace kpx::lab {

std::vector<nlohmann::json> cluster_objects(const LabPlan& plan);
std::vector<nlohmann::json> default_workload(const LabPlan& plan, int pods_per_node);

// An echo pod (one kpx/echo container per port given; several make a pod
// with several containers sharing its network namespace).
nlohmann::json echo_pod(const std::string& name, const std::string& ns, const nlohmann::json& labels,
                        const std::string& node, const std::vector<int>& container_ports);

// Creates each object through the API (so the server's defaulting and
// ClusterIP allocation apply, as for any client).
Status create_all(k8s::Client& client, const std::vector<nlohmann::json>& objects);

}  // namespace kpx::lab
