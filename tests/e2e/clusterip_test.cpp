// End to end: real TCP and UDP between network namespaces, translated by
// kpx's programs attached to the pod veths, checking which pod answered and
// which client address it saw.
#include <gtest/gtest.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "e2e/cluster.h"
#include "net/endpoint.h"
#include "net/netns.h"
#include "net/socket.h"

namespace kpx::e2e {
namespace {

constexpr const char* kVip = "10.96.0.10";

std::set<std::string> pods_of(const std::vector<ProbeResult>& rs) {
  std::set<std::string> s;
  for (const auto& r : rs)
    if (r.ok) s.insert(r.pod);
  return s;
}

int ok_count(const std::vector<ProbeResult>& rs) {
  int n = 0;
  for (const auto& r : rs) n += r.ok;
  return n;
}

std::string failures(const std::vector<ProbeResult>& rs) {
  std::string s;
  for (const auto& r : rs)
    if (!r.ok) s += r.line + "\n";
  return s;
}

uint64_t counter(const Cluster& c, int node, const std::string& name) {
  std::string out;
  if (c.kpx(node, "stats -o json", &out) != 0) return 0;
  return nlohmann::json::parse(out).value(name, uint64_t{0});
}

// Two nodes: client, web-a, web-b on node 1; web-c on node 2.
class ClusterIpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "e2e tests need root";
    ASSERT_TRUE(c.ok()) << "building the nodes failed";
    c.add_pod(1, "client", false);
    c.add_pod(1, "web-a");
    c.add_pod(1, "web-b");
    c.add_pod(2, "web-c");
    ASSERT_TRUE(c.ok()) << "building the pods failed";
    backends = c.pod("web-a").ip + ":8080 " + c.pod("web-b").ip + ":8080 " + c.pod("web-c").ip + ":8080";
  }
  Cluster c{2};
  std::string backends;
};

TEST_F(ClusterIpTest, TcpIsAnsweredByBackendsOnBothNodesFromTheVip) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + backends));
  auto rs = c.probe("client", std::string(kVip) + ":80/tcp", 45);
  ASSERT_EQ(rs.size(), 45u);
  for (const auto& r : rs) {
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.from, std::string(kVip) + ":80");           // reverse NAT on the way back
    EXPECT_EQ(r.client_ip(), c.pod("client").ip);          // no source NAT east-west
  }
  EXPECT_EQ(pods_of(rs), (std::set<std::string>{"web-a", "web-b", "web-c"}));
  EXPECT_GE(counter(c, 1, "dnat_new"), 45u);
  EXPECT_GE(counter(c, 1, "revnat"), 45u);
}

TEST_F(ClusterIpTest, UdpIsAnsweredByBackendsOnBothNodesFromTheVip) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + backends));
  auto rs = c.probe("client", std::string(kVip) + ":53/udp", 45);
  ASSERT_EQ(rs.size(), 45u);
  for (const auto& r : rs) {
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.from, std::string(kVip) + ":53");
    EXPECT_EQ(r.client_ip(), c.pod("client").ip);
  }
  EXPECT_EQ(pods_of(rs), (std::set<std::string>{"web-a", "web-b", "web-c"}));
}

TEST_F(ClusterIpTest, WorksWithChecksumOffloadOff) {
  // With tx offload off the pods send CHECKSUM_NONE frames with full
  // checksums: kpx must update them (the default path is CHECKSUM_PARTIAL).
  for (const char* p : {"client", "web-a", "web-b", "web-c"}) ASSERT_EQ(c.exec(p, "ethtool -K eth0 tx off >/dev/null"), 0);
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + backends));
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + backends));
  auto tcp = c.probe("client", std::string(kVip) + ":80/tcp", 20);
  auto udp = c.probe("client", std::string(kVip) + ":53/udp", 20);
  EXPECT_EQ(ok_count(tcp), 20);
  EXPECT_EQ(ok_count(udp), 20);
  EXPECT_GE(pods_of(tcp).size(), 2u);
}

TEST_F(ClusterIpTest, HairpinIsSourceNatedToTheNodeAddress) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + c.pod("web-a").ip + ":8080"));
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + c.pod("web-a").ip + ":8080"));
  for (const char* target : {"10.96.0.10:80/tcp", "10.96.0.10:53/udp"}) {
    auto rs = c.probe("web-a", target, 5);
    ASSERT_EQ(ok_count(rs), 5) << target;
    for (const auto& r : rs) {
      EXPECT_EQ(r.pod, "web-a");
      EXPECT_EQ(r.client_ip(), "10.244.1.1") << "hairpin source NAT to cbr0's address";
      EXPECT_EQ(r.from.substr(0, r.from.find(':')), kVip);
    }
  }
  EXPECT_GE(counter(c, 1, "hairpin"), 10u);
  // Another pod reaching web-a through the Service keeps its own address.
  auto rs = c.probe("web-b", std::string(kVip) + ":80/tcp", 3);
  ASSERT_EQ(ok_count(rs), 3);
  EXPECT_EQ(rs[0].client_ip(), c.pod("web-b").ip);
}

TEST_F(ClusterIpTest, PodToPodTrafficIsUntouched) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + backends));
  for (const char* p : {"web-a", "web-c"}) {
    auto rs = c.probe("client", c.pod(p).ip + ":8080/tcp", 3);
    ASSERT_EQ(ok_count(rs), 3);
    EXPECT_EQ(rs[0].pod, p);
    EXPECT_EQ(rs[0].from, c.pod(p).ip + ":8080");
    EXPECT_EQ(rs[0].client_ip(), c.pod("client").ip);
  }
}

TEST_F(ClusterIpTest, ServiceWithoutBackendsDropsAndCounts) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":81/tcp"));
  uint64_t before = counter(c, 1, "drop_no_backend");
  auto rs = c.probe("client", std::string(kVip) + ":81/tcp", 1, 400);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_FALSE(rs[0].ok);
  EXPECT_GT(counter(c, 1, "drop_no_backend"), before);
}

TEST_F(ClusterIpTest, BackendChangesNeverFailARequest) {
  // The generation flip: while the client loops, the backend set changes
  // back and forth; every request must be answered.
  const std::string set_a = c.pod("web-a").ip + ":8080 " + c.pod("web-b").ip + ":8080";
  const std::string set_b = c.pod("web-b").ip + ":8080 " + c.pod("web-c").ip + ":8080";
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + set_a));
  std::vector<ProbeResult> rs;
  std::thread client([&] { rs = c.probe("client", std::string(kVip) + ":80/tcp", 150); });
  for (int i = 0; i < 40; ++i) {
    EXPECT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + (i % 2 ? set_a : set_b)));
    usleep(10000);
  }
  client.join();
  EXPECT_EQ(ok_count(rs), 150) << failures(rs);
  EXPECT_EQ(rs.size(), 150u);
}

TEST_F(ClusterIpTest, UdpFlowsToARemovedBackendAreFlushed) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + c.pod("web-a").ip + ":8080"));
  ASSERT_EQ(ok_count(c.probe("client", std::string(kVip) + ":53/udp", 3)), 3);
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + c.pod("web-b").ip + ":8080"));
  std::string out;
  ASSERT_EQ(c.kpx(1, "ct list -o json", &out), 0);
  for (const auto& e : nlohmann::json::parse(out))
    EXPECT_NE(e["nat"].get<std::string>(), c.pod("web-a").ip + ":8080") << "UDP flow to a removed backend kept";
  auto rs = c.probe("client", std::string(kVip) + ":53/udp", 3);
  ASSERT_EQ(ok_count(rs), 3);
  EXPECT_EQ(rs[0].pod, "web-b");
}

TEST_F(ClusterIpTest, ReattachReusesPinnedMapsAndDetachStopsTranslation) {
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + backends));
  ASSERT_EQ(ok_count(c.probe("client", std::string(kVip) + ":80/tcp", 3)), 3);
  std::string before, after;
  ASSERT_EQ(c.kpx(1, "svc list -o json", &before), 0);
  // A new kpx program instance (as after an upgrade or restart) takes over
  // the same pinned maps: Services and conntrack stay.
  ASSERT_EQ(c.kpx(1, "attach --netns " + c.node_ns(1) + " --dev " + c.pod("client").host_veth), 0);
  ASSERT_EQ(c.kpx(1, "svc list -o json", &after), 0);
  EXPECT_EQ(before, after);
  std::string ct;
  ASSERT_EQ(c.kpx(1, "ct list -o json", &ct), 0);
  EXPECT_GE(nlohmann::json::parse(ct).size(), 6u);
  EXPECT_EQ(ok_count(c.probe("client", std::string(kVip) + ":80/tcp", 3)), 3);

  ASSERT_EQ(c.kpx(1, "detach --netns " + c.node_ns(1) + " --dev " + c.pod("client").host_veth), 0);
  auto rs = c.probe("client", std::string(kVip) + ":80/tcp", 1, 300);
  EXPECT_FALSE(rs.at(0).ok) << "after detach the VIP must no longer be translated";
  EXPECT_EQ(ok_count(c.probe("client", c.pod("web-a").ip + ":8080/tcp", 1)), 1);
}

// Sends UDP datagrams to vip:port from the pod's address, each from a new
// source port (a new flow each), through a raw socket made in the pod's
// namespace: up to `count` datagrams or `limit`, whichever comes first.
// Returns how many were sent.
int flood_udp(const std::string& netns, uint32_t saddr_be, uint32_t vip_be, uint16_t port, int count,
              std::chrono::milliseconds limit) {
  auto scope = net::NetnsScope::enter(netns);
  if (!scope) return -1;
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);  // IP_HDRINCL implied
  if (fd < 0) return -1;
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_addr.s_addr = vip_be;
  const auto end = std::chrono::steady_clock::now() + limit;
  int sent = 0;
  for (int i = 0; i < count && std::chrono::steady_clock::now() < end; ++i) {
    struct {
      iphdr ip;
      udphdr udp;
      char payload[4];
    } __attribute__((packed)) f{};
    f.ip.version = 4;
    f.ip.ihl = 5;
    f.ip.ttl = 64;
    f.ip.protocol = IPPROTO_UDP;
    f.ip.saddr = saddr_be;
    f.ip.daddr = vip_be;
    f.ip.tot_len = htons(sizeof(f));  // the kernel fills id and the header checksum
    f.udp.source = htons(static_cast<uint16_t>(1024 + i % 64000));
    f.udp.dest = htons(port);
    f.udp.len = htons(sizeof(f.udp) + sizeof(f.payload));
    std::memcpy(f.payload, "ping", 4);  // UDP checksum 0: none
    if (sendto(fd, &f, sizeof(f), 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == sizeof(f)) ++sent;
  }
  close(fd);
  return sent;
}

TEST_F(ClusterIpTest, APodFloodingNewUdpFlowsDoesNotBreakAnotherPodsConnections) {
  // The flooder shares node 1 (and its conntrack table) with the client.
  c.add_pod(1, "flooder", false);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":53/udp " + backends));
  ASSERT_TRUE(c.kpx_all("svc set " + std::string(kVip) + ":80/tcp " + backends));
  constexpr uint32_t kRate = 500, kBurst = 1000;
  ASSERT_EQ(c.kpx(1, "config set --conntrack-new-flows-per-sec " + std::to_string(kRate) +
                         " --conntrack-new-flows-burst " + std::to_string(kBurst)),
            0);

  // The client's own UDP flow, made before the flood and used during it.
  auto sock = net::bound_socket_in_netns(c.pod("client").ns, SOCK_DGRAM, 0, 0);
  ASSERT_TRUE(sock) << sock.error().message;
  timeval tv{0, 500000};
  ASSERT_EQ(setsockopt(sock->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  sockaddr_in vip{};
  vip.sin_family = AF_INET;
  vip.sin_port = htons(53);
  vip.sin_addr.s_addr = *net::parse_ipv4(kVip);
  ASSERT_EQ(connect(sock->get(), reinterpret_cast<sockaddr*>(&vip), sizeof(vip)), 0);
  auto ask = [&]() -> std::string {
    if (send(sock->get(), "hello", 5, 0) != 5) return "";
    char buf[256];
    ssize_t n = recv(sock->get(), buf, sizeof(buf) - 1, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  };
  const std::string first = ask();
  ASSERT_NE(first.find("pod="), std::string::npos) << "no answer before the flood";
  const std::string first_pod = first.substr(0, first.find(' '));
  const uint64_t budget_drops_before = counter(c, 1, "drop_ct_budget");

  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<int> sent{0};
  std::thread flood([&] {
    sent = flood_udp(c.pod("flooder").ns, *net::parse_ipv4(c.pod("flooder").ip), *net::parse_ipv4(kVip), 53,
                     60000, std::chrono::milliseconds(4000));
  });
  // Meanwhile the client's flow is answered every time, by the same backend
  // (its conntrack entries are neither evicted nor replaced), and its new
  // TCP connections are all answered.
  int answered = 0, same_backend = 0;
  std::vector<ProbeResult> tcp;
  std::thread tcp_client([&] { tcp = c.probe("client", std::string(kVip) + ":80/tcp", 100, 1000); });
  for (int i = 0; i < 60; ++i) {
    std::string a = ask();
    answered += !a.empty();
    same_backend += a.rfind(first_pod + " ", 0) == 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  tcp_client.join();
  flood.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_GT(sent.load(), 5000) << "the flood did not run";
  EXPECT_EQ(answered, 60);
  EXPECT_EQ(same_backend, 60) << "the client's UDP flow changed backend during the flood";
  EXPECT_EQ(ok_count(tcp), 100) << failures(tcp);

  // The flooder was held to its budget: its flows are at most the burst
  // plus the rate over the flood's time, the rest were dropped and counted.
  std::string out;
  ASSERT_EQ(c.kpx(1, "ct list -o json", &out), 0);
  size_t flooder_flows = 0;
  for (const auto& e : nlohmann::json::parse(out))
    if (e.value("direction", "") == "forward" && e.value("src", "").rfind(c.pod("flooder").ip + ":", 0) == 0) ++flooder_flows;
  EXPECT_GT(flooder_flows, 0u);
  EXPECT_LE(flooder_flows, kBurst + static_cast<size_t>(kRate * (secs + 1)));
  EXPECT_GE(counter(c, 1, "drop_ct_budget") - budget_drops_before,
            static_cast<uint64_t>(sent.load()) - flooder_flows);
}

}  // namespace
}  // namespace kpx::e2e
