// The fields kpx reads of the Kubernetes objects it watches (Service,
// EndpointSlice, Node), decoded from the API's JSON.
//
// Decoding is tolerant the way the API is: unknown fields are ignored,
// missing and null fields take the API's defaults. It checks JSON types only
// (a port must be an integer, a label a string); whether the values make
// sense (an IP that is an IP, a known protocol) is proxy/validate.h's job, so
// that the placeholder objects of the API's round-trip test data decode.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "status/status.h"

namespace kpx::k8s {

// Well-known labels.
inline constexpr std::string_view kLabelServiceName = "kubernetes.io/service-name";
// A Service (or its slices) carrying this label belongs to another proxy.
inline constexpr std::string_view kLabelServiceProxyName = "service.kubernetes.io/service-proxy-name";
inline constexpr std::string_view kLabelHeadless = "service.kubernetes.io/headless";
inline constexpr std::string_view kLabelTopologyZone = "topology.kubernetes.io/zone";
// On EndpointSlices (and Endpoints): when the change that caused the
// object's last update happened (RFC 3339), for network programming latency.
inline constexpr std::string_view kAnnotationLastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time";

using Labels = std::map<std::string, std::string, std::less<>>;

struct ObjectMeta {
  std::string name;
  std::string namespace_;  // empty for cluster-scoped objects (Node)
  std::string uid;
  std::string resource_version;  // opaque: only passed back to the API
  Labels labels;
  std::optional<std::string> deletion_timestamp;  // RFC 3339, as sent

  // "namespace/name", or "name" for cluster-scoped objects.
  std::string key() const;
  // The label's value, or nullopt when it is absent.
  std::optional<std::string> label(std::string_view key) const;
};

// A port by number or by name (the API's IntOrString).
using IntOrString = std::variant<int32_t, std::string>;

struct ServicePort {
  std::string name;
  std::string protocol = "TCP";  // API default
  int32_t port = 0;
  std::optional<IntOrString> target_port;  // unset means "same as port"
  int32_t node_port = 0;                   // 0: none allocated
  bool operator==(const ServicePort&) const = default;
};

struct LoadBalancerIngress {
  std::string ip;
  std::string ip_mode;  // "VIP" | "Proxy" | "" (unset means VIP)
  bool operator==(const LoadBalancerIngress&) const = default;
};

inline constexpr int32_t kDefaultClientIpTimeoutSeconds = 10800;

struct Service {
  ObjectMeta metadata;
  // spec
  std::string type = "ClusterIP";  // ClusterIP | NodePort | LoadBalancer | ExternalName
  std::string cluster_ip;          // "None" for headless
  std::vector<std::string> cluster_ips;
  std::vector<std::string> ip_families;  // "IPv4" | "IPv6"
  std::vector<ServicePort> ports;
  std::vector<std::string> external_ips;
  std::string session_affinity = "None";  // None | ClientIP
  int32_t client_ip_timeout_seconds = kDefaultClientIpTimeoutSeconds;
  std::string external_traffic_policy;  // Cluster | Local | "" (= Cluster)
  std::string internal_traffic_policy;  // Cluster | Local | "" (= Cluster)
  int32_t health_check_node_port = 0;
  std::vector<std::string> load_balancer_source_ranges;  // CIDRs
  std::string traffic_distribution;                      // PreferClose | PreferSameZone | PreferSameNode | ""
  // status
  std::vector<LoadBalancerIngress> load_balancer_ingress;
};

struct EndpointConditions {
  std::optional<bool> ready;
  std::optional<bool> serving;
  std::optional<bool> terminating;

  // The API's meaning of absent values.
  bool is_ready() const { return ready.value_or(true); }
  bool is_serving() const { return serving.value_or(is_ready()); }
  bool is_terminating() const { return terminating.value_or(false); }
};

struct EndpointHints {
  std::vector<std::string> for_zones;
  std::vector<std::string> for_nodes;
};

struct Endpoint {
  // At least one; consumers use the first (the others are fungible).
  std::vector<std::string> addresses;
  EndpointConditions conditions;
  std::string node_name;
  std::string zone;
  std::optional<EndpointHints> hints;  // absent and empty differ for topology
};

struct EndpointPort {
  std::string name;              // "" for a Service's unnamed port
  std::string protocol = "TCP";  // API default
  std::optional<int32_t> port;   // unset: "all ports", which kube-proxy ignores
};

struct EndpointSlice {
  ObjectMeta metadata;
  std::string address_type;  // IPv4 | IPv6 | FQDN
  std::vector<Endpoint> endpoints;
  std::vector<EndpointPort> ports;
  // The last-change-trigger-time annotation as sent ("" when absent); the
  // only annotation kpx reads.
  std::string last_change_trigger_time;

  // The annotation parsed; nullopt when absent or not RFC 3339.
  std::optional<std::chrono::system_clock::time_point> trigger_time() const;
  // The kubernetes.io/service-name label: the Service's name in the
  // slice's namespace ("" when missing).
  std::string service_name() const;
  // "namespace/service-name", the key of the owning Service.
  std::string service_key() const;
};

struct NodeAddress {
  std::string type;  // InternalIP | ExternalIP | Hostname | ...
  std::string address;
};

struct Node {
  ObjectMeta metadata;
  std::string pod_cidr;
  std::vector<std::string> pod_cidrs;
  std::vector<NodeAddress> addresses;

  // The topology.kubernetes.io/zone label ("" when missing).
  std::string zone() const;
};

// Each takes one object as the API serves it (a list item or a watch event's
// "object"). An object that carries "kind" must be of the right kind. Errors
// name the object (namespace/name) and the field, e.g.
//   Service default/web: spec.ports[0].port: expected an integer, got string
// They never throw.
Result<Service> decode_service(const nlohmann::json& j);
Result<EndpointSlice> decode_endpoint_slice(const nlohmann::json& j);
Result<Node> decode_node(const nlohmann::json& j);

}  // namespace kpx::k8s
