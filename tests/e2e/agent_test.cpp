// `kpx agent` against `kpx apiserver`: the pinned maps follow the API,
// converge after each injected fault, are never emptied on an error, and
// are left exactly as they are across an agent restart.
#include "e2e/agent_fixture.h"

namespace kpx::e2e {
namespace {

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
  start_agent({"--api-max-backoff-ms", "500"});
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
    // client-go's backoff does not start over between these faults (that
    // takes 2 minutes of quiet): its base is capped at 500 ms here, so each
    // delay stays under a second.
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
  EXPECT_TRUE(wait_for([&] { return attached("kpxv1"); }, 10s));
  ASSERT_EQ(testing::sh("ip -n " + ns + " link add kpxv2 type veth peer name kpxp2"), 0);
  EXPECT_TRUE(wait_for([&] { return attached("kpxv2"); }, 5s)) << "a new pod interface was not followed";
  EXPECT_FALSE(attached("other1"));
  EXPECT_FALSE(attached("kpxp1"));
}

}  // namespace
}  // namespace kpx::e2e
