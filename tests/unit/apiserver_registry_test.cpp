// What the fake API server's registry does beyond storing objects, as a real
// kube-apiserver does: ClusterIP allocation (--service-cluster-ip-range) and
// graceful Pod deletion. Over real sockets on 127.0.0.1.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "apiserver/apiserver.h"
#include "apiserver/cluster_ip.h"
#include "apiserver/graceful_delete.h"
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
  void start(const std::string& range) {
    Options o;
    o.listen = "127.0.0.1:0";
    o.service_cluster_ip_range = range;
    auto s = ApiServer::start(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);
    port_ = server_->port();
  }
  HttpResponse create(const std::string& collection, const Json& obj) {
    return call(port_, "POST", collection, obj.dump());
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
