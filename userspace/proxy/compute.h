// The pure function from the model to what the dataplane must hold: a
// frontend for each (address, port, protocol, scope) of each Service kpx
// proxies, owned by its Service, with its flags and its cluster and local
// backend sets. For now the ClusterIP scope over IPv4; NodePort,
// ExternalIP and LoadBalancer frontends come with north-south traffic.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "dataplane/frontend.h"
#include "net/endpoint.h"
#include "proxy/model.h"

namespace kpx::proxy {

struct ComputeConfig {
  // This node's name (the agent's hostname): endpoints on it form each
  // frontend's local set, and node hints name it. The zone is the model's
  // Node's topology.kubernetes.io/zone label (proxy/topology.h).
  std::string node_name;
};

// Something of a Service that kpx does not proxy, and why (for debug logs).
struct Skip {
  std::string service;  // "namespace/name"
  std::string reason;
  bool address_clash = false;  // another Service holds the address
  bool operator==(const Skip&) const = default;
};

// kube-proxy's service health check of a LoadBalancer Service with
// externalTrafficPolicy Local: its healthCheckNodePort, and how many ready
// endpoints it has on this node (as LocalReadyEndpoints() counts: distinct
// addresses, whatever the ports), which tells the cloud's load balancer
// whether to send this node the Service's traffic.
struct HealthCheck {
  uint16_t node_port = 0;
  uint32_t local_endpoints = 0;
  bool operator==(const HealthCheck&) const = default;
};
using HealthChecks = std::map<std::string, HealthCheck>;  // by "namespace/name"

// The frontends (dataplane/frontend.h: the one contract from here to the
// maps), the health checks, and what was left out.
struct DesiredState {
  dataplane::FrontendTable frontends;
  HealthChecks health_checks;
  std::vector<Skip> skipped;
};

// Deterministic: the same model gives the same state, whatever order the
// objects arrived in.
DesiredState compute(const Model& model, const ComputeConfig& config);

// The same for some Services only ("namespace/name"; a key the model does
// not hold gives nothing): what compute() gives for them, except that a
// clash with a Service outside `keys` on one address cannot be seen here
// (the caller checks ownership of addresses).
DesiredState compute_services(const Model& model, const std::set<std::string>& keys,
                              const ComputeConfig& config);

}  // namespace kpx::proxy
