// Builders and lookups shared by the tests of the model and compute():
// Services, EndpointSlices and endpoints as the API gives them, and the
// frontends' backend sets as addresses.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "proxy/compute.h"
#include "proxy/model.h"

namespace kpx::proxy::fixtures {

using OptBool = std::optional<bool>;

inline k8s::ServicePort port(std::string name, int32_t number, std::string protocol = "TCP") {
  return {std::move(name), std::move(protocol), number, std::nullopt, 0};
}

inline k8s::Service service(std::string name, std::string cluster_ip, std::vector<k8s::ServicePort> ports) {
  k8s::Service s;
  s.metadata.name = std::move(name);
  s.metadata.namespace_ = "default";
  s.cluster_ip = std::move(cluster_ip);
  s.ports = std::move(ports);
  return s;
}

inline k8s::Endpoint endpoint(std::string ip, OptBool ready = {}, OptBool serving = {},
                              OptBool terminating = {}) {
  k8s::Endpoint e;
  e.addresses = {std::move(ip)};
  e.conditions = {ready, serving, terminating};
  return e;
}

inline k8s::EndpointPort slice_port(std::string name, int32_t number, std::string protocol = "TCP") {
  return {std::move(name), std::move(protocol), number};
}

inline k8s::EndpointSlice slice(std::string name, std::string service_name,
                                std::vector<k8s::Endpoint> endpoints, std::vector<k8s::EndpointPort> ports,
                                std::string address_type = "IPv4") {
  k8s::EndpointSlice s;
  s.metadata.name = std::move(name);
  s.metadata.namespace_ = "default";
  if (!service_name.empty()) s.metadata.labels.emplace(k8s::kLabelServiceName, std::move(service_name));
  s.address_type = std::move(address_type);
  s.endpoints = std::move(endpoints);
  s.ports = std::move(ports);
  return s;
}

inline net::ServiceAddr vip(const char* s) { return *net::parse_service(s); }

inline std::vector<net::BackendAddr> backends(std::initializer_list<const char*> list) {
  std::vector<net::BackendAddr> out;
  for (const char* b : list) out.push_back(*net::parse_backend(b));
  return out;
}

inline dataplane::FrontendKey fk(const char* s) { return dataplane::cluster_ip_key(vip(s)); }

inline std::vector<net::BackendAddr> addrs(const std::vector<dataplane::Backend>& bs) {
  std::vector<net::BackendAddr> out;
  for (const auto& b : bs) out.push_back({*b.addr.v4(), b.port});
  return out;
}

// The cluster set of one ClusterIP frontend, or nullopt when compute() left it out.
inline std::optional<std::vector<net::BackendAddr>> at(const DesiredState& d, const char* addr) {
  auto it = d.frontends.find(fk(addr));
  if (it == d.frontends.end()) return std::nullopt;
  return addrs(it->second.cluster);
}

inline void add(Model& m, k8s::Service s) {
  auto r = m.upsert_service(std::move(s));
  ASSERT_FALSE(r.has_value()) << to_string(*r);
}

inline void add(Model& m, k8s::EndpointSlice s) {
  auto r = m.upsert_endpoint_slice(std::move(s));
  ASSERT_FALSE(r.has_value()) << to_string(*r);
}

}  // namespace kpx::proxy::fixtures
