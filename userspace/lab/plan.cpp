#include "lab/plan.h"

#include <cstdio>
#include <functional>

namespace kpx::lab {

Status validate_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 12 && name[0] >= 'a' && name[0] <= 'z';
  // No '-': "kpxlab-<name>-" must never be a prefix of another lab's names.
  for (char c : name) ok &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  if (!ok)
    return invalid_argument("invalid lab name '" + name +
                            "': use 1-12 lowercase letters or digits, starting with a letter");
  return {};
}

Status validate(const LabSpec& spec) {
  KPX_TRY(validate_name(spec.name));
  if (spec.nodes < 1 || spec.nodes > kMaxNodes)
    return invalid_argument("--nodes must be between 1 and " + std::to_string(kMaxNodes));
  if (spec.pods_per_node < 0 || spec.pods_per_node > kMaxPodsPerNode)
    return invalid_argument("--pods-per-node must be between 0 and " + std::to_string(kMaxPodsPerNode));
  return {};
}

LabPlan plan_lab(const std::string& name, int nodes) {
  LabPlan p;
  p.name = name;
  std::string pre = std::string(kNetnsPrefix) + name + "-";
  p.fabric_ns = pre + "fabric";
  p.gateway_ns = pre + "gw";
  p.internet_ns = pre + "inet";
  p.client_ns = pre + "client";
  for (int n = 1; n <= nodes; ++n) {
    NodePlan node;
    node.index = n;
    node.name = "node" + std::to_string(n);
    node.netns = pre + node.name;
    node.ip = "10.0.0." + std::to_string(10 + n);
    node.pod_cidr = "10.244." + std::to_string(n) + ".0/24";
    node.pod_gateway = "10.244." + std::to_string(n) + ".1";
    node.pin_dir = "/sys/fs/bpf/kpx-" + name + "-" + node.name;
    p.nodes.push_back(node);
  }
  return p;
}

std::string LabPlan::state_dir() const { return std::string(kStateRoot) + "/" + name; }
std::string LabPlan::cgroup_name() const { return "kpx-lab-" + name; }
std::string LabPlan::pods_cgroup_name(const std::string& node) const {
  return cgroup_name() + "/node-" + node + "/pods";
}
std::string LabPlan::pod_netns(const std::string& ns, const std::string& pod) const {
  // A namespace name is a DNS label (no '.'), so "<ns>.<pod>" names one pod
  // only ("a-b/c" and "a/b-c" differ). Long names are cut and made unique
  // by a hash, to stay within a file name.
  std::string n = std::string(kNetnsPrefix) + name + "-pod-" + ns + "." + pod;
  if (n.size() <= 200) return n;
  char hash[17];
  snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(std::hash<std::string>{}(ns + "/" + pod)));
  return n.substr(0, 183) + "-" + hash;
}
const NodePlan* LabPlan::node(const std::string& n) const {
  for (const auto& node : nodes)
    if (node.name == n) return &node;
  return nullptr;
}

}  // namespace kpx::lab
