// The agent's pure parts: flags and config file, health answers, metrics
// text, and the manifests' promises (RBAC, capabilities, config).
#include <gtest/gtest.h>

#include "net/endpoint.h"
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/http_endpoints.h"
#include "agent/metrics.h"
#include "agent/options.h"

namespace kpx::agent {
namespace {

TEST(Duration, GoFormats) {
  EXPECT_EQ(parse_duration("24h0m0s")->count(), 86400000);
  EXPECT_EQ(parse_duration("1h")->count(), 3600000);
  EXPECT_EQ(parse_duration("1.5s")->count(), 1500);
  EXPECT_EQ(parse_duration("250ms")->count(), 250);
  EXPECT_EQ(parse_duration("0")->count(), 0);
  EXPECT_FALSE(parse_duration("").ok());
  EXPECT_FALSE(parse_duration("10").ok());
  EXPECT_FALSE(parse_duration("5d").ok());
  EXPECT_FALSE(parse_duration("h").ok());
}

TEST(Cidr, ParsesContainsAndRefusesHostBits) {
  auto c = net::parse_ipv4_cidr("10.0.0.0/24");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->contains(*net::parse_ipv4("10.0.0.11")));
  EXPECT_FALSE(c->contains(*net::parse_ipv4("10.0.1.11")));
  EXPECT_TRUE(net::parse_ipv4_cidr("0.0.0.0/0")->contains(*net::parse_ipv4("203.0.113.9")));
  EXPECT_TRUE(net::parse_ipv4_cidr("10.0.0.11/32")->contains(*net::parse_ipv4("10.0.0.11")));
  for (const char* bad : {"10.0.0.1/24", "10.0.0.0", "10.0.0.0/33", "10.0.0.0/x", "10.0.0/8", "10.0.0.0/"})
    EXPECT_FALSE(net::parse_ipv4_cidr(bad).ok()) << bad;
}

TEST(BindAddress, Parses) {
  auto b = parse_bind_address("0.0.0.0:10256");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "0.0.0.0");
  EXPECT_EQ(b->port, 10256);
  EXPECT_EQ(parse_bind_address("127.0.0.1:0")->port, 0);
  EXPECT_EQ(parse_bind_address(":8080")->host, "");
  EXPECT_FALSE(parse_bind_address("127.0.0.1").ok());
  EXPECT_FALSE(parse_bind_address("localhost:1").ok());
  EXPECT_FALSE(parse_bind_address("1.2.3.4:70000").ok());
}

std::string temp_file(const std::string& text) {
  char path[] = "/tmp/kpx-agent-test-XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(Healthz, AnswersAsKubeProxy) {
  SyncLoop::Health h;
  h.healthy = true;
  h.current_time = SyncLoop::Clock::time_point(std::chrono::seconds(1700000000) + std::chrono::nanoseconds(5));
  h.last_updated = h.current_time - std::chrono::seconds(2);
  auto r = healthz_response(h);
  EXPECT_EQ(r.code, 200);
  auto body = nlohmann::json::parse(r.body);
  EXPECT_EQ(body["currentTime"], "2023-11-14T22:13:20.000000005Z");
  EXPECT_EQ(body["lastUpdated"], "2023-11-14T22:13:18.000000005Z");
  h.healthy = false;
  EXPECT_EQ(healthz_response(h).code, 503);
}

TEST(Metrics, KubeProxyNamesAndDatapathCounters) {
  Metrics m;
  m.sync_duration.observe(0.003);
  m.sync_duration.observe(0.5);
  m.service_changes += 3;
  std::string text = m.render({{"dnat_new", 7}, {"pass", 9}});
  EXPECT_NE(text.find("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_sync_proxy_rules_duration_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_network_programming_duration_seconds_count 0\n"), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_sync_proxy_rules_last_timestamp_seconds "), std::string::npos);
  EXPECT_NE(text.find("kubeproxy_sync_proxy_rules_service_changes_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("kpx_datapath_packets_total{reason=\"dnat_new\"} 7\n"), std::string::npos);
}

TEST(ProgrammingLatency, FromTheTriggerTimeElseArrival) {
  using namespace std::chrono;
  using Clock = ProgrammingStarts::Clock;
  const Clock::time_point start = Clock::from_time_t(1714557600);
  ProgrammingStarts p(start);
  // A slice whose Pod changed 2 s after the agent started, seen at +2.5 s;
  // a Service change (no trigger time) seen at +3 s.
  p.add(start + milliseconds(2500), start + seconds(2));
  p.add(start + seconds(3), std::nullopt);
  // A trigger from before the agent started is not measured (kube-proxy
  // does the same): it would measure the agent's absence.
  p.add(start + seconds(3), start - seconds(600));
  EXPECT_EQ(p.pending(), 2u);

  Histogram h({1, 2, 4, 8});
  auto starts = p.take();
  EXPECT_EQ(p.pending(), 0u);
  // The sync that took them failed: they are still pending, with any
  // change that came meanwhile.
  p.add(start + seconds(4), std::nullopt);
  p.put_back(std::move(starts));
  ASSERT_EQ(p.pending(), 3u);
  ProgrammingStarts::observe(h, start + seconds(5), p.take());
  EXPECT_EQ(h.count(), 3u);
  EXPECT_DOUBLE_EQ(h.sum(), 3.0 + 2.0 + 1.0);  // from +2 s (trigger), +3 s and +4 s (arrival)
  const std::string text = h.render("x");
  EXPECT_NE(text.find("x_bucket{le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_bucket{le=\"2\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_bucket{le=\"4\"} 3\n"), std::string::npos) << text;

  // A trigger time ahead of this node's clock counts as 0, not negative.
  Histogram skew({1});
  ProgrammingStarts::observe(skew, start, {start + seconds(30)});
  EXPECT_DOUBLE_EQ(skew.sum(), 0.0);
  EXPECT_EQ(skew.count(), 1u);
}

// manifests/kpx.yaml: least privilege, its config loads, and socket-level
// load balancing hooks the host's cgroup root (a host path mounted where
// --socket-lb-cgroup points, not the container's own cgroup view).
TEST(Manifests, RbacIsListWatchOnlyAndConfigLoads) {
  std::vector<YAML::Node> docs = YAML::LoadAllFromFile(KPX_SOURCE_DIR "/manifests/kpx.yaml");
  bool saw_role = false, saw_ds = false, saw_cm = false;
  for (const auto& d : docs) {
    std::string kind = d["kind"].as<std::string>();
    if (kind == "ClusterRole") {
      saw_role = true;
      std::set<std::string> resources;
      for (const auto& rule : d["rules"]) {
        for (const auto& v : rule["verbs"]) EXPECT_TRUE(v.as<std::string>() == "list" || v.as<std::string>() == "watch");
        for (const auto& r : rule["resources"]) resources.insert(r.as<std::string>());
      }
      EXPECT_EQ(resources, (std::set<std::string>{"services", "nodes", "endpointslices"}));
    }
    if (kind == "DaemonSet") {
      saw_ds = true;
      auto spec = d["spec"]["template"]["spec"];
      EXPECT_TRUE(spec["hostNetwork"].as<bool>());
      auto c = spec["containers"][0];
      EXPECT_FALSE(c["securityContext"]["privileged"] && c["securityContext"]["privileged"].as<bool>());
      std::set<std::string> caps;
      for (const auto& cap : c["securityContext"]["capabilities"]["add"]) caps.insert(cap.as<std::string>());
      EXPECT_EQ(caps, (std::set<std::string>{"BPF", "PERFMON", "NET_ADMIN"}));
      std::string cgroup_arg;
      for (const auto& a : c["command"])
        if (a.as<std::string>().rfind("--socket-lb-cgroup=", 0) == 0) cgroup_arg = a.as<std::string>().substr(19);
      ASSERT_FALSE(cgroup_arg.empty());
      std::string volume;
      for (const auto& m : c["volumeMounts"])
        if (m["mountPath"].as<std::string>() == cgroup_arg) volume = m["name"].as<std::string>();
      ASSERT_FALSE(volume.empty()) << cgroup_arg << " is not a mount";
      std::string host_path;
      for (const auto& v : spec["volumes"])
        if (v["name"].as<std::string>() == volume && v["hostPath"]) host_path = v["hostPath"]["path"].as<std::string>();
      EXPECT_EQ(host_path, "/sys/fs/cgroup");
    }
    if (kind == "ConfigMap") {
      saw_cm = true;
      std::string p = temp_file(d["data"]["config.conf"].as<std::string>());
      Options o;
      auto loaded = load_config_file(p, o);
      ASSERT_TRUE(loaded.ok()) << loaded.error().message;
      EXPECT_EQ(o.healthz_bind_address, "0.0.0.0:10256");
      EXPECT_EQ(o.min_sync_period.count(), 100) << "iptables.minSyncPeriod";
      EXPECT_EQ(loaded->strict_decoding_line(), "") << "every field is v1alpha1's";
      EXPECT_EQ(loaded->not_honoured_line(), "");
      std::remove(p.c_str());
    }
  }
  EXPECT_TRUE(saw_role && saw_ds && saw_cm);
}

}  // namespace
}  // namespace kpx::agent
