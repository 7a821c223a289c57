#include "lab/network.h"

#include <dirent.h>

#include <fstream>

#include "lab/proc.h"
#include "net/netns.h"

namespace kpx::lab {

namespace {

// One `ip -n NS -batch -` per namespace: a process per namespace, not per
// command, keeps `kpx lab up` well under its 5 s.
Status ip_batch(const std::string& netns, const std::vector<std::string>& cmds) {
  std::string input;
  for (const auto& c : cmds) input += c + "\n";
  return run_ok({"ip", "-n", netns, "-batch", "-"}, input);
}

Status add_netns(const std::string& name) { return run_ok({"ip", "netns", "add", name}); }

std::string bridge_mac(int node) {
  char mac[18];
  snprintf(mac, sizeof mac, "02:6b:70:00:01:%02x", node & 0xff);
  return mac;
}

std::string node_cidr_route(const NodePlan& to) { return "route add " + to.pod_cidr + " via " + to.ip; }

Status build(const LabPlan& p) {
  for (const std::string& ns : {p.fabric_ns, p.gateway_ns, p.internet_ns, p.client_ns}) KPX_TRY(add_netns(ns));
  for (const auto& n : p.nodes) KPX_TRY(add_netns(n.netns));

  // Fabric: a bridge with a port per node, the client and the gateway. The
  // other end of each port is that namespace's eth0.
  // Bridges get a fixed MAC: one left to the kernel follows the lowest MAC
  // among its ports, so it changes as pods come and go, and pods whose ARP
  // cache holds the old one lose their gateway (what CNI bridge plugins and
  // docker0 avoid the same way).
  std::vector<std::string> fabric = {"link add br0 address 02:6b:70:00:00:01 type bridge", "link set br0 up",
                                     "link set lo up"};
  auto port = [&](const std::string& port_name, const std::string& peer_ns) {
    fabric.push_back("link add " + port_name + " type veth peer name eth0 netns " + peer_ns);
    fabric.push_back("link set " + port_name + " master br0 up");
  };
  for (const auto& n : p.nodes) port(n.name, n.netns);
  port("client", p.client_ns);
  port("gw", p.gateway_ns);
  KPX_TRY(ip_batch(p.fabric_ns, fabric));

  const std::string fabric_len = "/24";
  KPX_TRY(ip_batch(p.gateway_ns, {"link set lo up", std::string("addr add ") + kGatewayIp + fabric_len + " dev eth0",
                                  "link set eth0 up",
                                  "link add eth1 type veth peer name eth0 netns " + p.internet_ns,
                                  std::string("addr add ") + kInternetGatewayIp + "/24 dev eth1", "link set eth1 up"}));
  KPX_TRY(set_netns_sysctl(p.gateway_ns, "ipv4/ip_forward", "1"));
  // Load balancer and external IPs: to the nodes, one path per flow (ECMP,
  // hashed on the addresses), as a router in front of a cluster would.
  {
    std::string nexthops;
    for (const auto& n : p.nodes) nexthops += (p.nodes.size() > 1 ? " nexthop via " : " via ") + n.ip;
    KPX_TRY(ip_batch(p.gateway_ns, {std::string("route add ") + kLoadBalancerPool + nexthops,
                                    std::string("route add ") + kExternalIpRange + nexthops}));
  }
  // The internet knows the nodes' addresses (the fabric, as nodes with
  // routable addresses) and nothing of the pods': without masquerading,
  // pods' packets arrive but replies have nowhere to go, as on the real
  // internet; masqueraded to the node's address, they are answered.
  KPX_TRY(ip_batch(p.internet_ns, {"link set lo up", std::string("addr add ") + kInternetIp + "/24 dev eth0",
                                   "link set eth0 up",
                                   std::string("route add ") + kFabricCidr + " via " + kInternetGatewayIp}));
  KPX_TRY(ip_batch(p.client_ns, {"link set lo up", std::string("addr add ") + kClientIp + fabric_len + " dev eth0",
                                 "link set eth0 up", std::string("route add default via ") + kGatewayIp}));

  for (const auto& n : p.nodes) {
    std::vector<std::string> cmds = {"link set lo up",
                                     "addr add " + n.ip + fabric_len + " dev eth0",
                                     "link set eth0 up",
                                     "link add cbr0 address " + bridge_mac(n.index) + " type bridge",
                                     "addr add " + n.pod_gateway + "/24 dev cbr0",
                                     "link set cbr0 up",
                                     std::string("route add default via ") + kGatewayIp};
    // host-gw: every other node's pod CIDR via that node's fabric address.
    for (const auto& other : p.nodes)
      if (other.index != n.index) cmds.push_back(node_cidr_route(other));
    KPX_TRY(ip_batch(n.netns, cmds));
    KPX_TRY(set_netns_sysctl(n.netns, "ipv4/ip_forward", "1"));
  }
  return {};
}

}  // namespace

Status set_netns_sysctl(const std::string& netns, const std::string& key, const std::string& value) {
  auto scope = net::NetnsScope::enter(netns);
  if (!scope) return scope.error();
  std::ofstream f("/proc/sys/net/" + key);
  f << value;
  f.close();
  if (!f) return system_error("set net." + key + " in " + netns);
  return {};
}

Status create_topology(const LabPlan& p) {
  std::vector<std::string> mine = {p.fabric_ns, p.gateway_ns, p.internet_ns, p.client_ns};
  for (const auto& n : p.nodes) mine.push_back(n.netns);
  for (const auto& ns : list_netns(std::string(kNetnsPrefix) + p.name + "-"))
    return invalid_argument("lab '" + p.name + "' already exists (namespace " + ns +
                            "); remove it with `kpx lab down --name " + p.name + "`");
  Status st = build(p);
  if (!st)
    for (const auto& ns : list_netns(std::string(kNetnsPrefix) + p.name + "-")) (void)remove_netns(ns);
  return st;
}

Status add_pod_network(const NodePlan& node, const PodNetwork& pod) {
  KPX_TRY(add_netns(pod.netns));
  Status st = ip_batch(node.netns, {"link add " + pod.host_if + " type veth peer name eth0 netns " + pod.netns,
                                    "link set " + pod.host_if + " master cbr0 up"});
  if (st)
    st = ip_batch(pod.netns, {"link set lo up", "addr add " + pod.ip + "/24 dev eth0", "link set eth0 up",
                              "route add default via " + node.pod_gateway});
  if (!st) (void)remove_netns(pod.netns);
  return st;
}

Status remove_netns(const std::string& netns) { return run_ok({"ip", "netns", "del", netns}); }

std::vector<std::string> list_netns(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = opendir("/var/run/netns");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  closedir(d);
  return out;
}

}  // namespace kpx::lab
