// Addresses as the CLI and the dataplane name them: IPv4 service
// VIP:PORT/PROTO and backend IP:PORT, parsed strictly.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "status/status.h"

namespace kpx::net {

enum class Proto : uint8_t { kTcp = 6, kUdp = 17 };

// An IPv4 or IPv6 address in binary (network byte order), or none: the
// frontend contract's address (IPv4 now; IPv6 adds without a new type).
struct IpAddr {
  enum class Family : uint8_t { kNone = 0, kV4 = 4, kV6 = 6 };
  Family family = Family::kNone;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4

  // kNone when s is not an address.
  static IpAddr parse(std::string_view s);
  static IpAddr from_v4(uint32_t addr_be);
  // The IPv4 address as parse_ipv4 gives it (network order in a uint32_t),
  // or nullopt for IPv6 and none.
  std::optional<uint32_t> v4() const;
  std::string str() const;  // "" for none
  auto operator<=>(const IpAddr&) const = default;
};

// Addresses are kept in network byte order (as in packets and maps), ports
// in host order.
struct ServiceAddr {
  uint32_t addr_be = 0;
  uint16_t port = 0;
  Proto proto = Proto::kTcp;
  auto operator<=>(const ServiceAddr&) const = default;
};

struct BackendAddr {
  uint32_t addr_be = 0;
  uint16_t port = 0;
  auto operator<=>(const BackendAddr&) const = default;
};

Result<uint32_t> parse_ipv4(std::string_view s);
Result<uint16_t> parse_port(std::string_view s);
// "tcp" or "udp", any case. SCTP is refused with a clear message.
Result<Proto> parse_proto(std::string_view s);
// VIP:PORT/PROTO; "/PROTO" may be left out and means TCP, as in Kubernetes.
Result<ServiceAddr> parse_service(std::string_view s);
// IP:PORT
Result<BackendAddr> parse_backend(std::string_view s);

std::string format_ipv4(uint32_t addr_be);

// An IPv4 network, "10.0.0.0/24". Host bits set are an error (as Kubernetes
// validates CIDR flags).
struct Ipv4Cidr {
  uint32_t addr_be = 0;
  uint8_t prefix = 0;
  bool contains(uint32_t a_be) const;
  auto operator<=>(const Ipv4Cidr&) const = default;
};
std::string format(const Ipv4Cidr& c);  // "10.0.0.0/24"
Result<Ipv4Cidr> parse_ipv4_cidr(std::string_view s);
std::string proto_name(Proto p);  // "TCP" / "UDP"
std::string format(const ServiceAddr& s);  // 10.96.0.10:53/UDP
std::string format(const BackendAddr& b);  // 10.244.1.5:8080

}  // namespace kpx::net
