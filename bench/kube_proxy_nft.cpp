// kube-proxy's nftables proxier (pkg/proxy/nftables/proxier.go, v1.34):
// the transaction of its first full sync (setupNFTables(), then every
// Service port), as knftables writes it for `nft -f -`.
#include <arpa/inet.h>

#include <algorithm>

#include "kube_proxy_rules.h"
#include "kube_proxy_service_ports.h"

namespace kpx::bench {
namespace {

using kube_proxy::Endpoint;
using kube_proxy::ServicePort;

constexpr const char* kTable = " ip kube-proxy ";
constexpr const char* kAddrMapType = "ipv4_addr . inet_proto . inet_service : verdict";
constexpr const char* kPortMapType = "inet_proto . inet_service : verdict";

struct BaseChain {
  const char *name, *type, *hook;
  int priority;
};
// nftablesBaseChains: filtering on the pre-DNAT destination runs before
// DNAT (dstnat - 10), the rest at filter priority 0.
constexpr BaseChain kBaseChains[] = {
    {"filter-prerouting-pre-dnat", "filter", "prerouting", -110},
    {"filter-output-pre-dnat", "filter", "output", -110},
    {"filter-input", "filter", "input", 0},
    {"filter-forward", "filter", "forward", 0},
    {"filter-output", "filter", "output", 0},
    {"nat-prerouting", "nat", "prerouting", -100},
    {"nat-output", "nat", "output", -100},
    {"nat-postrouting", "nat", "postrouting", 100},
};

struct JumpChain {
  const char *dst, *src, *extra;
};
// nftablesJumpChains, in their order.
constexpr JumpChain kJumpChains[] = {
    {"nodeport-endpoints-check", "filter-input", "ct state new "},
    {"service-endpoints-check", "filter-input", "ct state new "},
    {"service-endpoints-check", "filter-forward", "ct state new "},
    {"service-endpoints-check", "filter-output", "ct state new "},
    {"firewall-check", "filter-prerouting-pre-dnat", "ct state new "},
    {"firewall-check", "filter-output-pre-dnat", "ct state new "},
    {"services", "nat-output", ""},
    {"services", "nat-prerouting", ""},
    {"masquerading", "nat-postrouting", ""},
    {"cluster-ips-check", "filter-forward", "ct state new "},
    {"cluster-ips-check", "filter-output", "ct state new "},
};

class NftWriter {
 public:
  NftWriter(const std::vector<ServicePort>& ports, const KubeProxyNode& node)
      : ports_(ports), node_(node), mark_(kube_proxy::masquerade_mark(node.masquerade_bit)) {
    if (node.cluster_cidr) cluster_cidr_ = net::format(*node.cluster_cidr);
    // Unset, nftables mode takes "primary": the node's IP.
    if (node.node_port_addresses.empty() && node.node_ip_be != 0)
      node_port_addresses_.push_back({node.node_ip_be, 32});
    else
      node_port_addresses_ = node.node_port_addresses;
    out_.reserve(4096 + ports.size() * 900 + kube_proxy::total_endpoints(ports) * 700);
  }

  std::string write() {
    // Not kube-proxy's: makes the file apply again and again (its own
    // first sync finds no table).
    out_ += "add table ip kube-proxy\ndelete table ip kube-proxy\n";
    setup();
    for (const ServicePort& sp : ports_) write_service(sp);
    return std::move(out_);
  }

 private:
  void op(const char* verb, const char* what, const std::string& name, const std::string& rest = "") {
    out_ += verb;
    out_ += ' ';
    out_ += what;
    out_ += kTable;
    out_ += name;
    if (!rest.empty()) {
      out_ += ' ';
      out_ += rest;
    }
    out_ += '\n';
  }
  void rule(const std::string& chain, const std::string& body) { op("add", "rule", chain, body); }
  void rule(const std::string& chain, const std::string& body, const char* comment) {
    op("add", "rule", chain, body + " comment \"" + comment + "\"");
  }
  // A set or map with its type and comment.
  void declare(const char* what, const char* name, const char* type, const char* comment) {
    op("add", what, name, std::string("{ type ") + type + " ; comment \"" + comment + "\" ; }");
  }
  void element(const char* set, const std::string& body) { op("add", "element", set, "{ " + body + " }"); }
  // ensureChain(): add and flush, once per transaction.
  void ensure_chain(const std::string& chain) {
    if (std::find(created_.begin(), created_.end(), chain) != created_.end()) return;
    created_.push_back(chain);
    new_chain(chain);
  }
  // The same for a Service's chains, which no other Service shares (the
  // names hash the Service port, and the endpoint's).
  void new_chain(const std::string& chain) {
    op("add", "chain", chain);
    op("flush", "chain", chain);
  }

  bool match_all() const { return node_port_addresses_.empty(); }

  void setup() {
    out_ += "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n";
    // The first sync deletes the base chains so that changed properties apply.
    for (const BaseChain& bc : kBaseChains) {
      op("add", "chain", bc.name);
      op("delete", "chain", bc.name);
    }
    for (const BaseChain& bc : kBaseChains) {
      op("add", "chain", bc.name,
         std::string("{ type ") + bc.type + " hook " + bc.hook + " priority " + std::to_string(bc.priority) +
             " ; }");
      op("flush", "chain", bc.name);
    }
    for (const JumpChain& j : kJumpChains) {
      ensure_chain(j.dst);
      rule(j.src, std::string(j.extra) + "jump " + j.dst);
    }
    for (const char* c : {"services", "cluster-ips-check", "masquerading", "mark-for-masquerade"})
      ensure_chain(c);
    rule("mark-for-masquerade", "mark set mark or " + mark_);
    rule("masquerading", "mark and " + mark_ + " == 0 return");
    rule("masquerading", "mark set mark xor " + mark_);
    rule("masquerading", "masquerade fully-random");

    declare("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs");
    rule("cluster-ips-check", "ip daddr @cluster-ips reject",
         "Reject traffic to invalid ports of ClusterIPs");
    if (!node_.service_cidrs.empty()) {
      std::string cidrs;
      for (const auto& c : node_.service_cidrs) cidrs += (cidrs.empty() ? "" : ",") + net::format(c);
      rule("cluster-ips-check", "ip daddr { " + cidrs + " } drop", "Drop traffic to unallocated ClusterIPs");
    }

    declare("set", "nodeport-ips", "ipv4_addr", "IPs that accept NodePort traffic");
    if (match_all()) {
      op("delete", "set", "nodeport-ips");
    } else {
      op("flush", "set", "nodeport-ips");
      for (uint32_t ip : node_port_ips()) element("nodeport-ips", net::format_ipv4(ip));
    }

    declare("map", "no-endpoint-services", kAddrMapType,
            "vmap to drop or reject packets to services with no endpoints");
    declare("map", "no-endpoint-nodeports", kPortMapType,
            "vmap to drop or reject packets to service nodeports with no endpoints");
    op("add", "chain", "reject-chain",
       "{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }");
    op("flush", "chain", "reject-chain");
    rule("reject-chain", "reject");
    rule("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    rule("nodeport-endpoints-check",
         std::string(match_all() ? "ip daddr != 127.0.0.0/8" : "ip daddr @nodeport-ips") +
             " meta l4proto . th dport vmap @no-endpoint-nodeports");

    declare("map", "firewall-ips", kAddrMapType, "destinations that are subject to LoadBalancerSourceRanges");
    ensure_chain("firewall-check");
    rule("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips");

    declare("map", "service-ips", kAddrMapType, "ClusterIP, ExternalIP and LoadBalancer IP traffic");
    declare("map", "service-nodeports", kPortMapType, "NodePort traffic");
    rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips");
    rule("services", std::string(match_all() ? "fib daddr type local ip daddr != 127.0.0.0/8"
                                             : "ip daddr @nodeport-ips") +
                         " meta l4proto . th dport vmap @service-nodeports");

    op("flush", "set", "cluster-ips");
    for (const char* m : {"service-ips", "firewall-ips", "no-endpoint-services", "no-endpoint-nodeports",
                          "service-nodeports"})
      op("flush", "map", m);
  }

  // GetNodeIPs(): the node's addresses inside --nodeport-addresses
  // (loopback is refused in nftables mode).
  std::vector<uint32_t> node_port_ips() const {
    std::vector<uint32_t> addrs = node_.node_addresses_be;
    if (addrs.empty() && node_.node_ip_be != 0) addrs.push_back(node_.node_ip_be);
    std::vector<uint32_t> out;
    for (uint32_t a : addrs) {
      if ((ntohl(a) >> 24) == 127) continue;
      for (const auto& c : node_port_addresses_)
        if (c.contains(a) && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
    }
    return out;
  }

  std::string key(const ServicePort& sp, const std::string& ip, uint16_t port) const {
    return (ip.empty() ? "" : ip + " . ") + sp.protocol + " . " + std::to_string(port);
  }

  void write_service(const ServicePort& sp) {
    const std::string base = kube_proxy::nft_service_base(sp);
    const std::string svc_chain = "service-" + base;
    const std::string local_chain = "local-" + base;
    const std::string ext_chain = "external-" + base;
    const std::string fw_chain = "firewall-" + base;
    eps_.clear();
    for (const Endpoint& ep : sp.reachable) eps_.push_back(kube_proxy::nft_endpoint_base(sp, ep));
    for (const std::string& e : eps_) new_chain("endpoint-" + e);
    if (!sp.cluster.empty()) new_chain(svc_chain);
    if (!sp.local.empty()) new_chain(local_chain);

    const bool has_internal = sp.has_endpoints && (!sp.internal_local || !sp.local.empty());
    const bool has_external = sp.has_endpoints && (!sp.external_local || !sp.local.empty());
    const std::string& internal_chain = sp.internal_local ? local_chain : svc_chain;
    const std::string& external_policy_chain = sp.external_local ? local_chain : svc_chain;
    const bool uses_ext = sp.has_endpoints && sp.externally_accessible();
    if (uses_ext) new_chain(ext_chain);
    std::string internal_verdict, external_verdict;
    if (!sp.has_endpoints) {
      internal_verdict = external_verdict = "goto reject-chain";
    } else {
      if (!has_internal) internal_verdict = "drop";
      if (!has_external) external_verdict = "drop";
    }
    const std::string comment = " comment \"" + sp.port_name_string + "\"";

    element("cluster-ips", sp.cluster_ip);
    if (has_internal)
      element("service-ips", key(sp, sp.cluster_ip, sp.port) + " : goto " + internal_chain);
    else
      element("no-endpoint-services", key(sp, sp.cluster_ip, sp.port) + comment + " : " + internal_verdict);
    for (const std::string& ip : sp.external_ips) {
      if (sp.has_endpoints) element("service-ips", key(sp, ip, sp.port) + " : goto " + ext_chain);
      if (!has_external)
        element("no-endpoint-services", key(sp, ip, sp.port) + comment + " : " + external_verdict);
    }
    const bool uses_fw = !sp.load_balancer_ips.empty() && !sp.source_ranges.empty();
    if (uses_fw) new_chain(fw_chain);
    for (const std::string& ip : sp.load_balancer_ips) {
      if (sp.has_endpoints) element("service-ips", key(sp, ip, sp.port) + " : goto " + ext_chain);
      if (uses_fw) element("firewall-ips", key(sp, ip, sp.port) + " : goto " + fw_chain);
    }
    if (!has_external)
      for (const std::string& ip : sp.load_balancer_ips)
        element("no-endpoint-services", key(sp, ip, sp.port) + comment + " : " + external_verdict);
    if (sp.node_port != 0) {
      if (sp.has_endpoints) element("service-nodeports", key(sp, "", sp.node_port) + " : goto " + ext_chain);
      if (!has_external)
        element("no-endpoint-nodeports", key(sp, "", sp.node_port) + comment + " : " + external_verdict);
    }

    if (has_internal) {
      if (node_.masquerade_all)
        rule(internal_chain, "ip daddr " + sp.cluster_ip + " jump mark-for-masquerade");
      else if (!cluster_cidr_.empty())
        rule(internal_chain,
             "ip daddr " + sp.cluster_ip + " ip saddr != " + cluster_cidr_ + " jump mark-for-masquerade");
    }
    if (uses_ext) {
      if (!sp.external_local) {
        rule(ext_chain, "jump mark-for-masquerade");
      } else {
        if (!cluster_cidr_.empty())
          rule(ext_chain, "ip saddr " + cluster_cidr_ + " goto " + svc_chain, "short-circuit pod traffic");
        rule(ext_chain, "fib saddr type local jump mark-for-masquerade", "masquerade local traffic");
        rule(ext_chain, "fib saddr type local goto " + svc_chain, "short-circuit local traffic");
      }
      if (has_external) rule(ext_chain, "goto " + external_policy_chain);
    }
    if (uses_fw) write_firewall_rule(sp, fw_chain);
    if (sp.affinity)
      for (const std::string& e : eps_)
        op("add", "set", "affinity-" + e,
           "{ type ipv4_addr ; flags dynamic,timeout ; timeout " + std::to_string(sp.affinity_timeout_s) +
               "s ; }");
    if (!sp.cluster.empty()) write_service_to_endpoints(sp, svc_chain, sp.cluster);
    if (!sp.local.empty()) write_service_to_endpoints(sp, local_chain, sp.local);
    for (size_t i = 0; i < sp.reachable.size(); ++i) {
      const Endpoint& ep = sp.reachable[i];
      const std::string chain = "endpoint-" + eps_[i];
      rule(chain, "ip saddr " + ep.ip + " jump mark-for-masquerade");
      if (sp.affinity) rule(chain, "update @affinity-" + eps_[i] + " { ip saddr }");
      rule(chain, std::string("meta l4proto ") + sp.protocol + " dnat to " + ep.str);
    }
  }

  void write_firewall_rule(const ServicePort& sp, const std::string& fw_chain) {
    std::string sources;
    bool allow_from_node = false;
    for (const auto& cidr : sp.source_ranges) {
      if (!sources.empty()) sources += " , ";
      sources += net::format(cidr);
      allow_from_node |= node_.node_ip_be != 0 && cidr.contains(node_.node_ip_be);
    }
    if (allow_from_node)
      for (const std::string& ip : sp.load_balancer_ips) sources += " , " + ip;
    rule(fw_chain, "ip saddr != { " + sources + " } drop");
  }

  const std::string& endpoint_base(const ServicePort& sp, const Endpoint& ep) const {
    return eps_[kube_proxy::reachable_index(sp, ep)];
  }

  void write_service_to_endpoints(const ServicePort& sp, const std::string& chain,
                                  const std::vector<Endpoint>& endpoints) {
    if (sp.affinity)
      for (const Endpoint& ep : endpoints) {
        const std::string& e = endpoint_base(sp, ep);
        rule(chain, "ip saddr @affinity-" + e + " goto endpoint-" + e);
      }
    std::string body = "numgen random mod " + std::to_string(endpoints.size()) + " vmap {";
    for (size_t i = 0; i < endpoints.size(); ++i) {
      if (i) body += " ,";
      body += " " + std::to_string(i) + " : goto endpoint-" + endpoint_base(sp, endpoints[i]);
    }
    rule(chain, body + " }");
  }

  const std::vector<ServicePort>& ports_;
  const KubeProxyNode& node_;
  const std::string mark_;
  std::string cluster_cidr_;  // the local detector's CIDR ("" none)
  std::vector<net::Ipv4Cidr> node_port_addresses_;
  std::vector<std::string> created_;  // the top-level chains ensured so far
  std::vector<std::string> eps_;      // the current Service's endpoint chain bases, by reachable endpoint
  std::string out_;
};

}  // namespace

std::string nft_rules(const dataplane::FrontendTable& frontends, const KubeProxyNode& node) {
  const std::vector<ServicePort> ports = kube_proxy::service_ports(frontends);
  return NftWriter(ports, node).write();
}

}  // namespace kpx::bench
