// kube-proxy's own rules for the same Services kpx programs, for
// `kpx-bench compare`: what kube-proxy's iptables proxier hands to
// iptables-restore and what its nftables proxier hands to nft, built from
// kpx's frontends, and loaded into (and removed from) a network namespace.
//
// Reproduced: kube-proxy of Kubernetes v1.33 (iptables) and v1.34
// (nftables), IPv4, one full sync after start. The iptables text follows
// pkg/proxy/iptables/proxier.go as of v1.33 (CategorizeEndpoints with the
// node name, KUBE-PROXY-FIREWALL, nfacct counters) and the expectations of
// its proxier_test.go (TestOverallIPTablesRules); the nftables text follows
// pkg/proxy/nftables/proxier.go and the expectations of its proxier_test.go
// as of v1.34 (base chains filter-{prerouting,output}-pre-dnat at -110 and
// filter-{input,forward,output} at 0, kubernetes PR #132456). Same chain
// names and hashes, rules, sets and elements. What kube-proxy leaves to
// chance comes out in one fixed order here: it walks its Service map in
// Go's random order, and unions cluster and local endpoints through a Go
// map. Its masquerade mark is fmt "%#08x" of 1<<14: 0x00004000 (the tests'
// fake proxier sets 0x4000).
//
// Covered: ClusterIP, NodePort, ExternalIP and LoadBalancer frontends;
// internal and external traffic policy Local (KUBE-SVL / local- chains, the
// KUBE-EXT / external- short-circuits); no endpoints (REJECT / DROP,
// reject-chain); session affinity (-m recent, nft affinity sets);
// loadBalancerSourceRanges (KUBE-FW, KUBE-PROXY-FIREWALL, firewall-ips);
// masqueradeAll; the cluster-CIDR local detector; nodePortAddresses;
// localhost NodePorts and KUBE-FIREWALL (iptables); large-cluster mode
// (more than 1000 endpoints: no per-endpoint comments, iptables); health
// check node ports (given beside the frontends; iptables only, as in
// kube-proxy). Not covered: IPv6, SCTP, partial syncs and stale-chain
// deletion (the file is always a full sync into a table removed first),
// the nfacct objects themselves (KubeProxyNode::nfacct only writes the
// matches).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/frontend.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::bench {

// The node and the flags kube-proxy runs with (its defaults as given).
struct KubeProxyNode {
  uint32_t node_ip_be = 0;  // the node's primary IPv4 address (0: none)
  // IPv4 addresses on the node's interfaces, which --nodeport-addresses
  // selects from (empty: just node_ip_be).
  std::vector<uint32_t> node_addresses_be;
  // --cluster-cidr (detect-local-mode ClusterCIDR): traffic from outside it
  // to a ClusterIP is masqueraded. None: no local detector, no such rule.
  std::optional<net::Ipv4Cidr> cluster_cidr;
  bool masquerade_all = false;
  // --nodeport-addresses. Empty: iptables accepts NodePorts on every local
  // address; nftables mode defaults to "primary" (node_ip_be/32).
  std::vector<net::Ipv4Cidr> node_port_addresses;
  // The ServiceCIDRs: nftables drops traffic to unallocated ClusterIPs in
  // them (no rule when empty).
  std::vector<net::Ipv4Cidr> service_cidrs;
  int masquerade_bit = 14;                // --iptables-masquerade-bit: mark 0x00004000
  bool localhost_node_ports = true;       // iptables.localhostNodePorts
  bool random_fully = true;               // iptables has --random-fully (1.6.2 and later)
  bool conntrack_tcp_be_liberal = false;  // nf_conntrack_tcp_be_liberal set: no INVALID drop
  bool nfacct = false;                    // the nfacct counters exist (kube-proxy adds -m nfacct then)
};

// healthCheckNodePort by Service ("namespace/name"), as proxy::compute()
// gives them (DesiredState::health_checks): iptables accepts them in
// KUBE-NODEPORTS (nftables writes nothing for them).
using HealthCheckNodePorts = std::map<std::string, uint16_t>;

// The input of `iptables-restore --noflush` (filter, then nat) as
// syncProxyRules() writes it.
std::string iptables_restore_rules(const dataplane::FrontendTable& frontends, const KubeProxyNode& node,
                                   const HealthCheckNodePorts& health_check_node_ports = {});

// A rule kube-proxy installs outside the restore (EnsureChain + EnsureRule
// with Prepend): from a built-in chain to one of its own.
struct IptablesJump {
  std::string table;              // "filter", "nat"
  std::string chain;              // built-in chain the rule goes into
  std::string target;             // kube-proxy's chain it jumps to
  std::vector<std::string> args;  // iptables arguments after the chain name
};
// In kube-proxy's order (each prepended, so the last ends up first).
std::vector<IptablesJump> iptables_jumps();

// The input of `nft -f -`: the transaction of kube-proxy's first full sync,
// after a delete of the table so it can be applied again and again.
std::string nft_rules(const dataplane::FrontendTable& frontends, const KubeProxyNode& node);

// How the rules are loaded: iptables mode through iptables-nft (Debian's
// `iptables`, which kube-proxy's image's iptables-wrapper picks on such a
// host) or iptables-legacy (the same text; x_tables in the kernel), or
// nftables mode.
enum class KubeProxyMode { kIptables, kIptablesLegacy, kNftables };
const char* to_string(KubeProxyMode m);  // "iptables", "iptables-legacy", "nftables"
inline bool is_iptables(KubeProxyMode m) { return m != KubeProxyMode::kNftables; }

// What a load took: wall time from the tool's start to its exit, which the
// bench reports as "time to program N Services".
struct KubeProxyLoad {
  std::chrono::nanoseconds jumps{0};    // iptables: chains and jump rules (iptables -N/-C/-I)
  std::chrono::nanoseconds restore{0};  // iptables-restore or nft -f
  size_t bytes = 0;                     // size of the rules text
};

// Load `rules` (iptables_restore_rules for both iptables modes, nft_rules
// for nftables) into network
// namespace `netns` (/var/run/netns): for iptables, kube-proxy's jump rules
// (if missing), route_localnet=1 when localhost NodePorts are on, then
// iptables-restore --noflush; for nftables, nft -f -. The error carries the
// tool's output. Never run against the caller's own namespace: netns must
// name one.
Result<KubeProxyLoad> load_kube_proxy_rules(const std::string& netns, KubeProxyMode mode,
                                            const std::string& rules, const KubeProxyNode& node);

// Remove what load_kube_proxy_rules put there: iptables, every KUBE-* chain
// in the filter, nat and mangle tables and the rules that jump to them;
// nftables, table ip kube-proxy. Nothing there is not an error.
Status remove_kube_proxy_rules(const std::string& netns, KubeProxyMode mode);

// How big a rules text is, counted from the text (no kernel query).
struct KubeProxyRuleCounts {
  size_t chains = 0;
  size_t rules = 0;
  size_t elements = 0;  // nftables set and map elements
};
KubeProxyRuleCounts count_rules(KubeProxyMode mode, const std::string& rules);

}  // namespace kpx::bench
