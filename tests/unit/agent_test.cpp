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

TEST(ConfigFile, KubeProxyConfigurationFieldsApply) {
  std::string p = temp_file(R"(apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kpx/kubeconfig
  qps: 5
hostnameOverride: node-7
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:20256
metricsBindAddress: 127.0.0.1:20249
minSyncPeriod: 250ms
mode: iptables
nodePortAddresses:
- 10.0.0.0/24
- primary
conntrack:
  tcpEstablishedTimeout: 2h0m0s
  tcpCloseWaitTimeout: 30s
  udpTimeout: 45s
iptables:
  masqueradeAll: false
nftables:
  masqueradeAll: true
detectLocalMode: BridgeInterface
detectLocal:
  bridgeInterface: cbr0
  interfaceNamePrefix: veth
)");
  Options o;
  ASSERT_TRUE(load_config_file(p, o).ok());
  std::remove(p.c_str());
  EXPECT_EQ(o.kubeconfig, "/etc/kpx/kubeconfig");
  EXPECT_EQ(o.hostname_override, "node-7");
  EXPECT_EQ(o.cluster_cidr, "10.244.0.0/16");
  EXPECT_EQ(o.nodeport_addresses, (std::vector<std::string>{"10.0.0.0/24", "primary"}));
  EXPECT_EQ(o.healthz_bind_address, "127.0.0.1:20256");
  EXPECT_EQ(o.metrics_bind_address, "127.0.0.1:20249");
  EXPECT_EQ(o.min_sync_period.count(), 250);
  EXPECT_EQ(o.tcp_established_timeout.count(), 7200);
  EXPECT_EQ(o.tcp_close_wait_timeout.count(), 30);
  EXPECT_EQ(o.udp_timeout.count(), 45);
  EXPECT_TRUE(o.masquerade_all) << "nftables.masqueradeAll";
  EXPECT_EQ(o.detect_local_mode, "BridgeInterface");
  EXPECT_EQ(o.pod_bridge_interface, "cbr0");
  EXPECT_EQ(o.pod_interface_name_prefix, "veth");
  Options plain;
  std::string q = temp_file("kind: KubeProxyConfiguration\niptables:\n  masqueradeAll: false\n");
  ASSERT_TRUE(load_config_file(q, plain).ok());
  std::remove(q.c_str());
  EXPECT_FALSE(plain.masquerade_all);
  EXPECT_EQ(plain.detect_local_mode, "") << "kube-proxy's default, ClusterCIDR";
}

TEST(ConfigFile, ErrorsNameTheFileAndField) {
  Options o;
  std::string wrong_kind = temp_file("kind: KubeletConfiguration\n");
  auto st = load_config_file(wrong_kind, o);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("expected KubeProxyConfiguration"), std::string::npos);
  std::string bad_duration = temp_file("kind: KubeProxyConfiguration\nminSyncPeriod: soon\n");
  st = load_config_file(bad_duration, o);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("minSyncPeriod"), std::string::npos) << st.error().message;
  EXPECT_FALSE(load_config_file("/nonexistent/kpx.conf", o).ok());
  std::remove(wrong_kind.c_str());
  std::remove(bad_duration.c_str());
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
      EXPECT_TRUE(load_config_file(p, o).ok());
      EXPECT_EQ(o.healthz_bind_address, "0.0.0.0:10256");
      std::remove(p.c_str());
    }
  }
  EXPECT_TRUE(saw_role && saw_ds && saw_cm);
}

}  // namespace
}  // namespace kpx::agent
