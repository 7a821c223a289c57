#include "agent/options.h"

#include <arpa/inet.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

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

Status load_config_file(const std::string& path, Options& o) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return invalid_argument("--config " + path + ": " + e.what());
  }
  try {
    if (!root.IsMap()) return invalid_argument("--config " + path + ": not a KubeProxyConfiguration object");
    if (root["kind"] && root["kind"].as<std::string>() != "KubeProxyConfiguration")
      return invalid_argument("--config " + path + ": kind is " + root["kind"].as<std::string>() +
                              ", expected KubeProxyConfiguration");
    auto str = [&](const YAML::Node& n, std::string& out) {
      if (n && !n.IsNull()) out = n.as<std::string>();
    };
    auto dur = [&](const YAML::Node& n, auto& out, const char* field) -> Status {
      if (!n || n.IsNull()) return {};
      auto d = parse_duration(n.as<std::string>());
      if (!d) return invalid_argument("--config " + path + ": " + field + ": " + d.error().message);
      out = std::chrono::duration_cast<std::remove_reference_t<decltype(out)>>(*d);
      return {};
    };
    if (root["clientConnection"]) str(root["clientConnection"]["kubeconfig"], o.kubeconfig);
    str(root["hostnameOverride"], o.hostname_override);
    str(root["clusterCIDR"], o.cluster_cidr);
    str(root["healthzBindAddress"], o.healthz_bind_address);
    str(root["metricsBindAddress"], o.metrics_bind_address);
    if (auto np = root["nodePortAddresses"]; np && !np.IsNull()) {
      if (!np.IsSequence()) return invalid_argument("--config " + path + ": nodePortAddresses: not a list");
      o.nodeport_addresses.clear();
      for (const auto& a : np) o.nodeport_addresses.push_back(a.as<std::string>());
    }
    KPX_TRY(dur(root["minSyncPeriod"], o.min_sync_period, "minSyncPeriod"));
    // v1alpha1 keeps masqueradeAll per proxier mode: either asks for it.
    for (const char* mode : {"iptables", "nftables"})
      if (auto m = root[mode]; m && m["masqueradeAll"] && !m["masqueradeAll"].IsNull())
        o.masquerade_all = o.masquerade_all || m["masqueradeAll"].as<bool>();
    str(root["detectLocalMode"], o.detect_local_mode);
    if (auto dl = root["detectLocal"]; dl && !dl.IsNull()) {
      str(dl["bridgeInterface"], o.pod_bridge_interface);
      str(dl["interfaceNamePrefix"], o.pod_interface_name_prefix);
    }
    if (auto ct = root["conntrack"]) {
      KPX_TRY(dur(ct["tcpEstablishedTimeout"], o.tcp_established_timeout, "conntrack.tcpEstablishedTimeout"));
      KPX_TRY(dur(ct["tcpCloseWaitTimeout"], o.tcp_close_wait_timeout, "conntrack.tcpCloseWaitTimeout"));
      KPX_TRY(dur(ct["udpTimeout"], o.udp_timeout, "conntrack.udpTimeout"));
      auto count = [](const YAML::Node& n, uint32_t& out, const char* name) -> Status {
        if (!n || n.IsNull()) return {};
        long long v = 0;
        try {
          v = n.as<long long>();
        } catch (const YAML::Exception&) {
          return invalid_argument(std::string(name) + ": not an integer");
        }
        if (v < 0 || v > (1LL << 30)) return invalid_argument(std::string(name) + ": out of range");
        out = static_cast<uint32_t>(v);
        return {};
      };
      KPX_TRY(count(ct["maxPerCore"], o.conntrack_max_per_core, "conntrack.maxPerCore"));
      KPX_TRY(count(ct["min"], o.conntrack_min, "conntrack.min"));
    }
  } catch (const YAML::Exception& e) {
    return invalid_argument("--config " + path + ": " + e.what());
  }
  return {};
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
