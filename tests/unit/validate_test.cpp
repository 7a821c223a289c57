// Validation as kube-proxy keeps what it can: one bad item of a list drops
// that item alone (and says so), a Service or slice broken as a whole is
// rejected alone (and says whether its previous version went with it), and
// addresses are read as kube-proxy reads them (leading zeros are decimal).
#include "proxy/validate.h"

#include <gtest/gtest.h>

#include "proxy/ip_parse.h"
#include "unit/compute_fixtures.h"

namespace kpx::proxy {
namespace {

using namespace fixtures;

// ---- addresses as ParseIPSloppy / ParseCIDRSloppy read them ---------------

struct IpCase {
  const char* in;
  const char* want;  // "" when not an address
};

void PrintTo(const IpCase& c, std::ostream* os) { *os << "'" << c.in << "'"; }

class SloppyIp : public ::testing::TestWithParam<IpCase> {};

TEST_P(SloppyIp, ParsesAsKubeProxy) { EXPECT_EQ(parse_ip_sloppy(GetParam().in).str(), GetParam().want); }

INSTANTIATE_TEST_SUITE_P(
    Cases, SloppyIp,
    ::testing::Values(IpCase{"10.0.0.1", "10.0.0.1"},
                      // Decimal, not octal: 010 is ten.
                      IpCase{"010.0.0.1", "10.0.0.1"}, IpCase{"1.2.3.04", "1.2.3.4"},
                      IpCase{"010.096.000.010", "10.96.0.10"}, IpCase{"00000010.0.0.1", "10.0.0.1"},
                      IpCase{"256.0.0.1", ""}, IpCase{"1.2.3.0256", ""}, IpCase{"1.2.3", ""},
                      IpCase{"1.2.3.4.", ""}, IpCase{"1.2.3.-4", ""}, IpCase{" 1.2.3.4", ""}, IpCase{"", ""},
                      IpCase{"fd00::1", "fd00::1"}, IpCase{"::ffff:010.0.0.1", "::ffff:10.0.0.1"},
                      IpCase{"fd00::1::2", ""}, IpCase{"x", ""}));

TEST(SloppyCidr, LeadingZerosAndPrefixBounds) {
  auto c = parse_cidr_sloppy("010.000.0.0/8");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->addr.str(), "10.0.0.0");
  EXPECT_EQ(c->prefix_len, 8);
  EXPECT_EQ(parse_cidr_sloppy("fd00::/64")->prefix_len, 64);
  for (const char* bad :
       {"10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0", "/8", "10.0.0.0/x", "10.0.0.0/8 "})
    EXPECT_FALSE(parse_cidr_sloppy(bad).has_value()) << bad;
}

TEST(SloppyIp, LeadingZerosReachTheFrontendsAndBackends) {
  Model m;
  k8s::Service s = service("web", "010.096.000.010", {port("http", 80)});
  s.external_ips = {"192.000.002.010"};
  add(m, s);
  add(m, slice("web-a", "web", {endpoint("010.244.001.005")}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.10:80/tcp"), backends({"10.244.1.5:8080"}));
  EXPECT_TRUE(d.frontends.count(
      {net::IpAddr::parse("192.0.2.10"), 80, net::Proto::kTcp, dataplane::Scope::kExternalIP}));
}

// ---- a Service broken as a whole is rejected alone ------------------------

struct BadService {
  const char* name;
  void (*edit)(k8s::Service&);
  const char* reason_part;
};

void PrintTo(const BadService& c, std::ostream* os) { *os << c.name; }

class RejectService : public ::testing::TestWithParam<BadService> {};

TEST_P(RejectService, AloneWhileOthersKeepWorking) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  k8s::Service bad = service("bad", "10.96.0.66", {port("http", 80)});
  GetParam().edit(bad);
  auto r = m.upsert_service(bad);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, "Service");
  EXPECT_EQ(r->name, "default/bad");
  EXPECT_EQ(r->outcome, Rejection::Outcome::kRejected);
  EXPECT_NE(r->reason.find(GetParam().reason_part), std::string::npos) << r->reason;
  EXPECT_EQ(to_string(*r), "Service default/bad rejected: " + r->reason);

  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), 1u);
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080"}));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RejectService,
    ::testing::Values(BadService{"ClusterIpNotAnIp", [](k8s::Service& s) { s.cluster_ip = "10.96.0.300"; },
                                 "spec.clusterIP: '10.96.0.300' is not an IP address"},
                      BadService{"ClusterIpsNotAnIp",
                                 [](k8s::Service& s) {
                                   s.cluster_ips = {"10.96.0.66", "nope"};
                                 },
                                 "spec.clusterIPs[1]: 'nope' is not an IP address"},
                      BadService{"UnknownProtocol", [](k8s::Service& s) { s.ports[0].protocol = "ICMP"; },
                                 "spec.ports[0].protocol: unsupported value 'ICMP'"},
                      BadService{"LowercaseProtocol", [](k8s::Service& s) { s.ports[0].protocol = "tcp"; },
                                 "spec.ports[0].protocol: unsupported value 'tcp'"},
                      BadService{"PortZero", [](k8s::Service& s) { s.ports[0].port = 0; },
                                 "spec.ports[0].port: port 0 out of range"},
                      BadService{"PortTooHigh", [](k8s::Service& s) { s.ports[0].port = 70000; },
                                 "spec.ports[0].port: port 70000 out of range"},
                      BadService{"TargetPortTooHigh", [](k8s::Service& s) { s.ports[0].target_port = 65536; },
                                 "spec.ports[0].targetPort: port 65536 out of range"},
                      BadService{"NodePortNegative", [](k8s::Service& s) { s.ports[0].node_port = -1; },
                                 "spec.ports[0].nodePort: port -1 out of range"},
                      BadService{"DuplicatePortName",
                                 [](k8s::Service& s) { s.ports.push_back(port("http", 81)); },
                                 "spec.ports[1].name: duplicate port name 'http'"},
                      BadService{"UnknownType", [](k8s::Service& s) { s.type = "Magic"; },
                                 "spec.type: unsupported value 'Magic'"},
                      BadService{"AffinityTimeout",
                                 [](k8s::Service& s) {
                                   s.session_affinity = "ClientIP";
                                   s.client_ip_timeout_seconds = 0;
                                 },
                                 "timeoutSeconds: 0 out of range"},
                      BadService{"TrafficPolicy",
                                 [](k8s::Service& s) { s.external_traffic_policy = "Global"; },
                                 "spec.externalTrafficPolicy: unsupported value 'Global'"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RejectService, EveryProblemIsListedDroppableOnesToo) {
  Model m;
  k8s::Service bad = service("bad", "nope", {port("a", 0, "ICMP")});
  bad.external_ips = {"x"};
  auto r = m.upsert_service(bad);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason,
            "spec.clusterIP: 'nope' is not an IP address; "
            "spec.ports[0].protocol: unsupported value 'ICMP' (expected one of TCP, UDP, SCTP); "
            "spec.ports[0].port: port 0 out of range (expected 1-65535); "
            "spec.externalIPs[0]: 'x' is not an IP address");
}

TEST(RejectService, MissingNamespace) {
  Model m;
  k8s::Service bad = service("web", "10.96.0.20", {port("http", 80)});
  bad.metadata.namespace_ = "";
  auto r = m.upsert_service(bad);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(to_string(*r), "Service /web rejected: metadata.namespace: missing");
}

// kpx's choice, said in the log line: a version kpx cannot trust is not
// proxied, and neither is the previous one, which the API no longer holds.
TEST(RejectService, AnInvalidUpdateRemovesThePreviousVersionAndSaysSo) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, service("api", "10.96.0.21", {port("http", 80)}));
  m.take_changed_services();
  auto r = m.upsert_service(service("web", "10.96.0.20", {port("http", 0)}));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->outcome, Rejection::Outcome::kRejectedRemoved);
  EXPECT_EQ(to_string(*r),
            "Service default/web rejected: spec.ports[0].port: port 0 out of range (expected 1-65535); "
            "its previous version is removed, it is no longer proxied");
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/web"});
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), 1u);
  EXPECT_TRUE(at(d, "10.96.0.21:80/tcp").has_value());
  // Rejected again: nothing was held, and the line says no more than that.
  r = m.upsert_service(service("web", "10.96.0.20", {port("http", 0)}));
  EXPECT_EQ(r->outcome, Rejection::Outcome::kRejected);
}

TEST(RejectService, ValidOddballsAreAccepted) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("http", 80, "UDP")});
  s.type = "LoadBalancer";
  s.ports[0].target_port = "http-alt";
  s.ports[0].node_port = 30080;
  s.load_balancer_source_ranges = {" 10.0.0.0/8 ", "fd00::/64"};
  s.traffic_distribution = "SomethingNew";  // unknown: treated as unset, not an error
  s.external_traffic_policy = "Local";
  s.session_affinity = "ClientIP";
  s.client_ip_timeout_seconds = 86400;
  s.load_balancer_ingress = {{"203.0.113.7", "Proxy"}};
  add(m, s);
  k8s::Service ext = service("alias", "", {port("", 0, "ICMP")});
  ext.type = "ExternalName";  // ignored entirely, so its fields are not checked
  add(m, ext);
}

// ---- one bad item of a Service drops that item alone ----------------------

struct BadItem {
  const char* name;
  void (*edit)(k8s::Service&);
  const char* reason;  // the whole reason
  size_t frontends;    // the Service's, with the item dropped
};

void PrintTo(const BadItem& c, std::ostream* os) { *os << c.name; }

class DropServiceItem : public ::testing::TestWithParam<BadItem> {};

TEST_P(DropServiceItem, TheRestIsProxied) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("http", 80)});
  s.type = "LoadBalancer";
  s.external_ips = {"192.0.2.10"};
  s.load_balancer_ingress = {{"203.0.113.7", ""}};
  GetParam().edit(s);
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  auto r = m.upsert_service(s);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->outcome, Rejection::Outcome::kItemsDropped);
  EXPECT_FALSE(r->rejected());
  EXPECT_EQ(to_string(*r), std::string("Service default/web kept without: ") + GetParam().reason);
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), GetParam().frontends);
  for (const auto& [key, fe] : d.frontends) EXPECT_EQ(addrs(fe.cluster), backends({"10.0.0.1:8080"}));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DropServiceItem,
    ::testing::Values(
        // ClusterIP, external IP, load balancer IP: 3 with nothing dropped.
        BadItem{"ExternalIp", [](k8s::Service& s) { s.external_ips.push_back("x"); },
                "spec.externalIPs[1]: 'x' is not an IP address", 3},
        BadItem{"OnlyExternalIp", [](k8s::Service& s) { s.external_ips = {"1.2.3.400"}; },
                "spec.externalIPs[0]: '1.2.3.400' is not an IP address", 2},
        BadItem{"IngressIp",
                [](k8s::Service& s) {
                  s.load_balancer_ingress.push_back({"lb.example", "VIP"});
                },
                "status.loadBalancer.ingress[1].ip: 'lb.example' is not an IP address", 3},
        BadItem{"SourceRange",
                [](k8s::Service& s) {
                  s.load_balancer_source_ranges = {"10.0.0.0/33", "198.51.100.0/24"};
                },
                "spec.loadBalancerSourceRanges[0]: '10.0.0.0/33' is not a CIDR", 3}),
    [](const auto& info) { return std::string(info.param.name); });

// kpx differs from kube-proxy here on purpose: kube-proxy drops a bad range
// and, with none left, admits every source; kpx drops it and admits only the
// valid ranges, none when none is valid.
TEST(DropServiceItem, ABadSourceRangeNeverOpensTheLoadBalancer) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("http", 80)});
  s.type = "LoadBalancer";
  s.load_balancer_ingress = {{"203.0.113.7", ""}};
  s.load_balancer_source_ranges = {"10.0.0.0/33", "0198.051.100.000/24"};
  EXPECT_TRUE(m.upsert_service(s).has_value());
  const dataplane::FrontendKey lb{net::IpAddr::parse("203.0.113.7"), 80, net::Proto::kTcp,
                                  dataplane::Scope::kLoadBalancer};
  DesiredState d = compute(m, {});
  ASSERT_TRUE(d.frontends.count(lb));
  EXPECT_TRUE(d.frontends.at(lb).flags & dataplane::kSourceRanges);
  EXPECT_EQ(d.frontends.at(lb).source_ranges,
            (std::vector<net::Ipv4Cidr>{*net::parse_ipv4_cidr("198.51.100.0/24")}));
  s.load_balancer_source_ranges = {"nope"};
  EXPECT_TRUE(m.upsert_service(s).has_value());
  d = compute(m, {});
  EXPECT_TRUE(d.frontends.at(lb).flags & dataplane::kSourceRanges);
  EXPECT_TRUE(d.frontends.at(lb).source_ranges.empty()) << "no source admitted";
}

// ---- slices: a bad endpoint or port drops itself, a bad slice itself -----

struct BadSlice {
  const char* name;
  void (*edit)(k8s::EndpointSlice&);
  const char* reason_part;
  Rejection::Outcome outcome;
  std::vector<net::BackendAddr> want;  // the Service's backends after it
};

void PrintTo(const BadSlice& c, std::ostream* os) { *os << c.name; }

class BadSliceItems : public ::testing::TestWithParam<BadSlice> {};

TEST_P(BadSliceItems, DropWhatIsBadOnly) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  k8s::EndpointSlice bad =
      slice("web-bad", "web", {endpoint("10.0.0.9"), endpoint("10.0.0.8")}, {slice_port("http", 8080)});
  GetParam().edit(bad);
  auto r = m.upsert_endpoint_slice(bad);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, "EndpointSlice");
  EXPECT_EQ(r->name, "default/web-bad");
  EXPECT_EQ(r->outcome, GetParam().outcome);
  EXPECT_NE(r->reason.find(GetParam().reason_part), std::string::npos) << r->reason;
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), GetParam().want);
  EXPECT_EQ(m.endpoint_slice_count(), r->rejected() ? 1u : 2u);
}

constexpr auto kDropped = Rejection::Outcome::kItemsDropped;
constexpr auto kRejected = Rejection::Outcome::kRejected;

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSliceItems,
    ::testing::Values(
        BadSlice{"AddressNotAnIp",
                 [](k8s::EndpointSlice& s) { s.endpoints[0].addresses = {"addressesValue"}; },
                 "endpoints[0].addresses[0]: 'addressesValue' is not an IPv4 address", kDropped,
                 backends({"10.0.0.1:8080", "10.0.0.8:8080"})},
        BadSlice{"Ipv6InIpv4Slice", [](k8s::EndpointSlice& s) { s.endpoints.push_back(endpoint("fd00::1")); },
                 "endpoints[2].addresses[0]: 'fd00::1' is not an IPv4 address", kDropped,
                 backends({"10.0.0.1:8080", "10.0.0.8:8080", "10.0.0.9:8080"})},
        BadSlice{"NoAddress", [](k8s::EndpointSlice& s) { s.endpoints[1].addresses.clear(); },
                 "endpoints[1].addresses: no address", kDropped,
                 backends({"10.0.0.1:8080", "10.0.0.9:8080"})},
        BadSlice{"UnknownProtocol",
                 [](k8s::EndpointSlice& s) {
                   s.ports[0].protocol = "ICMP";
                   s.ports.push_back(slice_port("http", 8081));
                 },
                 "ports[0].protocol: unsupported value 'ICMP'", kDropped,
                 backends({"10.0.0.1:8080", "10.0.0.8:8081", "10.0.0.9:8081"})},
        BadSlice{"PortOutOfRange", [](k8s::EndpointSlice& s) { s.ports[0].port = 65536; },
                 "ports[0].port: port 65536 out of range", kDropped, backends({"10.0.0.1:8080"})},
        BadSlice{"UnknownAddressType", [](k8s::EndpointSlice& s) { s.address_type = "IPX"; },
                 "addressType: unsupported value 'IPX'", kRejected, backends({"10.0.0.1:8080"})},
        BadSlice{"NoServiceNameLabel", [](k8s::EndpointSlice& s) { s.metadata.labels.clear(); },
                 "no kubernetes.io/service-name label", kRejected, backends({"10.0.0.1:8080"})}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(BadSliceItems, AnInvalidSliceUpdateRemovesThePreviousVersionAndSaysSo) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  k8s::EndpointSlice bad = slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}, "IPX");
  auto r = m.upsert_endpoint_slice(bad);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->outcome, Rejection::Outcome::kRejectedRemoved);
  EXPECT_NE(to_string(*r).find("; its previous version is removed, it is no longer proxied"),
            std::string::npos);
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({}));
}

TEST(BadSliceItems, AnUpdateWithOneBadAddressKeepsTheOthers) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1"), endpoint("10.0.0.2")}, {slice_port("http", 8080)}));
  auto r = m.upsert_endpoint_slice(
      slice("web-a", "web", {endpoint("bad"), endpoint("10.0.0.2")}, {slice_port("http", 8080)}));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(
      to_string(*r),
      "EndpointSlice default/web-a kept without: endpoints[0].addresses[0]: 'bad' is not an IPv4 address");
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.2:8080"}));
}

TEST(BadSliceItems, ProblemListIsCapped) {
  Model m;
  std::vector<k8s::Endpoint> eps;
  for (int i = 0; i < 50; ++i) eps.push_back(endpoint("bad" + std::to_string(i)));
  auto r = m.upsert_endpoint_slice(slice("web-a", "web", eps, {slice_port("http", 8080)}));
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(r->reason.find("and 40 more problems"), std::string::npos) << r->reason;
}

}  // namespace
}  // namespace kpx::proxy
