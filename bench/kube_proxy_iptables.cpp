// kube-proxy's iptables proxier (pkg/proxy/iptables/proxier.go, v1.33):
// syncProxyRules()' iptables-restore input, rule for rule in its order, and
// the jump rules it ensures from the built-in chains.
#include <arpa/inet.h>

#include <algorithm>

#include "kube_proxy_rules.h"
#include "kube_proxy_service_ports.h"

namespace kpx::bench {
namespace {

using kube_proxy::Endpoint;
using kube_proxy::ServicePort;

// More endpoints than this: kube-proxy's large-cluster mode (no comments
// on the per-endpoint rules).
constexpr size_t kLargeClusterEndpointsThreshold = 1000;

constexpr const char* kNodePortsComment =
    "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";

void chain_line(std::string& out, const std::string& chain) {
  out += ':';
  out += chain;
  out += " - [0:0]\n";
}

uint32_t loopback_be() { return htonl(0x7f000001); }

// The addresses --nodeport-addresses selects (GetNodeIPs): the node's
// addresses, and lo's, inside any of its CIDRs.
std::vector<uint32_t> node_port_ips(const KubeProxyNode& node) {
  std::vector<uint32_t> addrs = node.node_addresses_be;
  if (addrs.empty() && node.node_ip_be != 0) addrs.push_back(node.node_ip_be);
  addrs.push_back(loopback_be());
  std::vector<uint32_t> out;
  for (uint32_t a : addrs)
    for (const auto& c : node.node_port_addresses)
      if (c.contains(a) && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  return out;
}

class IptablesWriter {
 public:
  IptablesWriter(const std::vector<ServicePort>& ports, const KubeProxyNode& node,
                 const HealthCheckNodePorts& health_checks)
      : ports_(ports),
        node_(node),
        health_checks_(health_checks),
        mark_(kube_proxy::masquerade_mark(node.masquerade_bit)) {
    large_cluster_ = kube_proxy::total_endpoints(ports) > kLargeClusterEndpointsThreshold;
    localhost_node_ports_ = kube_proxy::localhost_node_ports(node);
    if (node.cluster_cidr) {
      const std::string cidr = net::format(*node.cluster_cidr);
      if_local_ = "-s " + cidr;
      if_not_local_ = "! -s " + cidr;
    }
    size_t endpoints = kube_proxy::total_endpoints(ports);
    nat_chains_.reserve(ports.size() * 64 + endpoints * 32 + 256);
    nat_rules_.reserve(ports.size() * 700 + endpoints * 420 + 1024);
  }

  std::string write() {
    for (const char* c :
         {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"})
      chain_line(filter_chains_, c);
    for (const char* c : {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"})
      chain_line(nat_chains_, c);
    const std::string mask = mark_ + "/" + mark_;
    nat_rules_ += "-A KUBE-POSTROUTING -m mark ! --mark " + mask + " -j RETURN\n";
    nat_rules_ += "-A KUBE-POSTROUTING -j MARK --xor-mark " + mark_ + "\n";
    nat_rules_ +=
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" "
        "-j MASQUERADE";
    nat_rules_ += node_.random_fully ? " --random-fully\n" : "\n";
    nat_rules_ += "-A KUBE-MARK-MASQ -j MARK --or-mark " + mark_ + "\n";
    if (localhost_node_ports_) {
      chain_line(filter_chains_, "KUBE-FIREWALL");
      filter_rules_ +=
          "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" "
          "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n";
    }
    for (const ServicePort& sp : ports_) write_service(sp);
    write_node_ports_jump();
    if (!node_.conntrack_tcp_be_liberal) {
      filter_rules_ += "-A KUBE-FORWARD -m conntrack --ctstate INVALID";
      if (node_.nfacct) filter_rules_ += " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts";
      filter_rules_ += " -j DROP\n";
    }
    filter_rules_ += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark " +
                     mask + " -j ACCEPT\n";
    filter_rules_ +=
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";

    std::string out;
    out.reserve(filter_chains_.size() + filter_rules_.size() + nat_chains_.size() + nat_rules_.size() + 32);
    out += "*filter\n";
    out += filter_chains_;
    out += filter_rules_;
    out += "COMMIT\n*nat\n";
    out += nat_chains_;
    out += nat_rules_;
    out += "COMMIT\n";
    return out;
  }

 private:
  // "-m tcp -p tcp -d 10.96.0.10 --dport 80"
  static std::string match(const ServicePort& sp, const std::string& ip, uint16_t port) {
    std::string s = "-m ";
    s += sp.protocol;
    s += " -p ";
    s += sp.protocol;
    if (!ip.empty()) s += " -d " + ip;
    s += " --dport " + std::to_string(port);
    return s;
  }

  void rule(std::string& out, const std::string& chain, const std::string& comment, const std::string& body) {
    out += "-A ";
    out += chain;
    if (!comment.empty()) {
      out += " -m comment --comment ";
      out += comment;
    }
    out += ' ';
    out += body;
    out += '\n';
  }

  void write_service(const ServicePort& sp) {
    const std::string& name = sp.port_name_string;
    const std::string svc_chain = kube_proxy::iptables_service_chain("KUBE-SVC-", sp);
    const std::string svl_chain = kube_proxy::iptables_service_chain("KUBE-SVL-", sp);
    const std::string ext_chain = kube_proxy::iptables_service_chain("KUBE-EXT-", sp);
    const std::string fw_chain = kube_proxy::iptables_service_chain("KUBE-FW-", sp);
    const bool has_internal = sp.has_endpoints && (!sp.internal_local || !sp.local.empty());
    const bool has_external = sp.has_endpoints && (!sp.external_local || !sp.local.empty());
    const std::string& internal_chain = sp.internal_local ? svl_chain : svc_chain;
    const std::string& external_policy_chain = sp.external_local ? svl_chain : svc_chain;
    const bool uses_ext = sp.has_endpoints && sp.externally_accessible();
    const bool uses_fw = sp.has_endpoints && !sp.load_balancer_ips.empty() && !sp.source_ranges.empty();
    const std::string& lb_chain = uses_fw ? fw_chain : ext_chain;

    std::string internal_target, internal_comment, external_target, external_comment;
    if (!sp.has_endpoints) {
      internal_target = external_target = "REJECT";
      internal_comment = external_comment = "\"" + name + " has no endpoints\"";
    } else {
      if (!has_internal) {
        internal_target = "DROP";
        internal_comment = "\"" + name + " has no local endpoints\"";
      }
      if (!has_external) {
        external_target = "DROP";
        external_comment = "\"" + name + " has no local endpoints\"";
      }
    }

    const std::string cluster_ip_comment = "\"" + name + " cluster IP\"";
    const std::string cluster_ip_match = match(sp, sp.cluster_ip, sp.port);
    if (has_internal)
      rule(nat_rules_, "KUBE-SERVICES", cluster_ip_comment, cluster_ip_match + " -j " + internal_chain);
    else
      rule(filter_rules_, "KUBE-SERVICES", internal_comment, cluster_ip_match + " -j " + internal_target);

    for (const std::string& ip : sp.external_ips) {
      if (sp.has_endpoints)
        rule(nat_rules_, "KUBE-SERVICES", "\"" + name + " external IP\"",
             match(sp, ip, sp.port) + " -j " + ext_chain);
      if (!has_external)
        rule(filter_rules_, "KUBE-EXTERNAL-SERVICES", external_comment,
             match(sp, ip, sp.port) + " -j " + external_target);
    }
    for (const std::string& ip : sp.load_balancer_ips) {
      if (sp.has_endpoints)
        rule(nat_rules_, "KUBE-SERVICES", "\"" + name + " loadbalancer IP\"",
             match(sp, ip, sp.port) + " -j " + lb_chain);
      if (uses_fw)
        rule(filter_rules_, "KUBE-PROXY-FIREWALL",
             "\"" + name + " traffic not accepted by " + fw_chain + "\"",
             match(sp, ip, sp.port) + " -j DROP");
    }
    if (!has_external)
      for (const std::string& ip : sp.load_balancer_ips)
        rule(filter_rules_, "KUBE-EXTERNAL-SERVICES", external_comment,
             match(sp, ip, sp.port) + " -j " + external_target);

    if (sp.node_port != 0) {
      if (sp.has_endpoints) {
        if (localhost_node_ports_ && node_.nfacct)
          rule(nat_rules_, "KUBE-NODEPORTS", name,
               match(sp, "127.0.0.0/8", sp.node_port) +
                   " -m nfacct --nfacct-name localhost_nps_accepted_pkts -j " + ext_chain);
        rule(nat_rules_, "KUBE-NODEPORTS", name, match(sp, "", sp.node_port) + " -j " + ext_chain);
      }
      if (!has_external) {
        std::string body =
            "-m addrtype --dst-type LOCAL " + match(sp, "", sp.node_port) + " -j " + external_target;
        rule(filter_rules_, "KUBE-EXTERNAL-SERVICES", external_comment, body);
      }
    }

    if (auto hc = health_checks_.find(sp.ns + "/" + sp.name); hc != health_checks_.end() && hc->second != 0)
      rule(filter_rules_, "KUBE-NODEPORTS", "\"" + name + " health check node port\"",
           "-m tcp -p tcp --dport " + std::to_string(hc->second) + " -j ACCEPT");

    if (has_internal) {
      if (node_.masquerade_all)
        rule(nat_rules_, internal_chain, cluster_ip_comment, cluster_ip_match + " -j KUBE-MARK-MASQ");
      else if (!if_not_local_.empty())
        rule(nat_rules_, internal_chain, cluster_ip_comment,
             cluster_ip_match + " " + if_not_local_ + " -j KUBE-MARK-MASQ");
    }

    if (uses_ext) {
      chain_line(nat_chains_, ext_chain);
      if (!sp.external_local) {
        rule(nat_rules_, ext_chain, "\"masquerade traffic for " + name + " external destinations\"",
             "-j KUBE-MARK-MASQ");
      } else {
        if (!if_local_.empty())
          rule(nat_rules_, ext_chain, "\"pod traffic for " + name + " external destinations\"",
               if_local_ + " -j " + svc_chain);
        rule(nat_rules_, ext_chain, "\"masquerade LOCAL traffic for " + name + " external destinations\"",
             "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ");
        rule(nat_rules_, ext_chain, "\"route LOCAL traffic for " + name + " external destinations\"",
             "-m addrtype --src-type LOCAL -j " + svc_chain);
      }
      if (has_external) rule(nat_rules_, ext_chain, "", "-j " + external_policy_chain);
    }

    if (uses_fw) write_firewall_chain(sp, fw_chain, ext_chain);

    seps_.clear();
    for (const Endpoint& ep : sp.reachable) seps_.push_back(kube_proxy::iptables_endpoint_chain(sp, ep));
    if (!sp.cluster.empty()) {
      chain_line(nat_chains_, svc_chain);
      write_service_to_endpoints(sp, svc_chain, sp.cluster);
    }
    if (!sp.local.empty()) {
      chain_line(nat_chains_, svl_chain);
      write_service_to_endpoints(sp, svl_chain, sp.local);
    }
    const std::string sep_comment = large_cluster_ ? "" : name;
    for (size_t i = 0; i < sp.reachable.size(); ++i) {
      const Endpoint& ep = sp.reachable[i];
      chain_line(nat_chains_, seps_[i]);
      rule(nat_rules_, seps_[i], sep_comment, "-s " + ep.ip + " -j KUBE-MARK-MASQ");
      std::string body;
      if (sp.affinity) body = "-m recent --name " + seps_[i] + " --set ";
      body += "-m ";
      body += sp.protocol;
      body += " -p ";
      body += sp.protocol;
      body += " -j DNAT --to-destination " + ep.str;
      rule(nat_rules_, seps_[i], sep_comment, body);
    }
  }

  void write_firewall_chain(const ServicePort& sp, const std::string& fw_chain,
                            const std::string& ext_chain) {
    chain_line(nat_chains_, fw_chain);
    const std::string comment = "\"" + sp.port_name_string + " loadbalancer IP\"";
    bool allow_from_node = false;
    for (const auto& cidr : sp.source_ranges) {
      rule(nat_rules_, fw_chain, comment, "-s " + net::format(cidr) + " -j " + ext_chain);
      allow_from_node |= node_.node_ip_be != 0 && cidr.contains(node_.node_ip_be);
    }
    if (allow_from_node)
      for (const std::string& ip : sp.load_balancer_ips)
        rule(nat_rules_, fw_chain, comment, "-s " + ip + " -j " + ext_chain);
    // A rule with no target: counts what falls through to the filter table's drop.
    nat_rules_ += "-A " + fw_chain + " -m comment --comment \"other traffic to " + sp.port_name_string +
                  " will be dropped by KUBE-PROXY-FIREWALL\"\n";
  }

  const std::string& sep_of(const ServicePort& sp, const Endpoint& ep) const {
    return seps_[kube_proxy::reachable_index(sp, ep)];
  }

  void write_service_to_endpoints(const ServicePort& sp, const std::string& chain,
                                  const std::vector<Endpoint>& endpoints) {
    auto comment = [&](const Endpoint& ep) {
      return large_cluster_ ? std::string() : "\"" + sp.port_name_string + " -> " + ep.str + "\"";
    };
    if (sp.affinity)
      for (const Endpoint& ep : endpoints) {
        const std::string& sep = sep_of(sp, ep);
        rule(nat_rules_, chain, comment(ep),
             "-m recent --name " + sep + " --rcheck --seconds " + std::to_string(sp.affinity_timeout_s) +
                 " --reap -j " + sep);
      }
    const size_t n = endpoints.size();
    for (size_t i = 0; i < n; ++i) {
      std::string body;
      if (i + 1 < n)
        body = "-m statistic --mode random --probability " + kube_proxy::probability(n - i) + " ";
      body += "-j " + sep_of(sp, endpoints[i]);
      rule(nat_rules_, chain, comment(endpoints[i]), body);
    }
  }

  void write_node_ports_jump() {
    if (node_.node_port_addresses.empty()) {
      std::string body = "-m addrtype --dst-type LOCAL";
      if (!localhost_node_ports_) body += " ! -d 127.0.0.0/8";
      rule(nat_rules_, "KUBE-SERVICES", kNodePortsComment, body + " -j KUBE-NODEPORTS");
      return;
    }
    for (uint32_t ip : node_port_ips(node_)) {
      if (ip == loopback_be() && !localhost_node_ports_) continue;
      rule(nat_rules_, "KUBE-SERVICES", kNodePortsComment,
           "-d " + net::format_ipv4(ip) + " -j KUBE-NODEPORTS");
    }
  }

  const std::vector<ServicePort>& ports_;
  const KubeProxyNode& node_;
  const HealthCheckNodePorts& health_checks_;
  const std::string mark_;
  bool large_cluster_ = false;
  bool localhost_node_ports_ = false;
  std::string if_local_, if_not_local_;  // the local detector's matches ("" none)
  std::vector<std::string> seps_;        // the current Service's KUBE-SEP names, by reachable endpoint
  std::string filter_chains_, filter_rules_, nat_chains_, nat_rules_;
};

}  // namespace

std::string iptables_restore_rules(const dataplane::FrontendTable& frontends, const KubeProxyNode& node,
                                   const HealthCheckNodePorts& health_check_node_ports) {
  const std::vector<ServicePort> ports = kube_proxy::service_ports(frontends);
  return IptablesWriter(ports, node, health_check_node_ports).write();
}

std::vector<IptablesJump> iptables_jumps() {
  const std::vector<std::string> new_only = {"-m", "conntrack", "--ctstate", "NEW"};
  struct Jump {
    const char *table, *chain, *target, *comment;
    bool new_only;
  };
  // iptablesJumpChains, then kubelet's iptablesKubeletJumpChains.
  static constexpr Jump kJumps[] = {
      {"filter", "INPUT", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", true},
      {"filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", true},
      {"filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports", false},
      {"filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", true},
      {"filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", true},
      {"filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", false},
      {"filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", true},
      {"filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", true},
      {"filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", true},
      {"nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", false},
      {"nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals", false},
      {"nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules", false},
      {"filter", "INPUT", "KUBE-FIREWALL", "", false},
      {"filter", "OUTPUT", "KUBE-FIREWALL", "", false},
  };
  std::vector<IptablesJump> out;
  for (const Jump& j : kJumps) {
    IptablesJump r{j.table, j.chain, j.target, {}};
    if (j.new_only) r.args = new_only;
    if (*j.comment) r.args.insert(r.args.end(), {"-m", "comment", "--comment", j.comment});
    r.args.insert(r.args.end(), {"-j", j.target});
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace kpx::bench
