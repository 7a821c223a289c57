// kube-proxy parity in the lab, end to end: what clients get from Services
// without endpoints (refused at once, from pods, from outside and from a
// node), under internalTrafficPolicy Local, with session affinity, and ICMP
// errors about translated flows (port unreachable from a backend, path MTU
// discovery through a ClusterIP and a NodePort), with real sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <future>

#include "lab/plan.h"
#include "lab_fixture.h"
#include "net/netns.h"

namespace kpx::e2e {
namespace {


// A TCP echo server on 0.0.0.0:port in a network namespace, on a thread of
// this process (setns is per thread): it answers each connection with what
// it reads until the client's FIN, then closes. It records the path MTU its
// last connection ended with (IP_MTU). Stops within 200 ms of destruction,
// and by itself after 60 s.
class TcpEchoInNetns {
 public:
  TcpEchoInNetns(const std::string& netns, uint16_t port) {
    std::promise<std::string> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, netns, port, ready = std::move(ready)]() mutable {
      auto scope = net::NetnsScope::enter(netns);
      if (!scope.ok()) return ready.set_value("enter " + netns + ": " + scope.error().message);
      int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      if (l < 0 || bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(l, 8) != 0) {
        if (l >= 0) close(l);
        return ready.set_value(std::string("listen: ") + std::strerror(errno));
      }
      ready.set_value("");
      const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!stop_ && std::chrono::steady_clock::now() < end) {
        pollfd p{l, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        timeval tv{20, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        char buf[65536];
        for (;;) {
          ssize_t n = read(c, buf, sizeof buf);
          if (n <= 0) break;
          for (ssize_t off = 0; off < n;) {
            ssize_t w = write(c, buf + off, static_cast<size_t>(n - off));
            if (w <= 0) break;
            off += w;
          }
        }
        int mtu = 0;
        socklen_t len = sizeof mtu;
        if (getsockopt(c, IPPROTO_IP, IP_MTU, &mtu, &len) == 0) last_mtu_ = mtu;
        close(c);
      }
      close(l);
    });
    error_ = started.get();
  }
  ~TcpEchoInNetns() {
    stop_ = true;
    thread_.join();
  }
  const std::string& error() const { return error_; }
  int last_mtu() const { return last_mtu_; }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> last_mtu_{0};
  std::string error_;
};

// From a network namespace: connect to addr:port, send `bytes` bytes and
// read them back (sending and reading at once), within 20 s. "" when every
// byte came back, else what went wrong; *mtu: the connection's path MTU at
// the end (IP_MTU).
std::string tcp_round_trip(const std::string& netns, const std::string& addr, uint16_t port, size_t bytes,
                           int* mtu) {
  std::string result;
  std::thread t([&] {
    auto scope = net::NetnsScope::enter(netns);
    if (!scope.ok()) {
      result = scope.error().message;
      return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
      result = std::string("connect: ") + std::strerror(errno);
      close(fd);
      return;
    }
    std::vector<char> out(bytes);
    for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<char>('a' + i % 26);
    std::vector<char> in;
    size_t sent = 0;
    bool shut = false;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (in.size() < bytes && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, static_cast<short>(POLLIN | (sent < bytes ? POLLOUT : 0)), 0};
      if (poll(&p, 1, 100) <= 0) continue;
      if (p.revents & (POLLERR | POLLHUP) && !(p.revents & POLLIN)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        result = std::string("socket error: ") + std::strerror(err);
        break;
      }
      if ((p.revents & POLLOUT) && sent < bytes) {
        ssize_t n = send(fd, out.data() + sent, bytes - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<size_t>(n);
      }
      if (sent == bytes && !shut) shut = shutdown(fd, SHUT_WR) == 0;
      if (p.revents & POLLIN) {
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n > 0) in.insert(in.end(), buf, buf + n);
      }
    }
    socklen_t len = sizeof *mtu;
    getsockopt(fd, IPPROTO_IP, IP_MTU, mtu, &len);
    close(fd);
    if (result.empty() && in != out)
      result = "sent " + std::to_string(sent) + " of " + std::to_string(bytes) + " bytes, " +
               std::to_string(in.size()) + " came back" + (in.size() == bytes ? " (different)" : " within 20 s");
  });
  t.join();
  return result;
}

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
  // The frontend is in both nodes' maps with at least `backends` backends:
  // the Service and its EndpointSlice are separate watch events, and a
  // frontend programmed before its slice arrives refuses (as kube-proxy's
  // REJECT does), so a test that expects answers waits for both.
  bool programmed_on_both_nodes(const std::string& frontend, size_t backends = 0) {
    auto ready = [&](const std::string& node) {
      std::string out;
      if (kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-" + node + " svc list -o json", &out) != 0) return false;
      json arr = json::parse(out, nullptr, false);
      if (!arr.is_array()) return false;
      for (const auto& s : arr)
        if (s.value("service", "").rfind(frontend, 0) == 0 && s["backends"].size() >= backends) return true;
      return false;
    };
    for (int i = 0; i < 200; ++i) {
      if (ready("node1") && ready("node2")) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  std::string node_stats(const std::string& node) {
    std::string out;
    kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-" + node + " stats -o json", &out);
    return out;
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
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80", 1));
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
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80", 6));
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

// A backend's port unreachable (a UDP port its pods do not listen on)
// reaches the client about its own datagram: a connected UDP socket reads
// ECONNREFUSED, through the ClusterIP from pods on both nodes and through a
// NodePort from outside, whichever node the answering pod is on. Without the
// translation the error quotes the pod's address, which no socket of the
// client knows: it would wait for its timeout.
TEST_F(ParityTest, APortUnreachableFromABackendReachesTheClientThroughAClusterIpAndANodePort) {
  ASSERT_EQ(create("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"closed\"},\"spec\":{"
                   "\"type\":\"NodePort\",\"selector\":{\"app\":\"echo\"},\"ports\":["
                   "{\"protocol\":\"UDP\",\"port\":53,\"targetPort\":9053,\"nodePort\":30097}]}}"),
            0);
  const std::string vip = cluster_ip("closed");
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":53", 6));
  for (const char* from : {"echo-1-1", "echo-2-1"}) expect_refused(from, vip + ":53/udp", "--keep-socket");
  expect_refused("client", "10.0.0.11:30097/udp", "--keep-socket");
  expect_refused("client", "10.0.0.12:30097/udp", "--keep-socket");
  EXPECT_GE(stat("node1", "icmp_error_translated") + stat("node2", "icmp_error_translated"), 8u);
  EXPECT_EQ(stat("node1", "reject_no_endpoints") + stat("node2", "reject_no_endpoints"), 0u)
      << "the pods refused, not kpx";
}

// Path MTU discovery through a ClusterIP and a NodePort. The path into the
// backend's pod has an MTU of 1280 (a route on its node): that node says
// "fragmentation needed" about the translated segments, and the client must
// hear it about its own. Through the NodePort, from the internet, the way
// back has one too (the gateway's route to the internet): the gateway says
// it about the answers kpx sent, and the backend must hear it about its own.
// Then node1's own way to node2 is the narrow one: its kernel says it for a
// pod's flow, kpx itself for a NodePort flow it sends on. 256 KiB go each
// way; without the errors the full-size segments are lost for good (a black
// hole) and the transfer stalls.
TEST_F(ParityTest, PathMtuDiscoveryWorksThroughAClusterIpAndANodePort) {
  // A Service with one endpoint on node2, port 9000, where the test serves.
  auto bulk = [&](const std::string& name, const std::string& ip, int node_port) {
    return "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"" + name +
           "\"},\"spec\":{\"type\":\"NodePort\",\"ports\":[{\"protocol\":\"TCP\",\"port\":80,\"targetPort\":9000,"
           "\"nodePort\":" +
           std::to_string(node_port) +
           "}]}}\n"
           "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"" +
           name + "-1\",\"labels\":{\"kubernetes.io/service-name\":\"" + name +
           "\"}},\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"" + ip +
           "\"],\"conditions\":{\"ready\":true},\"nodeName\":\"node2\"}],"
           "\"ports\":[{\"name\":\"\",\"protocol\":\"TCP\",\"port\":9000}]}\n";
  };
  const std::string backend = pod_ip("echo-2-1"), backend2 = pod_ip("echo-2-2");
  ASSERT_FALSE(backend.empty());
  ASSERT_FALSE(backend2.empty());
  ASSERT_EQ(create(bulk("bulk", backend, 30098) + bulk("bulk2", backend2, 30099)), 0);
  const std::string vip = cluster_ip("bulk");
  ASSERT_TRUE(programmed_on_both_nodes(vip + ":80", 1));
  ASSERT_TRUE(programmed_on_both_nodes(cluster_ip("bulk2") + ":80", 1));
  const lab::LabPlan plan = lab::plan_lab(name_, 2);
  TcpEchoInNetns server(plan.pod_netns("default", "echo-2-1"), 9000);
  ASSERT_EQ(server.error(), "");
  TcpEchoInNetns server2(plan.pod_netns("default", "echo-2-2"), 9000);
  ASSERT_EQ(server2.error(), "");

  int status = 0;
  exec("node2", "ip route add " + backend + "/32 dev cbr0 mtu lock 1280", &status);
  ASSERT_EQ(status, 0);
  exec("gateway", "ip route replace 203.0.113.0/24 dev eth1 mtu lock 1280", &status);
  ASSERT_EQ(status, 0);
  const uint64_t translated1 = stat("node1", "icmp_error_translated");

  int mtu = 0;
  EXPECT_EQ(tcp_round_trip(plan.pod_netns("default", "echo-1-1"), vip, 80, 256 * 1024, &mtu), "")
      << "a pod on node1 through the ClusterIP; node1: " << node_stats("node1");
  EXPECT_EQ(mtu, 1280) << "the pod learned the path MTU to the ClusterIP";

  EXPECT_EQ(tcp_round_trip(plan.internet_ns, "10.0.0.11", 30098, 256 * 1024, &mtu), "")
      << "the internet through node1's NodePort; node1: " << node_stats("node1");
  EXPECT_EQ(mtu, 1280) << "the client learned the path MTU to the NodePort";
  EXPECT_EQ(server.last_mtu(), 1280) << "the backend learned the path MTU of its answers";
  EXPECT_GE(stat("node1", "icmp_error_translated"), translated1 + 3);

  // Now node1's own way to node2's pods is the narrow one. A pod's flow
  // through the ClusterIP is forwarded by node1's kernel, which says it
  // about the translated segments; a NodePort flow kpx sends on itself, and
  // kpx says it, about the client's segments as they came. (To echo-2-2:
  // echo-2-1 knows its way to node1 is narrow now, and would announce a
  // smaller MSS.)
  exec("node2", "ip route del " + backend + "/32", &status);
  ASSERT_EQ(status, 0);
  exec("node1", "ip route change " + plan.nodes[1].pod_cidr + " via " + plan.nodes[1].ip + " mtu lock 1280", &status);
  ASSERT_EQ(status, 0);
  EXPECT_EQ(tcp_round_trip(plan.pod_netns("default", "echo-1-2"), cluster_ip("bulk2"), 80, 256 * 1024, &mtu), "")
      << "another pod on node1 through the ClusterIP; node1: " << node_stats("node1");
  EXPECT_EQ(mtu, 1280);
  EXPECT_EQ(tcp_round_trip(plan.client_ns, "10.0.0.11", 30099, 256 * 1024, &mtu), "")
      << "the client through node1's NodePort; node1: " << node_stats("node1");
  EXPECT_EQ(mtu, 1280);
  EXPECT_GE(stat("node1", "icmp_frag_needed_sent"), 1u);
}

}  // namespace
}  // namespace kpx::e2e
