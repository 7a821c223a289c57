// `kpx agent` against `kpx apiserver`: the pinned maps follow the API,
// converge after each injected fault, are never emptied on an error, and
// are left exactly as they are across an agent restart.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cpprest/http_client.h>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "lab/cgroup.h"
#include "net/ports.h"
#include "bpf/pinned_maps.h"
#include "dataplane/service_writer.h"
#include "k8s/client.h"
#include "support/scoped.h"

namespace kpx::e2e {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;


bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

json service(const std::string& name, const std::string& ip, int port = 80) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"type", "ClusterIP"},
            {"clusterIP", ip},
            {"clusterIPs", {ip}},
            {"ports", {{{"name", "http"}, {"port", port}, {"protocol", "TCP"}, {"targetPort", 8080}}}}}}};
}

json slice(const std::string& name, const std::string& svc, const std::vector<std::string>& addrs) {
  json eps = json::array();
  for (const auto& a : addrs) eps.push_back({{"addresses", {a}}, {"conditions", {{"ready", true}}}});
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", "IPv4"},
          {"endpoints", eps},
          {"ports", {{{"name", "http"}, {"port", 8080}, {"protocol", "TCP"}}}}};
}

// What the maps hold: "VIP:PORT/PROTO" -> "slot_base|backend,backend" (a
// rewrite of a Service moves it to a new slot range).
std::map<std::string, std::string> snapshot(const std::string& pin_dir) {
  std::map<std::string, std::string> out;
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return out;
  dataplane::ServiceWriter w(*maps);
  for (const auto& e : w.list()) {
    std::string v = std::to_string(e.slot_base) + "|";
    for (const auto& b : e.backends) v += net::format(b) + ",";
    out[net::format(e.svc)] = v;
  }
  return out;
}

std::string backends_of(const std::map<std::string, std::string>& snap, const std::string& svc) {
  auto it = snap.find(svc);
  if (it == snap.end()) return "<none>";
  return it->second.substr(it->second.find('|') + 1);
}

int http_get(uint16_t port, const std::string& path, std::string* body = nullptr) {
  try {
    web::http::client::http_client c("http://127.0.0.1:" + std::to_string(port));
    auto r = c.request(web::http::methods::GET, path).get();
    if (body) *body = r.extract_utf8string(true).get();
    return r.status_code();
  } catch (...) {
    return 0;
  }
}

// One sample's value in the /metrics text ("" labels: the bare name), or -1.
double metric(uint16_t metrics_port, const std::string& series) {
  std::string text;
  if (http_get(metrics_port, "/metrics", &text) != 200) return -1;
  auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

// The agent reported a successful sync (its /healthz is 200 from the start).
bool synced(uint16_t metrics_port) {
  return metric(metrics_port, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}") > 0;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "agent tests need root (BPF maps)";
    api_port = net::free_loopback_port();
    api = "http://127.0.0.1:" + std::to_string(api_port);
    procs.spawn({KPX_BINARY, "apiserver", "--listen", "127.0.0.1:" + std::to_string(api_port),
                 "--bookmark-interval-ms", "500"});
    k8s::ClientConfig cfg;
    cfg.server = api;
    auto c = k8s::Client::create(cfg);
    ASSERT_TRUE(c.ok());
    client = std::move(*c);
    ASSERT_TRUE(wait_for([&] { return client->version().ok(); }, 5s)) << "kpx apiserver did not come up";
    (void)client->send("POST", "/api/v1/namespaces", {{"metadata", {{"name", "default"}}}});
  }

  int start_agent(const std::vector<std::string>& extra = {}) { return start_agent_at(api, extra); }
  // `extra` may name its own --healthz-bind-address (healthz_port is then 0).
  int start_agent_at(const std::string& master, const std::vector<std::string>& extra = {}) {
    const bool own_healthz = std::find(extra.begin(), extra.end(), "--healthz-bind-address") != extra.end();
    healthz_port = own_healthz ? 0 : net::free_loopback_port();
    metrics_port = net::free_loopback_port();
    std::vector<std::string> args = {KPX_BINARY, "agent", "--master", master, "--pin-dir", pins.path(),
                                     "--hostname-override", "node-1", "--min-sync-period", "10ms",
                                     "--metrics-bind-address", "127.0.0.1:" + std::to_string(metrics_port)};
    if (!own_healthz) {
      args.push_back("--healthz-bind-address");
      args.push_back("127.0.0.1:" + std::to_string(healthz_port));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return agents.spawn(args);
  }
  json config_show() {
    std::string out = testing::sh_out(std::string(KPX_BINARY) + " --pin-dir " + pins.path() + " config show -o json");
    json j = json::parse(out, nullptr, false);
    return j.is_object() ? j : json::object();  // {} before the agent made the maps
  }
  void stop_agent(int pid) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "agent exit status " << status;
  }

  void create(const std::string& path, const json& obj) {
    auto r = client->send("POST", path, obj);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
  }
  void put(const std::string& path, json obj) {
    auto cur = client->get(path);
    ASSERT_TRUE(cur.ok()) << cur.error().to_string();
    obj["metadata"]["resourceVersion"] = (*cur)["metadata"]["resourceVersion"];
    auto r = client->send("PUT", path, obj);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
  }
  void fault(const std::string& what) {
    auto r = client->send("POST", "/kpx/faults/" + what, nullptr);
    ASSERT_TRUE(r.ok()) << what << ": " << r.error().to_string();
  }

  static constexpr const char* kSvcPath = "/api/v1/namespaces/default/services";
  static constexpr const char* kSlicePath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

  testing::ScopedPinDir pins;
  testing::ScopedProcesses procs;
  uint16_t api_port = 0, healthz_port = 0, metrics_port = 0;
  std::string api;
  std::unique_ptr<k8s::Client> client;
  testing::ScopedProcesses agents;  // destroyed before procs: agents stop before the API server
};

TEST_F(AgentTest, ProgramsAndRemovesServicesWithinASecond) {
  start_agent();
  create(kSvcPath, service("web", "10.96.0.50"));
  create(kSlicePath, slice("web-1", "web", {"10.244.1.5", "10.244.2.6"}));
  EXPECT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") ==
                                    "10.244.1.5:8080,10.244.2.6:8080,"; }, 1s))
      << backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP");
  // An endpoint goes away.
  put(std::string(kSlicePath) + "/web-1", slice("web-1", "web", {"10.244.2.6"}));
  EXPECT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") == "10.244.2.6:8080,"; }, 1s));
  ASSERT_TRUE(client->send("DELETE", std::string(kSvcPath) + "/web", nullptr).ok());
  EXPECT_TRUE(wait_for([&] { return snapshot(pins.path()).empty(); }, 1s));
}

TEST_F(AgentTest, KubectlCreatesAndDeletesAgainstTheApiServer) {
  start_agent();
  char dir[] = "/tmp/kpx-kubectl-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string d = dir;
  std::ofstream(d + "/svc.json") << service("db", "10.96.0.60", 5432).dump();
  std::ofstream(d + "/slice.json") << slice("db-1", "db", {"10.244.3.7"}).dump();
  std::string kubectl = "kubectl --server " + api + " ";
  EXPECT_EQ(testing::sh(kubectl + "create --validate=false -f " + d + "/svc.json -f " + d + "/slice.json >/dev/null"), 0);
  EXPECT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.60:5432/TCP") == "10.244.3.7:8080,"; }, 1s));
  EXPECT_EQ(testing::sh(kubectl + "delete -f " + d + "/svc.json -f " + d + "/slice.json >/dev/null"), 0);
  EXPECT_TRUE(wait_for([&] { return snapshot(pins.path()).empty(); }, 1s));
  testing::sh("rm -rf " + d);
}

TEST_F(AgentTest, ConvergesAfterEveryFaultAndNeverEmptiesTheMaps) {
  constexpr int kServices = 20;
  for (int i = 0; i < kServices; ++i) {
    create(kSvcPath, service("s" + std::to_string(i), "10.96.1." + std::to_string(i + 1)));
    create(kSlicePath, slice("s" + std::to_string(i) + "-1", "s" + std::to_string(i), {"10.244.1." + std::to_string(i + 1)}));
  }
  start_agent();
  ASSERT_TRUE(wait_for([&] { return snapshot(pins.path()).size() == kServices; }, 2s));

  // Watch the maps the whole time: the Service count must never drop.
  std::atomic<bool> stop{false};
  std::atomic<size_t> min_seen{kServices};
  std::thread watcher([&] {
    while (!stop) {
      size_t n = snapshot(pins.path()).size();
      if (n < min_seen) min_seen = n;
      std::this_thread::sleep_for(2ms);
    }
  });

  int round = 0;
  auto change_and_converge = [&](const std::string& after) {
    ++round;
    std::string addr = "10.244.9." + std::to_string(round);
    put(std::string(kSlicePath) + "/s0-1", slice("s0-1", "s0", {addr}));
    EXPECT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.1.1:80/TCP") == addr + ":8080,"; }, 5s))
        << "no convergence after " << after;
  };
  fault("drop-watches");
  change_and_converge("a dropped watch");
  fault("compact?expireWatches=true");
  change_and_converge("compaction (ERROR 410 on the watch, relist)");
  // Faults aimed at the agent's cluster-wide list and watch paths only.
  const std::string slices_path = "&pathPrefix=/apis/discovery.k8s.io/v1/endpointslices";
  fault("drop-watches");
  fault("respond?code=500&count=3" + slices_path);
  change_and_converge("500s on re-watch");
  fault("drop-watches");
  fault("respond?code=429&count=2&retryAfter=1" + slices_path);
  change_and_converge("429 with Retry-After");
  fault("drop-watches");
  fault("compact");
  fault("respond?code=410&count=1" + slices_path);
  change_and_converge("410 up front on re-watch");
  stop = true;
  watcher.join();
  EXPECT_EQ(min_seen.load(), static_cast<size_t>(kServices)) << "the maps lost Services during a fault";
  EXPECT_EQ(snapshot(pins.path()).size(), static_cast<size_t>(kServices));
}

TEST_F(AgentTest, RestartLeavesEveryEntryAsItWas) {
  create(kSvcPath, service("web", "10.96.0.50"));
  create(kSlicePath, slice("web-1", "web", {"10.244.1.5", "10.244.2.6"}));
  int pid = start_agent();
  ASSERT_TRUE(wait_for([&] { return snapshot(pins.path()).size() == 1; }, 1s));
  put(std::string(kSlicePath) + "/web-1", slice("web-1", "web", {"10.244.1.5", "10.244.2.7"}));
  ASSERT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") ==
                                    "10.244.1.5:8080,10.244.2.7:8080,"; }, 1s));
  const auto before = snapshot(pins.path());
  stop_agent(pid);
  EXPECT_EQ(snapshot(pins.path()), before) << "the datapath must stay in place after SIGTERM";

  start_agent();
  ASSERT_TRUE(wait_for([&] { return synced(metrics_port); }, 3s));
  // Same entries, same generations: nothing was rewritten.
  EXPECT_EQ(snapshot(pins.path()), before);
  // And it still follows the API.
  put(std::string(kSlicePath) + "/web-1", slice("web-1", "web", {"10.244.1.5"}));
  EXPECT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") == "10.244.1.5:8080,"; }, 1s));
}

// kube-proxy's rule: healthy while starting, until a change queued after
// the first sync waits too long. An API server that answers nothing useful
// leaves the agent starting: /healthz and /livez 200, no sync reported.
TEST_F(AgentTest, HealthzAndLivezAreHealthyWhileStartingAndMetricsFollowTheFirstSync) {
  fault("respond?code=500&count=100000");  // the API answers nothing useful
  start_agent();
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz") == 200; }, 3s));
  std::this_thread::sleep_for(500ms);
  std::string body;
  EXPECT_EQ(http_get(healthz_port, "/healthz", &body), 200);
  EXPECT_EQ(json::parse(body)["nodeEligible"], true);
  EXPECT_EQ(http_get(healthz_port, "/livez", &body), 200);
  EXPECT_FALSE(json::parse(body).contains("nodeEligible"));
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"), 0)
      << "nothing synced yet";
  ASSERT_TRUE(client->send("DELETE", "/kpx/faults", nullptr).ok());
  ASSERT_TRUE(wait_for([&] { return synced(metrics_port); }, 5s));
  ASSERT_EQ(http_get(healthz_port, "/healthz", &body), 200);
  auto j = json::parse(body);
  EXPECT_EQ(j["lastUpdated"], j["currentTime"]) << "healthy: lastUpdated is now, as kube-proxy answers";
  EXPECT_GE(metric(metrics_port, "kubeproxy_proxy_healthz_total{code=\"200\"}"), 3);
  EXPECT_GE(metric(metrics_port, "kubeproxy_proxy_livez_total{code=\"200\"}"), 1);
  EXPECT_GE(
      metric(metrics_port, "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"), 1);
}

// The manifest's liveness probe must not kill an agent whose API server is
// unreachable at boot: nothing is queued, so /livez stays 200.
TEST_F(AgentTest, LivezIsHealthyWithTheApiServerUnreachable) {
  const uint16_t nobody = net::free_loopback_port();  // nothing listens there
  start_agent_at("http://127.0.0.1:" + std::to_string(nobody));
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/livez") != 0; }, 5s))
      << "the agent did not come up";
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(http_get(healthz_port, "/livez"), 200);
    EXPECT_EQ(http_get(healthz_port, "/healthz"), 200);
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"), 0);
}

json node(const std::string& name, const json& taints = json::array()) {
  return {{"apiVersion", "v1"},
          {"kind", "Node"},
          {"metadata", {{"name", name}}},
          {"spec", {{"podCIDR", "10.244.1.0/24"}, {"taints", taints}}}};
}

// kube-proxy's node eligibility: a Node tainted ToBeDeletedByClusterAutoscaler
// (or deleted) fails /healthz, so load balancers drain it, but not /livez.
TEST_F(AgentTest, HealthzFailsForANodeBeingDeletedButLivezDoesNot) {
  create("/api/v1/nodes", node("node-1"));
  start_agent();
  std::string body;
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz", &body) == 200; }, 5s));
  EXPECT_EQ(json::parse(body)["nodeEligible"], true);
  put("/api/v1/nodes/node-1", node("node-1", json::array({{{"key", "ToBeDeletedByClusterAutoscaler"},
                                                           {"value", "1714557600"},
                                                           {"effect", "NoSchedule"}}})));
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz", &body) == 503; }, 5s));
  EXPECT_EQ(json::parse(body)["nodeEligible"], false);
  EXPECT_EQ(http_get(healthz_port, "/livez"), 200);
  EXPECT_GE(metric(metrics_port, "kubeproxy_proxy_healthz_total{code=\"503\"}"), 1);
  // The autoscaler changed its mind.
  put("/api/v1/nodes/node-1", node("node-1"));
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz") == 200; }, 5s));
  // Deleted from the API.
  ASSERT_TRUE(client->send("DELETE", "/api/v1/nodes/node-1", nullptr).ok());
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz", &body) == 503; }, 5s));
  EXPECT_EQ(json::parse(body)["nodeEligible"], false);
  EXPECT_EQ(http_get(healthz_port, "/livez"), 200);
}

// The metrics server's other paths, and kube-proxy's deprecated port flags.
TEST_F(AgentTest, MetricsServerAnswersHealthzConfigzAndProxyMode) {
  const uint16_t hz = net::free_loopback_port();
  int pid = start_agent({"--healthz-bind-address", "127.0.0.1", "--healthz-port", std::to_string(hz)});
  std::string body;
  ASSERT_TRUE(wait_for([&] { return http_get(metrics_port, "/healthz", &body) == 200; }, 5s));
  EXPECT_EQ(body, "ok");
  EXPECT_EQ(http_get(metrics_port, "/proxyMode", &body), 200);
  EXPECT_EQ(body, "kpx");
  ASSERT_EQ(http_get(metrics_port, "/configz", &body), 200);
  auto cz = json::parse(body);
  EXPECT_EQ(cz["kubeproxy.config.k8s.io"]["healthzBindAddress"], "127.0.0.1:" + std::to_string(hz));
  EXPECT_EQ(cz["kubeproxy.config.k8s.io"]["hostnameOverride"], "node-1");
  EXPECT_EQ(cz["kpx"]["pinDir"], pins.path());
  EXPECT_EQ(http_get(hz, "/livez"), 200) << "--healthz-port gave the address its port";
  stop_agent(pid);
  // Port 0: that server is off.
  pid = start_agent({"--metrics-port", "0"});
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/livez") == 200; }, 5s));
  EXPECT_EQ(http_get(metrics_port, "/metrics"), 0);
  stop_agent(pid);
}

// Real values move: changes are counted, syncs timed, pending gauges
// emptied by the sync, Local-policy Services without local endpoints
// counted per traffic policy.
TEST_F(AgentTest, KubeProxyMetricsFollowChangesAndSyncs) {
  start_agent();
  const std::string fam = "{ip_family=\"IPv4\"}";
  ASSERT_TRUE(wait_for([&] { return synced(metrics_port); }, 5s));
  const double syncs = metric(metrics_port, "kubeproxy_sync_proxy_rules_duration_seconds_count" + fam);
  const double svc_changes = metric(metrics_port, "kubeproxy_sync_proxy_rules_service_changes_total");
  const double ep_changes = metric(metrics_port, "kubeproxy_sync_proxy_rules_endpoint_changes_total");
  const double queued =
      metric(metrics_port, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds" + fam);
  json svc = service("local", "10.96.0.70");
  svc["spec"]["internalTrafficPolicy"] = "Local";
  create(kSvcPath, svc);
  json sl = slice("local-1", "local", {"10.244.2.5"});
  sl["endpoints"][0]["nodeName"] = "node-2";
  create(kSlicePath, sl);
  const std::string internal =
      "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}";
  EXPECT_TRUE(wait_for([&] { return metric(metrics_port, internal) == 1; }, 5s))
      << "internalTrafficPolicy Local, its endpoint on another node: " << metric(metrics_port, internal);
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_service_changes_total"), svc_changes + 1);
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), ep_changes + 1);
  EXPECT_GT(metric(metrics_port, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds" + fam), queued);
  EXPECT_GT(metric(metrics_port, "kubeproxy_sync_proxy_rules_duration_seconds_count" + fam), syncs);
  EXPECT_GE(metric(metrics_port, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count" + fam), 1)
      << "one changed Service: an incremental sync";
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_service_changes_pending"), 0);
  EXPECT_EQ(metric(metrics_port, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"), 0);
  // An endpoint on this node: none without.
  sl["endpoints"].push_back(
      {{"addresses", {"10.244.1.9"}}, {"conditions", {{"ready", true}}}, {"nodeName", "node-1"}});
  put(std::string(kSlicePath) + "/local-1", sl);
  EXPECT_TRUE(wait_for([&] { return metric(metrics_port, internal) == 0; }, 5s));
}

// kubeproxy_network_programming_duration_seconds: (count, sum, and the
// count of observations above `above` seconds and at most `upto`).
struct Latencies {
  double count = -1, sum = -1, between = -1;
};
Latencies programming_latencies(uint16_t metrics_port, const char* above, const char* upto) {
  Latencies l;
  std::string text;
  if (http_get(metrics_port, "/metrics", &text) != 200) return l;
  const std::string name = "kubeproxy_network_programming_duration_seconds";
  auto value = [&](const std::string& series) -> double {
    auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
  };
  const std::string family = "ip_family=\"IPv4\"";
  l.count = value(name + "_count{" + family + "}");
  l.sum = value(name + "_sum{" + family + "}");
  l.between = value(name + "_bucket{" + family + ",le=\"" + upto + "\"}") -
              value(name + "_bucket{" + family + ",le=\"" + above + "\"}");
  return l;
}

// RFC 3339 in UTC with milliseconds, as the endpoints controller writes it.
std::string rfc3339(std::chrono::system_clock::time_point t) {
  time_t secs = std::chrono::system_clock::to_time_t(t);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  char out[48];
  snprintf(out, sizeof out, "%s.%03lldZ", buf, static_cast<long long>(ms));
  return out;
}

// As kube-proxy measures it: only EndpointSlice changes that carry the
// endpoints controller's last-change-trigger-time, once each, when
// programmed; not Service changes, not slices without it, not deletions.
TEST_F(AgentTest, NetworkProgrammingLatencyIsMeasuredFromSliceTriggerTimesOnly) {
  start_agent();
  ASSERT_TRUE(wait_for([&] { return synced(metrics_port); }, 5s));
  // The Pod change the endpoints controller saw, 2.5 s before the slice
  // reaches the API (and the agent, which started before it).
  const auto trigger = std::chrono::system_clock::now();
  std::this_thread::sleep_for(2500ms);
  create(kSvcPath, service("web", "10.96.0.50"));
  create(kSlicePath, slice("web-1", "web", {"10.244.1.5"}));
  ASSERT_TRUE(wait_for(
      [&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") == "10.244.1.5:8080,"; }, 2s));
  const Latencies before = programming_latencies(metrics_port, "2", "4");
  EXPECT_EQ(before.count, 0) << "a Service, and a slice without a trigger time, are not measured";
  json s = slice("web-1", "web", {"10.244.1.6"});
  s["metadata"]["annotations"] = {{"endpoints.kubernetes.io/last-change-trigger-time", rfc3339(trigger)}};
  put(std::string(kSlicePath) + "/web-1", s);
  ASSERT_TRUE(wait_for(
      [&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP") == "10.244.1.6:8080,"; }, 2s));
  Latencies after;
  ASSERT_TRUE(wait_for([&] { return (after = programming_latencies(metrics_port, "2", "4")).count == before.count + 1; },
                       2s))
      << "one observation for the slice's change";
  EXPECT_EQ(after.between, before.between + 1) << "observed between 2 and 4 s: from the trigger time";
  EXPECT_GE(after.sum - before.sum, 2.5);
  EXPECT_LT(after.sum - before.sum, 4.0);

  // A deletion carries the trigger time of the slice's last update, not of
  // the deletion: not measured.
  const double syncs =
      metric(metrics_port, "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}");
  ASSERT_TRUE(client->send("DELETE", std::string(kSlicePath) + "/web-1", nullptr).ok());
  ASSERT_TRUE(wait_for([&] { return backends_of(snapshot(pins.path()), "10.96.0.50:80/TCP").empty(); }, 2s));
  ASSERT_TRUE(wait_for(
      [&] {
        return metric(metrics_port, "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}") >
               syncs;
      },
      2s));
  EXPECT_EQ(programming_latencies(metrics_port, "2", "4").count, after.count);
}

// kube-proxy's --detect-local-mode and --masquerade-all reach the datapath;
// NodeCIDR waits for the Node's podCIDR and follows it.
TEST_F(AgentTest, LocalTrafficDetectionFollowsTheModeAndTheNodesPodCidr) {
  int pid = start_agent({"--detect-local-mode", "NodeCIDR", "--masquerade-all"});
  ASSERT_TRUE(wait_for([&] { return config_show().value("local_traffic", "") == "node CIDR not known yet"; }, 5s))
      << config_show().dump();
  EXPECT_EQ(config_show()["masquerade_all"], true);
  create("/api/v1/nodes", {{"apiVersion", "v1"},
                           {"kind", "Node"},
                           {"metadata", {{"name", "node-1"}}},
                           {"spec", {{"podCIDR", "10.244.3.0/24"}, {"podCIDRs", {"10.244.3.0/24", "fd00:3::/64"}}}}});
  EXPECT_TRUE(wait_for([&] { return config_show().value("local_traffic", "") == "10.244.3.0/24"; }, 5s))
      << config_show().dump();
  stop_agent(pid);

  pid = start_agent({"--cluster-cidr", "fd00::/48,10.244.0.0/16"});
  EXPECT_TRUE(wait_for([&] { return config_show().value("local_traffic", "") == "10.244.0.0/16"; }, 5s))
      << "ClusterCIDR, the default: the IPv4 one " << config_show().dump();
  EXPECT_EQ(config_show()["masquerade_all"], false);
  stop_agent(pid);

  pid = start_agent({"--detect-local-mode", "InterfaceNamePrefix", "--pod-interface-name-prefix", "veth"});
  EXPECT_TRUE(wait_for([&] { return config_show().value("local_traffic", "") == "from pod interfaces"; }, 5s))
      << config_show().dump();
  stop_agent(pid);
}

// The socket hooks stay with the cgroup when the agent stops (as the tc
// programs stay), a restarted agent replaces them (never two sets), and
// --cleanup takes them away. The cgroup is the test's own.
TEST_F(AgentTest, SocketHooksStayAcrossRestartsWithoutDoublingAndCleanupDetachesThem) {
  auto root = lab::cgroup2_root();
  ASSERT_TRUE(root.ok()) << root.error().message;
  const std::string cg = *root + "/kpx-test-" + std::to_string(getpid()) + "-agentsock";
  ASSERT_EQ(mkdir(cg.c_str(), 0755), 0) << cg;
  struct Gone {
    std::string dir;
    ~Gone() {
      (void)testing::sh(std::string(KPX_BINARY) + " agent --cleanup --pin-dir /nonexistent-kpx --socket-lb-cgroup " + dir +
                        " >/dev/null 2>&1");
      rmdir(dir.c_str());
    }
  } gone{cg};
  auto hooks = [&] { return testing::sh_out("bpftool cgroup show " + cg + " | grep -c kpx_sock_ || true"); };
  int pid = start_agent({"--socket-lb-cgroup", cg});
  ASSERT_TRUE(wait_for([&] { return hooks() == "8\n"; }, 5s)) << hooks();
  stop_agent(pid);
  EXPECT_EQ(hooks(), "8\n") << "they stay after the agent";
  pid = start_agent({"--socket-lb-cgroup", cg});
  // Serving healthz: past the attach (it comes before the HTTP endpoints).
  ASSERT_TRUE(wait_for([&] { return http_get(healthz_port, "/healthz") != 0; }, 5s));
  EXPECT_EQ(hooks(), "8\n") << "replaced, not doubled";
  stop_agent(pid);
  int st = 0;
  const std::string out = testing::sh_out(
      std::string(KPX_BINARY) + " agent --cleanup --pin-dir " + pins.path() + " --socket-lb-cgroup " + cg + " 2>&1", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_EQ(hooks(), "0\n");
  pid = start_agent({"--socket-lb-cgroup", cg, "--socket-lb", "off"});
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(hooks(), "0\n") << "off attaches nothing";
  stop_agent(pid);
}

TEST_F(AgentTest, CleanupRemovesTheDatapath) {
  create(kSvcPath, service("web", "10.96.0.50"));
  create(kSlicePath, slice("web-1", "web", {"10.244.1.5"}));
  int pid = start_agent();
  ASSERT_TRUE(wait_for([&] { return snapshot(pins.path()).size() == 1; }, 1s));
  stop_agent(pid);
  EXPECT_EQ(testing::sh(std::string(KPX_BINARY) + " agent --cleanup --pin-dir " + pins.path()), 0);
  EXPECT_FALSE(bpf::PinnedMaps::open(pins.path()).ok());
  EXPECT_NE(access(pins.path().c_str(), F_OK), 0);
}

TEST_F(AgentTest, CliWritesAreRefusedWhileTheAgentRuns) {
  create(kSvcPath, service("web", "10.96.0.50"));
  create(kSlicePath, slice("web-1", "web", {"10.244.1.5"}));
  int pid = start_agent();
  ASSERT_TRUE(wait_for([&] { return snapshot(pins.path()).size() == 1; }, 1s));
  const auto before = snapshot(pins.path());
  const std::string kpx = std::string(KPX_BINARY) + " --pin-dir " + pins.path() + " ";
  // One writer per instance: the agent's maps follow the API, not the CLI.
  EXPECT_EQ(testing::sh(kpx + "svc set 10.96.0.50:80/tcp 10.244.9.9:8080 2>/dev/null"), 1);
  EXPECT_EQ(testing::sh(kpx + "svc del 10.96.0.50:80/tcp 2>/dev/null"), 1);
  EXPECT_EQ(testing::sh(kpx + "config set --udp-timeout 5 2>/dev/null"), 1);
  EXPECT_EQ(testing::sh(std::string(KPX_BINARY) + " agent --cleanup --pin-dir " + pins.path() + " 2>/dev/null"), 1);
  EXPECT_EQ(snapshot(pins.path()), before);
  EXPECT_EQ(testing::sh(kpx + "svc list >/dev/null"), 0) << "reading is always allowed";
  stop_agent(pid);
  EXPECT_EQ(testing::sh(kpx + "config set --udp-timeout 5"), 0) << "the lock goes with the agent";
}

TEST(AgentInterfaces, AttachesOnlyToMatchingInterfacesAsTheyCome) {
  ASSERT_EQ(geteuid(), 0u);
  testing::ScopedNetns netns;
  testing::ScopedPinDir pins;
  std::string ns = netns.add("ag-");
  ASSERT_FALSE(ns.empty());
  ASSERT_EQ(testing::sh("ip -n " + ns + " link add kpxv1 type veth peer name kpxp1"), 0);
  ASSERT_EQ(testing::sh("ip -n " + ns + " link add other1 type veth peer name otherp1"), 0);
  testing::ScopedProcesses agent;
  // No API server in the namespace: attaching does not wait for one.
  // nsenter, not `ip netns exec`: that remounts /sys, hiding bpffs.
  agent.spawn({"nsenter", "--net=/var/run/netns/" + ns, KPX_BINARY, "agent", "--master", "http://127.0.0.1:1", "--pin-dir",
               pins.path(), "--pod-interfaces", "kpxv*", "--healthz-bind-address", "127.0.0.1:0",
               "--metrics-bind-address", "127.0.0.1:0"});
  auto attached = [&](const std::string& dev) {
    return testing::sh_out("ip netns exec " + ns + " tc filter show dev " + dev + " ingress 2>/dev/null")
               .find("kpx_from_pod") != std::string::npos &&
           testing::sh_out("ip netns exec " + ns + " tc filter show dev " + dev + " egress 2>/dev/null")
               .find("kpx_to_pod") != std::string::npos;
  };
  EXPECT_TRUE(wait_for([&] { return attached("kpxv1"); }, 3s));
  ASSERT_EQ(testing::sh("ip -n " + ns + " link add kpxv2 type veth peer name kpxp2"), 0);
  EXPECT_TRUE(wait_for([&] { return attached("kpxv2"); }, 1s)) << "a new pod interface was not followed";
  EXPECT_FALSE(attached("other1"));
  EXPECT_FALSE(attached("kpxp1"));
}

}  // namespace
}  // namespace kpx::e2e
