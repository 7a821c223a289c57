// load_config_file (options.h): a kube-proxy KubeProxyConfiguration
// (kubeproxy.config.k8s.io/v1alpha1) onto kpx's Options. The schema below
// is v1alpha1's (staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go);
// the defaults are kube-proxy's (pkg/proxy/apis/config/v1alpha1/defaults.go)
// and the mode's section rule its conversion's.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "agent/options.h"

namespace kpx::agent {

namespace {

enum class Type { kString, kBool, kInt, kFloat, kDuration, kStringList, kBoolMap, kObject, kAny };

struct Field {
  const char* name;
  Type type;
  const std::vector<Field>* children = nullptr;
};

const std::vector<Field> kClientConnection = {{"kubeconfig", Type::kString},
                                              {"acceptContentTypes", Type::kString},
                                              {"contentType", Type::kString},
                                              {"qps", Type::kFloat},
                                              {"burst", Type::kInt}};
const std::vector<Field> kLogging = {{"format", Type::kString},
                                     {"flushFrequency", Type::kAny},
                                     {"verbosity", Type::kInt},
                                     {"vmodule", Type::kAny},
                                     {"options", Type::kAny}};
const std::vector<Field> kIptables = {
    {"masqueradeBit", Type::kInt},       {"masqueradeAll", Type::kBool},  {"localhostNodePorts", Type::kBool},
    {"snatNodeInternalIP", Type::kBool}, {"syncPeriod", Type::kDuration}, {"minSyncPeriod", Type::kDuration}};
const std::vector<Field> kIpvs = {{"syncPeriod", Type::kDuration},    {"minSyncPeriod", Type::kDuration},
                                  {"scheduler", Type::kString},       {"excludeCIDRs", Type::kStringList},
                                  {"strictARP", Type::kBool},         {"tcpTimeout", Type::kDuration},
                                  {"tcpFinTimeout", Type::kDuration}, {"udpTimeout", Type::kDuration}};
const std::vector<Field> kNftables = {{"masqueradeBit", Type::kInt},
                                      {"masqueradeAll", Type::kBool},
                                      {"syncPeriod", Type::kDuration},
                                      {"minSyncPeriod", Type::kDuration}};
const std::vector<Field> kWinkernel = {{"networkName", Type::kString},
                                       {"sourceVip", Type::kString},
                                       {"enableDSR", Type::kBool},
                                       {"rootHnsEndpointName", Type::kString},
                                       {"forwardHealthCheckVip", Type::kBool}};
const std::vector<Field> kDetectLocal = {{"bridgeInterface", Type::kString},
                                         {"interfaceNamePrefix", Type::kString}};
const std::vector<Field> kConntrack = {{"maxPerCore", Type::kInt},
                                       {"min", Type::kInt},
                                       {"tcpEstablishedTimeout", Type::kDuration},
                                       {"tcpCloseWaitTimeout", Type::kDuration},
                                       {"tcpBeLiberal", Type::kBool},
                                       {"udpTimeout", Type::kDuration},
                                       {"udpStreamTimeout", Type::kDuration}};
const std::vector<Field> kTop = {
    {"apiVersion", Type::kString},
    {"kind", Type::kString},
    {"featureGates", Type::kBoolMap},
    {"clientConnection", Type::kObject, &kClientConnection},
    {"logging", Type::kObject, &kLogging},
    {"hostnameOverride", Type::kString},
    {"bindAddress", Type::kString},
    {"healthzBindAddress", Type::kString},
    {"metricsBindAddress", Type::kString},
    {"bindAddressHardFail", Type::kBool},
    {"enableProfiling", Type::kBool},
    {"showHiddenMetricsForVersion", Type::kString},
    {"mode", Type::kString},
    {"iptables", Type::kObject, &kIptables},
    {"ipvs", Type::kObject, &kIpvs},
    {"nftables", Type::kObject, &kNftables},
    {"winkernel", Type::kObject, &kWinkernel},
    {"detectLocalMode", Type::kString},
    {"detectLocal", Type::kObject, &kDetectLocal},
    {"clusterCIDR", Type::kString},
    {"nodePortAddresses", Type::kStringList},
    {"oomScoreAdj", Type::kInt},
    {"conntrack", Type::kObject, &kConntrack},
    {"configSyncPeriod", Type::kDuration},
    {"portRange", Type::kString},
    {"windowsRunAsService", Type::kBool},
};

const char* type_name(Type t) {
  switch (t) {
    case Type::kString:
      return "a string";
    case Type::kBool:
      return "true or false";
    case Type::kInt:
      return "an integer";
    case Type::kFloat:
      return "a number";
    case Type::kDuration:
      return "a duration such as 1s or 24h0m0s";
    case Type::kStringList:
      return "a list of strings";
    case Type::kBoolMap:
      return "a map of names to true or false";
    case Type::kObject:
      return "an object";
    case Type::kAny:
      return "anything";
  }
  return "?";
}

bool scalar_is(const YAML::Node& n, Type t) {
  if (!n.IsScalar()) return false;
  try {
    switch (t) {
      case Type::kString:
        return true;
      case Type::kBool:
        n.as<bool>();
        return true;
      case Type::kInt:
        n.as<long long>();
        return true;
      case Type::kFloat:
        n.as<double>();
        return true;
      case Type::kDuration:
        return parse_duration(n.as<std::string>()).ok();
      default:
        return false;
    }
  } catch (const YAML::Exception&) {
    return false;
  }
}

// Every field of the document by dotted path, the last occurrence winning
// (null values kept as null: Go's zero value), after type checks.
using Fields = std::map<std::string, YAML::Node>;

Status walk(const YAML::Node& map, const std::vector<Field>& schema, const std::string& prefix, Fields& out,
            ConfigFileReport& report) {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    const std::string path = prefix + key;
    auto f = std::find_if(schema.begin(), schema.end(), [&](const Field& x) { return key == x.name; });
    if (f == schema.end()) {
      report.unknown.push_back(path);
      continue;
    }
    if (!seen.insert(key).second) {
      report.duplicates.push_back(path);
      // The last one replaces all of the first.
      for (auto it = out.lower_bound(path); it != out.end() && it->first.rfind(path, 0) == 0;)
        it = out.erase(it);
    }
    const YAML::Node& v = kv.second;
    if (v.IsNull()) {
      out[path] = v;
      continue;
    }
    bool ok = true;
    switch (f->type) {
      case Type::kObject:
        if (!v.IsMap()) {
          ok = false;
          break;
        }
        KPX_TRY(walk(v, *f->children, path + ".", out, report));
        continue;
      case Type::kAny:
        break;
      case Type::kStringList:
        ok = v.IsSequence() &&
             std::all_of(v.begin(), v.end(), [](const YAML::Node& e) { return e.IsScalar(); });
        break;
      case Type::kBoolMap:
        ok = v.IsMap() &&
             std::all_of(v.begin(), v.end(), [](const auto& e) { return scalar_is(e.second, Type::kBool); });
        break;
      default:
        ok = scalar_is(v, f->type);
    }
    if (!ok) return invalid_argument(path + ": expected " + type_name(f->type));
    out[path] = v;
  }
  return {};
}

// A value on one line: "1h0m0s", "{a: true}".
std::string flow(const YAML::Node& n) {
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

}  // namespace

std::string ConfigFileReport::not_honoured_line() const {
  if (not_honoured.empty()) return "";
  std::string line = "--config: kpx does not honour these KubeProxyConfiguration settings:";
  for (size_t i = 0; i < not_honoured.size(); ++i) line += (i ? "; " : " ") + not_honoured[i];
  return line;
}

std::string ConfigFileReport::strict_decoding_line() const {
  if (unknown.empty() && duplicates.empty()) return "";
  std::string line = "--config: using lenient decoding as strict decoding failed (as kube-proxy):";
  for (const auto& u : unknown) line += " unknown field \"" + u + "\";";
  for (const auto& d : duplicates) line += " duplicate field \"" + d + "\" (the last one counts);";
  line.pop_back();
  return line;
}

Result<ConfigFileReport> load_config_file(const std::string& path, Options& o) {
  const std::string where = "--config " + path + ": ";
  ConfigFileReport report;
  Fields f;
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return invalid_argument(where + "not a KubeProxyConfiguration object");
    if (auto st = walk(root, kTop, "", f, report); !st) return invalid_argument(where + st.error().message);
  } catch (const YAML::Exception& e) {
    return invalid_argument(where + e.what());
  }
  // Typed views: nullopt for absent and null.
  auto node = [&](const std::string& p) -> std::optional<YAML::Node> {
    auto it = f.find(p);
    if (it == f.end() || it->second.IsNull()) return std::nullopt;
    return it->second;
  };
  auto str = [&](const std::string& p) { return node(p) ? node(p)->as<std::string>() : std::string(); };
  auto boolean = [&](const std::string& p) { return node(p) ? node(p)->as<bool>() : false; };
  auto integer = [&](const std::string& p) {
    return node(p) ? std::optional<long long>(node(p)->as<long long>()) : std::nullopt;
  };
  auto duration = [&](const std::string& p) {
    return node(p) ? *parse_duration(node(p)->as<std::string>()) : std::chrono::milliseconds(0);
  };
  auto not_honoured = [&](const std::string& p, const std::string& why) {
    report.not_honoured.push_back(p + "=" + flow(*node(p)) + " (" + why + ")");
  };

  const std::string api_version = str("apiVersion"), kind = str("kind");
  if (kind.empty()) return invalid_argument(where + "kind is missing (expected KubeProxyConfiguration)");
  if (kind != "KubeProxyConfiguration")
    return invalid_argument(where + "kind is " + kind + ", expected KubeProxyConfiguration");
  if (api_version != "kubeproxy.config.k8s.io/v1alpha1")
    return invalid_argument(where +
                            (api_version.empty() ? "apiVersion is missing" : "apiVersion " + api_version) +
                            " (expected kubeproxy.config.k8s.io/v1alpha1)");

  // The proxy mode picks the section of the per-mode settings, as kube-proxy's
  // conversion does: nftables, ipvs, else iptables (masqueradeAll: nftables
  // or iptables).
  const std::string mode = str("mode");
  if (!mode.empty())
    not_honoured("mode", "kpx runs its own eBPF datapath; the " + mode + " section's settings apply");
  const std::string section = mode == "nftables" ? "nftables" : mode == "ipvs" ? "ipvs" : "iptables";
  // Zero means the default (kube-proxy: 1s; kpx's own is shorter, its syncs are cheap).
  if (auto d = duration(section + ".minSyncPeriod"); d.count() > 0) o.min_sync_period = d;
  if (auto d = duration(section + ".syncPeriod"); d.count() > 0) o.sync_period = d;
  const std::string masq_section = mode == "nftables" ? "nftables" : "iptables";
  o.masquerade_all = boolean(masq_section + ".masqueradeAll");
  if (auto bit = integer(masq_section + ".masqueradeBit"); bit && *bit != 14)
    not_honoured(masq_section + ".masqueradeBit", "kpx marks no packets");
  if (boolean("iptables.snatNodeInternalIP"))
    not_honoured("iptables.snatNodeInternalIP", "kpx source-NATs to the uplink's primary address");
  if (mode == "ipvs") {
    for (const char* k : {"ipvs.scheduler", "ipvs.excludeCIDRs"})
      if (node(k) && (node(k)->IsSequence() ? node(k)->size() > 0 : !str(k).empty()))
        not_honoured(k, "no IPVS");
    if (boolean("ipvs.strictARP")) not_honoured("ipvs.strictARP", "no IPVS");
    for (const char* k : {"ipvs.tcpTimeout", "ipvs.tcpFinTimeout", "ipvs.udpTimeout"})
      if (duration(k).count() > 0) not_honoured(k, "no IPVS; see conntrack.*");
  }
  for (const auto& fld : kWinkernel) {
    const std::string k = std::string("winkernel.") + fld.name;
    if (fld.type == Type::kBool ? boolean(k) : !str(k).empty()) not_honoured(k, "Windows only");
  }
  if (boolean("windowsRunAsService")) not_honoured("windowsRunAsService", "Windows only");

  o.kubeconfig = str("clientConnection.kubeconfig");
  // Zero QPS and burst are kube-proxy's defaults, 5 and 10.
  if (auto q = node("clientConnection.qps"); q && q->as<double>() != 0) o.api_qps = q->as<double>();
  if (auto b = integer("clientConnection.burst"); b && *b != 0) {
    if (*b < 0 || *b > 1000000) return invalid_argument(where + "clientConnection.burst: out of range");
    o.api_burst = static_cast<int>(*b);
  }
  if (auto ct = str("clientConnection.contentType");
      !ct.empty() && ct != "application/json" && ct != "application/vnd.kubernetes.protobuf")
    not_honoured("clientConnection.contentType", "kpx speaks JSON");
  if (auto act = str("clientConnection.acceptContentTypes");
      !act.empty() && act.find("application/json") == std::string::npos)
    not_honoured("clientConnection.acceptContentTypes", "kpx accepts JSON only");

  o.hostname_override = str("hostnameOverride");
  o.cluster_cidr = str("clusterCIDR");
  // "" is the default; an address without a port gets the default port (kube-proxy's AppendPortIfNeeded).
  auto bind = [&](const char* k, std::string& out, const char* port) {
    std::string v = str(k);
    if (v.empty()) return;
    out = v.find(':') == std::string::npos ? v + ":" + port : v;
  };
  bind("healthzBindAddress", o.healthz_bind_address, "10256");
  bind("metricsBindAddress", o.metrics_bind_address, "10249");
  o.bind_address_hard_fail = boolean("bindAddressHardFail");
  if (auto b = str("bindAddress"); !b.empty() && b != "0.0.0.0")
    not_honoured("bindAddress", "kpx's primary address is the first IPv4 address of --uplink-interfaces");
  if (auto np = node("nodePortAddresses")) {
    o.nodeport_addresses.clear();
    for (const auto& a : *np) o.nodeport_addresses.push_back(a.as<std::string>());
  }
  o.detect_local_mode = str("detectLocalMode");
  if (!o.detect_local_mode.empty() && o.detect_local_mode != "ClusterCIDR" &&
      o.detect_local_mode != "NodeCIDR" && o.detect_local_mode != "BridgeInterface" &&
      o.detect_local_mode != "InterfaceNamePrefix")
    return invalid_argument(where + "detectLocalMode: unknown mode " + o.detect_local_mode);
  o.pod_bridge_interface = str("detectLocal.bridgeInterface");
  o.pod_interface_name_prefix = str("detectLocal.interfaceNamePrefix");

  // conntrack: a zero or unset timeout leaves kpx's datapath default.
  auto secs = [](std::chrono::milliseconds d) { return std::chrono::duration_cast<std::chrono::seconds>(d); };
  o.tcp_established_timeout = secs(duration("conntrack.tcpEstablishedTimeout"));
  o.tcp_close_wait_timeout = secs(duration("conntrack.tcpCloseWaitTimeout"));
  o.udp_timeout = secs(duration("conntrack.udpTimeout"));
  o.udp_stream_timeout = secs(duration("conntrack.udpStreamTimeout"));
  if (boolean("conntrack.tcpBeLiberal"))
    not_honoured("conntrack.tcpBeLiberal", "kpx's conntrack does not check TCP windows");
  for (auto [k, out] : {std::pair{"conntrack.maxPerCore", &o.conntrack_max_per_core},
                        std::pair{"conntrack.min", &o.conntrack_min}}) {
    auto v = integer(k);
    if (!v) continue;  // null: kube-proxy's default, which is kpx's
    if (*v < 0 || *v > (1LL << 30)) return invalid_argument(where + k + ": out of range");
    *out = static_cast<uint32_t>(*v);
  }

  if (auto v = integer("logging.verbosity"); v && *v > 0) o.verbosity = static_cast<int>(std::min(*v, 10LL));
  if (auto fmt = str("logging.format"); !fmt.empty() && fmt != "text")
    not_honoured("logging.format", "kpx logs text");
  if (auto oom = integer("oomScoreAdj"); oom && *oom != -999)
    not_honoured("oomScoreAdj", "set the pod's priority or the container runtime's instead");
  if (auto d = duration("configSyncPeriod"); d.count() > 0 && d != std::chrono::minutes(15))
    not_honoured("configSyncPeriod", "kpx's reflectors do not resync");
  if (boolean("enableProfiling")) not_honoured("enableProfiling", "no /debug/pprof");
  if (!str("showHiddenMetricsForVersion").empty())
    not_honoured("showHiddenMetricsForVersion", "kpx has no hidden metrics");
  if (auto fg = node("featureGates"); fg && fg->size() > 0)
    not_honoured("featureGates", "kpx has no feature gates");
  if (!str("portRange").empty()) not_honoured("portRange", "unused, by kube-proxy too");
  return report;
}

}  // namespace kpx::agent
