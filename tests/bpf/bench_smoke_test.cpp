// kpx-bench datapath and socket-lb with tiny counts: every case (the pod
// side and the uplink's NodePort cases; socket LB's connect cases and its
// CRRs in a lab) runs its checked path, the JSON carries them, and the bench
// leaves nothing behind: no pin directory, namespace, cgroup or lab, and the
// root namespace as it was.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "lab/cgroup.h"
#include "support/scoped.h"

namespace kpx::bpftest {
namespace {

using testing::sh_out;

const char* const kUplinkCases[] = {"floor",          "empty_program",   "node_pass",     "established_remote",
                                    "established_local", "new_flow_remote", "new_flow_local"};

std::string root_namespace_state() {
  return sh_out("ip -o link show | awk '{print $2}'; ip -o addr show | awk '{print $2, $4}'; "
                "ip route show table all; ip rule show; tc qdisc show");
}

// kpx-bench with these arguments (subcommand first), stderr dropped: its
// stdout, and its pid (the shell's first line; exec keeps it), to find what
// it names after itself.
std::string run_bench(const std::string& args, std::string* pid, int* status) {
  const std::string out =
      sh_out(std::string("sh -c 'echo $$; exec ") + KPX_BENCH_BINARY + " " + args + "' 2>/dev/null", status);
  *pid = out.substr(0, out.find('\n'));
  return out.substr(out.find('\n') + 1);
}

// No namespace, pin directory or cgroup of that pid's, the root namespace
// as before.
void expect_nothing_left(const std::string& pid, const std::string& before) {
  ASSERT_FALSE(pid.empty());
  EXPECT_EQ(sh_out("ls /var/run/netns 2>/dev/null | grep '^kpx-bench-" + pid + "' || true"), "");
  EXPECT_EQ(sh_out("ls /sys/fs/bpf | grep '^kpx-bench-" + pid + "' || true"), "");
  EXPECT_EQ(lab::list_cgroups("kpx-bench-" + pid), std::vector<std::string>{});
  EXPECT_EQ(root_namespace_state(), before) << "the root namespace changed";
}

// run_bench of a --json run that must exit 0 and leave nothing behind: the
// JSON document (not an object after a failure, which is reported). *pid:
// the bench's pid, for what else it named after itself.
nlohmann::json run_bench_json(const std::string& args, std::string* pid) {
  const std::string before = root_namespace_state();
  int st = 0;
  const std::string out = run_bench(args, pid, &st);
  expect_nothing_left(*pid, before);
  if (st != 0) {
    ADD_FAILURE() << "kpx-bench " << args << " exited " << st << ": " << out;
    return nullptr;
  }
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (!j.is_object()) ADD_FAILURE() << "kpx-bench " << args << " printed no JSON object: " << out;
  return j;
}

TEST(BenchSmoke, DatapathRunsEveryCaseAndLeavesNothingBehind) {
  std::string pid;
  auto j = run_bench_json(
      "datapath --json --services 1,3 --repeats 2 --iterations 2 --new-flow-frames 2 --mix-flows 2 --uplink-frames 3",
      &pid);
  ASSERT_TRUE(j.is_object());
  for (const char* c : {"established", "reply", "pass", "new_flow", "mix"}) EXPECT_TRUE(j["cases"].contains(c)) << c;
  const auto& up = j["uplink"]["cases"];
  for (const char* c : kUplinkCases) {
    ASSERT_TRUE(up.contains(c)) << c;
    for (const char* n : {"1", "3"}) {
      ASSERT_TRUE(up[c].contains(n)) << c << " " << n;
      EXPECT_EQ(up[c][n]["samples"].size(), 2u) << c << " " << n;
      EXPECT_GT(up[c][n]["ns"].get<double>(), 0) << c << " " << n;
    }
  }
  EXPECT_EQ(up["floor"]["1"]["ratio_to_floor"].get<double>(), 1.0);
  EXPECT_EQ(up["floor"]["3"]["above_floor_ns"].get<double>(), 0.0);
  EXPECT_EQ(j["uplink"]["frames"], 3);
  EXPECT_EQ(j["uplink"]["conntrack_prefill"]["3"]["entries"], 6);
}

// --paths uplink alone, as a table: the uplink's cases and none of the pod side's.
TEST(BenchSmoke, UplinkPathAloneAsTable) {
  const std::string before = root_namespace_state();
  int st = 0;
  std::string pid;
  const std::string out = run_bench("datapath --paths uplink --services 2 --repeats 1 --uplink-frames 2", &pid, &st);
  expect_nothing_left(pid, before);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NE(out.find("kpx-bench datapath, uplink:"), std::string::npos) << out;
  for (const char* c : kUplinkCases) EXPECT_NE(out.find(std::string("\n") + c + " "), std::string::npos) << c;
  EXPECT_EQ(out.find("ns/packet"), std::string::npos) << "the pod cases ran";
}

// The connect cases: every figure, and case (c)'s connects to the ClusterIP
// all translated by the socket hooks (the bench fails otherwise too).
TEST(BenchSmoke, SocketLbConnectCasesTranslateEveryClusterIpConnect) {
  std::string pid;
  auto j = run_bench_json("socket-lb --json --rounds 1 --connects 50 --no-crr", &pid);
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j["crr"].is_null()) << "--no-crr";
  const auto& c = j["connect"];
  for (const char* proto : {"tcp", "udp"})
    for (const char* k : {"backend_no_hooks", "backend_hooks", "cluster_ip_hooks"}) {
      const auto& f = c["cases"][proto][k];
      ASSERT_TRUE(f.is_object()) << proto << " " << k;
      EXPECT_GT(f["ns"].get<double>(), 0) << proto << " " << k;
      EXPECT_EQ(f["samples"].size(), 1u) << proto << " " << k;
      EXPECT_EQ(f["connects"], nlohmann::json::array({50})) << proto << " " << k;
    }
  EXPECT_EQ(c["cases"]["tcp"]["backend_no_hooks"]["ratio_to_floor"].get<double>(), 1.0);
  // 50 timed ClusterIP connects per protocol, and the warm-up's.
  const uint64_t vip = c["cluster_ip_connects"];
  EXPECT_GE(vip, 100u);
  EXPECT_EQ(c["sock_lb_counter_delta"].get<uint64_t>(), vip);
  EXPECT_EQ(c["tcp_accepted"], c["tcp_connects"]);
}

// The CRR part in a lab of the bench's own: each case's CRRs, the
// ClusterIP ones on the path they name (node1's counters), and the lab gone
// afterwards.
TEST(BenchSmoke, SocketLbCrrRunsEveryCaseInALabAndRemovesIt) {
  std::string pid;
  auto j = run_bench_json("socket-lb --json --rounds 1 --connects 10 --crrs 20", &pid);
  ASSERT_FALSE(pid.empty());
  EXPECT_EQ(sh_out("ls /run/kpx-lab 2>/dev/null | grep '^kbs" + pid + "$' || true"), "");
  EXPECT_EQ(sh_out("ls /var/run/netns 2>/dev/null | grep '^kpxlab-kbs" + pid + "-' || true"), "");
  EXPECT_EQ(sh_out("ls /sys/fs/bpf | grep '^kpx-kbs" + pid + "-' || true"), "");
  EXPECT_EQ(lab::list_cgroups("kpx-lab-kbs" + pid), std::vector<std::string>{});
  ASSERT_TRUE(j.is_object());
  const auto& c = j["crr"]["cases"];
  for (const char* k : {"node1_to_pod_ip", "node1_to_cluster_ip", "pod_to_pod_ip", "pod_to_cluster_ip"}) {
    ASSERT_TRUE(c[k].is_object()) << k;
    EXPECT_EQ(c[k]["crrs"], 20) << k;
    EXPECT_GT(c[k]["ns"].get<double>(), 0) << k;
  }
  EXPECT_EQ(c["node1_to_pod_ip"]["ratio_to_floor"].get<double>(), 1.0);
  // node1's ClusterIP CRRs through socket LB, the pod's per packet.
  const auto& n = j["crr"]["node1_counters_by_client"];
  EXPECT_EQ(n["node1"], nlohmann::json({{"cluster_ip_crrs", 20}, {"sock_lb_delta", 20}, {"dnat_new_delta", 0}}));
  EXPECT_EQ(n["pod"], nlohmann::json({{"cluster_ip_crrs", 20}, {"sock_lb_delta", 0}, {"dnat_new_delta", 20}}));
}

}  // namespace
}  // namespace kpx::bpftest
