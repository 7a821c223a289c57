#include "agent/options.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "net/endpoint.h"

namespace kpx::agent {

Result<std::chrono::milliseconds> parse_duration(const std::string& s) {
  if (s.empty()) return invalid_argument("empty duration");
  double total_ms = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    if (start == i) return invalid_argument("invalid duration '" + s + "'");
    double v = std::stod(s.substr(start, i - start));
    size_t ustart = i;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
    std::string unit = s.substr(ustart, i - ustart);
    double mult;
    if (unit == "h") mult = 3600e3;
    else if (unit == "m") mult = 60e3;
    else if (unit == "s") mult = 1e3;
    else if (unit == "ms") mult = 1;
    else if (unit == "us" || unit == "µs") mult = 1e-3;
    else if (unit == "ns") mult = 1e-6;
    else if (unit.empty() && s == "0") mult = 0;
    else return invalid_argument("invalid duration '" + s + "': unknown unit '" + unit + "'");
    total_ms += v * mult;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(total_ms));
}

Result<BindAddress> parse_bind_address(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return invalid_argument("invalid bind address '" + s + "': expected IP:PORT");
  BindAddress b;
  b.host = s.substr(0, colon);
  if (!b.host.empty()) {
    in_addr a{};
    if (inet_pton(AF_INET, b.host.c_str(), &a) != 1)
      return invalid_argument("invalid bind address '" + s + "': not an IPv4 address");
  }
  std::string port = s.substr(colon + 1);
  if (port == "0") return b;
  auto p = net::parse_port(port);
  if (!p) return invalid_argument("invalid bind address '" + s + "': " + p.error().message);
  b.port = *p;
  return b;
}

std::string node_name(const Options& o) {
  std::string n = o.hostname_override;
  if (n.empty()) {
    char buf[256] = {};
    gethostname(buf, sizeof buf - 1);
    n = buf;
  }
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  return n;
}

}  // namespace kpx::agent
