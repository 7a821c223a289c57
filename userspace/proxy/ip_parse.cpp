#include "proxy/ip_parse.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <string>

namespace kpx::proxy {

namespace {

// Four decimal parts of any length (Go's pre-1.17 parser, which
// ParseIPSloppy keeps), each at most 255.
std::optional<std::array<uint8_t, 4>> ipv4_parts(std::string_view s) {
  std::array<uint8_t, 4> out{};
  for (size_t i = 0; i < 4; ++i) {
    if (i > 0) {
      if (s.empty() || s.front() != '.') return std::nullopt;
      s.remove_prefix(1);
    }
    size_t digits = 0;
    unsigned v = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') {
      v = v * 10 + static_cast<unsigned>(s[digits] - '0');
      if (v > 255) return std::nullopt;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
    out[i] = static_cast<uint8_t>(v);
    s.remove_prefix(digits);
  }
  if (!s.empty()) return std::nullopt;
  return out;
}

}  // namespace

net::IpAddr parse_ip_sloppy(std::string_view s) {
  net::IpAddr a;
  if (s.find(':') == std::string_view::npos) {
    auto parts = ipv4_parts(s);
    if (!parts) return a;
    a.family = net::IpAddr::Family::kV4;
    std::memcpy(a.bytes.data(), parts->data(), 4);
    return a;
  }
  // IPv6; a dotted tail is rewritten without its leading zeros, which
  // inet_pton refuses.
  std::string text(s);
  auto colon = text.rfind(':');
  if (text.find('.', colon) != std::string::npos) {
    auto parts = ipv4_parts(std::string_view(text).substr(colon + 1));
    if (!parts) return a;
    text.resize(colon + 1);
    for (size_t i = 0; i < 4; ++i) text += (i ? "." : "") + std::to_string((*parts)[i]);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) != 1) return a;
  a.family = net::IpAddr::Family::kV6;
  std::memcpy(a.bytes.data(), &v6, 16);
  return a;
}

std::optional<Cidr> parse_cidr_sloppy(std::string_view s) {
  auto slash = s.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  Cidr c;
  c.addr = parse_ip_sloppy(s.substr(0, slash));
  std::string_view len = s.substr(slash + 1);
  unsigned bits = 0;
  auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), bits);
  if (len.empty() || len.size() > 3 || ec != std::errc() || end != len.data() + len.size())
    return std::nullopt;
  const unsigned width = c.addr.family == net::IpAddr::Family::kV4   ? 32
                         : c.addr.family == net::IpAddr::Family::kV6 ? 128
                                                                     : 0;
  if (width == 0 || bits > width) return std::nullopt;
  c.prefix_len = static_cast<uint8_t>(bits);
  return c;
}

}  // namespace kpx::proxy
