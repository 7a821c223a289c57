// Addresses as the CLI and the dataplane name them: IPv4 service
// VIP:PORT/PROTO and backend IP:PORT, parsed strictly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "status/status.h"

namespace kpx::net {

enum class Proto : uint8_t { kTcp = 6, kUdp = 17 };

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
std::string proto_name(Proto p);  // "TCP" / "UDP"
std::string format(const ServiceAddr& s);  // 10.96.0.10:53/UDP
std::string format(const BackendAddr& b);  // 10.244.1.5:8080

}  // namespace kpx::net
