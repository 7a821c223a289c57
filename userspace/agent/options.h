// `kpx agent` settings: kube-proxy's flags where they mean the same, a
// KubeProxyConfiguration file (--config) for the fields that apply, and
// kpx's own --pin-dir and --pod-interfaces.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::agent {

struct Options {
  std::string kubeconfig;          // --kubeconfig / clientConnection.kubeconfig
  std::string master;              // --master: the API server's address, overriding the kubeconfig's
  std::string hostname_override;   // --hostname-override / hostnameOverride
  std::string cluster_cidr;        // --cluster-cidr / clusterCIDR
  std::string healthz_bind_address = "0.0.0.0:10256";   // --healthz-bind-address
  std::string metrics_bind_address = "127.0.0.1:10249"; // --metrics-bind-address
  // --min-sync-period / <mode>.minSyncPeriod (iptables.minSyncPeriod, ...).
  std::chrono::milliseconds min_sync_period{100};
  // --sync-period / <mode>.syncPeriod: a full sync that audits the maps
  // (and rewrites what something else changed) at least this often;
  // kube-proxy's default. 0: never.
  std::chrono::milliseconds sync_period{30000};
  // --kube-api-qps / --kube-api-burst / clientConnection.qps, .burst: the
  // client-side rate limit of API requests (kube-proxy's defaults; qps < 0:
  // none).
  double api_qps = 5;
  int api_burst = 10;
  // The reflectors' longest backoff base (client-go's 30 s; each delay adds
  // up to as much jitter). Hidden --api-max-backoff-ms, for tests that
  // inject many faults in a row: kube-proxy has no such setting.
  std::chrono::milliseconds api_max_backoff{30000};
  std::chrono::seconds tcp_established_timeout{0};      // conntrack.tcpEstablishedTimeout (0: datapath default)
  // conntrack.tcpCloseWaitTimeout: kube-proxy sets the kernel's CLOSE_WAIT
  // (a FIN from one side, acknowledged, the other side still open), and so
  // does kpx (KPX_CT_F_CLOSE_WAIT); an unanswered FIN keeps the kernel's
  // FIN_WAIT timeout, 120 s.
  std::chrono::seconds tcp_close_wait_timeout{0};
  std::chrono::seconds udp_timeout{0};                  // conntrack.udpTimeout (unreplied UDP)
  std::chrono::seconds udp_stream_timeout{0};           // conntrack.udpStreamTimeout (replied, past 2 s)
  // conntrack.maxPerCore / conntrack.min (kube-proxy's defaults): the table
  // holds max(maxPerCore * CPUs, min) flows; maxPerCore 0 keeps kpx's
  // default size. Fixed when the maps are created.
  uint32_t conntrack_max_per_core = 32768;
  uint32_t conntrack_min = 131072;
  // kpx's own: new flows a pod interface may open a second, and its burst
  // (0: the datapath defaults, KPX_DEFAULT_CT_NEW_PER_SEC / _BURST).
  uint32_t conntrack_new_per_sec = 0;
  uint32_t conntrack_new_burst = 0;
  std::string pin_dir;             // --pin-dir
  std::string pod_interfaces;      // --pod-interfaces GLOB (empty: attach to nothing)
  // --uplink-interfaces GLOB: the node's interfaces towards the other nodes
  // and the outside, where NodePort traffic arrives (empty: none). The
  // first one's first IPv4 address is the node's primary address (the
  // source of translated north-south traffic).
  std::string uplink_interfaces;
  // --nodeport-addresses / nodePortAddresses: CIDRs, or "primary"; NodePorts
  // are served on the node addresses they match (empty: on every one).
  std::vector<std::string> nodeport_addresses;
  // --egress-masquerade: pods' traffic out of the cluster is source-NATed
  // to the node's primary address (ip-masq-agent's job), except to
  // --non-masquerade-cidrs (default: --cluster-cidr, which it needs).
  bool egress_masquerade = false;
  std::vector<std::string> non_masquerade_cidrs;
  // kube-proxy's masquerade of Service traffic. --masquerade-all /
  // iptables.masqueradeAll, nftables.masqueradeAll: every new flow to a
  // Service is source-NATed to the node. Else a flow to a ClusterIP from
  // a source that is not "local" is (off-cluster clients, through a route
  // to the Service CIDR), with --detect-local-mode / detectLocalMode:
  // ClusterCIDR (default; --cluster-cidr), NodeCIDR (the Node's podCIDR),
  // InterfaceNamePrefix (--pod-interface-name-prefix) or BridgeInterface
  // (--pod-bridge-interface): kpx sees pods' traffic on their interfaces,
  // so both mean "came in on a pod interface".
  bool masquerade_all = false;
  // bindAddressHardFail / --bind-address-hard-fail: a healthz or metrics
  // listener that cannot bind stops the agent; else (kube-proxy's default)
  // it is logged and tried again every 5 s.
  bool bind_address_hard_fail = false;
  std::string detect_local_mode;          // "" = ClusterCIDR
  std::string pod_bridge_interface;       // detectLocal.bridgeInterface
  std::string pod_interface_name_prefix;  // detectLocal.interfaceNamePrefix
  // Socket-level load balancing (kpx's own): --socket-lb host (processes
  // of the agent's network namespace: the node's), all (pods too) or off,
  // on the sockets of --socket-lb-cgroup (a cgroup v2 directory; the root
  // on a real node; empty: none).
  std::string socket_lb = "host";
  std::string socket_lb_cgroup;
  std::string hairpin_snat_ip;     // --hairpin-snat-ip
  bool cleanup = false;            // --cleanup
  int verbosity = 0;               // -v
};

// What loading a KubeProxyConfiguration found besides the values.
struct ConfigFileReport {
  // Fields set to a non-default value that kpx does not honour, each as
  // "path=value (why)".
  std::vector<std::string> not_honoured;
  // Dotted paths of fields v1alpha1 does not have, and of fields given
  // twice (the last one counts): kube-proxy's strict decoding fails on
  // these, then it decodes leniently, logs the error and carries on.
  std::vector<std::string> unknown, duplicates;
  // The start-up warnings, one line each ("" when there is nothing to say).
  std::string not_honoured_line() const;
  std::string strict_decoding_line() const;
};

// Apply a kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration (as
// kubeadm writes it) onto `o`, with kube-proxy's meaning: zero values are
// defaults, the proxy mode's section (iptables, ipvs, nftables) gives the
// sync periods and masqueradeAll. The flags given explicitly are applied
// after it by the caller. Wrong types, a wrong kind or apiVersion and
// invalid values are errors (kube-proxy exits on them too).
Result<ConfigFileReport> load_config_file(const std::string& path, Options& o);

// Go duration strings as Kubernetes writes them: "24h0m0s", "1s", "250ms".
Result<std::chrono::milliseconds> parse_duration(const std::string& s);

// "IP:PORT" for a listener; empty host means all addresses.
struct BindAddress {
  std::string host;
  uint16_t port = 0;
};
Result<BindAddress> parse_bind_address(const std::string& s);

// The node name: --hostname-override, else the host name (lower case).
std::string node_name(const Options& o);

}  // namespace kpx::agent
