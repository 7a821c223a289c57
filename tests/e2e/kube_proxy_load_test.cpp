// kube-proxy's rules (bench/kube_proxy_rules.h) loaded with iptables-restore
// (iptables-nft and iptables-legacy) and nft into a client namespace of the
// test's own: a request from it to a
// ClusterIP is DNATed in OUTPUT to an echo server in a second namespace
// across a veth pair, and answered; a ClusterIP without endpoints is
// rejected; after removal nothing of kube-proxy's is left. Every namespace
// (and so every rule and interface) goes when the test ends, failed or not.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>

#include "kube_proxy_rules.h"
#include "lab/echo.h"
#include "support/scoped.h"

namespace kpx::bench {
namespace {

using testing::sh;
using testing::sh_out;

constexpr const char* kClientIp = "10.250.0.1";
constexpr const char* kServerIp = "10.250.0.2";
constexpr const char* kVip = "10.96.77.10";
constexpr const char* kEmptyVip = "10.96.77.11";

}  // namespace

// Test names and failure messages say the mode, not its bytes.
void PrintTo(KubeProxyMode m, std::ostream* os) { *os << to_string(m); }

namespace {

uint32_t ip(const char* s) { return *net::IpAddr::parse(s).v4(); }

dataplane::Frontend owned(const std::string& service, std::vector<dataplane::Backend> backends) {
  dataplane::Frontend fe;
  fe.service = service;
  fe.port_name = "http";
  fe.flags = dataplane::kRejectEmpty;
  fe.cluster = std::move(backends);
  return fe;
}

dataplane::FrontendTable echo_services() {
  dataplane::Backend b;
  b.addr = net::IpAddr::parse(kServerIp);
  b.port = 8080;
  dataplane::FrontendTable t;
  t[{net::IpAddr::parse(kVip), 80, net::Proto::kTcp, dataplane::Scope::kClusterIP}] =
      owned("kpx-test/echo", {b});
  t[{net::IpAddr::parse(kEmptyVip), 80, net::Proto::kTcp, dataplane::Scope::kClusterIP}] =
      owned("kpx-test/empty", {});
  return t;
}

KubeProxyNode client_node() {
  KubeProxyNode n;
  n.node_ip_be = ip(kClientIp);
  n.cluster_cidr = *net::parse_ipv4_cidr("10.244.0.0/16");
  n.service_cidrs = {*net::parse_ipv4_cidr("10.96.0.0/16")};
  return n;
}

std::string rules_for(KubeProxyMode mode, const dataplane::FrontendTable& t, const KubeProxyNode& node) {
  return is_iptables(mode) ? iptables_restore_rules(t, node) : nft_rules(t, node);
}

class KubeProxyLoad : public ::testing::TestWithParam<KubeProxyMode> {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "e2e tests need root";
    cli_ = netns_.add("r-cli");
    srv_ = netns_.add("r-srv");
    ASSERT_FALSE(cli_.empty() || srv_.empty()) << "ip netns add failed";
    // Made inside the client namespace, its peer moved straight into the
    // server's: the machine's own namespace never holds either end.
    const std::string vc = testing::unique_name("krc"), vs = testing::unique_name("krs");
    ASSERT_EQ(sh("ip -n " + cli_ + " link add " + vc + " type veth peer name " + vs + " netns " + srv_), 0);
    ASSERT_EQ(sh("ip -n " + cli_ + " addr add " + kClientIp + "/24 dev " + vc), 0);
    ASSERT_EQ(sh("ip -n " + srv_ + " addr add " + kServerIp + "/24 dev " + vs), 0);
    ASSERT_EQ(sh("ip -n " + cli_ + " link set " + vc + " up"), 0);
    ASSERT_EQ(sh("ip -n " + srv_ + " link set " + vs + " up"), 0);
    // OUTPUT DNAT runs after the routing decision: the ClusterIP needs a route.
    ASSERT_EQ(sh("ip -n " + cli_ + " route add default via " + std::string(kServerIp)), 0);
    ASSERT_GT(procs_.spawn({"ip", "netns", "exec", srv_, KPX_BINARY, "lab", "echo-server", "--name",
                            "backend", "--port", "8080"}),
              0);
    bool listening = false;
    for (int i = 0; i < 100 && !listening; ++i) {
      listening = !sh_out("ip netns exec " + srv_ + " ss -Hltn 'sport = :8080'").empty();
      if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(listening) << "the echo server did not start";
  }

  std::vector<lab::ProbeAnswer> probe(const std::string& target, int count, int timeout_ms = 1000) {
    return lab::parse_probe_output(sh_out("ip netns exec " + cli_ + " " + KPX_BINARY + " lab probe " +
                                          target + " -c " + std::to_string(count) + " --timeout-ms " +
                                          std::to_string(timeout_ms)));
  }

  // The client namespace's kube-proxy state: its KUBE-* chains, or its table.
  std::string leftovers() {
    if (is_iptables(GetParam())) {
      const std::string save =
          GetParam() == KubeProxyMode::kIptablesLegacy ? "iptables-legacy-save" : "iptables-save";
      std::string out;
      for (const char* t : {"nat", "filter", "mangle"})
        out += sh_out("ip netns exec " + cli_ + " " + save + " -t " + t + " | grep KUBE- || true");
      return out;
    }
    return sh_out("ip netns exec " + cli_ + " nft list tables | grep kube-proxy || true");
  }

  testing::ScopedNetns netns_;  // last to go: takes every rule and interface with it
  testing::ScopedProcesses procs_;
  std::string cli_, srv_;
};

TEST_P(KubeProxyLoad, ClusterIpIsAnsweredThroughKubeProxysRules) {
  const KubeProxyMode mode = GetParam();
  const auto node = client_node();
  const std::string rules = rules_for(mode, echo_services(), node);
  // Twice: the second load replaces the first, as a resync does.
  for (int round = 0; round < 2; ++round) {
    auto load = load_kube_proxy_rules(cli_, mode, rules, node);
    ASSERT_TRUE(load.ok()) << load.error().message;
    EXPECT_EQ(load->bytes, rules.size());
    auto answers = probe(std::string(kVip) + ":80/tcp", 3);
    ASSERT_EQ(answers.size(), 3u);
    for (const auto& a : answers) {
      EXPECT_TRUE(a.ok) << a.line;
      EXPECT_EQ(a.pod, "backend");
      EXPECT_EQ(a.from, std::string(kVip) + ":80");  // conntrack's reverse NAT
      EXPECT_EQ(a.client_ip(), kClientIp);  // masqueraded (not from the cluster CIDR): the veth address
    }
  }
  // No endpoints: kube-proxy rejects (iptables REJECT, nft reject-chain).
  auto refused = probe(std::string(kEmptyVip) + ":80/tcp", 1);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_FALSE(refused[0].ok) << refused[0].line;
  EXPECT_NE(refused[0].line.find("refused"), std::string::npos) << refused[0].line;

  ASSERT_TRUE(remove_kube_proxy_rules(cli_, mode).ok());
  EXPECT_EQ(leftovers(), "");
  auto after = probe(std::string(kVip) + ":80/tcp", 1, 300);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_FALSE(after[0].ok) << "answered without the rules: " << after[0].line;
  // Removing what is not there is not an error.
  EXPECT_TRUE(remove_kube_proxy_rules(cli_, mode).ok());
}

TEST_P(KubeProxyLoad, ABrokenFileIsRefusedWithTheToolsWords) {
  auto load = load_kube_proxy_rules(cli_, GetParam(), "this is not a ruleset\n", client_node());
  ASSERT_FALSE(load.ok());
  EXPECT_NE(load.error().message.find(cli_), std::string::npos) << load.error().message;
  EXPECT_TRUE(remove_kube_proxy_rules(cli_, GetParam()).ok());
}

// Enough endpoints for iptables' large-cluster mode; kept small because
// iptables-nft and nft take minutes for 10,000 Services on a 2-core
// machine (kpx-bench compare measures those).
TEST_P(KubeProxyLoad, TwoThousandServicesAreProgrammed) {
  dataplane::FrontendTable t = echo_services();
  for (uint32_t i = 0; i < 2000; ++i) {
    dataplane::Backend a, b;
    a.addr = net::IpAddr::from_v4(htonl(0x0af40000 + 2 * i));
    b.addr = net::IpAddr::from_v4(htonl(0x0af40001 + 2 * i));
    a.port = b.port = 8080;
    t[{net::IpAddr::from_v4(htonl(0x0a610000 + i)), 80, net::Proto::kTcp, dataplane::Scope::kClusterIP}] =
        owned("bench/svc-" + std::to_string(i), {a, b});
  }
  const auto node = client_node();
  const std::string rules = rules_for(GetParam(), t, node);
  auto load = load_kube_proxy_rules(cli_, GetParam(), rules, node);
  ASSERT_TRUE(load.ok()) << load.error().message;
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << to_string(GetParam()) << ": 2002 Services, " << rules.size() / 1024 << " KiB, programmed in "
            << ms(load->restore) << " ms (+" << ms(load->jumps) << " ms of jump rules)\n";
  auto answers = probe(std::string(kVip) + ":80/tcp", 1);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_TRUE(answers[0].ok) << answers[0].line;
  ASSERT_TRUE(remove_kube_proxy_rules(cli_, GetParam()).ok());
  EXPECT_EQ(leftovers(), "");
}

INSTANTIATE_TEST_SUITE_P(Modes, KubeProxyLoad,
                         ::testing::Values(KubeProxyMode::kIptables, KubeProxyMode::kIptablesLegacy,
                                           KubeProxyMode::kNftables),
                         [](const auto& info) {
                           std::string name = to_string(info.param);
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

}  // namespace
}  // namespace kpx::bench
