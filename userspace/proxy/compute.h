// The pure function from the model to what the dataplane must hold.
// For now it covers ClusterIP over IPv4: each (clusterIP, port, protocol) of
// each Service kpx proxies, with the endpoints that may take new traffic.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "net/endpoint.h"
#include "proxy/model.h"

namespace kpx::proxy {

struct ComputeConfig {
  // Empty for now: node name, zone and cluster CIDR come with the traffic
  // policies and topology.
};

// One service address as the dataplane holds it.
struct ServiceBackends {
  std::string service;    // "namespace/name", for logs and metrics
  std::string port_name;  // the Service port's name ("" if unnamed)
  // Sorted and deduplicated; empty means traffic to the address is dropped.
  std::vector<net::BackendAddr> backends;
  bool operator==(const ServiceBackends&) const = default;
};

// Something of a Service that kpx does not proxy, and why (for debug logs).
struct Skip {
  std::string service;  // "namespace/name"
  std::string reason;
  bool address_clash = false;  // another Service holds the address
  bool operator==(const Skip&) const = default;
};

struct DesiredState {
  std::map<net::ServiceAddr, ServiceBackends> services;
  std::vector<Skip> skipped;
};

// Deterministic: the same model gives the same state, whatever order the
// objects arrived in.
DesiredState compute(const Model& model, const ComputeConfig& config);

// The same for some Services only ("namespace/name"; a key the model does
// not hold gives nothing): what compute() gives for them, except that a
// clash with a Service outside `keys` on one address cannot be seen here
// (the caller checks ownership of addresses).
DesiredState compute_services(const Model& model, const std::set<std::string>& keys, const ComputeConfig& config);

}  // namespace kpx::proxy
