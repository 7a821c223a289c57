// How a Service's ports find their endpoints: by the slice port with the
// same name and protocol (which is how a targetPort by name resolves, pod
// by pod), unnamed single ports, several ports, one port number on TCP and
// UDP, and Services that share their pods.
#include <gtest/gtest.h>

#include "proxy/compute.h"
#include "unit/compute_fixtures.h"

namespace kpx::proxy {
namespace {

using namespace fixtures;

// The EndpointSlice controller resolves a targetPort name per pod and
// writes the number under the Service port's name: pods of one Service may
// listen on different numbers, and the targetPort's own name is not a
// slice port name.
TEST(ComputePorts, NamedTargetPortResolvesPerPodThroughTheSlices) {
  Model m;
  k8s::Service s = service("web", "10.96.0.20", {port("web", 80)});
  s.ports[0].target_port = std::string("http-alt");
  add(m, s);
  add(m, slice("web-old", "web", {endpoint("10.0.0.1")}, {slice_port("web", 8080)}));
  add(m, slice("web-new", "web", {endpoint("10.0.0.2")}, {slice_port("web", 9090)}));
  add(m, slice("web-odd", "web", {endpoint("10.0.0.3")}, {slice_port("http-alt", 7070)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.20:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:9090"}));
}

TEST(ComputePorts, MultiPortServiceEachPortItsOwnSet) {
  Model m;
  add(m, service("app", "10.96.0.30", {port("http", 80), port("https", 443), port("admin", 9000)}));
  add(m, slice("app-a", "app", {endpoint("10.0.0.1"), endpoint("10.0.0.2", false)},
               {slice_port("https", 8443), slice_port("http", 8080), slice_port("admin", 9001)}));
  add(m, slice("app-b", "app", {endpoint("10.0.0.3")}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(d.frontends.size(), 3u);
  EXPECT_EQ(at(d, "10.96.0.30:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.3:8080"}));
  EXPECT_EQ(at(d, "10.96.0.30:443/tcp"), backends({"10.0.0.1:8443"}));
  EXPECT_EQ(at(d, "10.96.0.30:9000/tcp"), backends({"10.0.0.1:9001"}));
  EXPECT_EQ(d.frontends.at(fk("10.96.0.30:443/tcp")).port_name, "https");
}

// DNS: 53 on both protocols, two Service ports. A slice port matches by
// name and protocol, so a port named like the UDP one but on TCP does not
// feed it.
TEST(ComputePorts, SamePortOnTcpAndUdp) {
  Model m;
  add(m, service("dns", "10.96.0.10", {port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP")}));
  add(m, slice("dns-a", "dns", {endpoint("10.0.0.2")},
               {slice_port("dns", 5353, "UDP"), slice_port("dns-tcp", 5354, "TCP")}));
  add(m, slice("dns-b", "dns", {endpoint("10.0.0.3")}, {slice_port("dns", 5353, "TCP")}));
  DesiredState d = compute(m, {});
  ASSERT_EQ(d.frontends.size(), 2u);
  EXPECT_EQ(at(d, "10.96.0.10:53/udp"), backends({"10.0.0.2:5353"}));
  EXPECT_EQ(at(d, "10.96.0.10:53/tcp"), backends({"10.0.0.2:5354"}));
  EXPECT_EQ(d.frontends.at(fk("10.96.0.10:53/udp")).port_name, "dns");
}

// Two Services selecting the same pods: each has its own slices, and a
// change of one leaves the other alone, health checks included.
TEST(ComputePorts, ServicesSharingBackends) {
  Model m;
  for (const char* name : {"front", "back"}) {
    k8s::Service s =
        service(name, std::string(name) == "front" ? "10.96.0.40" : "10.96.0.41", {port("http", 80)});
    s.type = "LoadBalancer";
    s.external_traffic_policy = "Local";
    s.health_check_node_port = std::string(name) == "front" ? 30001 : 30002;
    add(m, s);
  }
  k8s::Endpoint p1 = endpoint("10.0.0.1"), p2 = endpoint("10.0.0.2");
  p1.node_name = "node1";
  p2.node_name = "node2";
  add(m, slice("front-a", "front", {p1, p2}, {slice_port("http", 8080)}));
  add(m, slice("back-a", "back", {p2, p1}, {slice_port("http", 8080)}));
  DesiredState d = compute(m, {"node1"});
  EXPECT_EQ(at(d, "10.96.0.40:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:8080"}));
  EXPECT_EQ(at(d, "10.96.0.41:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:8080"}));
  EXPECT_EQ(d.health_checks, (HealthChecks{{"default/back", {30002, 1}}, {"default/front", {30001, 1}}}));
  m.take_changed_services();
  add(m, slice("back-a", "back", {p2}, {slice_port("http", 8080)}));
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/back"});
  d = compute(m, {"node1"});
  EXPECT_EQ(at(d, "10.96.0.40:80/tcp"), backends({"10.0.0.1:8080", "10.0.0.2:8080"}));
  EXPECT_EQ(at(d, "10.96.0.41:80/tcp"), backends({"10.0.0.2:8080"}));
  EXPECT_EQ(d.health_checks.at("default/back").local_endpoints, 0u);
  EXPECT_EQ(d.health_checks.at("default/front").local_endpoints, 1u);
}

// A single unnamed Service port takes the slice port named "" only; a slice
// without ports, or whose port has no number ("all ports", which
// kube-proxy ignores), gives no endpoints.
TEST(ComputePorts, SlicesWithoutAPortName) {
  Model m;
  add(m, service("one", "10.96.0.50", {port("", 80)}));
  add(m, slice("one-a", "one", {endpoint("10.0.0.1")}, {slice_port("", 8080)}));
  add(m, slice("one-b", "one", {endpoint("10.0.0.2")}, {}));
  add(m, slice("one-c", "one", {endpoint("10.0.0.3")}, {k8s::EndpointPort{"", "TCP", std::nullopt}}));
  add(m, slice("one-d", "one", {endpoint("10.0.0.4")}, {slice_port("", 8080, "UDP")}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.50:80/tcp"), backends({"10.0.0.1:8080"}));
  // The port gets a name (a second port is added): the unnamed slice port
  // no longer matches, until the controller renames it.
  add(m, service("one", "10.96.0.50", {port("http", 80), port("https", 443)}));
  DesiredState d = compute(m, {});
  EXPECT_EQ(at(d, "10.96.0.50:80/tcp"), backends({}));
  add(m, slice("one-a", "one", {endpoint("10.0.0.1")}, {slice_port("http", 8080)}));
  EXPECT_EQ(at(compute(m, {}), "10.96.0.50:80/tcp"), backends({"10.0.0.1:8080"}));
}

}  // namespace
}  // namespace kpx::proxy
