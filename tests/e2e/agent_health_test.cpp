// `kpx agent`'s health and metrics as kube-proxy's: /healthz and /livez
// while starting, with the API unreachable, on a node being deleted; the
// metrics server's other paths; kube-proxy's metrics moving with real
// changes and syncs; network programming latency from trigger times.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "e2e/agent_fixture.h"

namespace kpx::e2e {
namespace {

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

}  // namespace
}  // namespace kpx::e2e
