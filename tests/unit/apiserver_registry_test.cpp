// What the fake API server's registry does beyond storing objects, as a real
// kube-apiserver does: ClusterIP allocation (--service-cluster-ip-range),
// NodePort allocation (--service-node-port-range) and graceful Pod deletion.
// Over real sockets on 127.0.0.1.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "apiserver/apiserver.h"
#include "apiserver/cluster_ip.h"
#include "apiserver/graceful_delete.h"
#include "apiserver/node_port.h"
#include "apiserver/store.h"
#include "support/raw_http.h"

namespace kpx::apiserver {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
using testing::call;
using testing::HttpResponse;
using testing::WatchStream;

constexpr const char* kServices = "/api/v1/namespaces/default/services";

class RegistryTest : public ::testing::Test {
 protected:
  void start(const std::string& range, const std::string& node_ports = "30000-32767") {
    Options o;
    o.listen = "127.0.0.1:0";
    o.service_cluster_ip_range = range;
    o.service_node_port_range = node_ports;
    auto s = ApiServer::start(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);
    port_ = server_->port();
  }
  HttpResponse create(const std::string& collection, const Json& obj) {
    return call(port_, "POST", collection, obj.dump());
  }
  HttpResponse get(const std::string& name) { return call(port_, "GET", std::string(kServices) + "/" + name); }
  HttpResponse put(const Json& svc) {
    return call(port_, "PUT", std::string(kServices) + "/" + svc["metadata"]["name"].get<std::string>(), svc.dump());
  }
  HttpResponse merge_patch(const std::string& name, const std::string& patch) {
    return call(port_, "PATCH", std::string(kServices) + "/" + name, patch, "application/merge-patch+json");
  }
  std::unique_ptr<ApiServer> server_;
  uint16_t port_ = 0;
};

Json service(const std::string& name, const std::string& cluster_ip = "", const std::string& type = "") {
  Json svc = {{"apiVersion", "v1"},
              {"kind", "Service"},
              {"metadata", {{"name", name}}},
              {"spec", {{"ports", {{{"name", "http"}, {"port", 80}}}}}}};
  if (!cluster_ip.empty()) svc["spec"]["clusterIP"] = cluster_ip;
  if (!type.empty()) svc["spec"]["type"] = type;
  return svc;
}

uint32_t ipv4(const std::string& s) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, s.c_str(), &a), 1) << s;
  return ntohl(a.s_addr);
}

void expect_invalid(const HttpResponse& r, const std::string& message) {
  EXPECT_EQ(r.code, 422) << r.body;
  Json s = r.json();
  EXPECT_EQ(s["kind"], "Status") << r.body;
  EXPECT_EQ(s["reason"], "Invalid") << r.body;
  EXPECT_EQ(s["message"], message) << r.body;
}

// ---- ClusterIP allocation ------------------------------------------------------

TEST_F(RegistryTest, ServicesGetAFreeClusterIpFromTheRange) {
  start("10.96.0.0/16");
  std::set<std::string> seen;
  for (int i = 0; i < 20; ++i) {
    auto r = create(kServices, service("s" + std::to_string(i)));
    ASSERT_EQ(r.code, 201) << r.body;
    Json spec = r.json()["spec"];
    std::string ip = spec["clusterIP"];
    uint32_t v = ipv4(ip);
    EXPECT_EQ(v >> 16, ipv4("10.96.0.0") >> 16) << ip;
    EXPECT_GT(v, ipv4("10.96.0.1")) << "the network address and .1 (the kubernetes Service's) are not handed out";
    EXPECT_LT(v, ipv4("10.96.255.255")) << "nor is the broadcast address";
    EXPECT_TRUE(seen.insert(ip).second) << ip << " handed out twice";
    EXPECT_EQ(spec["clusterIPs"], Json::array({ip}));
    EXPECT_EQ(spec["ipFamilies"], Json::array({"IPv4"}));
    EXPECT_EQ(spec["ipFamilyPolicy"], "SingleStack");
  }
  // What a GET returns is what was allocated.
  auto got = call(port_, "GET", std::string(kServices) + "/s0");
  EXPECT_TRUE(seen.count(got.json()["spec"]["clusterIP"].get<std::string>()));
}

TEST_F(RegistryTest, RequestedClusterIpMustBeFreeAndInRange) {
  start("10.96.0.0/16");
  auto dns = create("/api/v1/namespaces/kube-system/services", service("kube-dns", "10.96.0.10"));
  ASSERT_EQ(dns.code, 201) << dns.body;
  EXPECT_EQ(dns.json()["spec"]["clusterIP"], "10.96.0.10");
  EXPECT_EQ(dns.json()["spec"]["clusterIPs"], Json::array({"10.96.0.10"}));

  expect_invalid(create(kServices, service("taken", "10.96.0.10")),
                 "Service \"taken\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to "
                 "allocate IP 10.96.0.10: provided IP is already allocated");
  expect_invalid(create(kServices, service("outside", "10.0.0.5")),
                 "Service \"outside\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.0.0.5\"}: failed to "
                 "allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid range. The range of valid "
                 "IPs is 10.96.0.0/16");
  expect_invalid(create(kServices, service("broadcast", "10.96.255.255")),
                 "Service \"broadcast\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.255.255\"}: "
                 "failed to allocate IP 10.96.255.255: the provided IP (10.96.255.255) is not in the valid range. "
                 "The range of valid IPs is 10.96.0.0/16");
  expect_invalid(create(kServices, service("garbage", "10.96.0.300")),
                 "Service \"garbage\" is invalid: spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a "
                 "valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
  // Refused creates hold nothing: the names are free, and so is the IP
  // once its Service is gone.
  EXPECT_EQ(call(port_, "GET", std::string(kServices) + "/taken").code, 404);
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/kube-system/services/kube-dns").code, 200);
  auto again = create(kServices, service("taken", "10.96.0.10"));
  ASSERT_EQ(again.code, 201) << again.body;
  // .1 can be asked for explicitly (it is the kubernetes Service's).
  EXPECT_EQ(create(kServices, service("kubernetes", "10.96.0.1")).code, 201);
}

TEST_F(RegistryTest, HeadlessAndExternalNameGetNoIp) {
  start("10.96.0.0/16");
  auto headless = create(kServices, service("db", "None"));
  ASSERT_EQ(headless.code, 201) << headless.body;
  EXPECT_EQ(headless.json()["spec"]["clusterIP"], "None");
  EXPECT_EQ(headless.json()["spec"]["clusterIPs"], Json::array({"None"}));
  Json ext = service("ext", "", "ExternalName");
  ext["spec"]["externalName"] = "example.com";
  auto external = create(kServices, ext);
  ASSERT_EQ(external.code, 201) << external.body;
  EXPECT_FALSE(external.json()["spec"].contains("clusterIP")) << external.body;
  EXPECT_EQ(server_->store().current_rv(), 6u) << "two creates after the four namespaces";
}

TEST_F(RegistryTest, ClusterIpMayNotChange) {
  start("10.96.0.0/16");
  auto created = create(kServices, service("web", "10.96.0.20"));
  ASSERT_EQ(created.code, 201) << created.body;
  Json svc = created.json();
  svc["spec"]["clusterIP"] = "10.96.0.21";
  svc["spec"]["clusterIPs"] = Json::array({"10.96.0.21"});
  expect_invalid(call(port_, "PUT", std::string(kServices) + "/web", svc.dump()),
                 "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.21\"}: may not "
                 "change once set");
  // An update that leaves the IP out keeps it (as `kubectl replace` of a
  // manifest without clusterIP does on a real server).
  svc["spec"].erase("clusterIP");
  svc["spec"].erase("clusterIPs");
  svc["metadata"]["labels"] = {{"a", "b"}};
  auto kept = call(port_, "PUT", std::string(kServices) + "/web", svc.dump());
  ASSERT_EQ(kept.code, 200) << kept.body;
  EXPECT_EQ(kept.json()["spec"]["clusterIP"], "10.96.0.20");
  EXPECT_EQ(kept.json()["spec"]["clusterIPs"], Json::array({"10.96.0.20"}));
  // A merge patch touching something else is fine.
  auto patched = call(port_, "PATCH", std::string(kServices) + "/web", R"({"spec":{"sessionAffinity":"ClientIP"}})",
                      "application/merge-patch+json");
  EXPECT_EQ(patched.code, 200) << patched.body;
}

TEST_F(RegistryTest, FullRangeIs500AndDeletesFreeIps) {
  start("10.96.0.0/29");  // .1-.6 usable, .1 reserved: 5 to hand out
  std::set<std::string> ips;
  for (int i = 0; i < 5; ++i) {
    auto r = create(kServices, service("s" + std::to_string(i)));
    ASSERT_EQ(r.code, 201) << r.body;
    ips.insert(r.json()["spec"]["clusterIP"].get<std::string>());
  }
  EXPECT_EQ(ips, (std::set<std::string>{"10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6"}));
  auto full = create(kServices, service("s5"));
  EXPECT_EQ(full.code, 500) << full.body;
  EXPECT_EQ(full.json()["reason"], "InternalError");
  EXPECT_NE(full.json()["message"].get<std::string>().find("range is full"), std::string::npos) << full.body;

  std::string freed = call(port_, "GET", std::string(kServices) + "/s3").json()["spec"]["clusterIP"];
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/s3").code, 200);
  auto reused = create(kServices, service("s5"));
  ASSERT_EQ(reused.code, 201) << reused.body;
  EXPECT_EQ(reused.json()["spec"]["clusterIP"], freed);

  // Deleting a namespace frees its Services' IPs too.
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "team"}}}}).code, 201);
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/s0").code, 200);
  auto in_team = create("/api/v1/namespaces/team/services", service("t"));
  ASSERT_EQ(in_team.code, 201) << in_team.body;
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/team").code, 200);
  EXPECT_EQ(create(kServices, service("after")).code, 201);
}

TEST_F(RegistryTest, WithoutARangeClusterIpsAreStoredAsSent) {
  start("");
  auto r = create(kServices, service("web"));
  ASSERT_EQ(r.code, 201) << r.body;
  EXPECT_FALSE(r.json()["spec"].contains("clusterIP")) << r.body;
  EXPECT_EQ(create(kServices, service("a", "1.2.3.4")).code, 201);
  EXPECT_EQ(create(kServices, service("b", "1.2.3.4")).code, 201);
}

TEST(ServiceIpRange, BadRangesAreRefusedClearly) {
  for (const char* bad : {"10.96.0.0", "10.96.0.0/", "10.96.0.0/33", "10.96.0.0/31", "fd00::/108", "10.96.0.1/16",
                          "x/16"}) {
    auto a = ServiceIpAllocator::create(bad);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_NE(a.error().message.find("invalid service cluster IP range '" + std::string(bad) + "'"),
              std::string::npos)
        << a.error().message;
  }
  Options o;
  o.service_cluster_ip_range = "10.96.0.0/40";
  EXPECT_FALSE(ApiServer::start(o).ok());
  EXPECT_TRUE(ServiceIpAllocator::create("10.96.0.0/16").ok());
}


// ---- NodePort allocation ---------------------------------------------------------

Json svc_port(const std::string& name, int port, const std::string& protocol = "TCP", int node_port = 0) {
  Json p = {{"name", name}, {"port", port}, {"protocol", protocol}};
  if (node_port) p["nodePort"] = node_port;
  return p;
}

Json typed_service(const std::string& name, const std::string& type, Json ports) {
  Json svc = service(name, "", type);
  svc["spec"]["ports"] = std::move(ports);
  return svc;
}

int node_port_of(const Json& svc, size_t i) {
  const Json& p = svc["spec"]["ports"][i];
  return p.contains("nodePort") ? p["nodePort"].get<int>() : 0;
}

constexpr const char* kTaken = "provided port is already allocated";
constexpr const char* kOutside = "provided port is not in the valid range. The range of valid ports is 30000-32767";

std::string port_error(const std::string& svc, int i, int port, const std::string& why) {
  return "Service \"" + svc + "\" is invalid: spec.ports[" + std::to_string(i) +
         "].nodePort: Invalid value: " + std::to_string(port) + ": " + why;
}

TEST_F(RegistryTest, NodePortServicesGetFreePortsFromTheRange) {
  start("10.96.0.0/16");
  std::set<int> seen;
  for (int i = 0; i < 20; ++i) {
    std::string name = "s" + std::to_string(i);
    auto r = create(kServices, typed_service(name, "NodePort", {svc_port("http", 80), svc_port("https", 443)}));
    ASSERT_EQ(r.code, 201) << r.body;
    Json svc = r.json();
    EXPECT_FALSE(svc["spec"]["clusterIP"].get<std::string>().empty()) << "a ClusterIP as well";
    for (size_t p = 0; p < 2; ++p) {
      int np = node_port_of(svc, p);
      EXPECT_GE(np, 30000) << r.body;
      EXPECT_LE(np, 32767) << r.body;
      EXPECT_TRUE(seen.insert(np).second) << np << " handed out twice";
    }
    EXPECT_EQ(get(name).json()["spec"]["ports"], svc["spec"]["ports"]) << "a GET shows what was allocated";
    EXPECT_FALSE(svc["spec"].contains("healthCheckNodePort"));
  }
  // A plain ClusterIP Service gets none.
  auto plain = create(kServices, typed_service("plain", "ClusterIP", {svc_port("http", 80)}));
  ASSERT_EQ(plain.code, 201) << plain.body;
  EXPECT_EQ(node_port_of(plain.json(), 0), 0) << plain.body;
}

TEST_F(RegistryTest, RequestedNodePortIsHonouredAndMustBeFreeAndInRange) {
  start("10.96.0.0/16");
  auto web = create(kServices, typed_service("web", "NodePort", {svc_port("http", 80, "TCP", 30080)}));
  ASSERT_EQ(web.code, 201) << web.body;
  EXPECT_EQ(node_port_of(web.json(), 0), 30080);

  expect_invalid(create(kServices, typed_service("taken", "NodePort",
                                                 {svc_port("a", 81), svc_port("b", 82, "TCP", 30080)})),
                 port_error("taken", 1, 30080, kTaken));
  expect_invalid(create(kServices, typed_service("udp", "NodePort", {svc_port("dns", 53, "UDP", 30080)})),
                 port_error("udp", 0, 30080, kTaken));
  expect_invalid(create(kServices, typed_service("low", "NodePort", {svc_port("http", 80, "TCP", 8080)})),
                 port_error("low", 0, 8080, kOutside));
  expect_invalid(create(kServices, typed_service("high", "LoadBalancer", {svc_port("http", 80, "TCP", 32768)})),
                 port_error("high", 0, 32768, kOutside));
  // Refused creates hold nothing: the names are free, and 30080 is once web is gone.
  EXPECT_EQ(get("taken").code, 404);
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/web").code, 200);
  auto again = create(kServices, typed_service("taken", "NodePort", {svc_port("b", 82, "TCP", 30080)}));
  ASSERT_EQ(again.code, 201) << again.body;
  EXPECT_EQ(node_port_of(again.json(), 0), 30080);
}

TEST_F(RegistryTest, RefusedCreatesLeakNeitherNodePortsNorClusterIps) {
  start("10.96.0.0/29", "30000-30002");  // 5 ClusterIPs, 3 node ports
  ASSERT_EQ(create(kServices, typed_service("owner", "NodePort", {svc_port("http", 80, "TCP", 30002)})).code, 201);
  // Each of these gets a ClusterIP and a node port before its second port is refused.
  for (int i = 0; i < 6; ++i)
    expect_invalid(create(kServices, typed_service("bad", "NodePort", {svc_port("a", 80), svc_port("b", 81, "TCP", 30002)})),
                   port_error("bad", 1, 30002, kTaken));
  for (const char* name : {"one", "two"}) {
    auto r = create(kServices, typed_service(name, "NodePort", {svc_port("http", 80)}));
    ASSERT_EQ(r.code, 201) << r.body;
  }
  // The range is full now; refused updates hold nothing either.
  auto full = create(kServices, typed_service("three", "NodePort", {svc_port("http", 80)}));
  EXPECT_EQ(full.code, 500) << full.body;
  EXPECT_EQ(full.json()["reason"], "InternalError");
  EXPECT_EQ(full.json()["message"], "Internal error occurred: failed to allocate a nodePort: range is full");
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/one").code, 200);
  Json two = get("two").json();
  two["spec"]["ports"].push_back(svc_port("https", 443));  // takes the free one
  std::string other_ip = two["spec"]["clusterIP"] == "10.96.0.6" ? "10.96.0.5" : "10.96.0.6";
  two["spec"]["clusterIP"] = two["spec"]["clusterIPs"][0] = other_ip;  // refused after the node port is taken
  EXPECT_EQ(put(two).code, 422);
  EXPECT_EQ(create(kServices, typed_service("four", "NodePort", {svc_port("http", 80)})).code, 201);
}

TEST_F(RegistryTest, TcpAndUdpShareANodePortWithinOneServiceOnly) {
  start("10.96.0.0/16");
  auto dns = create(kServices, typed_service("dns", "NodePort",
                                             {svc_port("dns-tcp", 53, "TCP", 30053), svc_port("dns-udp", 53, "UDP", 30053)}));
  ASSERT_EQ(dns.code, 201) << dns.body;
  EXPECT_EQ(node_port_of(dns.json(), 0), 30053);
  EXPECT_EQ(node_port_of(dns.json(), 1), 30053);
  // Ports of one number asking for none share the one they get.
  auto shared = create(kServices, typed_service("shared", "NodePort", {svc_port("tcp", 5353), svc_port("udp", 5353, "UDP")}));
  ASSERT_EQ(shared.code, 201) << shared.body;
  EXPECT_NE(node_port_of(shared.json(), 0), 0);
  EXPECT_EQ(node_port_of(shared.json(), 0), node_port_of(shared.json(), 1));
  // Another Service may not have it, with either protocol.
  expect_invalid(create(kServices, typed_service("other", "NodePort", {svc_port("dns", 53, "UDP", 30053)})),
                 port_error("other", 0, 30053, kTaken));
  // Nor two ports of other numbers in one Service (as the real server allocates them).
  expect_invalid(create(kServices, typed_service("two", "NodePort",
                                                 {svc_port("a", 80, "TCP", 30090), svc_port("b", 81, "UDP", 30090)})),
                 port_error("two", 1, 30090, kTaken));
  // Deleting the Service frees the shared port once.
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/dns").code, 200);
  EXPECT_EQ(create(kServices, typed_service("other", "NodePort", {svc_port("dns", 53, "UDP", 30053)})).code, 201);
}

TEST_F(RegistryTest, UpdatesKeepOmittedNodePortsAndReleaseReplacedOnes) {
  start("10.96.0.0/16");
  auto created = create(kServices, typed_service("web", "NodePort", {svc_port("http", 80), svc_port("https", 443)}));
  ASSERT_EQ(created.code, 201) << created.body;
  int http = node_port_of(created.json(), 0), https = node_port_of(created.json(), 1);
  // A manifest without nodePorts (as `kubectl replace` sends) keeps them, by port name.
  Json manifest = typed_service("web", "NodePort", {svc_port("https", 443), svc_port("http", 80)});
  manifest["metadata"]["labels"] = {{"a", "b"}};
  auto kept = put(manifest);
  ASSERT_EQ(kept.code, 200) << kept.body;
  EXPECT_EQ(node_port_of(kept.json(), 0), https);
  EXPECT_EQ(node_port_of(kept.json(), 1), http);
  EXPECT_EQ(merge_patch("web", R"({"metadata":{"labels":{"c":"d"}}})").code, 200);
  EXPECT_EQ(node_port_of(get("web").json(), 1), http);

  // A taken or out-of-range one is refused and changes nothing.
  ASSERT_EQ(create(kServices, typed_service("other", "NodePort", {svc_port("http", 80, "TCP", 30200)})).code, 201);
  Json next = get("web").json();
  next["spec"]["ports"][1]["nodePort"] = 30200;
  expect_invalid(put(next), port_error("web", 1, 30200, kTaken));
  next["spec"]["ports"][1]["nodePort"] = 40000;
  expect_invalid(put(next), port_error("web", 1, 40000, kOutside));
  EXPECT_EQ(node_port_of(get("web").json(), 1), http);

  // A free one replaces the old, which is released.
  next["spec"]["ports"][1]["nodePort"] = 30100;
  auto changed = put(next);
  ASSERT_EQ(changed.code, 200) << changed.body;
  EXPECT_EQ(node_port_of(changed.json(), 1), 30100);
  expect_invalid(create(kServices, typed_service("late", "NodePort", {svc_port("x", 80, "TCP", 30100)})),
                 port_error("late", 0, 30100, kTaken));
  EXPECT_EQ(create(kServices, typed_service("reuse", "NodePort", {svc_port("x", 80, "TCP", http)})).code, 201);
  // A port added without one gets a free one.
  next = changed.json();
  next["spec"]["ports"].push_back(svc_port("metrics", 9090));
  auto added = put(next);
  ASSERT_EQ(added.code, 200) << added.body;
  EXPECT_GE(node_port_of(added.json(), 2), 30000);
  EXPECT_NE(node_port_of(added.json(), 2), 30100);
}

TEST_F(RegistryTest, DeletingAServiceFreesItsNodePorts) {
  start("10.96.0.0/16");
  ASSERT_EQ(create(kServices, typed_service("web", "NodePort", {svc_port("http", 80, "TCP", 30080)})).code, 201);
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/web").code, 200);
  auto reused = create(kServices, typed_service("web2", "LoadBalancer", {svc_port("http", 80, "TCP", 30080)}));
  ASSERT_EQ(reused.code, 201) << reused.body;
  // Deleting a namespace frees its Services' ports too.
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "team"}}}}).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces/team/services",
                   typed_service("t", "NodePort", {svc_port("http", 80, "TCP", 30081)}))
                .code,
            201);
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/team").code, 200);
  EXPECT_EQ(create(kServices, typed_service("after", "NodePort", {svc_port("http", 80, "TCP", 30081)})).code, 201);
}

TEST_F(RegistryTest, LoadBalancersMayOptOutOfNodePorts) {
  start("10.96.0.0/16");
  auto lb = create(kServices, typed_service("lb", "LoadBalancer", {svc_port("http", 80)}));
  ASSERT_EQ(lb.code, 201) << lb.body;
  EXPECT_GE(node_port_of(lb.json(), 0), 30000) << "allocateLoadBalancerNodePorts defaults to true";
  Json bare = typed_service("bare", "LoadBalancer", {svc_port("http", 80), svc_port("https", 443, "TCP", 30443)});
  bare["spec"]["allocateLoadBalancerNodePorts"] = false;
  auto r = create(kServices, bare);
  ASSERT_EQ(r.code, 201) << r.body;
  EXPECT_EQ(node_port_of(r.json(), 0), 0) << r.body;
  EXPECT_EQ(node_port_of(r.json(), 1), 30443) << "a requested one is still honoured";
  // Turning allocation on later allocates the missing ones.
  auto on = merge_patch("bare", R"({"spec":{"allocateLoadBalancerNodePorts":true}})");
  ASSERT_EQ(on.code, 200) << on.body;
  EXPECT_GE(node_port_of(on.json(), 0), 30000) << on.body;
  EXPECT_EQ(node_port_of(on.json(), 1), 30443);
}

TEST_F(RegistryTest, LocalLoadBalancersGetAHealthCheckNodePort) {
  start("10.96.0.0/16");
  Json local = typed_service("local", "LoadBalancer", {svc_port("http", 80)});
  local["spec"]["externalTrafficPolicy"] = "Local";
  auto r = create(kServices, local);
  ASSERT_EQ(r.code, 201) << r.body;
  int hc = r.json()["spec"]["healthCheckNodePort"];
  EXPECT_GE(hc, 30000);
  EXPECT_LE(hc, 32767);
  EXPECT_NE(hc, node_port_of(r.json(), 0));
  // A requested one is honoured; a taken one is refused (500, as the real server answers).
  Json asked = local;
  asked["metadata"]["name"] = "asked";
  asked["spec"]["healthCheckNodePort"] = 30999;
  auto honoured = create(kServices, asked);
  ASSERT_EQ(honoured.code, 201) << honoured.body;
  EXPECT_EQ(honoured.json()["spec"]["healthCheckNodePort"], 30999);
  asked["metadata"]["name"] = "again";
  auto taken = create(kServices, asked);
  EXPECT_EQ(taken.code, 500) << taken.body;
  EXPECT_EQ(taken.json()["message"],
            "Internal error occurred: failed to allocate requested HealthCheck NodePort 30999: " + std::string(kTaken));
  // It may not change, an update leaving it out keeps it.
  Json next = honoured.json();
  next["spec"]["healthCheckNodePort"] = 30998;
  expect_invalid(put(next), "Service \"asked\" is invalid: spec.healthCheckNodePort: Invalid value: 30998: field is "
                            "immutable");
  next["spec"].erase("healthCheckNodePort");
  auto kept = put(next);
  ASSERT_EQ(kept.code, 200) << kept.body;
  EXPECT_EQ(kept.json()["spec"]["healthCheckNodePort"], 30999);
  // Policy Cluster needs none: it is dropped and released.
  auto cluster = merge_patch("asked", R"({"spec":{"externalTrafficPolicy":"Cluster"}})");
  ASSERT_EQ(cluster.code, 200) << cluster.body;
  EXPECT_FALSE(cluster.json()["spec"].contains("healthCheckNodePort")) << cluster.body;
  EXPECT_EQ(create(kServices, typed_service("user", "NodePort", {svc_port("http", 80, "TCP", 30999)})).code, 201);
  // Only a Local LoadBalancer may have one.
  Json wrong = typed_service("wrong", "NodePort", {svc_port("http", 80)});
  wrong["spec"]["healthCheckNodePort"] = 30997;
  expect_invalid(create(kServices, wrong),
                 "Service \"wrong\" is invalid: spec.healthCheckNodePort: Invalid value: 30997: may only be set when "
                 "`type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'");
}

TEST_F(RegistryTest, NodePortsAreForbiddenOnClusterIpServices) {
  start("10.96.0.0/16");
  expect_invalid(create(kServices, typed_service("web", "ClusterIP", {svc_port("http", 80, "TCP", 30080)})),
                 "Service \"web\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is "
                 "'ClusterIP'");
  expect_invalid(create(kServices, typed_service("two", "", {svc_port("a", 80, "TCP", 30080), svc_port("b", 81, "TCP", 30081)})),
                 "Service \"two\" is invalid: [spec.ports[0].nodePort: Forbidden: may not be used when `type` is "
                 "'ClusterIP', spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP']");
  // Nothing was held.
  EXPECT_EQ(create(kServices, typed_service("np", "NodePort", {svc_port("http", 80, "TCP", 30080)})).code, 201);
}

TEST_F(RegistryTest, ChangingTypeToClusterIpDropsAndReleasesNodePorts) {
  start("10.96.0.0/16");
  Json svc = typed_service("web", "LoadBalancer", {svc_port("http", 80, "TCP", 30080), svc_port("https", 443)});
  svc["spec"]["externalTrafficPolicy"] = "Local";
  auto created = create(kServices, svc);
  ASSERT_EQ(created.code, 201) << created.body;
  int hc = created.json()["spec"]["healthCheckNodePort"];
  // The client sends the object back with the new type and the nodePorts still in.
  Json next = created.json();
  next["spec"]["type"] = "ClusterIP";
  next["spec"]["ports"][1]["nodePort"] = 30443;  // a new one: refused
  expect_invalid(put(next), "Service \"web\" is invalid: [spec.ports[0].nodePort: Forbidden: may not be used when "
                            "`type` is 'ClusterIP', spec.ports[1].nodePort: Forbidden: may not be used when `type` "
                            "is 'ClusterIP']");
  next["spec"]["ports"][1]["nodePort"] = node_port_of(created.json(), 1);
  auto changed = put(next);
  ASSERT_EQ(changed.code, 200) << changed.body;
  EXPECT_EQ(node_port_of(changed.json(), 0), 0) << changed.body;
  EXPECT_EQ(node_port_of(changed.json(), 1), 0) << changed.body;
  EXPECT_FALSE(changed.json()["spec"].contains("healthCheckNodePort")) << changed.body;
  EXPECT_EQ(changed.json()["spec"]["clusterIP"], created.json()["spec"]["clusterIP"]);
  // All three are free again.
  auto reuse = create(kServices, typed_service("reuse", "NodePort",
                                               {svc_port("a", 80, "TCP", 30080), svc_port("b", 81, "TCP", hc)}));
  EXPECT_EQ(reuse.code, 201) << reuse.body;
  // A merge patch changing the type does the same; back to NodePort allocates anew.
  auto back = merge_patch("web", R"({"spec":{"type":"NodePort"}})");
  ASSERT_EQ(back.code, 200) << back.body;
  EXPECT_GE(node_port_of(back.json(), 0), 30000);
  EXPECT_NE(node_port_of(back.json(), 0), 30080);
  int again = node_port_of(back.json(), 0);
  auto down = merge_patch("web", R"({"spec":{"type":"ClusterIP"}})");
  ASSERT_EQ(down.code, 200) << down.body;
  EXPECT_EQ(node_port_of(down.json(), 0), 0) << down.body;
  EXPECT_EQ(create(kServices, typed_service("again", "NodePort", {svc_port("a", 80, "TCP", again)})).code, 201);
}

TEST_F(RegistryTest, WithoutANodePortRangeNodePortsAreStoredAsSent) {
  start("", "");
  auto r = create(kServices, typed_service("web", "NodePort", {svc_port("http", 80)}));
  ASSERT_EQ(r.code, 201) << r.body;
  EXPECT_EQ(node_port_of(r.json(), 0), 0) << r.body;
  EXPECT_EQ(create(kServices, typed_service("a", "NodePort", {svc_port("http", 80, "TCP", 80)})).code, 201);
  EXPECT_EQ(create(kServices, typed_service("b", "ClusterIP", {svc_port("http", 80, "TCP", 80)})).code, 201);
}

TEST(NodePortRange, ParsesAsTheRealServerAndRefusesBadRangesClearly) {
  for (const char* bad : {"", "30000-", "-30000", "32767-30000", "0-100", "30000-70000", "30000-31000-32000", "x",
                          "30000+", "30000+40000", "30000-+1"}) {
    auto a = NodePortAllocator::create(bad);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_NE(a.error().message.find("invalid service node port range '" + std::string(bad) + "'"),
              std::string::npos)
        << a.error().message;
  }
  for (auto [given, canonical] : std::vector<std::pair<const char*, const char*>>{
           {"30000-32767", "30000-32767"}, {"30000+2767", "30000-32767"}, {"30080", "30080-30080"}}) {
    auto a = NodePortAllocator::create(given);
    ASSERT_TRUE(a.ok()) << given;
    EXPECT_EQ((*a)->range(), canonical);
  }
  EXPECT_EQ(Options{}.service_node_port_range, "30000-32767") << "the real server's default";
  Options o;
  o.service_node_port_range = "30000-20000";
  EXPECT_FALSE(ApiServer::start(o).ok());
}

TEST(NodePortRange, DynamicAllocationLeavesTheLowerBandToStaticRequests) {
  auto a = NodePortAllocator::create("30000-30099");  // the lower 16 ports are the static band
  ASSERT_TRUE(a.ok());
  NodePortAllocator& ports = **a;
  auto allocate = [&](const std::string& name) {
    auto svc = apiserver::Json::parse(typed_service(name, "NodePort", {svc_port("http", 80)}).dump());
    EXPECT_FALSE(ports.on_create(svc)) << name;
    return svc["spec"]["ports"][0].value("nodePort", 0);
  };
  for (int i = 0; i < 84; ++i) EXPECT_GE(allocate("s" + std::to_string(i)), 30016) << "the upper band first";
  int last = allocate("more");
  EXPECT_LT(last, 30016) << "then the lower one";
  EXPECT_EQ(ports.allocated(), 85u);
  ports.on_remove(apiserver::Json::parse(typed_service("more", "NodePort", {svc_port("http", 80, "TCP", last)}).dump()));
  EXPECT_FALSE(ports.is_allocated(last));
  EXPECT_EQ(ports.allocated(), 84u);
}

// ---- graceful Pod deletion -------------------------------------------------------

constexpr const char* kPods = "/api/v1/namespaces/default/pods";

Json pod(const std::string& name, const std::string& node = "node-1") {
  Json p = Json::parse(R"({"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"}},
    "spec":{"containers":[{"name":"echo","image":"kpx","ports":[{"containerPort":8080}]}]}})");
  p["metadata"]["name"] = name;
  if (!node.empty()) p["spec"]["nodeName"] = node;
  return p;
}

int64_t seconds_until(const std::string& rfc3339_time) {
  auto t = parse_rfc3339(rfc3339_time);
  EXPECT_TRUE(t) << rfc3339_time;
  return std::chrono::duration_cast<std::chrono::seconds>(*t - std::chrono::system_clock::now()).count();
}

TEST_F(RegistryTest, PodDefaults) {
  start("");
  auto r = create(kPods, pod("web-0"));
  ASSERT_EQ(r.code, 201) << r.body;
  Json p = r.json();
  EXPECT_EQ(p["status"]["phase"], "Pending");
  EXPECT_EQ(p["spec"]["terminationGracePeriodSeconds"], 30);
  EXPECT_EQ(p["spec"]["restartPolicy"], "Always");
  EXPECT_EQ(p["spec"]["dnsPolicy"], "ClusterFirst");
  EXPECT_EQ(p["spec"]["enableServiceLinks"], true);
  EXPECT_EQ(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
  Json mine = pod("web-1");
  mine["spec"]["terminationGracePeriodSeconds"] = 5;
  mine["spec"]["restartPolicy"] = "Never";
  auto kept = create(kPods, mine);
  EXPECT_EQ(kept.json()["spec"]["terminationGracePeriodSeconds"], 5);
  EXPECT_EQ(kept.json()["spec"]["restartPolicy"], "Never");
}

TEST_F(RegistryTest, DeletingAPodMarksItTerminatingUntilDeletedWithGraceZero) {
  start("");
  ASSERT_EQ(create(kPods, pod("web-0")).code, 201);
  std::string rv = call(port_, "GET", kPods).json()["metadata"]["resourceVersion"];
  WatchStream w(port_, std::string(kPods) + "?watch=1&resourceVersion=" + rv);

  auto first = call(port_, "DELETE", std::string(kPods) + "/web-0");
  ASSERT_EQ(first.code, 200) << first.body;
  Json terminating = first.json();
  EXPECT_EQ(terminating["kind"], "Pod");
  EXPECT_EQ(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
  int64_t left = seconds_until(terminating["metadata"]["deletionTimestamp"]);
  EXPECT_GE(left, 28);
  EXPECT_LE(left, 31);
  auto modified = w.next();
  ASSERT_TRUE(modified);
  EXPECT_EQ((*modified)["type"], "MODIFIED");
  EXPECT_EQ((*modified)["object"]["metadata"]["deletionTimestamp"], terminating["metadata"]["deletionTimestamp"]);
  // Still there, and terminating.
  auto got = call(port_, "GET", std::string(kPods) + "/web-0");
  ASSERT_EQ(got.code, 200);
  EXPECT_EQ(got.json()["metadata"]["deletionTimestamp"], terminating["metadata"]["deletionTimestamp"]);

  // Deleting again with the same or a longer grace changes nothing (no event).
  auto again = call(port_, "DELETE", std::string(kPods) + "/web-0?gracePeriodSeconds=60");
  ASSERT_EQ(again.code, 200) << again.body;
  EXPECT_EQ(again.json()["metadata"]["resourceVersion"], terminating["metadata"]["resourceVersion"]);
  EXPECT_EQ(call(port_, "DELETE", std::string(kPods) + "/web-0").json()["metadata"]["resourceVersion"],
            terminating["metadata"]["resourceVersion"]);
  // An update cannot clear or move the deletion mark.
  Json edited = got.json();
  edited["metadata"].erase("deletionTimestamp");
  edited["metadata"]["labels"]["x"] = "y";
  auto put = call(port_, "PUT", std::string(kPods) + "/web-0", edited.dump());
  ASSERT_EQ(put.code, 200) << put.body;
  EXPECT_EQ(put.json()["metadata"]["deletionTimestamp"], terminating["metadata"]["deletionTimestamp"]);
  ASSERT_TRUE(w.next_of("MODIFIED"));

  // The kubelet, its containers gone: grace 0 in DeleteOptions removes it.
  auto last = call(port_, "DELETE", std::string(kPods) + "/web-0",
                   R"({"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0})");
  ASSERT_EQ(last.code, 200) << last.body;
  auto deleted = w.next();
  ASSERT_TRUE(deleted);
  EXPECT_EQ((*deleted)["type"], "DELETED");
  EXPECT_EQ(call(port_, "GET", std::string(kPods) + "/web-0").code, 404);
}

TEST_F(RegistryTest, ShorterGraceMovesTheDeadline) {
  start("");
  Json p = pod("web-0");
  p["spec"]["terminationGracePeriodSeconds"] = 600;
  ASSERT_EQ(create(kPods, p).code, 201);
  auto first = call(port_, "DELETE", std::string(kPods) + "/web-0");
  EXPECT_EQ(first.json()["metadata"]["deletionGracePeriodSeconds"], 600);
  EXPECT_GE(seconds_until(first.json()["metadata"]["deletionTimestamp"]), 598);
  auto shorter = call(port_, "DELETE", std::string(kPods) + "/web-0", R"({"gracePeriodSeconds":10})");
  ASSERT_EQ(shorter.code, 200) << shorter.body;
  EXPECT_EQ(shorter.json()["metadata"]["deletionGracePeriodSeconds"], 10);
  int64_t left = seconds_until(shorter.json()["metadata"]["deletionTimestamp"]);
  EXPECT_GE(left, 8);
  EXPECT_LE(left, 11);
  // gracePeriodSeconds=0 in the query does it too.
  ASSERT_EQ(call(port_, "DELETE", std::string(kPods) + "/web-0?gracePeriodSeconds=0").code, 200);
  EXPECT_EQ(call(port_, "GET", std::string(kPods) + "/web-0").code, 404);
}

TEST_F(RegistryTest, PodsWithoutAKubeletToWaitForGoAtOnce) {
  start("");
  ASSERT_EQ(create(kPods, pod("unscheduled", "")).code, 201);
  ASSERT_EQ(call(port_, "DELETE", std::string(kPods) + "/unscheduled").code, 200);
  EXPECT_EQ(call(port_, "GET", std::string(kPods) + "/unscheduled").code, 404);

  ASSERT_EQ(create(kPods, pod("done")).code, 201);
  ASSERT_EQ(call(port_, "PUT", std::string(kPods) + "/done/status",
                 Json{{"metadata", {{"name", "done"}}}, {"status", {{"phase", "Succeeded"}}}}.dump())
                .code,
            200);
  ASSERT_EQ(call(port_, "DELETE", std::string(kPods) + "/done").code, 200);
  EXPECT_EQ(call(port_, "GET", std::string(kPods) + "/done").code, 404);

  // Other types are never graceful.
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/web").code, 200);
  EXPECT_EQ(call(port_, "GET", std::string(kServices) + "/web").code, 404);
}

TEST_F(RegistryTest, BadDeleteOptionsAre400) {
  start("");
  ASSERT_EQ(create(kPods, pod("web-0")).code, 201);
  EXPECT_EQ(call(port_, "DELETE", std::string(kPods) + "/web-0?gracePeriodSeconds=soon").code, 400);
  EXPECT_EQ(call(port_, "DELETE", std::string(kPods) + "/web-0", R"({"gracePeriodSeconds":"0"})").code, 400);
  EXPECT_EQ(call(port_, "DELETE", std::string(kPods) + "/web-0", "not json").code, 400);
  EXPECT_EQ(call(port_, "GET", std::string(kPods) + "/web-0").json()["metadata"].count("deletionTimestamp"), 0u);
}

TEST_F(RegistryTest, DeletingANamespaceRemovesTerminatingPodsToo) {
  start("");
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "team"}}}}).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces/team/pods", pod("a")).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces/team/pods", pod("b")).code, 201);
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/team/pods/a").code, 200);
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/team").code, 200);
  EXPECT_EQ(call(port_, "GET", "/api/v1/namespaces/team/pods/a").code, 404);
  EXPECT_EQ(call(port_, "GET", "/api/v1/namespaces/team/pods/b").code, 404);
}

}  // namespace
}  // namespace kpx::apiserver
