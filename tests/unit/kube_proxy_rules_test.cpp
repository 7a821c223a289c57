// bench/kube_proxy_rules.h writes what kube-proxy writes: the chain names
// kube-proxy hashes, the lines of its own TestOverall*Rules expectations,
// and the exact files for a small cluster (tests/fixtures/kube-proxy/).
#include "kube_proxy_rules.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kube_proxy_service_ports.h"

namespace kpx::bench {
namespace {

using dataplane::Backend;
using dataplane::Frontend;
using dataplane::FrontendKey;
using dataplane::FrontendTable;
using dataplane::Scope;

const std::string kFixtures = std::string(KPX_SOURCE_DIR) + "/tests/fixtures/kube-proxy/";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

uint32_t ip(const char* s) { return *net::IpAddr::parse(s).v4(); }

Backend backend(const char* addr, uint16_t port) {
  Backend b;
  b.addr = net::IpAddr::parse(addr);
  b.port = port;
  return b;
}

// One Service port as compute() gives it: the ClusterIP frontend, and the
// external ones with the same backends and the external policy's flag.
struct Svc {
  std::string service, port_name;
  const char* cluster_ip;
  uint16_t port = 80;
  std::vector<Backend> cluster, local;
  uint16_t node_port = 0;
  std::vector<const char*> external_ips, lb_ips;
  std::vector<net::Ipv4Cidr> source_ranges;
  bool external_local = false, internal_local = false;
  uint32_t affinity_s = 0;
};

void add(FrontendTable& t, const Svc& s) {
  Frontend fe;
  fe.service = s.service;
  fe.port_name = s.port_name;
  fe.flags = dataplane::kRejectEmpty;
  if (s.affinity_s) {
    fe.flags |= dataplane::kAffinity;
    fe.affinity_timeout_s = s.affinity_s;
  }
  fe.cluster = s.cluster;
  fe.local = s.local;
  Frontend ext = fe;
  if (s.external_local) ext.flags |= dataplane::kLocalOnly;
  if (s.internal_local) fe.flags |= dataplane::kLocalOnly;
  t[{net::IpAddr::parse(s.cluster_ip), s.port, net::Proto::kTcp, Scope::kClusterIP}] = fe;
  if (s.node_port) t[{net::IpAddr::from_v4(0), s.node_port, net::Proto::kTcp, Scope::kNodePort}] = ext;
  for (const char* a : s.external_ips)
    t[{net::IpAddr::parse(a), s.port, net::Proto::kTcp, Scope::kExternalIP}] = ext;
  for (const char* a : s.lb_ips) {
    Frontend lb = ext;
    if (!s.source_ranges.empty()) {
      lb.flags |= dataplane::kSourceRanges;
      lb.source_ranges = s.source_ranges;
    }
    t[{net::IpAddr::parse(a), s.port, net::Proto::kTcp, Scope::kLoadBalancer}] = lb;
  }
}

// kube-proxy's TestOverall*Rules Services (pod CIDR 10.0.0.0/8, node
// 192.168.0.2; endpoints without a node name are not local).
FrontendTable overall_services() {
  FrontendTable t;
  add(t, {"ns1/svc1", "p80", "172.30.0.41", 80, {backend("10.180.0.1", 80)}});
  Svc svc2{"ns2/svc2", "p80", "172.30.0.42",     80,         {backend("10.180.0.2", 80)},
           {},         3001,  {"192.168.99.22"}, {"1.2.3.4"}};
  svc2.external_local = true;
  add(t, svc2);
  add(t, {"ns3/svc3", "p80", "172.30.0.43", 80, {backend("10.180.0.3", 80)}, {}, 3003});
  add(t, {"ns4/svc4",
          "p80",
          "172.30.0.44",
          80,
          {backend("10.180.0.4", 80), backend("10.180.0.5", 80)},
          {backend("10.180.0.5", 80)},
          0,
          {"192.168.99.33"}});
  Svc svc5{"ns5/svc5", "p80", "172.30.0.45", 80, {backend("10.180.0.3", 80)}, {}, 3002, {}, {"5.6.7.8"}};
  svc5.source_ranges = {*net::parse_ipv4_cidr("203.0.113.0/25")};
  svc5.affinity_s = 10800;
  add(t, svc5);
  add(t, {"ns6/svc6", "p80", "172.30.0.46", 80});
  return t;
}

KubeProxyNode overall_node() {
  KubeProxyNode n;
  n.node_ip_be = ip("192.168.0.2");
  n.node_addresses_be = {ip("192.168.0.2"), ip("192.168.1.2"), ip("192.168.99.11")};
  n.cluster_cidr = *net::parse_ipv4_cidr("10.0.0.0/8");
  return n;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty() && l[0] != '#') out.push_back(l);
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size())
    s.replace(at, from.size(), to);
  return s;
}

// Each table's lines sorted, as kube-proxy's assertIPTablesRulesEqual
// compares them (the order of Services is Go's map order there).
std::vector<std::string> sorted_tables(const std::string& text) {
  std::vector<std::string> out, table;
  for (const std::string& l : lines_of(text)) {
    table.push_back(l);
    if (l == "COMMIT") {
      std::sort(table.begin() + 1, table.end() - 1);
      out.insert(out.end(), table.begin(), table.end());
      table.clear();
    }
  }
  return out;
}

// A transaction's result as knftables' fake Dump() lists it: every object
// added and not deleted again, every rule and element, sorted.
std::vector<std::string> nft_state(const std::string& tx) {
  std::vector<std::string> in = lines_of(tx), out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i].rfind("add ", 0) == 0 && i + 1 < in.size() && in[i + 1] == "delete " + in[i].substr(4)) {
      ++i;
      continue;
    }
    if (in[i].rfind("flush ", 0) == 0 || in[i].rfind("delete ", 0) == 0) continue;
    out.push_back(in[i]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(KubeProxyRules, ChainNamesAreKubeProxysHashes) {
  // base32(sha256("")), as `printf '' | sha256sum` then RFC 4648 base32 give it.
  EXPECT_EQ(kube_proxy::hash_base32("", 16), "4OYMIQUY7QOBJGX3");
  FrontendTable t = overall_services();
  auto ports = kube_proxy::service_ports(t);
  ASSERT_EQ(ports.size(), 6u);
  const auto& svc1 = ports[0];
  const auto& svc4 = ports[3];
  const auto& svc5 = ports[4];
  EXPECT_EQ(svc1.port_name_string, "ns1/svc1:p80");
  // sha256("ns1/svc1:p80tcp") and sha256("ns1/svc1:p80tcp10.180.0.1:80"), from kube-proxy's tests.
  EXPECT_EQ(kube_proxy::iptables_service_chain("KUBE-SVC-", svc1), "KUBE-SVC-XPGD46QRK7WJZT7O");
  EXPECT_EQ(kube_proxy::iptables_endpoint_chain(svc1, svc1.reachable[0]), "KUBE-SEP-SXIVWICOYRO3J4NJ");
  EXPECT_EQ(kube_proxy::iptables_service_chain("KUBE-EXT-", ports[1]), "KUBE-EXT-GNZBNJ2PO5MGZ6GT");
  EXPECT_EQ(kube_proxy::iptables_service_chain("KUBE-FW-", svc5), "KUBE-FW-NUKIZ6OKUXPJNT4C");
  EXPECT_EQ(kube_proxy::iptables_endpoint_chain(svc4, svc4.reachable[1]), "KUBE-SEP-C6EBXVWJJZMIWKLZ");
  EXPECT_EQ(kube_proxy::nft_service_base(svc1), "ULMVA6XW-ns1/svc1/tcp/p80");
  EXPECT_EQ(kube_proxy::nft_endpoint_base(svc1, svc1.reachable[0]),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80");
  EXPECT_EQ(kube_proxy::nft_endpoint_base(svc5, svc5.reachable[0]),
            "GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80");
}

TEST(KubeProxyRules, ProbabilityAndMarkAreFormattedAsGoFormatsThem) {
  EXPECT_EQ(kube_proxy::probability(2), "0.5000000000");
  EXPECT_EQ(kube_proxy::probability(3), "0.3333333333");
  EXPECT_EQ(kube_proxy::probability(7), "0.1428571429");
  EXPECT_EQ(kube_proxy::masquerade_mark(14), "0x00004000");  // fmt "%#08x"
}

TEST(KubeProxyRules, IptablesHasTheLinesOfKubeProxysOverallTest) {
  KubeProxyNode node = overall_node();
  node.nfacct = true;         // the test proxier has the counters
  node.random_fully = false;  // and a fake iptables without --random-fully
  std::string got = iptables_restore_rules(overall_services(), node, {{"ns2/svc2", 30000}});
  got = replace_all(got, "0x00004000", "0x4000");
  EXPECT_EQ(sorted_tables(got), sorted_tables(read_file(kFixtures + "overall-v1.33.iptables")));
}

TEST(KubeProxyRules, NftablesHasTheStateOfKubeProxysOverallTest) {
  KubeProxyNode node = overall_node();
  node.node_port_addresses = {*net::parse_ipv4_cidr("192.168.0.2/32")};
  node.service_cidrs = {*net::parse_ipv4_cidr("172.30.0.0/16")};
  std::string got = replace_all(nft_rules(overall_services(), node), "0x00004000", "0x4000");
  std::vector<std::string> want = nft_state(read_file(kFixtures + "overall-v1.34.nft"));
  // Our first two lines delete the table: nothing of it is left.
  EXPECT_EQ(nft_state(got), want);
}

// The small cluster of the fixtures: two ClusterIP Services (2 endpoints;
// 3 endpoints with ClientIP affinity) and a NodePort Service with an
// unnamed port and externalTrafficPolicy Local, one of its two endpoints
// on this node.
FrontendTable small_cluster() {
  FrontendTable t;
  add(t, {"ns1/web", "http", "10.96.0.11", 80, {backend("10.244.1.5", 8080), backend("10.244.2.6", 8080)}});
  Svc api{"ns2/api",
          "https",
          "10.96.0.12",
          443,
          {backend("10.244.1.7", 8443), backend("10.244.2.8", 8443), backend("10.244.10.9", 8443)}};
  api.affinity_s = 3600;
  add(t, api);
  Svc np{"ns3/np",
         "",
         "10.96.0.13",
         8080,
         {backend("10.244.1.10", 80), backend("10.244.2.11", 80)},
         {backend("10.244.1.10", 80)},
         30080};
  np.external_local = true;
  add(t, np);
  return t;
}

KubeProxyNode small_node() {
  KubeProxyNode n;
  n.node_ip_be = ip("192.168.0.2");
  n.cluster_cidr = *net::parse_ipv4_cidr("10.244.0.0/16");
  n.service_cidrs = {*net::parse_ipv4_cidr("10.96.0.0/16")};
  return n;
}

TEST(KubeProxyRules, SmallClusterIptablesIsTheCheckedFile) {
  EXPECT_EQ(iptables_restore_rules(small_cluster(), small_node()),
            read_file(kFixtures + "rules-small.iptables"));
}

TEST(KubeProxyRules, SmallClusterNftablesIsTheCheckedFile) {
  EXPECT_EQ(nft_rules(small_cluster(), small_node()), read_file(kFixtures + "rules-small.nft"));
}

TEST(KubeProxyRules, EndpointsAreInKubeProxysStringOrder) {
  // "10.244.10.9:8443" sorts before "10.244.2.8:8443", as kube-proxy sorts them.
  auto ports = kube_proxy::service_ports(small_cluster());
  ASSERT_EQ(ports.size(), 3u);
  ASSERT_EQ(ports[1].cluster.size(), 3u);
  EXPECT_EQ(ports[1].cluster[0].str, "10.244.1.7:8443");
  EXPECT_EQ(ports[1].cluster[1].str, "10.244.10.9:8443");
  EXPECT_EQ(ports[2].port_name_string, "ns3/np");
  EXPECT_EQ(ports[2].reachable.size(), 2u);  // cluster for ClusterIP traffic, local for the NodePort
}

TEST(KubeProxyRules, FrontendsWithoutOwnerGetOneNamedByTheirAddress) {
  net::ServiceAddr vip{ip("10.96.0.10"), 53, net::Proto::kUdp};
  auto t = dataplane::frontends_of(dataplane::ServiceTable{{vip, {{ip("10.244.1.2"), 5353}}}});
  auto ports = kube_proxy::service_ports(t);
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0].port_name_string, "default/vip-10-96-0-10:p53");
  const std::string rules = iptables_restore_rules(t, small_node());
  EXPECT_NE(rules.find("-m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-"), std::string::npos);
  EXPECT_NE(rules.find("-j DNAT --to-destination 10.244.1.2:5353"), std::string::npos);
}

TEST(KubeProxyRules, LargeClustersDropThePerEndpointComments) {
  // More than 1000 endpoints: kube-proxy's large-cluster mode.
  dataplane::ServiceTable services;
  for (uint32_t i = 0; i < 501; ++i)
    services[{htonl(0x0a600000 + i), 80, net::Proto::kTcp}] = {{htonl(0x0af40000 + 2 * i), 8080},
                                                               {htonl(0x0af40001 + 2 * i), 8080}};
  const std::string rules = iptables_restore_rules(dataplane::frontends_of(services), small_node());
  std::istringstream in(rules);
  size_t seps = 0;
  for (std::string l; std::getline(in, l);)
    if (l.rfind("-A KUBE-SEP-", 0) == 0 ||
        (l.rfind("-A KUBE-SVC-", 0) == 0 && l.find(" -j KUBE-SEP-") != std::string::npos)) {
      ++seps;
      EXPECT_EQ(l.find("--comment"), std::string::npos) << l;
    }
  EXPECT_EQ(seps, 501u * 6);
}

TEST(KubeProxyRules, CountsTheirChainsRulesAndElements) {
  const auto ipt =
      count_rules(KubeProxyMode::kIptables, iptables_restore_rules(small_cluster(), small_node()));
  // filter: 6 chains (with KUBE-FIREWALL), nat: 4 + web (SVC, 2 SEP) + api (SVC, 3 SEP) + np (EXT, SVC, SVL,
  // 2 SEP).
  EXPECT_EQ(ipt.chains, 6u + 4u + 3u + 4u + 5u);
  const auto nft = count_rules(KubeProxyMode::kNftables, nft_rules(small_cluster(), small_node()));
  EXPECT_EQ(nft.elements,
            3u /*cluster-ips*/ + 3u /*service-ips*/ + 1u /*service-nodeports*/ + 1u /*nodeport-ips*/);
}

TEST(KubeProxyRules, FiftyThousandServicesAreWrittenQuickly) {
  dataplane::ServiceTable services;
  for (uint32_t i = 0; i < 50000; ++i)
    services[{htonl(0x0a600000 + i), 80, net::Proto::kTcp}] = {{htonl(0x0af40000 + 2 * i), 8080},
                                                               {htonl(0x0af40001 + 2 * i), 8080}};
  const auto frontends = dataplane::frontends_of(services);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string ipt = iptables_restore_rules(frontends, small_node());
  const auto t1 = std::chrono::steady_clock::now();
  const std::string nft = nft_rules(frontends, small_node());
  const auto t2 = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << "50000 Services: iptables " << ipt.size() / 1024 << " KiB in " << ms(t1 - t0)
            << " ms, nftables " << nft.size() / 1024 << " KiB in " << ms(t2 - t1) << " ms\n";
  // Per Service: the KUBE-SERVICES jump, the masquerade rule, 2 to the
  // endpoints, 2 in each endpoint's chain; 9 more for every Service.
  EXPECT_EQ(count_rules(KubeProxyMode::kIptables, ipt).rules, 50000u * 8 + 9);
  // Loose: a loaded 2-core machine; a quadratic writer takes minutes.
  EXPECT_LT(ms(t2 - t0), 20000);
}

}  // namespace
}  // namespace kpx::bench
