#include "net/endpoint.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace kpx::net {

IpAddr IpAddr::parse(std::string_view s) {
  IpAddr a;
  std::string str(s);
  if (inet_pton(AF_INET, str.c_str(), a.bytes.data()) == 1)
    a.family = Family::kV4;
  else if (inet_pton(AF_INET6, str.c_str(), a.bytes.data()) == 1)
    a.family = Family::kV6;
  else
    a.bytes = {};
  return a;
}

IpAddr IpAddr::from_v4(uint32_t addr_be) {
  IpAddr a;
  a.family = Family::kV4;
  std::memcpy(a.bytes.data(), &addr_be, 4);
  return a;
}

std::optional<uint32_t> IpAddr::v4() const {
  if (family != Family::kV4) return std::nullopt;
  uint32_t v;
  std::memcpy(&v, bytes.data(), 4);
  return v;
}

std::string IpAddr::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == Family::kNone) return "";
  inet_ntop(family == Family::kV4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
  return buf;
}

Result<uint32_t> parse_ipv4(std::string_view s) {
  // inet_pton(AF_INET) takes exactly four dotted decimal parts, no leading
  // zeros beyond a single digit, nothing else (no "1.2.3", no hex).
  std::string str(s);
  in_addr a{};
  if (str.empty() || inet_pton(AF_INET, str.c_str(), &a) != 1)
    return invalid_argument("invalid IPv4 address '" + str + "'");
  return a.s_addr;
}

Result<uint16_t> parse_port(std::string_view s) {
  unsigned v = 0;
  if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return invalid_argument("invalid port '" + std::string(s) + "': expected 1-65535");
  std::from_chars(s.data(), s.data() + s.size(), v);
  if (v < 1 || v > 65535)
    return invalid_argument("invalid port '" + std::string(s) + "': expected 1-65535");
  return static_cast<uint16_t>(v);
}

Result<Proto> parse_proto(std::string_view s) {
  std::string l(s);
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  if (l == "tcp") return Proto::kTcp;
  if (l == "udp") return Proto::kUdp;
  if (l == "sctp") return invalid_argument("protocol SCTP is not supported by kpx yet");
  return invalid_argument("invalid protocol '" + std::string(s) + "': expected tcp or udp");
}

namespace {

// Split "IP:PORT" at the last colon.
Result<std::pair<uint32_t, uint16_t>> parse_ip_port(std::string_view s, const char* what) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos)
    return invalid_argument(std::string("invalid ") + what + " '" + std::string(s) + "': expected IP:PORT");
  auto ip = parse_ipv4(s.substr(0, colon));
  if (!ip) return ip.error();
  auto port = parse_port(s.substr(colon + 1));
  if (!port) return port.error();
  return std::make_pair(*ip, *port);
}

}  // namespace

Result<ServiceAddr> parse_service(std::string_view s) {
  ServiceAddr out;
  auto slash = s.find('/');
  if (slash != std::string_view::npos) {
    auto p = parse_proto(s.substr(slash + 1));
    if (!p) return p.error();
    out.proto = *p;
    s = s.substr(0, slash);
  }
  auto ipp = parse_ip_port(s, "service");
  if (!ipp) return ipp.error();
  out.addr_be = ipp->first;
  out.port = ipp->second;
  return out;
}

Result<BackendAddr> parse_backend(std::string_view s) {
  auto ipp = parse_ip_port(s, "backend");
  if (!ipp) return ipp.error();
  return BackendAddr{ipp->first, ipp->second};
}

bool Ipv4Cidr::contains(uint32_t a_be) const {
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (ntohl(a_be) & mask) == (ntohl(addr_be) & mask);
}

Result<Ipv4Cidr> parse_ipv4_cidr(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return invalid_argument("'" + std::string(s) + "' is not a CIDR (no /prefix)");
  auto addr = parse_ipv4(s.substr(0, slash));
  if (!addr) return invalid_argument("'" + std::string(s) + "': " + addr.error().message);
  const std::string_view bits = s.substr(slash + 1);
  int prefix = 0;
  if (bits.empty() || bits.size() > 2) return invalid_argument("'" + std::string(s) + "': bad prefix length");
  for (char c : bits) {
    if (c < '0' || c > '9') return invalid_argument("'" + std::string(s) + "': bad prefix length");
    prefix = prefix * 10 + (c - '0');
  }
  if (prefix > 32) return invalid_argument("'" + std::string(s) + "': prefix length over 32");
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  if ((ntohl(*addr) & ~mask) != 0) return invalid_argument("'" + std::string(s) + "': host bits are set");
  return Ipv4Cidr{*addr, static_cast<uint8_t>(prefix)};
}

std::string format(const Ipv4Cidr& c) { return format_ipv4(c.addr_be) + "/" + std::to_string(c.prefix); }

std::string format_ipv4(uint32_t addr_be) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{addr_be};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string proto_name(Proto p) { return p == Proto::kUdp ? "UDP" : "TCP"; }

std::string format(const ServiceAddr& s) {
  return format_ipv4(s.addr_be) + ":" + std::to_string(s.port) + "/" + proto_name(s.proto);
}

std::string format(const BackendAddr& b) { return format_ipv4(b.addr_be) + ":" + std::to_string(b.port); }

}  // namespace kpx::net
