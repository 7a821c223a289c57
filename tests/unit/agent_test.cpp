// The agent's pure parts: flags and config file, and the manifests'
// promises (RBAC, capabilities, config). Health answers and metrics:
// agent_health_test.cpp, agent_metrics_test.cpp.
#include <gtest/gtest.h>

#include "net/endpoint.h"
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

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
