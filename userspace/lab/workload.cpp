#include "lab/workload.h"

#include "k8s/client.h"
#include "lab/manifest.h"

namespace kpx::lab {

using nlohmann::json;

namespace {

json node_object(const NodePlan& n) {
  json conds = json::array({{{"type", "Ready"}, {"status", "True"}, {"reason", "KubeletReady"}}});
  return {{"apiVersion", "v1"},
          {"kind", "Node"},
          {"metadata",
           {{"name", n.name},
            {"labels", {{"kubernetes.io/hostname", n.name}, {"kubernetes.io/os", "linux"}}}}},
          {"spec", {{"podCIDR", n.pod_cidr}, {"podCIDRs", json::array({n.pod_cidr})}}},
          {"status",
           {{"addresses", json::array({{{"type", "InternalIP"}, {"address", n.ip}},
                                       {{"type", "Hostname"}, {"address", n.name}}})},
            {"conditions", conds}}}};
}

}  // namespace

json echo_pod(const std::string& name, const std::string& ns, const json& labels, const std::string& node,
              const std::vector<int>& container_ports) {
  json containers = json::array();
  const char* names[] = {"echo", "sidecar", "third", "fourth"};
  for (size_t i = 0; i < container_ports.size() && i < 4; ++i)
    containers.push_back({{"name", names[i]},
                          {"image", "kpx/echo"},
                          {"ports", json::array({{{"name", i == 0 ? "http" : "side"},
                                                  {"containerPort", container_ports[i]},
                                                  {"protocol", "TCP"}}})},
                          // Stay serving while Services move away from this
                          // pod: the endpoint turns terminating first.
                          {"lifecycle", {{"preStop", {{"sleep", {{"seconds", 1}}}}}}}});
  json pod = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
              {"spec", {{"containers", containers}, {"terminationGracePeriodSeconds", 5}}}};
  if (!node.empty()) pod["spec"]["nodeName"] = node;
  return pod;
}

std::vector<json> cluster_objects(const LabPlan& plan) {
  std::vector<json> out;
  for (const auto& n : plan.nodes) out.push_back(node_object(n));
  // The `kubernetes` Service, as kube-apiserver keeps it: 10.96.0.1:443,
  // no selector, its EndpointSlice written by the API server itself (here:
  // the daemon), pointing at the control plane's address. (The lab's server
  // speaks plain HTTP on it.)
  const NodePlan& cp = plan.nodes.front();
  out.push_back({{"apiVersion", "v1"},
                 {"kind", "Service"},
                 {"metadata",
                  {{"name", "kubernetes"},
                   {"namespace", "default"},
                   {"labels", {{"component", "apiserver"}, {"provider", "kubernetes"}}}}},
                 {"spec",
                  {{"clusterIP", kApiServiceIp},
                   {"ports", json::array({{{"name", "https"},
                                           {"port", 443},
                                           {"targetPort", kNodeApiPort},
                                           {"protocol", "TCP"}}})}}}});
  out.push_back({{"apiVersion", "discovery.k8s.io/v1"},
                 {"kind", "EndpointSlice"},
                 {"metadata",
                  {{"name", "kubernetes"},
                   {"namespace", "default"},
                   {"labels", {{"kubernetes.io/service-name", "kubernetes"}}}}},
                 {"addressType", "IPv4"},
                 {"endpoints", json::array({{{"addresses", json::array({cp.ip})},
                                             {"conditions", {{"ready", true}}}}})},
                 {"ports", json::array({{{"name", "https"}, {"port", kNodeApiPort}, {"protocol", "TCP"}}})}});
  json dns_labels = {{"k8s-app", "kube-dns"}};
  out.push_back({{"apiVersion", "v1"},
                 {"kind", "Service"},
                 {"metadata", {{"name", "kube-dns"}, {"namespace", "kube-system"}, {"labels", dns_labels}}},
                 {"spec",
                  {{"selector", dns_labels},
                   {"clusterIP", kDnsServiceIp},
                   {"ports", json::array({{{"name", "dns"}, {"port", 53}, {"targetPort", 53}, {"protocol", "UDP"}}})}}}});
  out.push_back({{"apiVersion", "v1"},
                 {"kind", "Pod"},
                 {"metadata", {{"name", "coredns"}, {"namespace", "kube-system"}, {"labels", dns_labels}}},
                 {"spec",
                  {{"nodeName", plan.nodes.front().name},
                   {"containers", json::array({{{"name", "dns"},
                                                {"image", "kpx/dns"},
                                                {"ports", json::array({{{"name", "dns"},
                                                                        {"containerPort", 53},
                                                                        {"protocol", "UDP"}}})}}})}}}});
  return out;
}

std::vector<json> default_workload(const LabPlan& plan, int pods_per_node) {
  std::vector<json> out;
  if (pods_per_node <= 0) return out;
  json labels = {{"app", "echo"}};
  out.push_back({{"apiVersion", "v1"},
                 {"kind", "Service"},
                 {"metadata", {{"name", "echo"}, {"namespace", "default"}}},
                 {"spec",
                  {{"selector", labels},
                   {"ports", json::array({{{"name", "tcp"}, {"port", 80}, {"targetPort", "http"}, {"protocol", "TCP"}},
                                          {{"name", "udp"}, {"port", 80}, {"targetPort", 8080}, {"protocol", "UDP"}}})}}}});
  for (const auto& n : plan.nodes)
    for (int i = 1; i <= pods_per_node; ++i)
      out.push_back(echo_pod("echo-" + std::to_string(n.index) + "-" + std::to_string(i), "default", labels, n.name,
                             {8080}));
  return out;
}

Status create_all(k8s::Client& client, const std::vector<json>& objects) {
  for (const auto& obj : objects) {
    auto r = apply_object(client, obj);
    if (!r) return Error{r.error().kind, describe(obj) + ": " + r.error().message};
  }
  return {};
}

}  // namespace kpx::lab
