// The lab's EndpointSlice controller: the pure planning (endpoints, ports,
// slice placement) on crafted objects, and the controller following a real
// in-memory store as the lab daemon runs it.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include "apiserver/graceful_delete.h"
#include "apiserver/resources.h"
#include "apiserver/store.h"
#include "lab/endpointslice_controller.h"
#include "lab/endpointslices.h"

namespace kpx::lab {
namespace {

using apiserver::ObjectKey;
using namespace std::chrono_literals;

Json service(const std::string& name, Json selector, Json ports = nullptr) {
  if (ports.is_null()) ports = Json::array({{{"name", "http"}, {"protocol", "TCP"}, {"port", 80}, {"targetPort", 8080}}});
  Json spec = {{"clusterIP", "10.96.0.20"}, {"ports", ports}};
  if (!selector.is_null()) spec["selector"] = selector;
  return {{"kind", "Service"},
          {"apiVersion", "v1"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "svc-uid-" + name}}},
          {"spec", spec}};
}

Json pod(const std::string& name, const std::string& ip, bool ready, const std::string& node = "node-1",
         Json labels = {{"app", "web"}}) {
  Json p = {{"kind", "Pod"},
            {"apiVersion", "v1"},
            {"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}, {"labels", labels}}},
            {"spec",
             {{"nodeName", node},
              {"restartPolicy", "Always"},
              {"containers",
               {{{"name", "echo"},
                 {"ports", {{{"name", "web"}, {"containerPort", 8080}, {"protocol", "TCP"}},
                            {{"name", "dns"}, {"containerPort", 5353}, {"protocol", "UDP"}}}}}}}}},
            {"status",
             {{"phase", "Running"},
              {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
  if (!ip.empty()) p["status"]["podIP"] = ip;
  return p;
}

std::vector<ObjectPtr> ptrs(const std::vector<Json>& objs) {
  std::vector<ObjectPtr> out;
  for (const auto& o : objs) out.push_back(std::make_shared<const Json>(o));
  return out;
}

// ---- pure parts ------------------------------------------------------------------

TEST(PodEndpoint, ConditionsFollowReadinessAndTermination) {
  Json svc = service("web", {{"app", "web"}});
  auto ready = pod_endpoint(svc, pod("a", "10.244.1.5", true), "zone-a");
  ASSERT_TRUE(ready);
  EXPECT_EQ(*ready, Json::parse(R"({"addresses":["10.244.1.5"],
    "conditions":{"ready":true,"serving":true,"terminating":false},
    "targetRef":{"kind":"Pod","namespace":"default","name":"a","uid":"uid-a"},
    "nodeName":"node-1","zone":"zone-a"})"));

  auto not_ready = pod_endpoint(svc, pod("b", "10.244.1.6", false), "");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ((*not_ready)["conditions"], Json::parse(R"({"ready":false,"serving":false,"terminating":false})"));
  EXPECT_FALSE(not_ready->contains("zone"));

  Json leaving = pod("c", "10.244.1.7", true);
  leaving["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z";
  EXPECT_EQ((*pod_endpoint(svc, leaving, ""))["conditions"],
            Json::parse(R"({"ready":false,"serving":true,"terminating":true})"));

  Json publish = svc;
  publish["spec"]["publishNotReadyAddresses"] = true;
  EXPECT_EQ((*pod_endpoint(publish, pod("b", "10.244.1.6", false), ""))["conditions"]["ready"], true);

  EXPECT_FALSE(pod_endpoint(svc, pod("d", "", true), "")) << "no IP yet";
  Json finished = pod("e", "10.244.1.8", false);
  finished["spec"]["restartPolicy"] = "Never";
  finished["status"]["phase"] = "Succeeded";
  EXPECT_FALSE(pod_endpoint(svc, finished, ""));
  finished["spec"]["restartPolicy"] = "Always";
  EXPECT_TRUE(pod_endpoint(svc, finished, ""));

  Json named = pod("f", "10.244.1.9", true);
  named["spec"]["hostname"] = "f0";
  named["spec"]["subdomain"] = "web";
  EXPECT_EQ((*pod_endpoint(svc, named, ""))["hostname"], "f0");
}

TEST(PodEndpoint, SelectorMustMatchEveryLabel) {
  Json svc = service("web", {{"app", "web"}, {"tier", "front"}});
  EXPECT_FALSE(selects(svc, pod("a", "10.244.1.5", true)));
  EXPECT_TRUE(selects(svc, pod("a", "10.244.1.5", true, "n", {{"app", "web"}, {"tier", "front"}, {"x", "y"}})));
  EXPECT_FALSE(selects(service("none", nullptr), pod("a", "10.244.1.5", true)));
  EXPECT_FALSE(has_managed_slices(service("none", nullptr)));
  EXPECT_FALSE(has_managed_slices(service("empty", Json::object())));
}

TEST(EndpointPorts, TargetPortsByNumberAndByName) {
  Json ports = Json::parse(R"([
    {"name":"http","protocol":"TCP","port":80,"targetPort":"web"},
    {"name":"metrics","protocol":"TCP","port":9090,"targetPort":9100},
    {"name":"dns","protocol":"UDP","port":53,"targetPort":"dns"},
    {"name":"wrong-proto","protocol":"TCP","port":54,"targetPort":"dns"},
    {"name":"default","port":81}])");
  Json svc = service("web", {{"app", "web"}}, ports);
  EXPECT_EQ(endpoint_ports(svc, pod("a", "10.244.1.5", true)), Json::parse(R"([
    {"name":"http","protocol":"TCP","port":8080},
    {"name":"metrics","protocol":"TCP","port":9100},
    {"name":"dns","protocol":"UDP","port":5353},
    {"name":"default","protocol":"TCP","port":81}])"));
}

TEST(PlanEndpointSlices, HundredPerSliceThenNoChurn) {
  Json svc = service("web", {{"app", "web"}});
  std::vector<Json> pods;
  for (int i = 0; i < 205; ++i)
    pods.push_back(pod("p" + std::to_string(i), "10.244." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1), true));
  auto plan = plan_endpoint_slices(svc, ptrs(pods), {}, nullptr, 100, "2024-05-01T12:00:00Z");
  ASSERT_EQ(plan.create.size(), 3u);
  EXPECT_TRUE(plan.update.empty() && plan.remove.empty());
  std::set<std::string> addresses;
  std::vector<Json> stored;
  for (size_t i = 0; i < plan.create.size(); ++i) {
    Json s = plan.create[i];
    EXPECT_EQ(s["metadata"]["generateName"], "web-");
    EXPECT_EQ(s["metadata"]["labels"][kServiceNameLabel], "web");
    EXPECT_EQ(s["metadata"]["labels"][kManagedByLabel], "endpointslice-controller.k8s.io");
    EXPECT_EQ(s["metadata"]["annotations"][kTriggerTimeAnnotation], "2024-05-01T12:00:00Z");
    EXPECT_EQ(s["metadata"]["ownerReferences"][0]["uid"], "svc-uid-web");
    EXPECT_EQ(s["addressType"], "IPv4");
    EXPECT_EQ(s["ports"], Json::parse(R"([{"name":"http","protocol":"TCP","port":8080}])"));
    EXPECT_LE(s["endpoints"].size(), 100u);
    for (const auto& ep : s["endpoints"]) EXPECT_TRUE(addresses.insert(ep["addresses"][0]).second);
    s["metadata"]["name"] = "web-" + std::to_string(i);
    stored.push_back(s);
  }
  EXPECT_EQ(addresses.size(), 205u);

  // The same state again: nothing to write.
  EXPECT_TRUE(plan_endpoint_slices(svc, ptrs(pods), ptrs(stored), nullptr, 100, "later").empty());

  // One pod gone: one slice updated, the others untouched.
  std::string gone = pods[150]["status"]["podIP"];
  pods.erase(pods.begin() + 150);
  auto one = plan_endpoint_slices(svc, ptrs(pods), ptrs(stored), nullptr, 100, "later");
  ASSERT_EQ(one.update.size(), 1u);
  EXPECT_TRUE(one.create.empty() && one.remove.empty());
  EXPECT_EQ(one.update[0].second["metadata"]["annotations"][kTriggerTimeAnnotation], "later");
  EXPECT_EQ(one.update[0].second["endpoints"].size() + 1, one.update[0].first->at("endpoints").size());
  EXPECT_EQ(one.update[0].second["endpoints"].dump().find(gone), std::string::npos);
}

TEST(PlanEndpointSlices, PortSetsGetTheirOwnSlicesAndNoPodsAPlaceholder) {
  Json ports = Json::parse(R"([{"name":"http","protocol":"TCP","port":80,"targetPort":"web"}])");
  Json svc = service("web", {{"app", "web"}}, ports);
  Json other = pod("b", "10.244.1.6", true);
  other["spec"]["containers"][0]["ports"][0]["containerPort"] = 9000;
  auto plan = plan_endpoint_slices(svc, ptrs({pod("a", "10.244.1.5", true), other}), {}, nullptr, 100, "t");
  ASSERT_EQ(plan.create.size(), 2u);
  std::set<int> targets;
  for (const auto& s : plan.create) {
    EXPECT_EQ(s["endpoints"].size(), 1u);
    targets.insert(s["ports"][0]["port"].get<int>());
  }
  EXPECT_EQ(targets, (std::set<int>{8080, 9000}));

  auto empty = plan_endpoint_slices(svc, {}, {}, nullptr, 100, "t");
  ASSERT_EQ(empty.create.size(), 1u);
  EXPECT_TRUE(empty.create[0]["endpoints"].empty());
  EXPECT_TRUE(empty.create[0]["ports"].empty());
  Json placeholder = empty.create[0];
  placeholder["metadata"]["name"] = "web-x";
  EXPECT_TRUE(plan_endpoint_slices(svc, {}, ptrs({placeholder}), nullptr, 100, "t").empty());
  // Endpoints arrive: the placeholder goes, a real slice comes.
  auto filled = plan_endpoint_slices(svc, ptrs({pod("a", "10.244.1.5", true)}), ptrs({placeholder}), nullptr, 100, "t");
  EXPECT_EQ(filled.create.size(), 1u);
  ASSERT_EQ(filled.remove.size(), 1u);
  EXPECT_EQ((*filled.remove[0])["metadata"]["name"], "web-x");
}

TEST(Rfc3339Nano, TrailingZerosDropped) {
  auto t = std::chrono::system_clock::from_time_t(1714564800);
  EXPECT_EQ(rfc3339_nano(t), "2024-05-01T12:00:00Z");
  EXPECT_EQ(rfc3339_nano(t + 120ms), "2024-05-01T12:00:00.12Z");
  EXPECT_EQ(rfc3339_nano(t + 1ns), "2024-05-01T12:00:00.000000001Z");
}

// ---- the controller on a store ---------------------------------------------------------

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.create(apiserver::namespaces_type(), Json{{"metadata", {{"name", "default"}}}}).ok());
    auto c = EndpointSliceController::start(store_);
    ASSERT_TRUE(c.ok()) << c.error().message;
    controller_ = std::move(*c);
  }
  void TearDown() override { controller_.reset(); }

  const apiserver::ResourceType& t(const char* group, const char* name) {
    return *apiserver::find_resource(group, "v1", name);
  }
  void put(const char* group, const char* name, const Json& obj) {
    const auto& type = t(group, name);
    ObjectKey key{obj["metadata"]["namespace"], obj["metadata"]["name"]};
    if (store_.get(type, key).ok()) {
      ASSERT_TRUE(store_.update(type, key, [&](const Json&) -> apiserver::ApiResult<Json> { return obj; }).ok());
    } else {
      ASSERT_TRUE(store_.create(type, obj).ok());
    }
  }
  void remove(const char* group, const char* name, const std::string& obj_name) {
    ASSERT_TRUE(store_.remove(t(group, name), ObjectKey{"default", obj_name}, {}).ok());
  }
  std::vector<Json> slices_of(const std::string& svc) {
    auto sel = apiserver::LabelSelector::parse(std::string(kServiceNameLabel) + "=" + svc);
    auto page = store_.list(t("discovery.k8s.io", "endpointslices"), "default", apiserver::Selector{*sel, {}}, 0,
                            std::nullopt, std::nullopt);
    std::vector<Json> out;
    for (const auto& p : page->items) out.push_back(*p);
    return out;
  }
  // Endpoints of the Service's slices by address.
  std::map<std::string, Json> endpoints_of(const std::string& svc) {
    std::map<std::string, Json> out;
    for (const auto& s : slices_of(svc))
      for (const auto& ep : s["endpoints"]) out[ep["addresses"][0]] = ep;
    return out;
  }
  bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 5s) {
    for (auto end = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < end;) {
      if (cond()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return cond();
  }

  apiserver::Store store_{100000};
  std::unique_ptr<EndpointSliceController> controller_;
};

TEST_F(ControllerTest, FollowsPodsThroughReadinessAndGracefulDeletion) {
  put("", "pods", pod("a", "10.244.1.5", true));
  put("", "pods", pod("b", "10.244.2.5", false, "node-2"));
  put("", "pods", pod("c", "", false));                                           // no IP yet
  put("", "pods", pod("other", "10.244.1.9", true, "node-1", {{"app", "db"}}));  // not selected
  auto before = std::chrono::system_clock::now();
  put("", "services", service("web", {{"app", "web"}}));
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 2; })) << slices_of("web").size();
  auto slices = slices_of("web");
  ASSERT_EQ(slices.size(), 1u);
  Json s = slices[0];
  EXPECT_EQ(s["metadata"]["name"].get<std::string>().rfind("web-", 0), 0u);
  EXPECT_EQ(s["metadata"]["ownerReferences"][0]["kind"], "Service");
  auto trigger = s["metadata"]["annotations"][kTriggerTimeAnnotation].get<std::string>();
  auto trigger_time = apiserver::parse_rfc3339(trigger.substr(0, 19) + "Z");
  ASSERT_TRUE(trigger_time) << trigger;
  EXPECT_GE(*trigger_time, std::chrono::time_point_cast<std::chrono::seconds>(before) - 1s) << trigger;
  auto eps = endpoints_of("web");
  EXPECT_EQ(eps["10.244.1.5"]["conditions"]["ready"], true);
  EXPECT_EQ(eps["10.244.2.5"]["conditions"]["ready"], false);
  EXPECT_EQ(eps["10.244.2.5"]["nodeName"], "node-2");

  // c gets its IP and becomes ready.
  put("", "pods", pod("c", "10.244.1.6", true));
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 3; }));
  EXPECT_EQ(endpoints_of("web")["10.244.1.6"]["conditions"]["ready"], true);

  // a is deleted gracefully: listed as terminating (serving) until removed.
  const auto& pods = t("", "pods");
  auto now = std::chrono::system_clock::now();
  ASSERT_TRUE(store_
                  .remove(pods, ObjectKey{"default", "a"}, {},
                          [&](const Json& p) { return apiserver::pod_graceful_delete(p, 30, now); })
                  .ok());
  ASSERT_TRUE(eventually([&] { return endpoints_of("web")["10.244.1.5"]["conditions"]["terminating"] == true; }));
  EXPECT_EQ(endpoints_of("web")["10.244.1.5"]["conditions"]["ready"], false);
  EXPECT_EQ(endpoints_of("web")["10.244.1.5"]["conditions"]["serving"], true);
  remove("", "pods", "a");
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").count("10.244.1.5") == 0; }));
  EXPECT_EQ(endpoints_of("web").size(), 2u);

  // The Service goes: so do its slices.
  remove("", "services", "web");
  ASSERT_TRUE(eventually([&] { return slices_of("web").empty(); }));
}

TEST_F(ControllerTest, WritesOnlyWhatChanged) {
  put("", "pods", pod("a", "10.244.1.5", true));
  put("", "services", service("web", {{"app", "web"}}));
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 1; }));
  std::this_thread::sleep_for(300ms);
  uint64_t writes = controller_->writes();
  std::string rv = slices_of("web")[0]["metadata"]["resourceVersion"];
  // Changes that do not move any endpoint: a label the selector ignores, a
  // Pod that is not selected, an annotation on the Service.
  Json a = pod("a", "10.244.1.5", true, "node-1", {{"app", "web"}, {"extra", "x"}});
  put("", "pods", a);
  put("", "pods", pod("other", "10.244.1.9", true, "node-1", {{"app", "db"}}));
  Json svc = *store_.get(t("", "services"), ObjectKey{"default", "web"}).value();
  svc["metadata"]["annotations"] = {{"note", "n"}};
  put("", "services", svc);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(controller_->writes(), writes);
  EXPECT_EQ(slices_of("web")[0]["metadata"]["resourceVersion"], rv);
}

TEST_F(ControllerTest, ServicesWithoutSelectorsAreLeftAlone) {
  Json user_slice = {{"kind", "EndpointSlice"},
                     {"apiVersion", "discovery.k8s.io/v1"},
                     {"metadata", {{"name", "ext-1"}, {"namespace", "default"}, {"labels", {{kServiceNameLabel, "ext"}}}}},
                     {"addressType", "IPv4"},
                     {"endpoints", {{{"addresses", {"192.0.2.1"}}}}},
                     {"ports", {{{"name", "http"}, {"port", 80}, {"protocol", "TCP"}}}}};
  put("discovery.k8s.io", "endpointslices", user_slice);
  put("", "services", service("ext", nullptr));
  put("", "pods", pod("a", "10.244.1.5", true));
  put("", "services", service("web", {{"app", "web"}}));
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 1; }));
  auto ext = slices_of("ext");
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0]["metadata"]["name"], "ext-1");
  EXPECT_EQ(ext[0]["endpoints"][0]["addresses"][0], "192.0.2.1");
  remove("", "services", "ext");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(slices_of("ext").size(), 1u) << "a user's slice is not the controller's to delete";
}

TEST_F(ControllerTest, ManySlicesAndRepairs) {
  for (int i = 0; i < 250; ++i)
    put("", "pods", pod("p" + std::to_string(i), "10.244." + std::to_string(i / 100) + "." + std::to_string(i % 100 + 1), true));
  Json headless = service("web", {{"app", "web"}});
  headless["spec"]["clusterIP"] = "None";
  put("", "services", headless);
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 250; }));
  auto slices = slices_of("web");
  ASSERT_EQ(slices.size(), 3u);
  for (const auto& s : slices) {
    EXPECT_LE(s["endpoints"].size(), 100u);
    EXPECT_EQ(s["metadata"]["labels"][kHeadlessLabel], "");
  }
  // Someone deletes a managed slice: the controller puts its endpoints back.
  ASSERT_TRUE(store_.remove(t("discovery.k8s.io", "endpointslices"),
                            ObjectKey{"default", slices[0]["metadata"]["name"]}, {})
                  .ok());
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 250; }));
  // Events compacted away under it: it looks at everything again.
  store_.set_compaction_window(1);
  for (int i = 0; i < 50; ++i) remove("", "pods", "p" + std::to_string(i));
  ASSERT_TRUE(eventually([&] { return endpoints_of("web").size() == 200; }));
}

TEST(EndpointSliceControllerStart, RefusesBadOptionsAndStopsTwice) {
  apiserver::Store store(100);
  EXPECT_FALSE(EndpointSliceController::start(store, {0}).ok());
  EXPECT_FALSE(EndpointSliceController::start(store, {1001}).ok());
  auto c = EndpointSliceController::start(store);
  ASSERT_TRUE(c.ok());
  (*c)->stop();
  (*c)->stop();
}

}  // namespace
}  // namespace kpx::lab
