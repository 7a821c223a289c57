// Topology and the terminating fallback: kube-proxy's CategorizeEndpoints
// table (pkg/proxy/topology_test.go, as of the latest kube-proxy: hints
// alone decide, PreferSameNode included) against proxy/topology.h, then the
// same rules through compute(): the node's zone from its Node, node hints
// by the agent's node name, and a zone change marking what it changes.
#include "proxy/topology.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "unit/compute_fixtures.h"

namespace kpx::proxy {
namespace {

using namespace fixtures;

// ---- the pure function: kube-proxy's table ---------------------------------

struct Ep {
  const char* name;
  EndpointFacts facts;
};

constexpr Hint kNo = Hint::kNone, kOther = Hint::kOther, kThis = Hint::kThis;

// A ready endpoint with a zone hint (this node's zone or another).
Ep ready(const char* name, Hint zone = kNo, bool local = false, Hint node = kNo) {
  return {name, {true, true, false, local, node, zone}};
}
Ep unready(const char* name, Hint zone = kNo, bool local = false) {
  return {name, {false, false, false, local, kNo, zone}};
}
Ep draining(const char* name, bool local = false, Hint zone = kNo) {  // serving, terminating
  return {name, {false, true, true, local, kNo, zone}};
}

struct CategorizeCase {
  const char* name;
  std::vector<Ep> endpoints;
  // kube-proxy leaves a set nil when the Service never uses it; kpx always
  // computes both (the dataplane picks one per scope), so those are not compared.
  std::optional<std::set<std::string>> cluster, local;
  TopologyMode mode = TopologyMode::kNone;
};

void PrintTo(const CategorizeCase& c, std::ostream* os) { *os << c.name; }

class Categorize : public ::testing::TestWithParam<CategorizeCase> {};

TEST_P(Categorize, AsKubeProxy) {
  const CategorizeCase& c = GetParam();
  std::vector<EndpointFacts> facts;
  for (const Ep& e : c.endpoints) facts.push_back(e.facts);
  const Categorized got = categorize(facts);
  auto names = [&](const std::vector<uint32_t>& idx) {
    std::set<std::string> out;
    for (uint32_t i : idx) out.insert(c.endpoints.at(i).name);
    return out;
  };
  EXPECT_EQ(got.mode, c.mode) << to_string(got.mode);
  if (c.cluster) {
    EXPECT_EQ(names(got.cluster), *c.cluster);
  }
  if (c.local) {
    EXPECT_EQ(names(got.local), *c.local);
  }
}

using Names = std::set<std::string>;
const std::optional<Names> kUnused = std::nullopt;
constexpr auto kZone = TopologyMode::kPreferSameZone;
constexpr auto kNode = TopologyMode::kPreferSameNode;

// Endpoints .3 .4 .5 .6 hinted for zones a, b, c, a; the node is in zone a.
std::vector<Ep> four_zones(bool local3 = false, bool local4 = false) {
  return {ready("10.1.2.3", kThis, local3), ready("10.1.2.4", kOther, local4), ready("10.1.2.5", kOther),
          ready("10.1.2.6", kThis)};
}

INSTANTIATE_TEST_SUITE_P(
    KubeProxy, Categorize,
    ::testing::Values(
        CategorizeCase{"HintsForThisZone", four_zones(), Names{"10.1.2.3", "10.1.2.6"}, kUnused, kZone},
        CategorizeCase{"ExternalPolicyLocalTopologyIgnoredForLocalEndpoints", four_zones(true, true),
                       Names{"10.1.2.3", "10.1.2.6"}, Names{"10.1.2.3", "10.1.2.4"}, kZone},
        // The node has no zone label, or an empty one: no hint can be for it.
        CategorizeCase{"NodeWithoutZone", {ready("10.1.2.3", kOther)}, Names{"10.1.2.3"}, kUnused},
        CategorizeCase{
            "NodeInAnotherZoneNoFiltering", {ready("10.1.2.3", kOther)}, Names{"10.1.2.3"}, kUnused},
        CategorizeCase{"UnreadyEndpoint",
                       {ready("10.1.2.3", kThis), ready("10.1.2.4", kOther), ready("10.1.2.5", kOther),
                        unready("10.1.2.6", kThis)},
                       Names{"10.1.2.3"},
                       kUnused,
                       kZone},
        CategorizeCase{"OnlyUnreadyEndpointsInThisZoneNoFiltering",
                       {unready("10.1.2.3", kThis), ready("10.1.2.4", kOther), ready("10.1.2.5", kOther),
                        unready("10.1.2.6", kThis)},
                       Names{"10.1.2.4", "10.1.2.5"},
                       kUnused},
        CategorizeCase{"MissingHintsNoFiltering",
                       {ready("10.1.2.3", kThis), ready("10.1.2.4", kOther), ready("10.1.2.5", kNo),
                        ready("10.1.2.6", kThis)},
                       Names{"10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"},
                       kUnused},
        // Zone c; hints {a,b,c} {b,c} {b,d} {c}.
        CategorizeCase{"MultipleHintsPerEndpoint",
                       {ready("10.1.2.3", kThis), ready("10.1.2.4", kThis), ready("10.1.2.5", kOther),
                        ready("10.1.2.6", kThis)},
                       Names{"10.1.2.3", "10.1.2.4", "10.1.2.6"},
                       kUnused,
                       kZone},
        CategorizeCase{"ConflictingTopologyAndLocalness",
                       {ready("10.0.0.0", kThis, true), ready("10.0.0.1", kOther, true),
                        ready("10.0.0.2", kThis, false), ready("10.0.0.3", kOther, false)},
                       Names{"10.0.0.0", "10.0.0.2"},
                       Names{"10.0.0.0", "10.0.0.1"},
                       kZone},
        CategorizeCase{"InternalPolicyLocalNoEndpoints", {}, kUnused, Names{}},
        CategorizeCase{
            "InternalPolicyLocalAllRemote", {ready("10.0.0.0"), ready("10.0.0.1")}, kUnused, Names{}},
        CategorizeCase{"InternalPolicyLocalAllLocal",
                       {ready("10.0.0.0", kNo, true), ready("10.0.0.1", kNo, true)},
                       kUnused,
                       Names{"10.0.0.0", "10.0.0.1"}},
        CategorizeCase{"InternalPolicyLocalSomeLocal",
                       {ready("10.0.0.0", kNo, true), ready("10.0.0.1")},
                       kUnused,
                       Names{"10.0.0.0"}},
        CategorizeCase{"ClusterNoneReady", {unready("10.0.0.0"), unready("10.0.0.1")}, Names{}, kUnused},
        CategorizeCase{
            "ClusterSomeReady", {unready("10.0.0.0"), ready("10.0.0.1")}, Names{"10.0.0.1"}, kUnused},
        CategorizeCase{"ClusterAllTerminating",
                       {draining("10.0.0.0", true), draining("10.0.0.1")},
                       Names{"10.0.0.0", "10.0.0.1"},
                       kUnused},
        CategorizeCase{"BothPoliciesSomeLocal",
                       {ready("10.0.0.0", kNo, true), ready("10.0.0.1")},
                       Names{"10.0.0.0", "10.0.0.1"},
                       Names{"10.0.0.0"}},
        CategorizeCase{"BothPoliciesAllRemote",
                       {ready("10.0.0.0"), ready("10.0.0.1")},
                       Names{"10.0.0.0", "10.0.0.1"},
                       Names{}},
        CategorizeCase{"BothPoliciesAllRemoteAndTerminating",
                       {draining("10.0.0.0"), draining("10.0.0.1")},
                       Names{"10.0.0.0", "10.0.0.1"},
                       Names{}},
        // Each set falls back on its own: ready remote endpoints keep the
        // cluster set on them, the local set takes this node's draining one.
        CategorizeCase{"ExternalPolicyLocalWithTerminatingEndpoints",
                       {ready("10.0.0.0"), unready("10.0.0.1", kNo, true), draining("10.0.0.2", true),
                        draining("10.0.0.3")},
                       Names{"10.0.0.0"},
                       Names{"10.0.0.2"}},
        CategorizeCase{"LocalOnlyInternalService",
                       {ready("10.0.0.0"), ready("10.0.0.1", kNo, true)},
                       kUnused,
                       Names{"10.0.0.1"}}),
    [](const auto& info) { return std::string(info.param.name); });

// The cases of the latest kube-proxy: node hints (PreferSameNode, on by
// default since 1.34), and how they fall back.
INSTANTIATE_TEST_SUITE_P(
    NodeHints, Categorize,
    ::testing::Values(
        CategorizeCase{"HintsForThisNode",
                       {ready("10.0.0.1", kThis, true, kThis), ready("10.0.0.2", kThis, false, kOther),
                        ready("10.0.0.3", kOther, false, kOther)},
                       Names{"10.0.0.1"},
                       Names{"10.0.0.1"},
                       kNode},
        // Every endpoint node-hinted, none for this node: zone hints apply.
        CategorizeCase{"NoNodeHintForThisNodeFallsBackToZone",
                       {ready("10.0.0.1", kThis, false, kOther), ready("10.0.0.2", kOther, false, kOther)},
                       Names{"10.0.0.1"},
                       kUnused,
                       kZone},
        CategorizeCase{"OneEndpointWithoutNodeHintFallsBackToZone",
                       {ready("10.0.0.1", kThis, true, kThis), ready("10.0.0.2", kOther, false, kNo),
                        ready("10.0.0.3", kThis, false, kOther)},
                       Names{"10.0.0.1", "10.0.0.3"},
                       kUnused,
                       kZone},
        CategorizeCase{"NodeHintsWithoutZoneHintsAndNoneForThisNode",
                       {ready("10.0.0.1", kNo, false, kOther), ready("10.0.0.2", kNo, false, kOther)},
                       Names{"10.0.0.1", "10.0.0.2"},
                       kUnused},
        // Only ready endpoints count: an unready one hinted for this node
        // neither selects the mode nor is selected.
        CategorizeCase{"UnreadyEndpointHintedForThisNode",
                       {{"10.0.0.1", {false, false, false, true, kThis, kThis}},
                        ready("10.0.0.2", kThis, false, kOther),
                        ready("10.0.0.3", kOther, false, kOther)},
                       Names{"10.0.0.2"},
                       Names{},
                       kZone},
        // Not ready endpoints need no hints for the hints to be used.
        CategorizeCase{"UnhintedUnreadyEndpointsDoNotDisableTopology",
                       {ready("10.0.0.1", kThis), ready("10.0.0.2", kOther), unready("10.0.0.3", kNo)},
                       Names{"10.0.0.1"},
                       kUnused,
                       kZone},
        // The terminating fallback ignores topology: none is ready anywhere.
        CategorizeCase{"FallbackIgnoresHints",
                       {draining("10.0.0.1", false, kOther), draining("10.0.0.2", false, kThis)},
                       Names{"10.0.0.1", "10.0.0.2"},
                       kUnused}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- through compute() -----------------------------------------------------

k8s::Endpoint hinted(const char* ip, const char* node, const char* zone, std::vector<std::string> for_zones,
                     std::vector<std::string> for_nodes = {}) {
  k8s::Endpoint e = endpoint(ip);
  e.node_name = node;
  e.zone = zone;
  e.hints = k8s::EndpointHints{std::move(for_zones), std::move(for_nodes)};
  return e;
}

k8s::Node node_in(const char* name, const char* zone) {
  k8s::Node n;
  n.metadata.name = name;
  if (*zone) n.metadata.labels.emplace(k8s::kLabelTopologyZone, zone);
  return n;
}

const std::vector<k8s::Endpoint> kThreeZones = {hinted("10.0.1.1", "node-a", "zone-a", {"zone-a"}),
                                                hinted("10.0.2.1", "node-b", "zone-b", {"zone-b"}),
                                                hinted("10.0.1.2", "node-a2", "zone-a", {"zone-a"})};

TEST(TopologyCompute, ZoneHintsNarrowTheClusterSetOfEveryScope) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("http", 80)});
  s.type = "NodePort";
  s.ports[0].node_port = 30080;
  s.external_traffic_policy = "Local";
  add(m, s);
  add(m, slice("web-a", "web", kThreeZones, {slice_port("http", 8080)}));
  m.set_node(node_in("node-a", "zone-a"));
  DesiredState d = compute(m, {"node-a"});
  EXPECT_EQ(at(d, "10.96.0.20:80/tcp"), backends({"10.0.1.1:8080", "10.0.1.2:8080"}));
  const auto& np =
      d.frontends.at({net::IpAddr::from_v4(0), 30080, net::Proto::kTcp, dataplane::Scope::kNodePort});
  EXPECT_EQ(addrs(np.cluster), backends({"10.0.1.1:8080", "10.0.1.2:8080"}));
  EXPECT_EQ(addrs(np.local), backends({"10.0.1.1:8080"}));
  // No zone known (no Node yet, or no label): no filtering.
  Model none;
  add(none, service("web", "10.96.0.20", {port("http", 80)}));
  add(none, slice("web-a", "web", kThreeZones, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(none, {"node-a"}), "10.96.0.20:80/tcp")->size(), 3u);
  none.set_node(node_in("node-a", ""));
  EXPECT_EQ(at(compute(none, {"node-a"}), "10.96.0.20:80/tcp")->size(), 3u);
  // A zone no hint names: no filtering either.
  none.set_node(node_in("node-a", "zone-z"));
  EXPECT_EQ(at(compute(none, {"node-a"}), "10.96.0.20:80/tcp")->size(), 3u);
}

// The latest kube-proxy reads hints only: the EndpointSlice controller sets
// them when trafficDistribution or the topology-mode annotation asks, and
// kube-proxy no longer checks either.
TEST(TopologyCompute, HintsDecideNotTrafficDistribution) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("http", 80)});
  add(m, s);
  add(m, slice("web-a", "web", kThreeZones, {slice_port("http", 8080)}));
  m.set_node(node_in("node-a", "zone-a"));
  EXPECT_EQ(at(compute(m, {"node-a"}), "10.96.0.20:80/tcp")->size(), 2u)
      << "hints without trafficDistribution";
  s.traffic_distribution = "PreferClose";
  add(m, s);
  std::vector<k8s::Endpoint> plain = {endpoint("10.0.1.1"), endpoint("10.0.2.1")};
  add(m, slice("web-a", "web", plain, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {"node-a"}), "10.96.0.20:80/tcp")->size(), 2u)
      << "trafficDistribution without hints";
}

TEST(TopologyCompute, NodeHintsByTheAgentsNodeName) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web",
               {hinted("10.0.1.1", "node-a", "zone-a", {"zone-a"}, {"node-a"}),
                hinted("10.0.1.2", "node-a2", "zone-a", {"zone-a"}, {"node-a2"}),
                hinted("10.0.2.1", "node-b", "zone-b", {"zone-b"}, {"node-b"})},
               {slice_port("http", 8080)}));
  m.set_node(node_in("node-a", "zone-a"));
  EXPECT_EQ(at(compute(m, {"node-a"}), "10.96.0.20:80/tcp"), backends({"10.0.1.1:8080"}));
  // A node no endpoint is hinted for: its zone's.
  m.set_node(node_in("node-c", "zone-a"));
  EXPECT_EQ(at(compute(m, {"node-c"}), "10.96.0.20:80/tcp"), backends({"10.0.1.1:8080", "10.0.1.2:8080"}));
}

TEST(TopologyCompute, AZoneChangeMarksTheZoneHintedServicesOnly) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, service("plain", "10.96.0.21", {port("http", 80)}));
  add(m, slice("web-a", "web", kThreeZones, {slice_port("http", 8080)}));
  add(m, slice("plain-a", "plain", {endpoint("10.0.3.1")}, {slice_port("http", 8080)}));
  m.set_node(node_in("node-a", "zone-a"));
  EXPECT_EQ(m.take_changed_services(), (std::set<std::string>{"default/plain", "default/web"}));
  // Other labels: nothing to recompute.
  k8s::Node relabelled = node_in("node-a", "zone-a");
  relabelled.metadata.labels.emplace("team", "blue");
  m.set_node(relabelled);
  EXPECT_TRUE(m.take_changed_services().empty());
  // The zone moves: the hinted Service is recomputed, to its new zone.
  m.set_node(node_in("node-a", "zone-b"));
  const auto changed = m.take_changed_services();
  EXPECT_EQ(changed, std::set<std::string>{"default/web"});
  EXPECT_EQ(at(compute_services(m, changed, {"node-a"}), "10.96.0.20:80/tcp"), backends({"10.0.2.1:8080"}));
  m.set_node(node_in("node-a", ""));
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/web"});
}

// ---- one address in two slices (endpointslicecache.go) --------------------

// A terminating pod's IP reused by a new pod, the two in different slices:
// the new (not terminating) one holds the address, whatever the slices'
// order, so new connections do not go to the old pod.
TEST(TopologyCompute, ADuplicateAddressKeepsItsNotTerminatingEntry) {
  for (bool old_first : {true, false}) {
    Model m;
    add(m, service("web", "10.96.0.20", {port("http", 80)}));
    const k8s::Endpoint old_pod = endpoint("10.0.0.1", false, true, true);
    const k8s::Endpoint new_pod = endpoint("10.0.0.1", false, false, false);  // starting
    add(m, slice("web-a", "web", {old_first ? old_pod : new_pod}, {slice_port("http", 8080)}));
    add(m, slice("web-b", "web", {old_first ? new_pod : old_pod}, {slice_port("http", 8080)}));
    EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({})) << "old first: " << old_first;
    // Once the new pod is ready, it takes the traffic, with its conditions.
    k8s::Endpoint ready_pod = endpoint("10.0.0.1", true, true, false);
    add(m, slice(old_first ? "web-b" : "web-a", "web", {ready_pod}, {slice_port("http", 8080)}));
    const auto& fe = compute(m, {}).frontends.at(fk("10.96.0.20:80/tcp"));
    ASSERT_EQ(fe.cluster.size(), 1u);
    EXPECT_TRUE(fe.cluster[0].ready && !fe.cluster[0].terminating);
  }
}

// The same address on two ports of a slice port name (a targetPort change
// rolling out) is two endpoints, as kube-proxy keys them by IP and port.
TEST(TopologyCompute, OneAddressOnTwoPortsIsTwoEndpoints) {
  Model m;
  add(m, service("web", "10.96.0.20", {port("http", 80)}));
  add(m, slice("web-a", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  add(m, slice("web-b", "web", {endpoint("10.0.0.1")}, {slice_port("http", 8081)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.1:8081"}));
}

}  // namespace
}  // namespace kpx::proxy
