#include "agent/configz.h"

#include <cstdio>

#include "agent/http_endpoints.h"

namespace kpx::agent {

std::string format_go_duration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string sign = ms < 0 ? "-" : "";
  if (ms < 0) ms = -ms;
  if (ms < 1000) return sign + std::to_string(ms) + "ms";
  const int64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
  std::string secs = std::to_string(s);
  if (frac) {
    char f[8];
    snprintf(f, sizeof f, ".%03lld", static_cast<long long>(frac));
    std::string fs = f;
    while (fs.back() == '0') fs.pop_back();
    secs += fs;
  }
  std::string out = sign;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  return out + secs + "s";
}

nlohmann::json configz(const Options& o) {
  auto dur = [](auto d) {
    return format_go_duration(std::chrono::duration_cast<std::chrono::milliseconds>(d));
  };
  const std::string local_mode = o.detect_local_mode.empty() ? "ClusterCIDR" : o.detect_local_mode;
  nlohmann::json kube_proxy = {
      {"clientConnection", {{"kubeconfig", o.kubeconfig}}},
      {"hostnameOverride", node_name(o)},
      {"clusterCIDR", o.cluster_cidr},
      {"healthzBindAddress", o.healthz_bind_address},
      {"metricsBindAddress", o.metrics_bind_address},
      {"bindAddressHardFail", o.bind_address_hard_fail},
      {"mode", kProxyMode},
      {"minSyncPeriod", dur(o.min_sync_period)},
      {"syncPeriod", dur(o.sync_period)},
      {"nodePortAddresses", o.nodeport_addresses},
      {"iptables", {{"masqueradeAll", o.masquerade_all}}},
      {"nftables", {{"masqueradeAll", o.masquerade_all}}},
      {"detectLocalMode", local_mode},
      {"detectLocal",
       {{"bridgeInterface", o.pod_bridge_interface}, {"interfaceNamePrefix", o.pod_interface_name_prefix}}},
      {"conntrack",
       {{"maxPerCore", o.conntrack_max_per_core},
        {"min", o.conntrack_min},
        {"tcpEstablishedTimeout", dur(o.tcp_established_timeout)},
        {"tcpCloseWaitTimeout", dur(o.tcp_close_wait_timeout)},
        {"udpTimeout", dur(o.udp_timeout)},
        {"udpStreamTimeout", dur(o.udp_stream_timeout)}}},
  };
  nlohmann::json kpx = {
      {"master", o.master},
      {"pinDir", o.pin_dir},
      {"podInterfaces", o.pod_interfaces},
      {"uplinkInterfaces", o.uplink_interfaces},
      {"egressMasquerade", o.egress_masquerade},
      {"nonMasqueradeCIDRs", o.non_masquerade_cidrs},
      {"hairpinSNATIP", o.hairpin_snat_ip},
      {"socketLB", o.socket_lb},
      {"socketLBCgroup", o.socket_lb_cgroup},
      {"conntrackNewFlowsPerSec", o.conntrack_new_per_sec},
      {"conntrackNewFlowsBurst", o.conntrack_new_burst},
  };
  return {{"kubeproxy.config.k8s.io", kube_proxy}, {"kpx", kpx}};
}

}  // namespace kpx::agent
