// Checks of decoded objects against the API's own validation rules, for the
// fields kpx uses. A real API server never serves an object that fails them,
// but kpx must not trust that: an object that fails is rejected alone and
// every other object keeps working.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "k8s/objects.h"

namespace kpx::proxy {

// Each returns every problem found, as "field: problem" (e.g.
// "spec.clusterIP: 'x' is not an IP address"); empty means valid.
std::vector<std::string> service_problems(const k8s::Service& s);
std::vector<std::string> endpoint_slice_problems(const k8s::EndpointSlice& s);

// Address forms, as the API writes them (no zone suffixes, no brackets).
bool is_ipv4(std::string_view s);
bool is_ipv6(std::string_view s);
bool is_ip(std::string_view s);
bool is_cidr(std::string_view s);  // "10.0.0.0/8", "fd00::/64"

}  // namespace kpx::proxy
