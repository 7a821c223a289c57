// Addresses in API objects, parsed as kube-proxy parses them (k8s.io/utils/net
// ParseIPSloppy / ParseCIDRSloppy): the API's legacy validation admitted IPv4
// octets with leading zeros, so objects holding "010.0.0.1" exist, and they
// mean 10.0.0.1 (decimal, not octal), whatever a strict parser says.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "net/endpoint.h"

namespace kpx::proxy {

struct Cidr {
  net::IpAddr addr;  // as written (host bits kept)
  uint8_t prefix_len = 0;
  bool operator==(const Cidr&) const = default;
};

// IPv4 "a.b.c.d" (each part decimal, leading zeros allowed, at most 255),
// IPv6 (an embedded IPv4 tail likewise). Family kNone when not an address.
net::IpAddr parse_ip_sloppy(std::string_view s);
// "addr/len" with len at most the family's width; nullopt when not a CIDR.
std::optional<Cidr> parse_cidr_sloppy(std::string_view s);

}  // namespace kpx::proxy
