// Checks of decoded objects against the API's own validation rules, for the
// fields kpx uses. A real API server never serves an object that fails them,
// but kpx must not trust that. As kube-proxy, kpx keeps what it can: a bad
// value in a list (an external IP, a load balancer IP, a source range, an
// endpoint, a slice port) drops that value alone; what the whole object
// stands on (its name, cluster IP, Service ports, address type, owner) being
// bad rejects the object, and every other object keeps working.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "k8s/objects.h"

namespace kpx::proxy {

// Every problem found, as "field: problem" (e.g. "spec.clusterIP: 'x' is
// not an IP address"), each list capped for objects with thousands of bad
// values.
struct Findings {
  std::vector<std::string> fatal;    // the object is rejected
  std::vector<std::string> dropped;  // these items are left out, the rest is kept
};
Findings check_service(const k8s::Service& s);
Findings check_endpoint_slice(const k8s::EndpointSlice& s);

// The item rules check_* apply, for the compact form to leave out what
// they drop (proxy/compact.h).
bool usable_endpoint(const k8s::Endpoint& e, std::string_view address_type);
bool usable_endpoint_port(const k8s::EndpointPort& p);
// A loadBalancerSourceRanges entry without the space padding the API allows.
std::string_view trim_spaces(std::string_view s);

// Address forms, as the API writes them (no zone suffixes, no brackets),
// read as kube-proxy reads them (proxy/ip_parse.h: IPv4 leading zeros are
// decimal).
bool is_ipv4(std::string_view s);
bool is_ipv6(std::string_view s);
bool is_ip(std::string_view s);
bool is_cidr(std::string_view s);  // "10.0.0.0/8", "fd00::/64"

}  // namespace kpx::proxy
