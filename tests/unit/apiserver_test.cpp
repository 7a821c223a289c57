// The fake API server (userspace/apiserver) driven over real sockets on
// 127.0.0.1 by a small raw HTTP client, so that Status bodies, chunk
// boundaries and torn streams are seen exactly as a client would see them.
#include "apiserver/apiserver.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "apiserver/store.h"
#include "support/raw_http.h"

namespace kpx::apiserver {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::call;
using testing::HttpResponse;
using testing::RawConnection;
using testing::WatchStream;

// ---- objects -------------------------------------------------------------------

Json service(const std::string& name, const std::string& ns = "default", Json labels = Json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
          {"spec", {{"clusterIP", "10.96.0.10"}, {"ports", {{{"name", "http"}, {"port", 80}}}}}}};
}

Json endpoint_slice(const std::string& name, Json labels) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", labels}}},
          {"addressType", "IPv4"},
          {"endpoints", {{{"addresses", {"10.244.1.5"}}, {"conditions", {{"ready", true}}}}}},
          {"ports", {{{"name", "http"}, {"port", 8080}}}}};
}

Json node(const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "Node"},
          {"metadata", {{"name", name}}},
          {"status", {{"addresses", {{{"type", "InternalIP"}, {"address", "192.168.0.10"}}}}}}};
}

constexpr const char* kServices = "/api/v1/namespaces/default/services";
constexpr const char* kSlices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

void expect_status(const HttpResponse& r, int code, const std::string& reason) {
  EXPECT_EQ(r.code, code) << r.body;
  Json s = r.json();
  EXPECT_EQ(s["kind"], "Status") << r.body;
  EXPECT_EQ(s["apiVersion"], "v1") << r.body;
  EXPECT_TRUE(s["metadata"].is_object()) << r.body;
  EXPECT_EQ(s["status"], "Failure") << r.body;
  EXPECT_EQ(s["reason"], reason) << r.body;
  EXPECT_EQ(s["code"], code) << r.body;
  EXPECT_TRUE(s["message"].is_string() && !s["message"].get<std::string>().empty()) << r.body;
}

class ApiServerTest : public ::testing::Test {
 protected:
  void start(Options o = {}) {
    o.listen = "127.0.0.1:0";
    auto s = ApiServer::start(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);
    port_ = server_->port();
  }
  void SetUp() override { start(); }

  HttpResponse create(const std::string& collection, const Json& obj) {
    return call(port_, "POST", collection, obj.dump());
  }
  std::string list_rv(const std::string& collection) {
    return call(port_, "GET", collection).json()["metadata"]["resourceVersion"].get<std::string>();
  }

  std::unique_ptr<ApiServer> server_;
  uint16_t port_ = 0;
};

// ---- CRUD and Status bodies ----------------------------------------------------

TEST_F(ApiServerTest, CreateGetUpdateDelete) {
  auto created = create(kServices, service("web"));
  ASSERT_EQ(created.code, 201) << created.body;
  Json svc = created.json();
  EXPECT_EQ(svc["kind"], "Service");
  EXPECT_EQ(svc["apiVersion"], "v1");
  EXPECT_FALSE(svc["metadata"]["uid"].get<std::string>().empty());
  EXPECT_FALSE(svc["metadata"]["creationTimestamp"].get<std::string>().empty());
  std::string rv1 = svc["metadata"]["resourceVersion"];
  EXPECT_FALSE(rv1.empty());
  // Defaults a real server fills in, and status reset on create.
  EXPECT_EQ(svc["spec"]["type"], "ClusterIP");
  EXPECT_EQ(svc["spec"]["ports"][0]["protocol"], "TCP");
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], 80);
  EXPECT_EQ(svc["status"], Json({{"loadBalancer", Json::object()}}));

  auto got = call(port_, "GET", std::string(kServices) + "/web");
  ASSERT_EQ(got.code, 200);
  EXPECT_EQ(got.json(), svc);

  svc["metadata"]["labels"]["tier"] = "front";
  auto updated = call(port_, "PUT", std::string(kServices) + "/web", svc.dump());
  ASSERT_EQ(updated.code, 200) << updated.body;
  std::string rv2 = updated.json()["metadata"]["resourceVersion"];
  EXPECT_NE(rv2, rv1);
  EXPECT_EQ(updated.json()["metadata"]["uid"], svc["metadata"]["uid"]);
  EXPECT_EQ(updated.json()["metadata"]["labels"]["tier"], "front");

  // The same body again carries the old version: 409 Conflict.
  auto stale = call(port_, "PUT", std::string(kServices) + "/web", svc.dump());
  expect_status(stale, 409, "Conflict");
  EXPECT_NE(stale.json()["message"].get<std::string>().find("the object has been modified"),
            std::string::npos);

  auto deleted = call(port_, "DELETE", std::string(kServices) + "/web");
  ASSERT_EQ(deleted.code, 200) << deleted.body;
  EXPECT_EQ(deleted.json()["metadata"]["name"], "web");
  EXPECT_EQ(deleted.json()["metadata"]["labels"]["tier"], "front");

  auto gone = call(port_, "GET", std::string(kServices) + "/web");
  expect_status(gone, 404, "NotFound");
  EXPECT_EQ(gone.json()["message"], "services \"web\" not found");
  EXPECT_EQ(gone.json()["details"]["name"], "web");
  expect_status(call(port_, "DELETE", std::string(kServices) + "/web"), 404, "NotFound");
}

TEST_F(ApiServerTest, CreateTwiceIsAlreadyExists) {
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  auto again = create(kServices, service("web"));
  expect_status(again, 409, "AlreadyExists");
  EXPECT_EQ(again.json()["message"], "services \"web\" already exists");
  auto slice = create(kSlices, endpoint_slice("web-1", Json::object()));
  ASSERT_EQ(slice.code, 201) << slice.body;
  auto slice_again = create(kSlices, endpoint_slice("web-1", Json::object()));
  expect_status(slice_again, 409, "AlreadyExists");
  EXPECT_EQ(slice_again.json()["message"], "endpointslices.discovery.k8s.io \"web-1\" already exists");
}

TEST_F(ApiServerTest, RefusedWrites) {
  // No such namespace (the real server's NamespaceLifecycle admission).
  expect_status(create("/api/v1/namespaces/nowhere/services", service("web", "nowhere")), 404, "NotFound");
  // A namespace in the body that is not the URL's.
  expect_status(create(kServices, service("web", "other")), 400, "BadRequest");
  // A name that is not a DNS-1035 label.
  expect_status(create(kServices, service("Web_1")), 422, "Invalid");
  // A PUT to an object that does not exist is not a create.
  expect_status(call(port_, "PUT", std::string(kServices) + "/web", service("web").dump()), 404, "NotFound");
  // Strategic merge patches (kubectl's default) are not supported.
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  expect_status(call(port_, "PATCH", std::string(kServices) + "/web", R"({"metadata":{"labels":{"a":"b"}}})",
                     "application/strategic-merge-patch+json"),
                415, "UnsupportedMediaType");
  // A merge patch is.
  auto patched = call(port_, "PATCH", std::string(kServices) + "/web", R"({"metadata":{"labels":{"a":"b"}}})",
                      "application/merge-patch+json");
  ASSERT_EQ(patched.code, 200) << patched.body;
  EXPECT_EQ(patched.json()["metadata"]["labels"]["a"], "b");
  // Unknown paths and methods.
  expect_status(call(port_, "GET", "/api/v1/configmaps"), 404, "NotFound");
  expect_status(call(port_, "DELETE", kServices), 405, "MethodNotAllowed");
}

TEST_F(ApiServerTest, StatusSubresource) {
  Json svc = service("lb");
  svc["spec"]["type"] = "LoadBalancer";
  svc["status"] = {{"loadBalancer", {{"ingress", {{{"ip", "1.2.3.4"}}}}}}};
  auto created = create(kServices, svc);
  ASSERT_EQ(created.code, 201);
  EXPECT_EQ(created.json()["status"]["loadBalancer"], Json::object());  // reset on create
  Json with_status = created.json();
  with_status["status"] = {{"loadBalancer", {{"ingress", {{{"ip", "1.2.3.4"}, {"ipMode", "VIP"}}}}}}};
  auto st = call(port_, "PUT", std::string(kServices) + "/lb/status", with_status.dump());
  ASSERT_EQ(st.code, 200) << st.body;
  EXPECT_EQ(st.json()["status"]["loadBalancer"]["ingress"][0]["ip"], "1.2.3.4");
  // An update of the object keeps the status.
  Json next = st.json();
  next["status"] = Json::object();
  next["spec"]["externalIPs"] = {"5.6.7.8"};
  auto upd = call(port_, "PUT", std::string(kServices) + "/lb", next.dump());
  ASSERT_EQ(upd.code, 200) << upd.body;
  EXPECT_EQ(upd.json()["status"]["loadBalancer"]["ingress"][0]["ip"], "1.2.3.4");
  EXPECT_EQ(upd.json()["spec"]["externalIPs"][0], "5.6.7.8");
}

TEST_F(ApiServerTest, OneIncreasingResourceVersionAcrossKinds) {
  std::vector<std::string> rvs;
  rvs.push_back(create(kServices, service("a")).json()["metadata"]["resourceVersion"]);
  rvs.push_back(create(kSlices, endpoint_slice("a-1", Json::object())).json()["metadata"]["resourceVersion"]);
  rvs.push_back(create("/api/v1/nodes", node("node-a")).json()["metadata"]["resourceVersion"]);
  for (size_t i = 1; i < rvs.size(); ++i) EXPECT_GT(std::stoull(rvs[i]), std::stoull(rvs[i - 1]));
  // Every list reports the latest revision, whatever its kind.
  EXPECT_EQ(list_rv("/api/v1/services"), rvs.back());
  EXPECT_EQ(list_rv("/apis/discovery.k8s.io/v1/endpointslices"), rvs.back());
  // A Node keeps the status it is created with.
  auto n = call(port_, "GET", "/api/v1/nodes/node-a").json();
  EXPECT_EQ(n["status"]["addresses"][0]["address"], "192.168.0.10");
}

// ---- lists ------------------------------------------------------------------------

TEST_F(ApiServerTest, ListShape) {
  ASSERT_EQ(create(kServices, service("b")).code, 201);
  ASSERT_EQ(create(kServices, service("a")).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "other"}}}}).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces/other/services", service("a", "other")).code, 201);
  Json all = call(port_, "GET", "/api/v1/services").json();
  EXPECT_EQ(all["kind"], "ServiceList");
  EXPECT_EQ(all["apiVersion"], "v1");
  EXPECT_TRUE(all["metadata"]["resourceVersion"].is_string());
  EXPECT_FALSE(all["metadata"].contains("continue"));
  ASSERT_EQ(all["items"].size(), 3u);
  for (const auto& item : all["items"]) {
    EXPECT_FALSE(item.contains("kind"));
    EXPECT_FALSE(item.contains("apiVersion"));
  }
  // Key order: namespace, then name.
  EXPECT_EQ(all["items"][0]["metadata"]["name"], "a");
  EXPECT_EQ(all["items"][1]["metadata"]["name"], "b");
  EXPECT_EQ(all["items"][2]["metadata"]["namespace"], "other");
  EXPECT_EQ(call(port_, "GET", kServices).json()["items"].size(), 2u);
}

TEST_F(ApiServerTest, PagingIsAConsistentSnapshot) {
  for (const char* n : {"s1", "s2", "s3", "s4", "s5", "s6", "s7"})
    ASSERT_EQ(create(kServices, service(n)).code, 201);
  Json p1 = call(port_, "GET", std::string(kServices) + "?limit=3").json();
  ASSERT_EQ(p1["items"].size(), 3u);
  std::string token = p1["metadata"]["continue"];
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(p1["metadata"]["remainingItemCount"], 4);
  std::string rv = p1["metadata"]["resourceVersion"];

  // Changes after the first page do not show in the later ones.
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/s5").code, 200);
  ASSERT_EQ(create(kServices, service("s8")).code, 201);

  std::vector<std::string> names;
  for (const auto& i : p1["items"]) names.push_back(i["metadata"]["name"]);
  while (!token.empty()) {
    auto r = call(port_, "GET", std::string(kServices) + "?limit=3&continue=" + token);
    ASSERT_EQ(r.code, 200) << r.body;
    Json p = r.json();
    EXPECT_EQ(p["metadata"]["resourceVersion"], rv);
    for (const auto& i : p["items"]) names.push_back(i["metadata"]["name"]);
    token = p["metadata"].value("continue", "");
  }
  EXPECT_EQ(names, (std::vector<std::string>{"s1", "s2", "s3", "s4", "s5", "s6", "s7"}));
  // A new list sees the changes.
  EXPECT_EQ(call(port_, "GET", kServices).json()["items"].size(), 7u);
}

TEST_F(ApiServerTest, ContinueExpiredByFaultIsGone) {
  for (const char* n : {"s1", "s2", "s3"}) ASSERT_EQ(create(kServices, service(n)).code, 201);
  std::string token = call(port_, "GET", std::string(kServices) + "?limit=1").json()["metadata"]["continue"];
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/expire-continue").code, 200);
  auto r = call(port_, "GET", std::string(kServices) + "?limit=1&continue=" + token);
  expect_status(r, 410, "Expired");
  // A new list works and its token does.
  std::string fresh = call(port_, "GET", std::string(kServices) + "?limit=1").json()["metadata"]["continue"];
  EXPECT_EQ(call(port_, "GET", std::string(kServices) + "?limit=1&continue=" + fresh).code, 200);
}

TEST_F(ApiServerTest, ContinueExpiresWithTimeAndCompaction) {
  Options o;
  o.continue_ttl = 300ms;
  start(o);
  for (const char* n : {"s1", "s2", "s3"}) ASSERT_EQ(create(kServices, service(n)).code, 201);
  std::string old_token =
      call(port_, "GET", std::string(kServices) + "?limit=1").json()["metadata"]["continue"];
  std::string token = call(port_, "GET", std::string(kServices) + "?limit=1").json()["metadata"]["continue"];
  // Compaction at the token's own revision leaves it readable (as etcd); past it, not.
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/compact").code, 200);
  EXPECT_EQ(call(port_, "GET", std::string(kServices) + "?limit=1&continue=" + token).code, 200);
  ASSERT_EQ(create(kServices, service("s4")).code, 201);
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/compact").code, 200);
  expect_status(call(port_, "GET", std::string(kServices) + "?limit=1&continue=" + token), 410, "Expired");
  std::this_thread::sleep_for(350ms);
  expect_status(call(port_, "GET", std::string(kServices) + "?limit=1&continue=" + old_token), 410,
                "Expired");
  expect_status(call(port_, "GET", std::string(kServices) + "?limit=1&continue=garbage!"), 400, "BadRequest");
}

std::set<std::string> names_of(const Json& list) {
  std::set<std::string> s;
  for (const auto& i : list["items"]) s.insert(i["metadata"]["name"].get<std::string>());
  return s;
}

TEST_F(ApiServerTest, LabelSelectors) {
  ASSERT_EQ(create(kServices, service("plain", "default", {{"app", "web"}})).code, 201);
  ASSERT_EQ(create(kServices, service("other-proxy", "default",
                                      {{"app", "db"}, {"service.kubernetes.io/service-proxy-name", "x"}}))
                .code,
            201);
  ASSERT_EQ(create(kServices, service("unlabelled")).code, 201);
  auto sel = [&](const std::string& q) {
    auto r = call(port_, "GET", "/api/v1/services?labelSelector=" + q);
    EXPECT_EQ(r.code, 200) << q << ": " << r.body;
    return names_of(r.json());
  };
  using S = std::set<std::string>;
  EXPECT_EQ(sel("%21service.kubernetes.io%2Fservice-proxy-name"), (S{"plain", "unlabelled"}));
  EXPECT_EQ(sel("!service.kubernetes.io/service-proxy-name"), (S{"plain", "unlabelled"}));
  EXPECT_EQ(sel("service.kubernetes.io/service-proxy-name"), (S{"other-proxy"}));
  EXPECT_EQ(sel("app=web"), (S{"plain"}));
  EXPECT_EQ(sel("app%3D%3Dweb"), (S{"plain"}));
  EXPECT_EQ(sel("app!=web"), (S{"other-proxy", "unlabelled"}));
  EXPECT_EQ(sel("app,app!=db"), (S{"plain"}));
  EXPECT_EQ(sel("app%20in%20(web,db)"), (S{"plain", "other-proxy"}));
  EXPECT_EQ(sel("app%20notin%20(web)"), (S{"other-proxy", "unlabelled"}));
  expect_status(call(port_, "GET", "/api/v1/services?labelSelector=app%3D%3D%3Dx%25"), 400, "BadRequest");

  // kube-proxy's EndpointSlice selector.
  ASSERT_EQ(create(kSlices, endpoint_slice("web-1", {{"kubernetes.io/service-name", "web"}})).code, 201);
  ASSERT_EQ(create(kSlices, endpoint_slice("hl-1", {{"kubernetes.io/service-name", "hl"},
                                                    {"service.kubernetes.io/headless", ""}}))
                .code,
            201);
  auto slices =
      call(port_, "GET",
           "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless,"
           "%21service.kubernetes.io%2Fservice-proxy-name");
  EXPECT_EQ(names_of(slices.json()), (S{"web-1"}));
}

TEST_F(ApiServerTest, FieldSelectors) {
  ASSERT_EQ(create("/api/v1/nodes", node("node-a")).code, 201);
  ASSERT_EQ(create("/api/v1/nodes", node("node-b")).code, 201);
  auto r = call(port_, "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b");
  EXPECT_EQ(names_of(r.json()), (std::set<std::string>{"node-b"}));
  r = call(port_, "GET", "/api/v1/nodes?fieldSelector=metadata.name!%3Dnode-b");
  EXPECT_EQ(names_of(r.json()), (std::set<std::string>{"node-a"}));
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  r = call(port_, "GET", "/api/v1/services?fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Dweb");
  EXPECT_EQ(names_of(r.json()), (std::set<std::string>{"web"}));
  expect_status(call(port_, "GET", "/api/v1/nodes?fieldSelector=spec.nope%3Dx"), 400, "BadRequest");
}

// ---- watches ----------------------------------------------------------------------

TEST_F(ApiServerTest, WatchFromListVersionSeesChangesInOrder) {
  ASSERT_EQ(create(kServices, service("before")).code, 201);
  std::string rv = list_rv("/api/v1/services");
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + rv);
  ASSERT_EQ(w.code(), 200);
  EXPECT_EQ(w.head().headers.at("transfer-encoding"), "chunked");

  auto created = create(kServices, service("web")).json();
  created["metadata"]["labels"] = {{"v", "2"}};
  ASSERT_EQ(call(port_, "PUT", std::string(kServices) + "/web", created.dump()).code, 200);
  ASSERT_EQ(create(kSlices, endpoint_slice("web-1", Json::object())).code, 201);  // another type: not seen
  ASSERT_EQ(call(port_, "DELETE", std::string(kServices) + "/web").code, 200);

  std::vector<std::string> types;
  std::vector<uint64_t> rvs;
  Json last;
  for (int i = 0; i < 3; ++i) {
    auto e = w.next();
    ASSERT_TRUE(e) << "event " << i;
    types.push_back((*e)["type"]);
    EXPECT_EQ((*e)["object"]["kind"], "Service");
    EXPECT_EQ((*e)["object"]["apiVersion"], "v1");
    EXPECT_EQ((*e)["object"]["metadata"]["name"], "web");
    rvs.push_back(std::stoull((*e)["object"]["metadata"]["resourceVersion"].get<std::string>()));
    last = *e;
  }
  EXPECT_EQ(types, (std::vector<std::string>{"ADDED", "MODIFIED", "DELETED"}));
  EXPECT_TRUE(rvs[0] > std::stoull(rv) && rvs[0] < rvs[1] && rvs[1] < rvs[2]);
  // DELETED carries the last state.
  EXPECT_EQ(last["object"]["metadata"]["labels"]["v"], "2");
  EXPECT_FALSE(w.next(300ms));
}

TEST_F(ApiServerTest, WatchFromZeroStartsWithTheCurrentObjects) {
  ASSERT_EQ(create(kServices, service("a")).code, 201);
  ASSERT_EQ(create(kServices, service("b")).code, 201);
  WatchStream w(port_, "/api/v1/namespaces/default/services?watch=true&resourceVersion=0");
  ASSERT_EQ(w.code(), 200);
  for (const char* name : {"a", "b"}) {
    auto e = w.next();
    ASSERT_TRUE(e) << name;
    EXPECT_EQ((*e)["type"], "ADDED");
    EXPECT_EQ((*e)["object"]["metadata"]["name"], name);
  }
  ASSERT_EQ(create(kServices, service("c")).code, 201);
  auto e = w.next();
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["type"], "ADDED");
  EXPECT_EQ((*e)["object"]["metadata"]["name"], "c");
}

TEST_F(ApiServerTest, WatchWithSelectorSeesObjectsLeaveAndEnter) {
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  std::string rv = list_rv(kServices);
  WatchStream w(port_,
                "/api/v1/services?watch=1&labelSelector=%21service.kubernetes.io%2Fservice-proxy-name"
                "&resourceVersion=" +
                    rv);
  Json svc = call(port_, "GET", std::string(kServices) + "/web").json();
  svc["metadata"]["labels"] = {{"service.kubernetes.io/service-proxy-name", "other"}};
  svc = call(port_, "PUT", std::string(kServices) + "/web", svc.dump()).json();
  svc["metadata"]["labels"] = Json::object();
  ASSERT_EQ(call(port_, "PUT", std::string(kServices) + "/web", svc.dump()).code, 200);
  for (const char* type : {"DELETED", "ADDED"}) {
    auto e = w.next();
    ASSERT_TRUE(e) << type;
    EXPECT_EQ((*e)["type"], type);
  }
}

TEST_F(ApiServerTest, WatchChunksDoNotAlignWithEvents) {
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "burst"}}}}).code, 201);
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(create("/api/v1/namespaces/burst/services", service("b" + std::to_string(i), "burst")).code,
              201);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  // One event at a time...
  for (int i = 0; i < 30; ++i) ASSERT_EQ(create(kServices, service("s" + std::to_string(i))).code, 201);
  // ...and a burst: deleting the namespace deletes its ten Services at once.
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/burst").code, 200);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(w.next()) << i;
  bool split_event = false, shared_chunk = false;
  for (const auto& c : w.chunks()) {
    split_event = split_event || c.back() != '\n';
    size_t newlines = std::count(c.begin(), c.end(), '\n');
    shared_chunk = shared_chunk || newlines > 1 || (newlines == 1 && c.back() != '\n');
  }
  EXPECT_TRUE(split_event) << "no event was split over two chunks";
  EXPECT_TRUE(shared_chunk) << "no chunk held parts of two events";
}

TEST_F(ApiServerTest, AlignedChunksWhenSplittingIsOff) {
  Options o;
  o.split_watch_chunks = false;
  start(o);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  for (int i = 0; i < 5; ++i) ASSERT_EQ(create(kServices, service("s" + std::to_string(i))).code, 201);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(w.next());
  for (const auto& c : w.chunks()) EXPECT_EQ(c.back(), '\n');
}

TEST_F(ApiServerTest, Bookmarks) {
  Options o;
  o.bookmark_interval = 100ms;
  start(o);
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  std::string rv = list_rv(kServices);
  WatchStream w(port_, "/api/v1/services?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv);
  ASSERT_EQ(create("/api/v1/nodes", node("node-a")).code, 201);  // moves the revision, not a Service
  auto b = w.next_of("BOOKMARK", 2s);
  ASSERT_TRUE(b);
  Json obj = (*b)["object"];
  EXPECT_EQ(obj["kind"], "Service");
  EXPECT_EQ(obj["apiVersion"], "v1");
  EXPECT_EQ(obj.size(), 3u) << obj.dump();
  EXPECT_EQ(obj["metadata"].size(), 1u) << obj.dump();
  EXPECT_GE(std::stoull(obj["metadata"]["resourceVersion"].get<std::string>()), std::stoull(rv));
  EXPECT_TRUE(w.skipped.empty());
  // Without allowWatchBookmarks: none.
  WatchStream quiet(port_, "/api/v1/services?watch=1&resourceVersion=" + rv);
  EXPECT_FALSE(quiet.next(400ms));
}

TEST_F(ApiServerTest, CompactedVersionIsRefusedUpFront) {
  Options o;
  o.compaction_window = 5;
  start(o);
  std::string first = create(kServices, service("s0")).json()["metadata"]["resourceVersion"];
  for (int i = 1; i < 10; ++i) ASSERT_EQ(create(kServices, service("s" + std::to_string(i))).code, 201);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + first);
  ASSERT_EQ(w.code(), 410);
  RawConnection c(port_);
  c.send_request("GET", "/api/v1/services?watch=1&resourceVersion=" + first);
  auto r = c.read_response();
  expect_status(r, 410, "Expired");
  EXPECT_NE(r.json()["message"].get<std::string>().find("too old resource version: " + first),
            std::string::npos);
  // The latest version is fine.
  WatchStream ok(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  EXPECT_EQ(ok.code(), 200);
}

TEST_F(ApiServerTest, CompactionOvertakingAWatchSendsError410) {
  std::string rv = list_rv(kServices);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + rv);
  ASSERT_EQ(w.code(), 200);
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/compact?expireWatches=true").code, 200);
  auto e = w.next_of("ERROR");
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["object"]["kind"], "Status");
  EXPECT_EQ((*e)["object"]["code"], 410);
  EXPECT_EQ((*e)["object"]["reason"], "Expired");
  EXPECT_FALSE(w.next());
  EXPECT_TRUE(w.ended());
  // The compacted version is now refused up front.
  WatchStream again(port_, "/api/v1/services?watch=1&resourceVersion=" + rv);
  EXPECT_EQ(again.code(), 410);
}

TEST_F(ApiServerTest, CaughtUpWatchSurvivesCompactionByOtherKinds) {
  Options o;
  o.compaction_window = 3;
  start(o);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  for (int i = 0; i < 10; ++i) ASSERT_EQ(create("/api/v1/nodes", node("n" + std::to_string(i))).code, 201);
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  auto e = w.next();
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["type"], "ADDED") << e->dump();
}

TEST_F(ApiServerTest, WatchEndsAfterTimeoutSeconds) {
  auto t0 = Clock::now();
  WatchStream w(port_, "/api/v1/services?watch=1&timeoutSeconds=1&resourceVersion=" + list_rv(kServices));
  ASSERT_EQ(w.code(), 200);
  EXPECT_FALSE(w.next(3s));
  EXPECT_TRUE(w.ended());
  EXPECT_FALSE(w.broken());
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 2500ms);
}

TEST_F(ApiServerTest, DroppedWatchBreaksMidEvent) {
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  ASSERT_EQ(create(kServices, service("web")).code, 201);
  ASSERT_TRUE(w.next());
  auto r = call(port_, "POST", "/kpx/faults/drop-watches");
  ASSERT_EQ(r.code, 200);
  EXPECT_EQ(r.json()["dropped"], 1);
  EXPECT_FALSE(w.next());
  EXPECT_TRUE(w.broken());
  EXPECT_FALSE(w.ended());
  std::string torn = w.torn();
  EXPECT_FALSE(torn.empty());
  EXPECT_EQ(torn.find('\n'), std::string::npos) << torn;
  EXPECT_EQ(torn.front(), '{') << torn;
}

// ---- faults -----------------------------------------------------------------------

TEST_F(ApiServerTest, Injected429CarriesRetryAfter) {
  auto r =
      call(port_, "POST", "/kpx/faults/respond?code=429&count=2&retryAfter=3&pathPrefix=/api/v1/services");
  ASSERT_EQ(r.code, 200) << r.body;
  EXPECT_EQ(call(port_, "GET", "/api/v1/nodes").code, 200);  // another path: untouched
  for (int i = 0; i < 2; ++i) {
    auto limited = call(port_, "GET", "/api/v1/services");
    expect_status(limited, 429, "TooManyRequests");
    EXPECT_EQ(limited.headers["retry-after"], "3");
    EXPECT_EQ(limited.json()["details"]["retryAfterSeconds"], 3);
  }
  EXPECT_EQ(call(port_, "GET", "/api/v1/services").code, 200);
}

TEST_F(ApiServerTest, InjectedErrorsAndClear) {
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/respond?code=500").code, 200);
  expect_status(call(port_, "GET", "/version"), 500, "InternalError");
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/respond?code=410&count=5&pathPrefix=/apis/").code, 200);
  expect_status(call(port_, "GET", "/apis/discovery.k8s.io/v1/endpointslices"), 410, "Expired");
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/respond?code=503&retryAfter=1").code, 200);
  EXPECT_EQ(call(port_, "GET", "/api/v1/nodes").headers["retry-after"], "1");
  ASSERT_EQ(call(port_, "DELETE", "/kpx/faults").code, 200);
  EXPECT_EQ(call(port_, "GET", "/apis/discovery.k8s.io/v1/endpointslices").code, 200);
  expect_status(call(port_, "POST", "/kpx/faults/respond?code=200"), 400, "BadRequest");
}

TEST_F(ApiServerTest, DelayedResponses) {
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/delay?ms=600").code, 200);
  auto t0 = Clock::now();
  EXPECT_EQ(call(port_, "GET", "/healthz").code, 200);
  EXPECT_GE(Clock::now() - t0, 590ms);
  // The fault endpoint itself is never delayed: turning it off is quick.
  ASSERT_EQ(call(port_, "POST", "/kpx/faults/delay?ms=0").code, 200);
  EXPECT_LT(Clock::now() - t0, 1200ms);
  t0 = Clock::now();
  EXPECT_EQ(call(port_, "GET", "/healthz").code, 200);
  EXPECT_LT(Clock::now() - t0, 500ms);
}

// ---- discovery and the rest ---------------------------------------------------------

TEST_F(ApiServerTest, Discovery) {
  Json api = call(port_, "GET", "/api").json();
  EXPECT_EQ(api["kind"], "APIVersions");
  EXPECT_EQ(api["versions"], Json::array({"v1"}));
  Json v1 = call(port_, "GET", "/api/v1").json();
  EXPECT_EQ(v1["kind"], "APIResourceList");
  EXPECT_EQ(v1["groupVersion"], "v1");
  std::map<std::string, Json> by_name;
  for (const auto& r : v1["resources"]) by_name[r["name"]] = r;
  for (const char* n : {"services", "nodes", "namespaces", "pods"}) EXPECT_TRUE(by_name.count(n)) << n;
  EXPECT_EQ(by_name["services"]["shortNames"], Json::array({"svc"}));
  EXPECT_EQ(by_name["services"]["namespaced"], true);
  EXPECT_EQ(by_name["nodes"]["namespaced"], false);
  EXPECT_EQ(by_name["services"]["kind"], "Service");
  EXPECT_NE(std::find(by_name["services"]["verbs"].begin(), by_name["services"]["verbs"].end(), "watch"),
            by_name["services"]["verbs"].end());
  Json apis = call(port_, "GET", "/apis").json();
  EXPECT_EQ(apis["kind"], "APIGroupList");
  EXPECT_EQ(apis["groups"][0]["name"], "discovery.k8s.io");
  EXPECT_EQ(apis["groups"][0]["preferredVersion"]["groupVersion"], "discovery.k8s.io/v1");
  Json disc = call(port_, "GET", "/apis/discovery.k8s.io/v1").json();
  EXPECT_EQ(disc["resources"][0]["name"], "endpointslices");
  EXPECT_EQ(disc["resources"][0]["kind"], "EndpointSlice");
  EXPECT_EQ(call(port_, "GET", "/version").json()["gitVersion"].get<std::string>().rfind("v1.32.", 0), 0u);
  for (const char* p : {"/healthz", "/readyz", "/livez"}) {
    auto r = call(port_, "GET", p);
    EXPECT_EQ(r.code, 200);
    EXPECT_EQ(r.body, "ok");
  }
}

TEST_F(ApiServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  RawConnection c(port_);
  for (int i = 0; i < 3; ++i) {
    c.send_request("GET", "/api/v1/namespaces/default");
    auto r = c.read_response();
    EXPECT_EQ(r.code, 200);
    EXPECT_EQ(r.json()["metadata"]["name"], "default");
  }
}

TEST_F(ApiServerTest, DeletingANamespaceDeletesItsObjects) {
  ASSERT_EQ(create("/api/v1/namespaces", Json{{"metadata", {{"name", "team"}}}}).code, 201);
  ASSERT_EQ(create("/api/v1/namespaces/team/services", service("web", "team")).code, 201);
  WatchStream w(port_, "/api/v1/services?watch=1&resourceVersion=" + list_rv(kServices));
  ASSERT_EQ(call(port_, "DELETE", "/api/v1/namespaces/team").code, 200);
  auto e = w.next();
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["type"], "DELETED");
  expect_status(call(port_, "GET", "/api/v1/namespaces/team/services/web"), 404, "NotFound");
}

TEST(ApiServerListen, OnlyLoopbackUnlessAllowed) {
  EXPECT_TRUE(parse_listen_address("127.0.0.1:0", false).ok());
  EXPECT_TRUE(parse_listen_address("127.0.0.2:6443", false).ok());
  EXPECT_TRUE(parse_listen_address("[::1]:6443", false).ok());
  EXPECT_TRUE(parse_listen_address("localhost:0", false).ok());
  for (const char* bad : {"0.0.0.0:6443", ":6443", "10.1.2.3:80", "[::]:80"}) {
    auto r = parse_listen_address(bad, false);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("not a loopback address"), std::string::npos) << r.error().message;
    EXPECT_TRUE(parse_listen_address(bad, true).ok()) << bad;
  }
  EXPECT_FALSE(parse_listen_address("127.0.0.1", false).ok());
  EXPECT_FALSE(parse_listen_address("127.0.0.1:99999", false).ok());
  EXPECT_FALSE(parse_listen_address("example.com:80", true).ok());
}

}  // namespace
}  // namespace kpx::apiserver
