// The agent's health answers as kube-proxy gives them: /healthz and /livez
// (its ProxyHealthServer's rules, with node eligibility), the metrics
// server's /healthz, /configz and /proxyMode, the deprecated port flags,
// and the manifest's liveness probe.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <thread>
#include <nlohmann/json.hpp>

#include "agent/configz.h"
#include "agent/http_endpoints.h"
#include "agent/proxy_health.h"
#include "support/raw_http.h"

namespace kpx::agent {
namespace {

using namespace std::chrono_literals;
using Clock = ProxyHealth::Clock;
using json = nlohmann::json;

struct FakeClock {
  Clock::time_point now = Clock::from_time_t(1700000000);
  ProxyHealth::Now fn() {
    return [this] { return now; };
  }
};

TEST(ProxyHealth, HealthyWhileStartingWhateverIsQueued) {
  FakeClock clock;
  ProxyHealth h(60s, clock.fn());
  EXPECT_TRUE(h.state().healthy);
  // A proxier that never reported is starting (kube-proxy: no family in
  // lastUpdatedMap), even with a change queued long ago: an agent whose API
  // server is unreachable is not killed by its liveness probe.
  h.queued_update();
  clock.now += 10min;
  EXPECT_TRUE(h.state().healthy);
  EXPECT_EQ(livez_response(h.state()).code, 200);
}

TEST(ProxyHealth, UnhealthyOnlyOnceAQueuedChangeIsLate) {
  FakeClock clock;
  ProxyHealth h(60s, clock.fn());
  h.updated();  // the sync loop started
  clock.now += 5min;
  EXPECT_TRUE(h.state().healthy) << "nothing queued: healthy however long ago the last sync was";
  h.queued_update();
  const auto queued = clock.now;
  clock.now += 30s;
  h.queued_update();  // a second change: the oldest one counts
  clock.now = queued + 59s;
  EXPECT_TRUE(h.state().healthy) << "queued, not late yet";
  clock.now = queued + 60s;
  auto s = h.state();
  EXPECT_FALSE(s.healthy) << "waited the whole timeout";
  EXPECT_EQ(s.last_updated, queued - 5min);
  EXPECT_EQ(livez_response(s).code, 503);
  EXPECT_EQ(healthz_response(s).code, 503);
  h.updated();
  EXPECT_TRUE(h.state().healthy) << "a sync programmed it";
  EXPECT_EQ(h.state().last_updated, clock.now);
}

TEST(ProxyHealth, AnIneligibleNodeFailsHealthzButNotLivez) {
  FakeClock clock;
  ProxyHealth h(60s, clock.fn());
  h.updated();
  EXPECT_TRUE(h.set_node_eligible(false));
  EXPECT_FALSE(h.set_node_eligible(false)) << "no change";
  auto s = h.state();
  EXPECT_TRUE(s.healthy) << "the proxier itself is fine";
  auto hz = healthz_response(s);
  EXPECT_EQ(hz.code, 503);
  EXPECT_EQ(json::parse(hz.body)["nodeEligible"], false);
  EXPECT_EQ(livez_response(s).code, 200);
  EXPECT_TRUE(h.set_node_eligible(true));
  EXPECT_EQ(healthz_response(h.state()).code, 200);
}

TEST(ProxyHealth, AnswersWithKubeProxysLayoutAndHeaders) {
  ProxyHealth::State s;
  s.healthy = true;
  s.current_time = Clock::time_point(std::chrono::seconds(1700000000) + std::chrono::nanoseconds(5));
  s.last_updated = s.current_time - 2s;
  auto r = healthz_response(s);
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.headers,
            (std::vector<std::pair<std::string, std::string>>{{"X-Content-Type-Options", "nosniff"}}));
  EXPECT_FALSE(r.cache_control);
  // Healthy: lastUpdated is the current time (kube-proxy keeps the meaning
  // its older releases gave it).
  EXPECT_EQ(r.body,
            "{\"lastUpdated\": \"2023-11-14T22:13:20.000000005Z\",\"currentTime\": "
            "\"2023-11-14T22:13:20.000000005Z\", \"nodeEligible\": true}");
  s.healthy = false;
  r = healthz_response(s);
  EXPECT_EQ(r.code, 503);
  EXPECT_EQ(json::parse(r.body)["lastUpdated"], "2023-11-14T22:13:18.000000005Z");
  auto l = livez_response(s);
  EXPECT_EQ(l.code, 503);
  EXPECT_EQ(l.body,
            "{\"lastUpdated\": \"2023-11-14T22:13:18.000000005Z\",\"currentTime\": "
            "\"2023-11-14T22:13:20.000000005Z\"}");
}

TEST(NodeEligible, DeletionTimestampOrTheAutoscalersTaint) {
  EXPECT_TRUE(node_eligible(json::parse(R"({"metadata":{"name":"n1"},"spec":{}})")));
  EXPECT_TRUE(node_eligible(json::parse(
      R"({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"node.kubernetes.io/unschedulable","effect":"NoSchedule"}]}})")));
  EXPECT_FALSE(node_eligible(
      json::parse(R"({"metadata":{"name":"n1","deletionTimestamp":"2024-05-01T10:00:00Z"},"spec":{}})")));
  EXPECT_FALSE(node_eligible(json::parse(
      R"({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"a","effect":"NoSchedule"},
          {"key":"ToBeDeletedByClusterAutoscaler","value":"1714557600","effect":"NoSchedule"}]}})")));
  EXPECT_TRUE(node_eligible(json::parse(R"({"metadata":{"name":"n1","deletionTimestamp":null}})")));
}

TEST(DeprecatedPortFlags, PortGoesToAnAddressWithoutOneAndZeroTurnsOff) {
  EXPECT_EQ(address_from_deprecated_port("0.0.0.0:10256", 10256), "0.0.0.0:10256");
  EXPECT_EQ(address_from_deprecated_port("127.0.0.1:20000", 10256), "127.0.0.1:20000")
      << "a port given stays";
  EXPECT_EQ(address_from_deprecated_port("127.0.0.1", 12345), "127.0.0.1:12345");
  EXPECT_EQ(address_from_deprecated_port("0.0.0.0:10256", 0), "");
  EXPECT_EQ(address_from_deprecated_port("", 10256), "") << "no address: left as is (the server is off)";
  EXPECT_EQ(address_from_deprecated_port("localhost", 1), "localhost")
      << "left for the address check to refuse";
}

apiserver::http::Request get(const std::string& path, std::map<std::string, std::string> query = {}) {
  apiserver::http::Request r;
  r.method = "GET";
  r.path = path;
  r.target = path;
  r.query = std::move(query);
  return r;
}

TEST(MetricsServer, HealthzProxyModeConfigzAndMetrics) {
  Metrics m;
  const std::string cz = R"({"kpx":{}})";
  auto r = metrics_server_response(get("/healthz"), m, {}, cz);
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(metrics_server_response(get("/healthz", {{"verbose", ""}}), m, {}, cz).body,
            "[+]ping ok\nhealthz check passed\n");
  EXPECT_EQ(metrics_server_response(get("/healthz/ping"), m, {}, cz).body, "ok");
  r = metrics_server_response(get("/proxyMode"), m, {}, cz);
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.body, "kpx");
  r = metrics_server_response(get("/configz"), m, {}, cz);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, cz);
  r = metrics_server_response(
      get("/metrics"), m,
      [] {
        return std::vector<std::pair<std::string, uint64_t>>{{"pass", 3}};
      },
      cz);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r.body.find("kpx_datapath_packets_total{reason=\"pass\"} 3\n"), std::string::npos);
  r = metrics_server_response(get("/livez"), m, {}, cz);
  EXPECT_EQ(r.code, 404) << "/livez is the healthz server's";
}

// bindAddressHardFail: a listener whose address is taken stops the start
// (true), or is logged and tried again until the address is free, the
// other listener serving meanwhile (false, kube-proxy's default).
TEST(HttpEndpoints, ABindErrorFailsTheStartOnlyWithHardFailElseItIsRetried) {
  const int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(holder, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const uint16_t taken = ntohs(a.sin_port);
  const BindAddress healthz{"127.0.0.1", taken}, metrics{"127.0.0.1", 0};
  ProxyHealth h(60s);
  Metrics m;

  auto hard = HttpEndpoints::start(healthz, metrics, h, m, {}, "{}", BindPolicy{true, 50ms});
  ASSERT_FALSE(hard.ok());
  EXPECT_NE(hard.error().message.find("healthz listener"), std::string::npos) << hard.error().message;

  auto soft = HttpEndpoints::start(healthz, metrics, h, m, {}, "{}", BindPolicy{false, 50ms});
  ASSERT_TRUE(soft.ok()) << soft.error().message;
  EXPECT_EQ((*soft)->healthz_port(), 0) << "not bound while the address is taken";
  ASSERT_NE((*soft)->metrics_port(), 0) << "the other listener serves meanwhile";
  std::this_thread::sleep_for(200ms);  // a few retries fail
  EXPECT_EQ((*soft)->healthz_port(), 0);
  close(holder);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while ((*soft)->healthz_port() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  ASSERT_EQ((*soft)->healthz_port(), taken) << "bound once the address was free";
  testing::RawConnection c(taken);
  c.send_request("GET", "/livez");
  EXPECT_EQ(c.read_response().code, 200);
  (*soft)->stop();
}

TEST(Configz, GoDurations) {
  EXPECT_EQ(format_go_duration(0ms), "0s");
  EXPECT_EQ(format_go_duration(250ms), "250ms");
  EXPECT_EQ(format_go_duration(1s), "1s");
  EXPECT_EQ(format_go_duration(1500ms), "1.5s");
  EXPECT_EQ(format_go_duration(90s), "1m30s");
  EXPECT_EQ(format_go_duration(1h), "1h0m0s");
  EXPECT_EQ(format_go_duration(24h), "24h0m0s");
  EXPECT_EQ(format_go_duration(3723450ms), "1h2m3.45s");
}

TEST(Configz, TheEffectiveConfigurationByGroup) {
  Options o;
  o.hostname_override = "Node-1";
  o.cluster_cidr = "10.244.0.0/16";
  o.min_sync_period = 1s;
  o.masquerade_all = true;
  o.nodeport_addresses = {"primary"};
  o.tcp_established_timeout = 24h;
  o.pin_dir = "/sys/fs/bpf/kpx";
  o.socket_lb = "all";
  json c = configz(o);
  const json& kp = c.at("kubeproxy.config.k8s.io");
  EXPECT_EQ(kp["hostnameOverride"], "node-1") << "as resolved: lower case";
  EXPECT_EQ(kp["clusterCIDR"], "10.244.0.0/16");
  EXPECT_EQ(kp["healthzBindAddress"], "0.0.0.0:10256");
  EXPECT_EQ(kp["metricsBindAddress"], "127.0.0.1:10249");
  EXPECT_EQ(kp["minSyncPeriod"], "1s");
  EXPECT_EQ(kp["mode"], "kpx");
  EXPECT_EQ(kp["iptables"]["masqueradeAll"], true);
  EXPECT_EQ(kp["detectLocalMode"], "ClusterCIDR");
  EXPECT_EQ(kp["nodePortAddresses"], json::array({"primary"}));
  EXPECT_EQ(kp["conntrack"]["tcpEstablishedTimeout"], "24h0m0s");
  EXPECT_EQ(kp["conntrack"]["maxPerCore"], 32768);
  EXPECT_EQ(c.at("kpx")["pinDir"], "/sys/fs/bpf/kpx");
  EXPECT_EQ(c.at("kpx")["socketLB"], "all");
}

// The DaemonSet's liveness probe is /livez on the healthz port: node
// eligibility (a node being deleted) must not restart the agent.
TEST(Manifests, LivenessProbeIsLivezOnTheHealthzPort) {
  bool saw = false;
  for (const auto& d : YAML::LoadAllFromFile(KPX_SOURCE_DIR "/manifests/kpx.yaml")) {
    if (d["kind"].as<std::string>() != "DaemonSet") continue;
    auto probe = d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"];
    ASSERT_TRUE(probe.IsDefined());
    EXPECT_EQ(probe["path"].as<std::string>(), "/livez");
    EXPECT_EQ(probe["port"].as<int>(), 10256);
    saw = true;
  }
  EXPECT_TRUE(saw);
}

}  // namespace
}  // namespace kpx::agent
