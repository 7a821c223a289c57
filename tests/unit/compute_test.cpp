#include "proxy/compute.h"

#include <gtest/gtest.h>

#include <optional>

#include "proxy/model.h"
#include "unit/compute_fixtures.h"

namespace kpx::proxy {
namespace {

using namespace fixtures;

TEST(Compute, ClusterIpPortToReadyEndpoints) {
  Model m;
  add(m, service("web", "10.96.0.10", {port("http", 80)}));
  add(m, slice("web-1", "web", {endpoint("10.244.1.6"), endpoint("10.244.1.5")}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {});
  ASSERT_EQ(d.frontends.size(), 1u);
  const dataplane::Frontend& sb = d.frontends.at(fk("10.96.0.10:80/tcp"));
  EXPECT_EQ(sb.service, "default/web");
  EXPECT_EQ(sb.port_name, "http");
  EXPECT_EQ(addrs(sb.cluster), backends({"10.244.1.5:8080", "10.244.1.6:8080"}));  // sorted
  EXPECT_TRUE(d.skipped.empty());
}

// The frontend contract: each frontend carries its owner, port name,
// scope, flags, affinity timeout, and the cluster and local backend sets
// with each endpoint's node, zone and conditions.
TEST(Compute, FrontendsCarryOwnerFlagsAndBothBackendSets) {
  Model m;
  k8s::Service s = service("web", "10.96.0.10", {port("http", 80)});
  s.session_affinity = "ClientIP";
  s.client_ip_timeout_seconds = 600;
  s.internal_traffic_policy = "Local";
  add(m, s);
  k8s::Endpoint here = endpoint("10.244.1.5"), there = endpoint("10.244.2.5"),
                draining = endpoint("10.244.1.9", false, true, true);
  here.node_name = "node1";
  here.zone = "zone-a";
  there.node_name = "node2";
  draining.node_name = "node1";
  add(m, slice("web-1", "web", {there, here, draining}, {slice_port("http", 8080)}));
  ComputeConfig cfg;
  cfg.node_name = "node1";
  DesiredState d = compute(m, cfg);
  ASSERT_EQ(d.frontends.size(), 1u);
  const auto& [key, fe] = *d.frontends.begin();
  EXPECT_EQ(key.scope, dataplane::Scope::kClusterIP);
  EXPECT_EQ(key.addr, net::IpAddr::parse("10.96.0.10"));
  EXPECT_EQ(key.port, 80);
  EXPECT_EQ(key.proto, net::Proto::kTcp);
  EXPECT_EQ(fe.service, "default/web");
  EXPECT_EQ(fe.port_name, "http");
  EXPECT_EQ(fe.flags, dataplane::kAffinity | dataplane::kLocalOnly | dataplane::kRejectEmpty);
  EXPECT_EQ(fe.affinity_timeout_s, 600u);
  // Ready endpoints take new flows; the terminating one is left out while any is ready.
  EXPECT_EQ(addrs(fe.cluster), backends({"10.244.1.5:8080", "10.244.2.5:8080"}));
  EXPECT_EQ(addrs(fe.local), backends({"10.244.1.5:8080"}));
  ASSERT_EQ(fe.cluster.size(), 2u);
  EXPECT_EQ(fe.cluster[0].node, "node1");
  EXPECT_EQ(fe.cluster[0].zone, "zone-a");
  EXPECT_TRUE(fe.cluster[0].ready && fe.cluster[0].serving && !fe.cluster[0].terminating);
  EXPECT_EQ(fe.cluster[1].node, "node2");

  // With no ready endpoint on the node, the local set falls back to its
  // serving terminating ones (kube-proxy's rule per set).
  here.conditions = {false, false, true};
  add(m, slice("web-1", "web", {there, here, draining}, {slice_port("http", 8080)}));
  d = compute(m, cfg);
  const auto& fe2 = d.frontends.at(fk("10.96.0.10:80/tcp"));
  EXPECT_EQ(addrs(fe2.cluster), backends({"10.244.2.5:8080"}));
  EXPECT_EQ(addrs(fe2.local), backends({"10.244.1.9:8080"}));
  EXPECT_TRUE(fe2.local[0].terminating && fe2.local[0].serving && !fe2.local[0].ready);
  // Without a node name there is no local set.
  EXPECT_TRUE(compute(m, {}).frontends.at(fk("10.96.0.10:80/tcp")).local.empty());
}

TEST(Compute, NodePortServicesGetANodePortFrontendWithTheExternalPolicy) {
  Model m;
  k8s::Service s = service("web", "10.96.0.10", {port("http", 80), port("dns", 53, "UDP")});
  s.type = "NodePort";
  s.ports[0].node_port = 30080;
  s.ports[1].node_port = 30053;
  s.external_traffic_policy = "Local";
  s.internal_traffic_policy = "Cluster";
  add(m, s);
  add(m, slice("web-1", "web", {endpoint("10.244.1.5")},
               {slice_port("http", 8080), slice_port("dns", 5353, "UDP")}));
  DesiredState d = compute(m, {"node1"});
  ASSERT_EQ(d.frontends.size(), 4u);
  const dataplane::FrontendKey np{net::IpAddr::from_v4(0), 30080, net::Proto::kTcp,
                                  dataplane::Scope::kNodePort};
  ASSERT_TRUE(d.frontends.count(np));
  const auto& fe = d.frontends.at(np);
  EXPECT_EQ(fe.service, "default/web");
  EXPECT_EQ(fe.port_name, "http");
  EXPECT_EQ(addrs(fe.cluster), backends({"10.244.1.5:8080"}));
  EXPECT_EQ(fe.flags, dataplane::kRejectEmpty | dataplane::kLocalOnly) << "externalTrafficPolicy Local";
  EXPECT_EQ(d.frontends.at(fk("10.96.0.10:80/tcp")).flags, dataplane::kRejectEmpty)
      << "the ClusterIP follows the internal policy only";
  const dataplane::FrontendKey np_udp{net::IpAddr::from_v4(0), 30053, net::Proto::kUdp,
                                      dataplane::Scope::kNodePort};
  EXPECT_EQ(addrs(d.frontends.at(np_udp).cluster), backends({"10.244.1.5:5353"}));

  // A ClusterIP Service has none, a port without an allocated nodePort neither.
  s.type = "ClusterIP";
  add(m, s);
  EXPECT_EQ(compute(m, {"node1"}).frontends.size(), 2u);
  s.type = "LoadBalancer";
  s.ports[1].node_port = 0;
  add(m, s);
  d = compute(m, {"node1"});
  EXPECT_EQ(d.frontends.size(), 3u);
  EXPECT_TRUE(d.frontends.count(np));
}

TEST(Compute, ExternalIpsAndLoadBalancerIpsInVipModeAreFrontends) {
  Model m;
  k8s::Service s = service("web", "10.96.0.10", {port("http", 80)});
  s.type = "LoadBalancer";
  s.ports[0].node_port = 30080;
  s.external_ips = {"192.0.2.10"};
  s.load_balancer_ingress = {{"198.51.100.1", ""}, {"198.51.100.2", "VIP"}, {"198.51.100.3", "Proxy"}};
  s.load_balancer_source_ranges = {"203.0.113.0/24"};
  add(m, s);
  add(m, slice("web-1", "web", {endpoint("10.244.1.5")}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {"node1"});
  auto has = [&](const char* ip, uint16_t p, dataplane::Scope scope) {
    return d.frontends.count({net::IpAddr::parse(ip), p, net::Proto::kTcp, scope}) == 1;
  };
  EXPECT_TRUE(has("10.96.0.10", 80, dataplane::Scope::kClusterIP));
  EXPECT_TRUE(has("0.0.0.0", 30080, dataplane::Scope::kNodePort));
  EXPECT_TRUE(has("192.0.2.10", 80, dataplane::Scope::kExternalIP));
  EXPECT_TRUE(has("198.51.100.1", 80, dataplane::Scope::kLoadBalancer)) << "ipMode unset means VIP";
  EXPECT_TRUE(has("198.51.100.2", 80, dataplane::Scope::kLoadBalancer));
  EXPECT_FALSE(has("198.51.100.3", 80, dataplane::Scope::kLoadBalancer)) << "ipMode Proxy is not captured";
  EXPECT_EQ(d.frontends.size(), 5u);
  const auto& lb = d.frontends.at(
      {net::IpAddr::parse("198.51.100.1"), 80, net::Proto::kTcp, dataplane::Scope::kLoadBalancer});
  EXPECT_TRUE(lb.flags & dataplane::kSourceRanges);
  EXPECT_EQ(lb.source_ranges, (std::vector<net::Ipv4Cidr>{*net::parse_ipv4_cidr("203.0.113.0/24")}));
  EXPECT_EQ(addrs(lb.cluster), backends({"10.244.1.5:8080"}));
  // A load balancer's IPs are a LoadBalancer Service's only; external IPs any type's.
  s.type = "ClusterIP";
  s.ports[0].node_port = 0;
  add(m, s);
  d = compute(m, {"node1"});
  EXPECT_EQ(d.frontends.size(), 2u);
  EXPECT_TRUE(has("192.0.2.10", 80, dataplane::Scope::kExternalIP));
}

// kube-proxy's health check counts (LocalReadyEndpoints): ready endpoints
// on this node, by address over the Service's ports and slices.
TEST(Compute, LocalLoadBalancersGetAHealthCheckWithTheirLocalReadyEndpoints) {
  Model m;
  k8s::Service s = service("web", "10.96.0.10", {port("http", 80), port("https", 443)});
  s.type = "LoadBalancer";
  s.external_traffic_policy = "Local";
  s.health_check_node_port = 30500;
  add(m, s);
  auto on = [](k8s::Endpoint e, const char* node) {
    e.node_name = node;
    return e;
  };
  add(m, slice("web-1", "web",
               {on(endpoint("10.244.1.5"), "node1"), on(endpoint("10.244.1.6"), "node1"),
                on(endpoint("10.244.1.7", false), "node1"),
                on(endpoint("10.244.1.8", false, true, true), "node1"), on(endpoint("10.244.2.5"), "node2")},
               {slice_port("http", 8080), slice_port("https", 8443)}));
  // The same pod again in another slice (the controller moving it), and
  // slices whose endpoints kube-proxy never sees: no port number, IPv6.
  add(m, slice("web-2", "web", {on(endpoint("10.244.1.5"), "node1")}, {slice_port("http", 8080)}));
  add(m, slice("web-3", "web", {on(endpoint("10.244.1.20"), "node1")},
               {k8s::EndpointPort{"http", "TCP", std::nullopt}}));
  add(m, slice("web-4", "web", {on(endpoint("fd00::5"), "node1")}, {slice_port("http", 8080)}, "IPv6"));
  const HealthChecks want = {{"default/web", {30500, 2}}};
  EXPECT_EQ(compute(m, {"node1"}).health_checks, want) << "two ready pods with two ports each: 2";
  EXPECT_EQ(compute(m, {"node2"}).health_checks, (HealthChecks{{"default/web", {30500, 1}}}));
  EXPECT_EQ(compute(m, {"node3"}).health_checks, (HealthChecks{{"default/web", {30500, 0}}}))
      << "0: answered 503";
  EXPECT_EQ(compute_services(m, {"default/web"}, {"node1"}).health_checks, want);
  EXPECT_TRUE(compute_services(m, {"default/other"}, {"node1"}).health_checks.empty());
  // Only a LoadBalancer with traffic policy Local has one (NeedsHealthCheck).
  s.external_traffic_policy = "Cluster";
  add(m, s);
  EXPECT_TRUE(compute(m, {"node1"}).health_checks.empty());
  s.external_traffic_policy = "Local";
  s.type = "NodePort";
  add(m, s);
  EXPECT_TRUE(compute(m, {"node1"}).health_checks.empty());
}

TEST(Compute, UdpAndTcpPortsOfOneService) {
  Model m;
  add(m, service("dns", "10.96.0.10", {port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP")}));
  add(m, slice("dns-1", "dns", {endpoint("10.244.0.2"), endpoint("10.244.0.3")},
               {slice_port("dns-tcp", 53, "TCP"), slice_port("dns", 53, "UDP")}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), 2u);
  EXPECT_EQ(at(d, "10.96.0.10:53/udp"), backends({"10.244.0.2:53", "10.244.0.3:53"}));
  EXPECT_EQ(at(d, "10.96.0.10:53/tcp"), backends({"10.244.0.2:53", "10.244.0.3:53"}));
}

TEST(Compute, PortsMatchByNameAcrossSlices) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80), port("metrics", 9090)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1"), endpoint("10.0.0.2")}, {slice_port("http", 8080)}));
  add(m,
      slice("web-b", "web", {endpoint("10.0.0.3")}, {slice_port("metrics", 9100), slice_port("http", 8080)}));
  add(m, slice("web-c", "web", {endpoint("10.0.0.4")}, {slice_port("metrics", 9100)}));
  // Same name, other protocol: not a match.
  add(m, slice("web-d", "web", {endpoint("10.0.0.5")}, {slice_port("http", 8080, "UDP")}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}));
  EXPECT_EQ(at(d, "10.96.0.20:9090/tcp"), backends({"10.0.0.3:9100", "10.0.0.4:9100"}));
}

TEST(Compute, UnnamedPortMatchesOnlyUnnamedSlicePort) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("", 8080)}));
  add(m, slice("web-b", "web", {endpoint("10.0.0.2")}, {slice_port("http", 8081)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
}

TEST(Compute, PortWithoutSlicePortKeepsTheServiceWithNoBackends) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80), port("admin", 81)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  add(m, service("lonely", "10.96.0.21", {port("", 80)}));  // no slice at all
  DesiredState d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
  // Present with no backends: the dataplane drops its traffic.
  EXPECT_EQ(at(d, "10.96.0.20:81/tcp"), backends({}));
  EXPECT_EQ(at(d, "10.96.0.21:80/tcp"), backends({}));
}

TEST(Compute, SameEndpointInTwoSlicesCountsOnce) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1"), endpoint("10.0.0.2")}, {slice_port("http", 8080)}));
  add(m, slice("web-b", "web", {endpoint("10.0.0.2"), endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:8080"}));
}

TEST(Compute, OnlyIpv4SlicesAndTheFirstAddress) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-4", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  add(m, slice("web-6", "web", {endpoint("fd00::1")}, {slice_port("http", 8080)}, "IPv6"));
  add(m, slice("web-f", "web", {endpoint("pod.example")}, {slice_port("http", 8080)}, "FQDN"));
  k8s::Endpoint two = endpoint("10.0.0.7");
  two.addresses.push_back("10.0.0.8");
  add(m, slice("web-2", "web", {two}, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.7:8080"}));
}

struct ConditionsCase {
  const char* name;
  std::vector<k8s::Endpoint> endpoints;
  std::vector<net::BackendAddr> want;
};

void PrintTo(const ConditionsCase& c, std::ostream* os) { *os << c.name; }

class ComputeConditions : public ::testing::TestWithParam<ConditionsCase> {};

TEST_P(ComputeConditions, ReadyElseServingTerminating) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", GetParam().endpoints, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), GetParam().want);
}

const OptBool T = true, F = false, U = std::nullopt;

INSTANTIATE_TEST_SUITE_P(
    Cases, ComputeConditions,
    ::testing::Values(ConditionsCase{"MissingConditionsMeanReady",
                                     {endpoint("10.0.0.1"), endpoint("10.0.0.2", U, U, U)},
                                     backends({"10.0.0.1:8080", "10.0.0.2:8080"})},
                      ConditionsCase{"ReadyOnlyWhenSomeAreReady",
                                     {endpoint("10.0.0.1", T, T, F), endpoint("10.0.0.2", F, T, T),
                                      endpoint("10.0.0.3", F, F, F)},
                                     backends({"10.0.0.1:8080"})},
                      ConditionsCase{"TerminatingFallbackWhenNoneReady",
                                     {endpoint("10.0.0.1", F, T, T), endpoint("10.0.0.2", F, F, T),
                                      endpoint("10.0.0.3", F, T, T)},
                                     backends({"10.0.0.1:8080", "10.0.0.3:8080"})},
                      ConditionsCase{"FallbackNeedsServing", {endpoint("10.0.0.1", F, F, T)}, backends({})},
                      // kube-proxy reads a missing serving as true (not as ready's value).
                      ConditionsCase{"MissingServingCountsAsServing",
                                     {endpoint("10.0.0.1", F, U, T)},
                                     backends({"10.0.0.1:8080"})},
                      // Not ready and not terminating (starting up, failing probes).
                      ConditionsCase{"FallbackNeedsTerminating",
                                     {endpoint("10.0.0.1", F, T, F), endpoint("10.0.0.2", F, T, U)},
                                     backends({})},
                      ConditionsCase{"NoEndpoints", {}, backends({})}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Compute, FallbackIsPerServiceAcrossItsSlices) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1", F, T, T)}, {slice_port("http", 8080)}));
  add(m, slice("web-b", "web", {endpoint("10.0.0.2", T)}, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.2:8080"}));
  m.remove_endpoint_slice("default", "web-b");
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
}

// Serving endpoints neither set takes (terminating next to ready ones, or
// hinted to another zone) are draining: no new flows, but the dataplane
// leaves their flows to finish. Endpoints that do not serve are not.
TEST(Compute, ServingEndpointsLeftOutOfTheSetsAreDraining) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("dns", 53, "UDP")}));
  k8s::Endpoint hinted = endpoint("10.0.0.5", T, T, F);
  hinted.hints = k8s::EndpointHints{{"zone-b"}, {}};
  k8s::Endpoint here = endpoint("10.0.0.6", T, T, F);
  here.hints = k8s::EndpointHints{{"zone-a"}, {}};
  add(m, slice("web-a", "web",
               {endpoint("10.0.0.1", T, T, F), endpoint("10.0.0.2", F, T, T), endpoint("10.0.0.3", F, F, T),
                endpoint("10.0.0.4", F, F, F)},
               {slice_port("dns", 5353, "UDP")}));
  const DesiredState d = compute(m, {});
  const auto& fe = d.frontends.at(fk("10.96.0.20:53/udp"));
  EXPECT_EQ(addrs(fe.cluster), backends({"10.0.0.1:5353"}));
  EXPECT_EQ(addrs(fe.draining), backends({"10.0.0.2:5353"}));
  ASSERT_EQ(fe.draining.size(), 1u);
  EXPECT_TRUE(fe.draining[0].terminating && fe.draining[0].serving && !fe.draining[0].ready);

  // The ready one goes: the terminating one serves new flows (the
  // fallback), so it is in the set and not draining.
  add(m, slice("web-a", "web", {endpoint("10.0.0.2", F, T, T), endpoint("10.0.0.3", F, F, T)},
               {slice_port("dns", 5353, "UDP")}));
  const DesiredState d2 = compute(m, {});
  const auto& fe2 = d2.frontends.at(fk("10.96.0.20:53/udp"));
  EXPECT_EQ(addrs(fe2.cluster), backends({"10.0.0.2:5353"}));
  EXPECT_TRUE(fe2.draining.empty());

  // Topology hints for another zone: a ready endpoint this node does not
  // send new flows to is draining too.
  add(m, slice("web-a", "web", {hinted, here}, {slice_port("dns", 5353, "UDP")}));
  k8s::Node node;
  node.metadata.name = "node1";
  node.metadata.labels.emplace(k8s::kLabelTopologyZone, "zone-a");
  m.set_node(node);
  ComputeConfig cfg;
  cfg.node_name = "node1";
  const DesiredState d3 = compute(m, cfg);
  const auto& fe3 = d3.frontends.at(fk("10.96.0.20:53/udp"));
  EXPECT_EQ(addrs(fe3.cluster), backends({"10.0.0.6:5353"}));
  EXPECT_EQ(addrs(fe3.draining), backends({"10.0.0.5:5353"}));
}

struct SkipCase {
  const char* name;
  k8s::Service svc;
  const char* reason_part;
};

SkipCase skip_case(const char* name, const char* reason, auto edit) {
  k8s::Service s = service("other", "10.96.0.30", {port("http", 80)});
  edit(s);
  return {name, s, reason};
}

void PrintTo(const SkipCase& c, std::ostream* os) { *os << c.name; }

class ComputeSkips : public ::testing::TestWithParam<SkipCase> {};

TEST_P(ComputeSkips, WithAReasonAndNothingProxied) {
  Model m;
  add(m, GetParam().svc);
  add(m, slice("other-a", "other", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {});
  EXPECT_TRUE(d.frontends.empty());
  ASSERT_EQ(d.skipped.size(), 1u);
  EXPECT_EQ(d.skipped[0].service, "default/other");
  EXPECT_NE(d.skipped[0].reason.find(GetParam().reason_part), std::string::npos) << d.skipped[0].reason;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ComputeSkips,
    ::testing::Values(skip_case("HeadlessNone", "headless", [](k8s::Service& s) { s.cluster_ip = "None"; }),
                      skip_case("HeadlessEmpty", "headless", [](k8s::Service& s) { s.cluster_ip = ""; }),
                      skip_case("ExternalName", "ExternalName",
                                [](k8s::Service& s) {
                                  s.type = "ExternalName";
                                  s.cluster_ip = "";
                                }),
                      skip_case("OtherProxy", "service.kubernetes.io/service-proxy-name=other-proxy",
                                [](k8s::Service& s) {
                                  s.metadata.labels.emplace(k8s::kLabelServiceProxyName, "other-proxy");
                                }),
                      skip_case("Ipv6Only", "IPv6 is not supported yet",
                                [](k8s::Service& s) {
                                  s.cluster_ip = "fd00::30";
                                  s.cluster_ips = {"fd00::30"};
                                }),
                      skip_case("Sctp", "port 'http' 80/SCTP: SCTP is not supported yet",
                                [](k8s::Service& s) { s.ports[0].protocol = "SCTP"; })),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Compute, SctpPortSkippedOthersKept) {
  Model m;
  add(m, service("mixed", "10.96.0.40", {port("sig", 3868, "SCTP"), port("web", 80)}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), 1u);
  EXPECT_EQ(at(d, "10.96.0.40:80/tcp"), backends({}));
  ASSERT_EQ(d.skipped.size(), 1u);
}

TEST(Compute, DualStackUsesTheIpv4ClusterIp) {
  Model m;
  k8s::Service s = service("web", "fd00::20", {port("http", 80)});
  s.cluster_ips = {"fd00::20", "10.96.0.20"};
  s.ip_families = {"IPv6", "IPv4"};
  add(m, s);
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
}

TEST(Compute, SliceBeforeItsServiceIsKept) {
  Model m;
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  EXPECT_TRUE(compute(m, {}).frontends.empty());
  EXPECT_EQ(m.endpoint_slice_count(), 1u);
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
  // The Service goes and comes back: its slices stayed.
  m.remove_service("default", "web");
  EXPECT_TRUE(compute(m, {}).frontends.empty());
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
}

TEST(Compute, SliceUpdatesReplaceAndMove) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, service("api", "10.96.0.21", {port("http", 80)}));
  add(m, slice("s1", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  add(m, slice("s1", "web", {endpoint("10.0.0.2")}, {slice_port("http", 8080)}));  // MODIFIED
  DesiredState d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({"10.0.0.2:8080"}));
  // Relabelled to another Service: leaves the first.
  add(m, slice("s1", "api", {endpoint("10.0.0.2")}, {slice_port("http", 8080)}));
  d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({}));
  EXPECT_EQ(at(d, "10.96.0.21:80/tcp"), backends({"10.0.0.2:8080"}));
  m.remove_endpoint_slice("default", "s1");
  m.remove_endpoint_slice("default", "never-seen");
  EXPECT_EQ(at(compute(m, {}), "10.96.0.21:80/tcp"), backends({}));
  EXPECT_EQ(m.endpoint_slice_count(), 0u);
}

TEST(Compute, TwoServicesOnOneAddressFirstByNameKeepsIt) {
  Model m;
  add(m, service("b", "10.96.0.50", {port("", 80)}));
  add(m, service("a", "10.96.0.50", {port("", 80)}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.at(fk("10.96.0.50:80/tcp")).service, "default/a");
  ASSERT_EQ(d.skipped.size(), 1u);
  EXPECT_EQ(d.skipped[0].service, "default/b");
}

}  // namespace
}  // namespace kpx::proxy

namespace kpx::proxy {
namespace {

// The model keeps objects compactly (proxy/compact.h): every field of a
// Service (those of the other types too, for the issues that follow) and
// what kube-proxy reads of a slice must survive it.
TEST(CompactModel, KeepsEveryServiceField) {
  k8s::Service s = service("lb", "10.96.0.50", {port("https", 443), port("dns", 53, "UDP")});
  s.type = "LoadBalancer";
  s.cluster_ips = {"10.96.0.50", "fd00::50"};
  s.ip_families = {"IPv4", "IPv6"};
  s.ports[0].target_port = std::string("web");
  s.ports[0].node_port = 30443;
  s.ports[1].target_port = 5353;
  s.external_ips = {"192.0.2.10"};
  s.session_affinity = "ClientIP";
  s.client_ip_timeout_seconds = 600;
  s.external_traffic_policy = "Local";
  s.internal_traffic_policy = "Cluster";
  s.health_check_node_port = 32000;
  s.load_balancer_source_ranges = {" 198.51.100.0/24 "};
  s.traffic_distribution = "PreferClose";
  s.load_balancer_ingress = {{"203.0.113.7", "Proxy"}, {"", ""}};
  Model m;
  add(m, s);
  const ServiceInfo& c = m.services().at("default/lb");
  const StringPool& str = m.strings();
  EXPECT_EQ(c.type, ServiceType::kLoadBalancer);
  ASSERT_EQ(c.cluster_ips.size(), 2u);
  EXPECT_EQ(c.cluster_ips[0].str(), "10.96.0.50");
  EXPECT_EQ(c.cluster_ips[1].str(), "fd00::50");
  EXPECT_EQ(c.ip_families[0], IpAddr::Family::kV4);
  EXPECT_EQ(c.ip_families[1], IpAddr::Family::kV6);
  ASSERT_EQ(c.ports.size(), 2u);
  EXPECT_EQ(str[c.ports[0].name], "https");
  EXPECT_EQ(c.ports[0].port, 443);
  EXPECT_EQ(c.ports[0].protocol, Protocol::kTCP);
  EXPECT_EQ(str[c.ports[0].target_port_name], "web");
  EXPECT_EQ(c.ports[0].target_port, 0);
  EXPECT_EQ(c.ports[0].node_port, 30443);
  EXPECT_EQ(c.ports[1].protocol, Protocol::kUDP);
  EXPECT_EQ(c.ports[1].target_port, 5353);
  EXPECT_EQ(c.ports[1].target_port_name, StringPool::kEmpty);
  EXPECT_EQ(c.session_affinity, SessionAffinity::kClientIP);
  EXPECT_EQ(c.client_ip_timeout_seconds, 600);
  EXPECT_EQ(c.external_traffic_policy, TrafficPolicy::kLocal);
  EXPECT_EQ(c.internal_traffic_policy, TrafficPolicy::kCluster);
  EXPECT_EQ(c.health_check_node_port, 32000);
  EXPECT_EQ(str[c.traffic_distribution], "PreferClose");
  ASSERT_EQ(c.ext().external_ips.size(), 1u);
  EXPECT_EQ(c.ext().external_ips[0].str(), "192.0.2.10");
  ASSERT_EQ(c.ext().load_balancer_source_ranges.size(), 1u);
  EXPECT_EQ(c.ext().load_balancer_source_ranges[0].addr.str(), "198.51.100.0");
  EXPECT_EQ(c.ext().load_balancer_source_ranges[0].prefix_len, 24);
  ASSERT_EQ(c.ext().load_balancer_ingress.size(), 2u);
  EXPECT_EQ(c.ext().load_balancer_ingress[0].ip.str(), "203.0.113.7");
  EXPECT_EQ(c.ext().load_balancer_ingress[0].ip_mode, LoadBalancerIpMode::kProxy);
  EXPECT_EQ(c.ext().load_balancer_ingress[1].ip.family, IpAddr::Family::kNone);
  EXPECT_FALSE(c.headless);
  EXPECT_FALSE(c.other_proxy);

  // A plain ClusterIP Service allocates nothing for the rarer fields.
  add(m, service("plain", "10.96.0.51", {port("http", 80)}));
  EXPECT_EQ(m.services().at("default/plain").external, nullptr);
  EXPECT_EQ(m.services().at("default/plain").type, ServiceType::kClusterIP);
}

TEST(CompactModel, KeepsWhatKubeProxyReadsOfASlice) {
  k8s::Endpoint a = endpoint("10.0.0.1", true, std::nullopt, false);
  a.addresses.push_back("10.0.0.99");  // fungible with the first: not kept
  a.node_name = "node-a";
  a.zone = "zone-1";
  a.hints = k8s::EndpointHints{{"zone-1", "zone-2"}, {"node-a"}};
  k8s::Endpoint b = endpoint("10.0.0.2", false, true, true);
  b.node_name = "node-a";
  Model m;
  add(m, slice("web-x", "web", {a, b}, {slice_port("http", 8080), slice_port("dns", 53, "UDP")}));
  const auto& slices = m.slices_of("default/web");
  ASSERT_EQ(slices.size(), 1u);
  const SliceInfo& s = slices.at("web-x");
  const StringPool& str = m.strings();
  EXPECT_EQ(s.address_type, AddressType::kIPv4);
  ASSERT_EQ(s.ports.size(), 2u);
  EXPECT_EQ(str[s.ports[1].name], "dns");
  EXPECT_EQ(s.ports[1].port, 53);
  EXPECT_EQ(s.ports[1].protocol, Protocol::kUDP);
  ASSERT_EQ(s.endpoints.size(), 2u);
  const EndpointInfo& ea = s.endpoints[0];
  EXPECT_EQ(ea.address.str(), "10.0.0.1");
  EXPECT_EQ(ea.ready(), std::optional<bool>(true));
  EXPECT_EQ(ea.serving(), std::nullopt);
  EXPECT_EQ(ea.terminating(), std::optional<bool>(false));
  EXPECT_EQ(str[ea.node_name], "node-a");
  EXPECT_EQ(str[ea.zone], "zone-1");
  ASSERT_NE(ea.hints, nullptr);
  ASSERT_EQ(ea.hints->for_zones.size(), 2u);
  EXPECT_EQ(str[ea.hints->for_zones[1]], "zone-2");
  EXPECT_EQ(str[ea.hints->for_nodes.at(0)], "node-a");
  const EndpointInfo& eb = s.endpoints[1];
  EXPECT_FALSE(eb.is_ready());
  EXPECT_TRUE(eb.is_serving());
  EXPECT_TRUE(eb.is_terminating());
  EXPECT_EQ(eb.hints, nullptr) << "absent hints stay absent";
  EXPECT_EQ(eb.node_name, ea.node_name) << "repeated names are interned";
  EXPECT_EQ(m.endpoint_slice_keys(), std::vector<std::string>{"default/web-x"});
}

}  // namespace
}  // namespace kpx::proxy
