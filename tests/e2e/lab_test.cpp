// The lab end to end: `kpx lab up` builds the namespaces, the daemon runs the
// API server, kubelet, EndpointSlice controller and DNS, one kpx agent per
// node programs its datapath, and real TCP/UDP between pods walks every path
// of the seed's picture. Each test has its own lab (up takes well under a
// second) and checks that `kpx lab down` leaves nothing behind.
#include "lab_fixture.h"

namespace kpx::e2e {
namespace {

TEST_F(LabTest, UpBuildsEveryNamespaceAndAHealthyAgentPerNode) {
  std::string ns = sh_out("ls /var/run/netns | grep '^kpxlab-" + name_ + "-' | sort");
  for (const char* want : {"fabric", "gw", "inet", "client", "node1", "node2", "pod-default.echo-1-1",
                           "pod-default.echo-2-3", "pod-kube-system.coredns"})
    EXPECT_NE(ns.find("kpxlab-" + name_ + "-" + want + "\n"), std::string::npos) << want << " in\n" << ns;
  // `kpx lab exec` reaches every kind of namespace.
  EXPECT_NE(exec("client", "ip -o -4 addr show dev eth0").find("10.0.0.100/24"), std::string::npos);
  EXPECT_NE(exec("gateway", "ip -o -4 addr show").find("203.0.113.1/24"), std::string::npos);
  EXPECT_NE(exec("internet", "ip -o -4 addr show dev eth0").find("203.0.113.10/24"), std::string::npos);
  EXPECT_NE(exec("node2", "ip -o -4 addr show dev cbr0").find("10.244.2.1/24"), std::string::npos);
  EXPECT_NE(exec("node1", "ip route").find("10.244.2.0/24 via 10.0.0.12"), std::string::npos) << "host-gw route";
  EXPECT_NE(exec("kube-system/coredns", "ip -o -4 addr show dev eth0").find("10.244.1."), std::string::npos);
  EXPECT_TRUE(fs::exists("/sys/fs/bpf/kpx-" + name_ + "-node1"));
  EXPECT_TRUE(fs::exists("/sys/fs/bpf/kpx-" + name_ + "-node2"));
  std::string status;
  ASSERT_EQ(kpx("lab status --name " + name_, &status), 0) << status;
  EXPECT_NE(status.find("node1   10.0.0.11   10.244.1.0/24    healthy"), std::string::npos) << status;
  EXPECT_NE(status.find("node2   10.0.0.12   10.244.2.0/24    healthy"), std::string::npos) << status;
  // The agents run inside the node namespaces, each in its own cgroup.
  std::string agents = sh_out("pgrep -f '[k]px-" + name_ + "-node[12] ' | xargs -I{} readlink /proc/{}/ns/net | sort -u | wc -l");
  EXPECT_EQ(agents, "2\n");
  std::string root_net = sh_out("readlink /proc/self/ns/net");
  std::string agent_net = sh_out("pgrep -f '[k]px-" + name_ + "-node1 ' | head -1 | xargs -I{} readlink /proc/{}/ns/net");
  EXPECT_NE(agent_net, root_net);
  EXPECT_NE(sh_out("pgrep -f '[k]px-" + name_ + "-node1 ' | head -1 | xargs -I{} cat /proc/{}/cgroup"),
            std::string())
      << "agent cgroup";
  EXPECT_NE(sh_out("pgrep -f '[k]px-" + name_ + "-node1 ' | head -1 | xargs -I{} cat /proc/{}/cgroup")
                .find("kpx-lab-" + name_ + "/node-node1/agent"),
            std::string::npos);
}

TEST_F(LabTest, ContainerToContainerOverLocalhost) {
  ASSERT_EQ(apply("two-containers.yaml"), 0);
  ASSERT_TRUE(wait_pod("duo"));
  auto a = probe("duo", "127.0.0.1:9090/tcp", 1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a[0].ok) << a[0].line;
  EXPECT_EQ(a[0].pod, "duo");
  EXPECT_EQ(a[0].container, "sidecar");
  EXPECT_EQ(a[0].client_ip(), "127.0.0.1");
  auto b = probe("duo", "127.0.0.1:8080/udp", 1);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].container, "echo") << b[0].line;
}

TEST_F(LabTest, PodToPodOnOneNodeAndAcrossNodesWithoutNat) {
  std::string me = pod_ip("echo-1-1");
  for (const char* target : {"echo-1-2", "echo-2-1"}) {
    for (const char* proto : {"tcp", "udp"}) {
      auto a = probe("echo-1-1", pod_ip(target) + ":8080/" + proto, 1);
      ASSERT_EQ(a.size(), 1u) << target;
      EXPECT_TRUE(a[0].ok) << a[0].line;
      EXPECT_EQ(a[0].pod, target);
      EXPECT_EQ(a[0].client_ip(), me) << "the pod must see the client's own address";
    }
  }
}

TEST_F(LabTest, PodToClusterIpTcpAndUdpReachBackendsOnBothNodes) {
  std::string vip = cluster_ip("echo");
  ASSERT_EQ(vip.rfind("10.96.", 0), 0u) << "ClusterIP from 10.96.0.0/16: " << vip;
  for (const char* proto : {"tcp", "udp"}) {
    auto seen = answering("echo-2-2", vip + ":80/" + proto, 6);
    EXPECT_EQ(seen.size(), 6u) << proto;
    auto a = probe("echo-2-2", vip + ":80/" + proto, 20);
    std::set<std::string> nodes;
    for (const auto& r : a) {
      EXPECT_TRUE(r.ok) << r.line;
      EXPECT_EQ(r.from, vip + ":80") << "replies come from the ClusterIP";
      // No SNAT between pods; only a pod reaching itself (hairpin) sees
      // the node's hairpin address.
      EXPECT_EQ(r.client_ip(), r.pod == "echo-2-2" ? "10.244.2.1" : pod_ip("echo-2-2")) << r.line;
      nodes.insert(r.pod.substr(0, 6));
    }
    EXPECT_EQ(nodes.size(), 2u) << "backends on both nodes answer";
  }
}

TEST_F(LabTest, NodePortFromOutsideFromAnotherNodeAndFromPodsTcpAndUdp) {
  ASSERT_EQ(apply("nodeport.yaml"), 0);
  const std::map<std::string, std::string> node_ip = {{"node1", "10.0.0.11"}, {"node2", "10.0.0.12"}};
  for (const auto& [node, ip] : node_ip) {
    for (const char* proto : {"tcp", "udp"}) {
      const std::string target = ip + ":30080/" + proto;
      // The external client: answered by pods on both nodes, from the
      // NodePort, and every backend sees the node's address (Cluster policy).
      auto seen = answering("client", target, 6);
      EXPECT_EQ(seen.size(), 6u) << target;
      std::set<std::string> nodes;
      for (const auto& r : probe("client", target, 12)) {
        EXPECT_TRUE(r.ok) << target << ": " << r.line;
        EXPECT_EQ(r.from, ip + ":30080") << "replies come from the NodePort";
        EXPECT_EQ(r.client_ip(), ip) << "externalTrafficPolicy Cluster: source-NATed to the node";
        nodes.insert(r.pod.substr(0, 6));
      }
      EXPECT_EQ(nodes.size(), 2u) << target << ": backends on both nodes answer";
    }
  }
  // Another node's own namespace reaches node1's NodePort.
  for (const auto& r : probe("node2", "10.0.0.11:30080/tcp", 4)) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.from, "10.0.0.11:30080");
  }
  // A pod reaches its own node's NodePort with its own source (kpx on its
  // veth translates, as for a ClusterIP), and another node's like an
  // outside client.
  const std::string me = pod_ip("echo-1-1");
  for (const auto& r : probe("echo-1-1", "10.0.0.11:30080/tcp", 6)) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.from, "10.0.0.11:30080");
    if (r.pod != "echo-1-1") {
      EXPECT_EQ(r.client_ip(), me) << r.line;
    }
  }
  for (const auto& r : probe("echo-1-1", "10.0.0.12:30080/udp", 6)) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.from, "10.0.0.12:30080");
    EXPECT_EQ(r.client_ip(), "10.0.0.12") << r.line;
  }
}

// The agent follows the node's addresses (netlink): a NodePort answers on
// an address added after it started, and stops with the address's removal.
TEST_F(LabTest, NodePortsFollowAddressesAddedToAndRemovedFromTheNode) {
  ASSERT_EQ(apply("nodeport.yaml"), 0);
  ASSERT_EQ(answering("client", "10.0.0.11:30080/tcp", 6).size(), 6u);
  const std::string node1 = "ip -n kpxlab-" + name_ + "-node1 ";
  ASSERT_EQ(sh_out(node1 + "addr add 10.0.0.31/24 dev eth0 && echo ok"), "ok\n");
  for (const char* proto : {"tcp", "udp"}) {
    const std::string target = std::string("10.0.0.31:30080/") + proto;
    EXPECT_EQ(answering("client", target, 6).size(), 6u) << target << " on the new address";
    for (const auto& r : probe("client", target, 4)) {
      EXPECT_TRUE(r.ok) << r.line;
      EXPECT_EQ(r.from, "10.0.0.31:30080") << "replies come from the address the client reached";
    }
  }
  ASSERT_EQ(sh_out(node1 + "addr del 10.0.0.31/24 dev eth0 && echo ok"), "ok\n");
  // Gone from the node: nothing answers there, and node1's own address
  // still does.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (const auto& r : probe("client", "10.0.0.31:30080/udp", 2)) EXPECT_FALSE(r.ok) << r.line;
  for (const auto& r : probe("client", "10.0.0.11:30080/udp", 4)) EXPECT_TRUE(r.ok) << r.line;
}

// kube-proxy masquerades off-cluster traffic to a ClusterIP: a client
// outside the cluster with a route to it through node1 reaches backends on
// both nodes, each seeing node1's address (--detect-local-mode ClusterCIDR,
// the client is outside 10.244.0.0/16), and the replies come from the VIP.
TEST_F(LabTest, AClusterIpReachedFromOutsideThroughANodeIsMasqueradedToThatNode) {
  const std::string vip = cluster_ip("echo");
  const std::string client = "ip -n kpxlab-" + name_ + "-client route ";
  ASSERT_EQ(sh_out(client + "add " + vip + "/32 via 10.0.0.11 && echo ok"), "ok\n");
  struct RouteGone {
    std::string del;
    ~RouteGone() { (void)std::system(del.c_str()); }
  } gone{client + "del " + vip + "/32 via 10.0.0.11 2>/dev/null"};
  for (const char* proto : {"tcp", "udp"}) {
    const std::string target = vip + ":80/" + proto;
    EXPECT_EQ(answering("client", target, 6).size(), 6u) << target;
    std::set<std::string> nodes;
    for (const auto& r : probe("client", target, 16)) {
      EXPECT_TRUE(r.ok) << target << ": " << r.line;
      EXPECT_EQ(r.from, vip + ":80") << "replies come from the ClusterIP";
      EXPECT_EQ(r.client_ip(), "10.0.0.11") << "masqueraded to the node it came through";
      nodes.insert(r.pod.substr(0, 6));
    }
    EXPECT_EQ(nodes.size(), 2u) << target << ": backends on both nodes answer";
  }
  std::string out;
  ASSERT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 stats -o json", &out), 0) << out;
  json stats = json::parse(out, nullptr, false);
  ASSERT_TRUE(stats.is_object()) << out;
  EXPECT_GE(stats.value("snat_service_new", uint64_t{0}), 2u) << out;
  // Pods keep their own address towards the same ClusterIP (they are local).
  for (const auto& r : probe("echo-2-2", vip + ":80/tcp", 6)) {
    EXPECT_TRUE(r.ok) << r.line;
    if (r.pod != "echo-2-2") {
      EXPECT_EQ(r.client_ip(), pod_ip("echo-2-2")) << r.line;
    }
  }
}

// A lab whose agents run with kube-proxy's --masquerade-all.
class LabMasqueradeAllTest : public LabTest {
 protected:
  std::string up_args() const override { return " --agent-arg=--masquerade-all"; }
};

// --masquerade-all: every pod's flow to a Service is source-NATed to its
// node (a local backend and one across the fabric alike), and answered from
// the ClusterIP; a pod reaching itself still sees the hairpin address.
TEST_F(LabMasqueradeAllTest, PodsServiceFlowsAreMasqueradedToTheirNode) {
  const std::string vip = cluster_ip("echo");
  for (const auto& [pod, node_ip] : {std::pair{"echo-1-1", "10.0.0.11"}, std::pair{"echo-2-1", "10.0.0.12"}}) {
    for (const char* proto : {"tcp", "udp"}) {
      const std::string target = vip + ":80/" + proto;
      EXPECT_EQ(answering(pod, target, 6).size(), 6u) << pod << " " << target;
      std::set<std::string> nodes;
      for (const auto& r : probe(pod, target, 16)) {
        EXPECT_TRUE(r.ok) << pod << " " << target << ": " << r.line;
        EXPECT_EQ(r.from, vip + ":80") << r.line;
        const std::string hairpin = std::string(pod) == "echo-1-1" ? "10.244.1.1" : "10.244.2.1";
        EXPECT_EQ(r.client_ip(), r.pod == pod ? hairpin : node_ip) << pod << ": " << r.line;
        nodes.insert(r.pod.substr(0, 6));
      }
      EXPECT_EQ(nodes.size(), 2u) << pod << " " << target;
    }
  }
}

// Socket-level load balancing: a process on a node (`kpx lab exec node1`,
// in the node's cgroup) reaches ClusterIPs and NodePorts, on 127.0.0.1 and
// on the node's address, over TCP and UDP, answered by backends on both
// nodes and naming the frontend as its peer; and the kubernetes Service.
TEST_F(LabTest, ANodeLocalClientReachesServicesThroughSocketLoadBalancing) {
  ASSERT_EQ(apply("nodeport.yaml"), 0);
  const std::string vip = cluster_ip("echo");
  for (const std::string& target : {vip + ":80", std::string("127.0.0.1:30080"), std::string("10.0.0.11:30080")}) {
    for (const char* proto : {"tcp", "udp"}) {
      const std::string t = target + "/" + proto;
      EXPECT_EQ(answering("node1", t, 6).size(), 6u) << t;
      expect_answered_from_both_nodes("node1", t, target, 12);
    }
  }
  // The kubernetes Service, from the node, as kube-proxy gives it.
  const lab::HttpAnswer version =
      lab::parse_http_answer(exec("node1", lab::http_get_command(cluster_ip("kubernetes"), 443, "/version")));
  EXPECT_EQ(version.code, 200) << version.status_line;
  EXPECT_NE(version.body.find("gitVersion"), std::string::npos) << version.body;
  std::string out;
  ASSERT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 stats -o json", &out), 0) << out;
  EXPECT_GE(json::parse(out, nullptr, false).value("sock_lb", uint64_t{0}), 72u) << out;
}

// The stale-resolver failure other dataplanes have had: a node-local client
// keeps one connected UDP socket to a Service (as a stub resolver keeps one
// to kube-dns) while its only backend is replaced. Socket-level load
// balancing connected that socket to the pod itself; when the pod leaves
// the Service, node1's agent destroys the socket, and the client's next
// request fails once, connects again and reaches the new pod. Without that
// the socket would keep talking to the old pod, and to nothing once it is
// gone. (A pod terminating while it still serves keeps the socket until it
// is gone, as kube-proxy keeps such a pod's UDP conntrack entries.)
TEST_F(LabTest, ANodeLocalConnectedUdpSocketFollowsItsServiceWhenTheBackendIsReplaced) {
  connected_udp_socket_follows_a_replaced_backend("node1");
}

// --socket-lb all: pods (their processes are in their node's cgroup, as on
// a node) are translated at connect() too, and the per-packet path leaves
// those connections alone: their frames carry the backend's address, so
// node1's tc programs make no conntrack entry and reverse nothing for them
// (dnat_new, revnat and hairpin stay as they were), while every one of
// them is counted by the socket hooks; the peer is still the Service's
// address. A pod's connected UDP socket follows a replaced backend too:
// the agent destroys it in the pod's namespace.
class LabSocketLbAllTest : public LabTest {
 protected:
  std::string up_args() const override { return " --agent-arg=--socket-lb=all"; }
};

TEST_F(LabSocketLbAllTest, PodsAreTranslatedOnceAtConnectAndNotAgainPerPacket) {
  const std::string vip = cluster_ip("echo");
  auto stats = [&] {
    std::string out;
    EXPECT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 stats -o json", &out), 0) << out;
    return json::parse(out, nullptr, false);
  };
  for (const char* proto : {"tcp", "udp"})
    ASSERT_EQ(answering("echo-1-1", vip + ":80/" + proto, 6).size(), 6u) << proto;
  const json before = stats();
  std::set<std::string> pods;
  for (const char* proto : {"tcp", "udp"})
    for (const auto& r : probe("echo-1-1", vip + ":80/" + proto, 16)) {
      EXPECT_TRUE(r.ok) << r.line;
      EXPECT_EQ(r.from, vip + ":80") << r.line;
      // Translated in the pod itself: the backend sees the pod (even the
      // pod reaching itself, which needs no hairpin address this way).
      EXPECT_EQ(r.client_ip(), pod_ip("echo-1-1")) << r.line;
      pods.insert(r.pod);
    }
  EXPECT_GE(pods.size(), 4u) << "backends on both nodes";
  const json after = stats();
  auto delta = [&](const char* c) { return after.value(c, uint64_t{0}) - before.value(c, uint64_t{0}); };
  EXPECT_GE(delta("sock_lb"), 32u) << after;
  EXPECT_EQ(delta("dnat_new"), 0u) << after;
  EXPECT_EQ(delta("revnat"), 0u) << after;
  EXPECT_EQ(delta("hairpin"), 0u) << after;
}

TEST_F(LabSocketLbAllTest, APodsConnectedUdpSocketFollowsItsServiceWhenTheBackendIsReplaced) {
  connected_udp_socket_follows_a_replaced_backend("echo-1-1");
}

TEST_F(LabTest, NodePortWithTrafficPolicyLocalKeepsTheClientAddressAndDropsWithoutLocalEndpoints) {
  ASSERT_EQ(apply("nodeport-local.yaml"), 0);
  ASSERT_TRUE(wait_pod("web-local-1"));
  for (const char* proto : {"tcp", "udp"}) {
    const std::string target = std::string("10.0.0.11:30081/") + proto;
    ASSERT_EQ(answering("client", target, 1), (std::set<std::string>{"web-local-1"})) << target;
    for (const auto& r : probe("client", target, 6)) {
      EXPECT_TRUE(r.ok) << r.line;
      EXPECT_EQ(r.from, "10.0.0.11:30081");
      EXPECT_EQ(r.client_ip(), "10.0.0.100") << "the backend sees the external client itself";
    }
    // node2 has no endpoint of its own: dropped, never sent across.
    for (const auto& r : probe("client", std::string("10.0.0.12:30081/") + proto, 3, "--timeout-ms 300"))
      EXPECT_FALSE(r.ok) << r.line;
  }
  // A pod on node2 is not held to the policy: node2's NodePort from there
  // reaches the endpoint on node1.
  for (const auto& r : probe("echo-2-1", "10.0.0.12:30081/tcp", 3)) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.pod, "web-local-1");
  }
}

// The cloud's load balancer asks each node's healthCheckNodePort whether to
// send it the Service's traffic: kpx answers as kube-proxy does, per node.
TEST_F(LabTest, HealthCheckNodePortTellsTheLoadBalancerWhichNodesHaveLocalEndpoints) {
  ASSERT_EQ(apply("nodeport-local.yaml"), 0);
  ASSERT_TRUE(wait_pod("web-local-1"));
  json svc = kubectl_json("get service web-local");
  ASSERT_TRUE(svc.is_object());
  const int port = svc["spec"].value("healthCheckNodePort", 0);
  ASSERT_EQ(port, 30082);
  auto ask = [&](const std::string& node_ip) {
    return lab::parse_http_answer(exec("client", lab::http_get_command(node_ip, static_cast<uint16_t>(port))));
  };
  // Until node1's agent has synced the pod's endpoint.
  auto until = [&](const std::string& node_ip, int code) {
    lab::HttpAnswer a;
    for (int i = 0; i < 100 && (a = ask(node_ip)).code != code; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return a;
  };
  auto expect_answer = [](const lab::HttpAnswer& a, int code, int local, const std::string& where) {
    EXPECT_EQ(a.code, code) << where << ": " << a.status_line << "\n" << a.body;
    EXPECT_EQ(a.header("Content-Type"), "application/json") << where;
    EXPECT_EQ(a.header("X-Content-Type-Options"), "nosniff") << where;
    EXPECT_EQ(a.header("X-Load-Balancing-Endpoint-Weight"), std::to_string(local)) << where;
    EXPECT_EQ(a.body, "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web-local\"\n\t},\n"
                      "\t\"localEndpoints\": " +
                          std::to_string(local) + ",\n\t\"serviceProxyHealthy\": true\n}")
        << where;
  };
  expect_answer(until("10.0.0.11", 200), 200, 1, "node1, with the pod");
  expect_answer(ask("10.0.0.12"), 503, 0, "node2, without local endpoints");
  EXPECT_EQ(ask("10.0.0.11").status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(ask("10.0.0.12").status_line, "HTTP/1.1 503 Service Unavailable");

  // The pod goes (terminating at once): node1 fails its health check.
  ASSERT_EQ(sh("kubectl --server " + api_ + " delete pod web-local-1 --wait=false >/dev/null"), 0);
  expect_answer(until("10.0.0.11", 503), 503, 0, "node1, its pod deleted");
  expect_answer(ask("10.0.0.12"), 503, 0, "node2");
  // The Service goes: its listeners close on both nodes.
  ASSERT_EQ(sh("kubectl --server " + api_ + " delete service web-local >/dev/null"), 0);
  for (const char* ip : {"10.0.0.11", "10.0.0.12"}) {
    lab::HttpAnswer a;
    for (int i = 0; i < 100 && (a = ask(ip)).code != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(a.code, 0) << ip << " still answers: " << a.status_line;
  }
}

TEST_F(LabTest, LoadBalancerAndExternalIpsFromOutsideFromPodsAndFromANode) {
  ASSERT_EQ(apply("loadbalancer.yaml"), 0);
  std::string lb_ip = load_balancer_ip("echo-lb");
  ASSERT_EQ(lb_ip.rfind("198.51.100.", 0), 0u) << "an IP from the lab's pool: '" << lb_ip << "'";
  for (const std::string& vip : {lb_ip, std::string("192.0.2.10")}) {
    for (const char* proto : {"tcp", "udp"}) {
      const std::string target = vip + ":80/" + proto;
      EXPECT_EQ(answering("client", target, 6).size(), 6u) << target;
      for (const auto& r : probe("client", target, 6)) {
        EXPECT_TRUE(r.ok) << target << ": " << r.line;
        EXPECT_EQ(r.from, vip + ":80") << "replies come from the address the client reached";
        EXPECT_TRUE(r.client_ip() == "10.0.0.11" || r.client_ip() == "10.0.0.12")
            << "source-NATed to the node the gateway chose: " << r.line;
      }
      for (const auto& r : probe("echo-1-1", target, 4)) {
        EXPECT_TRUE(r.ok) << "from a pod: " << r.line;
        EXPECT_EQ(r.from, vip + ":80");
      }
      // From node1 itself: socket-level load balancing.
      expect_answered_from_both_nodes("node1", target, vip + ":80", 12);
    }
  }
}

TEST_F(LabTest, LoadBalancerSourceRangesRefuseTheClientButNotAtTheNodePort) {
  ASSERT_EQ(apply("loadbalancer-ranges.yaml"), 0);
  std::string lb_ip = load_balancer_ip("echo-ranges");
  ASSERT_FALSE(lb_ip.empty());
  // The NodePort answers (so the Service is programmed), the LB IP does not.
  ASSERT_GE(answering("client", "10.0.0.11:30090/tcp", 1).size(), 1u);
  for (const auto& r : probe("client", lb_ip + ":80/tcp", 4, "--timeout-ms 300")) EXPECT_FALSE(r.ok) << r.line;
  // Refused and counted (on the node the gateway sent the client to).
  uint64_t refused = 0;
  for (const char* node : {"node1", "node2"}) {
    std::string out;
    ASSERT_EQ(kpx(std::string("--pin-dir /sys/fs/bpf/kpx-") + name_ + "-" + node + " stats -o json", &out), 0) << out;
    json j = json::parse(out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out;
    refused += j.value("drop_source_range", uint64_t{0});
  }
  EXPECT_GE(refused, 4u);
}

TEST_F(LabTest, HairpinThroughOwnService) {
  ASSERT_EQ(apply("hairpin.yaml"), 0);
  ASSERT_TRUE(wait_pod("loner"));
  std::string vip = cluster_ip("loner"), me = pod_ip("loner");
  ASSERT_EQ(answering("loner", vip + ":80/tcp", 1).size(), 1u);
  auto a = probe("loner", vip + ":80/tcp", 3);
  ASSERT_EQ(a.size(), 3u);
  std::string node_gw = me.substr(0, me.rfind('.')) + ".1";
  for (const auto& r : a) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.pod, "loner");
    EXPECT_EQ(r.client_ip(), node_gw) << "hairpin traffic is source-NATed to the node's address";
  }
}

TEST_F(LabTest, DiscoveryByEnvironmentAndByDns) {
  std::string vip = cluster_ip("echo");
  std::string env = exec("echo-1-3", "echo $ECHO_SERVICE_HOST $ECHO_SERVICE_PORT $ECHO_PORT");
  EXPECT_EQ(env, vip + " 80 tcp://" + vip + ":80\n");
  auto a = probe("echo-1-3", vip + ":80/tcp", 1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a[0].ok);
  // glibc's resolver, reading the pod's resolv.conf, asks kube-dns's
  // ClusterIP; kpx takes the query to the DNS pod.
  int st = 0;
  EXPECT_EQ(exec("echo-2-1", "getent hosts echo.default.svc.cluster.local | cut -d\" \" -f1", &st), vip + "\n");
  EXPECT_EQ(exec("echo-2-1", "getent hosts echo | cut -d\" \" -f1", &st), vip + "\n") << "search path";
  EXPECT_EQ(exec("echo-2-1", "getent hosts kube-dns.kube-system | cut -d\" \" -f1", &st), "10.96.0.10\n");
  exec("echo-2-1", "getent hosts nosuch.default.svc.cluster.local", &st);
  EXPECT_EQ(st, 2) << "an unknown Service does not resolve";
  EXPECT_EQ(exec("echo-2-1", "getent hosts kubernetes.default | cut -d\" \" -f1", &st), "10.96.0.1\n");
  // ExternalName Services are CNAMEs. To a cluster name, glibc follows it:
  // the canonical name is the target, the Service's name its alias.
  ASSERT_EQ(apply("externalname.yaml"), 0);
  EXPECT_EQ(exec("echo-2-1", "getent hosts echo-alias | tr -s \" \"", &st),
            vip + " echo.default.svc.cluster.local echo-alias.default.svc.cluster.local\n");
  // To a name outside the cluster: the CNAME alone (no upstream here).
  auto db = ask_dns("echo-2-1", "database.default.svc.cluster.local", 1);
  ASSERT_TRUE(db) << "no parseable answer";
  EXPECT_EQ(db->rcode, 0);
  ASSERT_EQ(db->answers.size(), 1u);
  EXPECT_EQ(db->answers[0].owner, "database.default.svc.cluster.local");
  EXPECT_EQ(db->answers[0].type, 5) << "CNAME";
  EXPECT_EQ(db->answers[0].data, "db.example.com");
  EXPECT_EQ(db->answers[0].ttl, 5u);
  exec("echo-2-1", "getent hosts database", &st);
  EXPECT_EQ(st, 2) << "a CNAME without addresses resolves to nothing";
  // In-cluster API access: the `kubernetes` Service, through kpx, to the
  // API server on node1's address (plain HTTP in the lab).
  EXPECT_EQ(exec("echo-2-1", "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"), "10.96.0.1:443\n");
  std::string version = exec("echo-2-1",
                             "exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT && "
                             "printf \"GET /version HTTP/1.0\\r\\nHost: kubernetes\\r\\n\\r\\n\" >&3 && timeout 5 cat <&3");
  EXPECT_NE(version.find("\"gitVersion\""), std::string::npos) << version;
  // The query really went through the ClusterIP: the DNS Service's backend
  // is in node2's datapath (the client's node).
  std::string svcs;
  kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node2 svc list", &svcs);
  EXPECT_NE(svcs.find("10.96.0.10:53/UDP"), std::string::npos) << svcs;
}

TEST_F(LabTest, ScalingWhileAClientLoopsLosesNoRequest) {
  std::string vip = cluster_ip("echo");
  ASSERT_EQ(answering("echo-1-1", vip + ":80/tcp", 6).size(), 6u);
  std::vector<ProbeAnswer> answers;
  std::thread loop([&] { answers = probe("echo-1-1", vip + ":80/tcp", 200, "--interval-ms 20 --timeout-ms 1000"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(apply("web.yaml"), 0);  // unrelated pods come meanwhile (EXPECT: the loop thread must be joined)
  std::string pods;
  for (int i = 1; i <= 2; ++i)
    pods += "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"echo-new-" + std::to_string(i) +
            "\",\"labels\":{\"app\":\"echo\"}},\"spec\":{\"terminationGracePeriodSeconds\":5,\"containers\":[{"
            "\"name\":\"echo\",\"image\":\"kpx/echo\",\"ports\":[{\"name\":\"http\",\"containerPort\":8080}],"
            "\"lifecycle\":{\"preStop\":{\"sleep\":{\"seconds\":1}}}}]}}\n";
  EXPECT_EQ(sh("printf '%s' '" + pods + "' | kubectl --server " + api_ + " create --validate=false -f - >/dev/null"), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  // Scale down: graceful deletes, as a Deployment would do them.
  EXPECT_EQ(sh("kubectl --server " + api_ + " delete pod echo-new-1 echo-2-3 echo-1-2 --wait=false >/dev/null"), 0);
  loop.join();
  ASSERT_EQ(answers.size(), 200u);
  std::set<std::string> pods_seen;
  int failed = 0;
  std::string failures;
  for (const auto& a : answers) {
    if (!a.ok && ++failed <= 5) failures += a.line + "\n";
    if (a.ok) pods_seen.insert(a.pod);
  }
  if (failed) {
    std::string ok;
    for (const auto& a : answers) ok += a.ok ? a.pod + " " : "- ";
    std::string maps;
    kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 svc list", &maps);
    failures += "answers in order: " + ok + "\nnode1 maps:\n" + maps + sh_out("kubectl --server " + api_ + " get pods -o wide");
  }
  EXPECT_EQ(failed, 0) << "requests to a Service that kept ready backends failed:\n" << failures;
  EXPECT_TRUE(pods_seen.count("echo-new-1") || pods_seen.count("echo-new-2")) << "new pods took traffic";
  // The deleted pods are gone once their grace is over.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = sh_out("kubectl --server " + api_ + " get pods -o name").find("echo-new-1") == std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(gone);
  EXPECT_EQ(sh_out("ls /var/run/netns | grep -c 'kpxlab-" + name_ + "-pod-default.echo-new-1$' || true"), "0\n");
}

TEST_F(LabTest, ContainersThatExitAreRestarted) {
  json pod = kubectl_json("get pod echo-2-1");
  ASSERT_TRUE(pod.is_object());
  std::string id = pod["status"]["containerStatuses"][0]["containerID"];
  ASSERT_EQ(id.rfind("kpx://", 0), 0u) << id;
  int pid = std::stoi(id.substr(6));
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  // restartPolicy Always: the kubelet starts it again and counts it.
  json now;
  for (int i = 0; i < 100; ++i) {
    now = kubectl_json("get pod echo-2-1");
    const json& cs = now["status"]["containerStatuses"][0];
    if (cs.value("restartCount", 0) == 1 && cs.value("ready", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const json& cs = now["status"]["containerStatuses"][0];
  EXPECT_EQ(cs.value("restartCount", 0), 1) << now.dump();
  EXPECT_TRUE(cs.value("ready", false));
  EXPECT_NE(cs.value("containerID", ""), id) << "a new process";
  std::ifstream log("/run/kpx-lab/" + name_ + "/daemon.log");
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_NE(text.str().find("container echo of pod default/echo-2-1 exited (137); restarting it"), std::string::npos)
      << text.str();
  auto a = probe("echo-1-1", pod_ip("echo-2-1") + ":8080/tcp", 1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a[0].ok) << a[0].line;
  EXPECT_EQ(a[0].pod, "echo-2-1");
}

TEST_F(LabTest, PodToInternetIsMasqueradedToTheNodeAndAnswered) {
  // The internet has no route back to the cluster's addresses: only a
  // masqueraded request (source: the node's address) can be answered.
  for (const char* proto : {"udp", "tcp"}) {
    for (const auto& [pod, node_ip] : {std::pair{"echo-1-1", "10.0.0.11"}, std::pair{"echo-2-1", "10.0.0.12"}}) {
      auto a = probe(pod, std::string("203.0.113.10:8080/") + proto, 3);
      ASSERT_EQ(a.size(), 3u);
      for (const auto& r : a) {
        EXPECT_TRUE(r.ok) << pod << " " << proto << ": " << r.line;
        EXPECT_EQ(r.pod, "internet");
        EXPECT_EQ(r.client_ip(), node_ip) << "the internet sees the node, not the pod: " << r.line;
        EXPECT_EQ(r.from, "203.0.113.10:8080");
      }
    }
  }
  // Inside the cluster nothing is masqueraded: pod to pod keeps the source.
  auto p = probe("echo-1-1", pod_ip("echo-2-1") + ":8080/tcp", 1);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].client_ip(), pod_ip("echo-1-1"));
}

TEST_F(LabTest, KubectlCreatesAndDeletesServicesTheAgentsProgram) {
  std::string svc =
      "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"kc\"},\"spec\":{\"selector\":{\"app\":"
      "\"echo\"},\"ports\":[{\"port\":8888,\"targetPort\":8080,\"protocol\":\"TCP\"}]}}";
  ASSERT_EQ(sh("printf '%s' '" + svc + "' | kubectl --server " + api_ + " create --validate=false -f - >/dev/null"), 0);
  std::string vip = cluster_ip("kc");
  ASSERT_FALSE(vip.empty());
  EXPECT_EQ(answering("echo-1-1", vip + ":8888/tcp", 6).size(), 6u);
  ASSERT_EQ(sh("kubectl --server " + api_ + " delete service kc >/dev/null"), 0);
  bool removed = false;
  for (int i = 0; i < 100 && !removed; ++i) {
    std::string list;
    kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 svc list", &list);
    removed = list.find(vip + ":8888") == std::string::npos;
    if (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(removed);
}

TEST_F(LabTest, DownCleansUpAfterTheDaemonCrashed) {
  ASSERT_EQ(kill(daemon_pid_, SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string out;
  EXPECT_NE(kpx("lab status --name " + name_, &out), 0) << out;
  // TearDown's `lab down` must still remove the agents, pods and namespaces.
}

TEST(LabCommands, BadInputIsRefusedAndCreatesNothing) {
  std::string out;
  int st = 0;
  out = sh_out(std::string(KPX_BINARY) + " lab up --name Bad_Name 2>&1", &st);
  EXPECT_EQ(st, 2) << out;
  EXPECT_NE(out.find("invalid lab name"), std::string::npos) << out;
  out = sh_out(std::string(KPX_BINARY) + " lab up --name ok1 --nodes 0 2>&1", &st);
  EXPECT_EQ(st, 2) << out;
  EXPECT_EQ(sh_out("ls /var/run/netns | grep '^kpxlab-ok1-' || true"), "");
  out = sh_out(std::string(KPX_BINARY) + " lab status --name nosuchlab 2>&1", &st);
  EXPECT_NE(st, 0);
  EXPECT_NE(out.find("no lab named 'nosuchlab'"), std::string::npos) << out;
}

// What `scripts/run-demo` runs: every path, printed, and the lab removed.
TEST(LabDemo, WalksEveryPathAndRemovesItsLab) {
  std::string name = "d" + std::to_string(getpid());
  int st = 0;
  std::string out = sh_out(std::string(KPX_BINARY) + " lab demo --name " + name + " 2>&1", &st);
  EXPECT_EQ(st, 0) << out;
  for (const char* want : {"Container to container", "Pod to pod on one node", "Pod to pod across nodes",
                           "Pod to Service (ClusterIP, tcp)", "Pod to Service (ClusterIP, udp)", "Hairpin",
                           "discovery by environment", "discovery by DNS",
                           "ExternalName echo-alias: CNAME echo.default.svc.cluster.local", "Scaling",
                           "External client to a NodePort on node1", "External client to a NodePort on node2",
                           "External client to a ClusterIP through node1",
                           "The node itself as a client (socket-level load balancing)", "gitVersion",
                           "externalTrafficPolicy Local", "Health check node port", "HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable",
                           "External client to a LoadBalancer IP",
                           "External client to an external IP", "loadBalancerSourceRanges", "Pod to the internet",
                           "the reply came back to the pod", "every path worked"})
    EXPECT_NE(out.find(want), std::string::npos) << want << " in:\n" << out;
  EXPECT_EQ(sh_out("ls /var/run/netns | grep '^kpxlab-" + name + "-' || true"), "");
  EXPECT_FALSE(fs::exists("/run/kpx-lab/" + name));
}

}  // namespace
}  // namespace kpx::e2e
