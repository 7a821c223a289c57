// How the model holds Services and EndpointSlices. A cluster has tens of
// thousands of them, so they are kept compactly (binary addresses, enums,
// interned strings, no unused capacity) instead of as the decoded objects:
//   - a Service keeps every field kpx decodes (the other Service types'
//     fields too, for NodePort, LoadBalancer, external IPs, session affinity
//     and traffic policies), and of its labels the service-proxy-name one;
//   - an EndpointSlice keeps its address type and ports, and per endpoint
//     the first address (the others are fungible with it; kube-proxy uses
//     the first alone), the conditions as sent, node name, zone and hints.
// Objects are validated (proxy/validate.h) before they are compacted, and
// the items validation drops (bad external IPs, load balancer IPs, source
// ranges, endpoints, slice ports) are left out here.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "k8s/objects.h"
#include "net/endpoint.h"
#include "proxy/ip_parse.h"

namespace kpx::proxy {

// Equal strings share one id, valid for the pool's life. For values that
// repeat across objects (port names, node names, zones, label values), not
// for names of single objects: ids are never reclaimed.
class StringPool {
 public:
  using Id = uint32_t;
  static constexpr Id kEmpty = 0;  // ""

  StringPool();
  StringPool(const StringPool&) = delete;  // the index points into strings_
  StringPool& operator=(const StringPool&) = delete;
  StringPool(StringPool&&) = default;  // a moved deque keeps its elements in place
  StringPool& operator=(StringPool&&) = default;

  Id intern(std::string_view s);
  // The id of a string interned before, else nullopt (for readers of a
  // const pool).
  std::optional<Id> find(std::string_view s) const;
  const std::string& operator[](Id id) const { return strings_[id]; }
  size_t size() const { return strings_.size(); }

 private:
  std::deque<std::string> strings_;
  std::unordered_map<std::string_view, Id> index_;
};

// A unique_ptr whose == compares what it points to (null equals null
// only), so that the types below compare by value: a relist leaves an
// object that compacts to what the model holds unchanged (Model::replace_*).
template <typename T>
struct Boxed : std::unique_ptr<T> {
  using std::unique_ptr<T>::unique_ptr;
  Boxed(std::unique_ptr<T> p) : std::unique_ptr<T>(std::move(p)) {}  // NOLINT: implicit, as make_unique's result
  friend bool operator==(const Boxed& a, const Boxed& b) { return a ? b && *a == *b : !b; }
};

// An IPv4 or IPv6 address in binary (network byte order), or none: the
// frontend contract's own type (net/endpoint.h).
using IpAddr = net::IpAddr;

enum class ServiceType : uint8_t { kClusterIP, kNodePort, kLoadBalancer, kExternalName };
enum class Protocol : uint8_t { kTCP, kUDP, kSCTP };
enum class SessionAffinity : uint8_t { kNone, kClientIP };
enum class TrafficPolicy : uint8_t { kUnset, kCluster, kLocal };   // unset means Cluster
enum class LoadBalancerIpMode : uint8_t { kUnset, kVIP, kProxy };  // unset (or unknown) means VIP
enum class AddressType : uint8_t { kIPv4, kIPv6, kFQDN };

const char* to_string(Protocol p);  // "TCP"

struct ServicePortInfo {
  StringPool::Id name = StringPool::kEmpty;
  StringPool::Id target_port_name = StringPool::kEmpty;  // targetPort by name, else kEmpty
  uint16_t port = 0;
  uint16_t target_port = 0;  // targetPort by number; 0: by name, or unset ("same as port")
  uint16_t node_port = 0;    // 0: none allocated
  Protocol protocol = Protocol::kTCP;
  bool operator==(const ServicePortInfo&) const = default;
};

struct LoadBalancerIngressInfo {
  IpAddr ip;  // none: a hostname-only ingress
  LoadBalancerIpMode ip_mode = LoadBalancerIpMode::kUnset;
  bool operator==(const LoadBalancerIngressInfo&) const = default;
};

struct ServiceInfo {
  ServiceType type = ServiceType::kClusterIP;
  SessionAffinity session_affinity = SessionAffinity::kNone;
  TrafficPolicy external_traffic_policy = TrafficPolicy::kUnset;
  TrafficPolicy internal_traffic_policy = TrafficPolicy::kUnset;
  bool headless = false;                        // clusterIP "None" or unset
  bool other_proxy = false;                     // labelled service-proxy-name
  std::array<IpAddr::Family, 2> ip_families{};  // spec.ipFamilies (at most 2); kNone: absent
  uint16_t health_check_node_port = 0;
  int32_t client_ip_timeout_seconds = k8s::kDefaultClientIpTimeoutSeconds;
  StringPool::Id proxy_name = StringPool::kEmpty;  // that label's value
  StringPool::Id traffic_distribution = StringPool::kEmpty;
  std::vector<IpAddr> cluster_ips;  // clusterIPs (clusterIP alone for older objects); empty when headless
  std::vector<ServicePortInfo> ports;

  // Rarely set, so kept out of line: one allocation only when one is.
  struct External {
    std::vector<IpAddr> external_ips;
    std::vector<Cidr> load_balancer_source_ranges;  // the valid ones
    // spec.loadBalancerSourceRanges was not empty: sources are restricted
    // even when none of the ranges is usable (invalid, or IPv6 only), so
    // that a bad range never opens the Service to everyone.
    bool restricts_sources = false;
    std::vector<LoadBalancerIngressInfo> load_balancer_ingress;
    bool operator==(const External&) const = default;
  };
  Boxed<External> external;
  const External& ext() const;  // empty when external is null
  bool operator==(const ServiceInfo&) const = default;
};

struct EndpointHintsInfo {
  std::vector<StringPool::Id> for_zones, for_nodes;
  bool operator==(const EndpointHintsInfo&) const = default;
};

struct EndpointInfo {
  IpAddr address;  // the first address; none for an FQDN slice
  // Each condition as sent: absent, true or false (see k8s::EndpointConditions).
  std::optional<bool> ready() const { return get(0); }
  std::optional<bool> serving() const { return get(2); }
  std::optional<bool> terminating() const { return get(4); }
  bool is_ready() const { return ready().value_or(true); }
  // Absent serving counts as serving, as kube-proxy reads it (the API
  // says "defer to ready"; kube-proxy's terminating fallback does not).
  bool is_serving() const { return serving().value_or(true); }
  bool is_terminating() const { return terminating().value_or(false); }
  void set_conditions(const k8s::EndpointConditions& c);

  StringPool::Id node_name = StringPool::kEmpty;
  StringPool::Id zone = StringPool::kEmpty;
  Boxed<EndpointHintsInfo> hints;  // null: absent (empty and absent differ)
  bool operator==(const EndpointInfo&) const = default;

 private:
  std::optional<bool> get(int bit) const {
    if (!(conditions_ & (1u << bit))) return std::nullopt;
    return (conditions_ & (2u << bit)) != 0;
  }
  uint8_t conditions_ = 0;  // per condition: bit 2k set, bit 2k+1 value
};

struct EndpointPortInfo {
  StringPool::Id name = StringPool::kEmpty;  // "" for a Service's unnamed port
  uint16_t port = 0;                         // 0: unset ("all ports", ignored)
  Protocol protocol = Protocol::kTCP;
  bool operator==(const EndpointPortInfo&) const = default;
};

struct SliceInfo {
  AddressType address_type = AddressType::kIPv4;
  std::vector<EndpointPortInfo> ports;
  std::vector<EndpointInfo> endpoints;
  bool operator==(const SliceInfo&) const = default;
};

// Of validated objects (see proxy/validate.h).
ServiceInfo compact_service(const k8s::Service& s, StringPool& strings);
SliceInfo compact_slice(const k8s::EndpointSlice& s, StringPool& strings);

}  // namespace kpx::proxy
