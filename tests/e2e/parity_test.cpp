// kube-proxy parity in the lab, end to end: what clients get from Services
// without endpoints (refused at once, from pods, from outside and from a
// node) and under internalTrafficPolicy Local, with real sockets.
#include "lab_fixture.h"

namespace kpx::e2e {
namespace {

class ParityTest : public LabTest {
 protected:
  int create(const std::string& obj) {
    return sh("printf '%s' '" + obj + "' | kubectl --server " + api_ + " create --validate=false -f - >/dev/null");
  }
  static std::string pod(const std::string& name, const std::string& app, const std::string& node) {
    return "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"" + name + "\",\"labels\":{\"app\":\"" +
           app + "\"}},\"spec\":{\"nodeName\":\"" + node +
           "\",\"containers\":[{\"name\":\"echo\",\"image\":\"kpx/echo\",\"ports\":[{\"containerPort\":8080}]}]}}\n";
  }
  // Both nodes' agents hold `frontend` (IP:PORT): `kpx svc list` shows it.
  bool programmed_on_both_nodes(const std::string& frontend) {
    for (int i = 0; i < 200; ++i) {
      std::string a, b;
      kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 svc list", &a);
      kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node2 svc list", &b);
      if (a.find(frontend) != std::string::npos && b.find(frontend) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  uint64_t stat(const std::string& node, const std::string& counter) {
    std::string out;
    EXPECT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-" + node + " stats -o json", &out), 0) << out;
    return json::parse(out, nullptr, false).value(counter, uint64_t{0});
  }
  // Every request from `from` to target failed with "Connection refused"
  // (never a timeout: the error came at once).
  void expect_refused(const std::string& from, const std::string& target, const std::string& extra = "") {
    auto answers = probe(from, target, 2, "--timeout-ms 3000 " + extra);
    ASSERT_EQ(answers.size(), 2u) << from << " to " << target;
    for (const auto& r : answers) {
      EXPECT_FALSE(r.ok) << from << " to " << target << ": " << r.line;
      EXPECT_NE(r.line.find("refused"), std::string::npos) << from << " to " << target << ": " << r.line;
    }
  }
};

// kube-proxy REJECTs new connections to a Service without endpoints (an
// ICMP port unreachable): a TCP client's connect() fails with ECONNREFUSED
// and a connected UDP socket reads it, at once, instead of waiting for a
// timeout. A Service that gains an endpoint serves the next connection.
TEST_F(ParityTest, AServiceWithoutEndpointsIsRefusedAtOnceFromPodsFromOutsideAndFromANode) {
  ASSERT_EQ(create("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"empty\"},\"spec\":{"
                   "\"type\":\"NodePort\",\"selector\":{\"app\":\"nobody-yet\"},\"ports\":["
                   "{\"name\":\"web\",\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080,\"nodePort\":30090},"
                   "{\"name\":\"dns\",\"protocol\":\"UDP\",\"port\":53,\"targetPort\":8080,\"nodePort\":30091}]}}"),
            0);
  const std::string vip = cluster_ip("empty");
  ASSERT_FALSE(vip.empty());
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80"));
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":53"));

  expect_refused("echo-1-1", vip + ":80/tcp");                      // a pod, per packet (ICMP from the VIP)
  expect_refused("echo-2-1", vip + ":53/udp", "--keep-socket");     // a connected UDP socket reads it
  expect_refused("client", "10.0.0.11:30090/tcp");                  // from outside, out of the uplink
  expect_refused("client", "10.0.0.12:30091/udp", "--keep-socket");
  expect_refused("node1", vip + ":80/tcp");                         // the node itself: socket LB's connect()
  EXPECT_GE(stat("node1", "reject_no_endpoints"), 6u);
  EXPECT_GE(stat("node2", "reject_no_endpoints"), 4u);
  EXPECT_EQ(stat("node1", "drop_no_backend"), 0u);

  ASSERT_EQ(create(pod("first", "nobody-yet", "node2")), 0);
  ASSERT_TRUE(wait_pod("first"));
  EXPECT_EQ(answering("echo-1-1", vip + ":80/tcp", 1), (std::set<std::string>{"first"}));
  EXPECT_EQ(answering("client", "10.0.0.11:30090/tcp", 1), (std::set<std::string>{"first"}));
  EXPECT_EQ(answering("node1", vip + ":80/tcp", 1), (std::set<std::string>{"first"}));
}

// internalTrafficPolicy Local: a pod's connections to the ClusterIP go to
// endpoints on its own node only; on a node without one they are dropped
// (kube-proxy's DROP, counted), not refused, while the Service has
// endpoints elsewhere.
TEST_F(ParityTest, InternalTrafficPolicyLocalKeepsPodsOnTheirNodeAndDropsWhereThereIsNone) {
  ASSERT_EQ(create("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"node-local\"},\"spec\":{"
                   "\"internalTrafficPolicy\":\"Local\",\"selector\":{\"app\":\"echo\"},\"ports\":["
                   "{\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080}]}}\n"
                   "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"one-node\"},\"spec\":{"
                   "\"internalTrafficPolicy\":\"Local\",\"selector\":{\"app\":\"on-node1\"},\"ports\":["
                   "{\"protocol\":\"UDP\",\"port\":53,\"targetPort\":8080}]}}\n" +
                   pod("only-1", "on-node1", "node1")),
            0);
  ASSERT_TRUE(wait_pod("only-1"));
  const std::string vip = cluster_ip("node-local");
  const std::string one = cluster_ip("one-node");
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80"));
  for (const char* client : {"echo-1-1", "echo-2-1"}) {
    const std::string node_prefix = std::string(client).substr(0, 6);  // "echo-1" / "echo-2"
    std::set<std::string> seen = answering(client, vip + ":80/tcp", 3);
    EXPECT_FALSE(seen.empty());
    for (const std::string& p : seen) EXPECT_EQ(p.substr(0, 6), node_prefix) << client << " reached " << p;
  }
  EXPECT_EQ(answering("echo-1-2", one + ":53/udp", 1), (std::set<std::string>{"only-1"}));
  for (const auto& r : probe("echo-2-1", one + ":53/udp", 3, "--timeout-ms 300")) {
    EXPECT_FALSE(r.ok) << r.line;
    EXPECT_NE(r.line.find("timeout"), std::string::npos) << "dropped, not refused: " << r.line;
  }
  EXPECT_GE(stat("node2", "drop_no_local_endpoints"), 3u);
  EXPECT_EQ(stat("node2", "reject_no_endpoints"), 0u);
}

// sessionAffinity ClientIP: every new connection of one client goes to one
// pod, through the ClusterIP from a pod and through a NodePort from outside,
// while other clients are spread over the Service's pods.
TEST_F(ParityTest, SessionAffinityClientIpKeepsEachClientOnOnePod) {
  ASSERT_EQ(create("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"sticky\"},\"spec\":{"
                   "\"type\":\"NodePort\",\"sessionAffinity\":\"ClientIP\",\"selector\":{\"app\":\"echo\"},"
                   "\"ports\":[{\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080,\"nodePort\":30095}]}}"),
            0);
  const std::string vip = cluster_ip("sticky");
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80"));
  auto pods_answering = [&](const std::string& from, const std::string& target) {
    std::set<std::string> pods;
    for (const auto& r : probe(from, target, 12)) {
      EXPECT_TRUE(r.ok) << from << " to " << target << ": " << r.line;
      pods.insert(r.pod);
    }
    return pods;
  };
  EXPECT_EQ(pods_answering("echo-1-1", vip + ":80/tcp").size(), 1u) << "one pod for one client";
  EXPECT_EQ(pods_answering("client", "10.0.0.12:30095/tcp").size(), 1u) << "and from outside";
  std::set<std::string> chosen;
  for (const char* from : {"echo-1-2", "echo-1-3", "echo-2-1", "echo-2-2", "echo-2-3"}) {
    auto p = pods_answering(from, vip + ":80/tcp");
    EXPECT_EQ(p.size(), 1u) << from;
    chosen.insert(p.begin(), p.end());
  }
  EXPECT_GE(chosen.size(), 2u) << "clients are not all sent to one pod";
}

}  // namespace
}  // namespace kpx::e2e
