// kpx-bench datapath with tiny counts: every case (the pod side and the
// uplink's NodePort cases) runs its checked path, the JSON carries them,
// and the bench leaves nothing behind: no pin directory, no namespace, and
// the root namespace as it was.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

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

// kpx-bench datapath with these arguments, stderr dropped: its stdout, and
// its pid (the shell's first line; exec keeps it), to find what it names
// after itself.
std::string run_bench(const std::string& args, std::string* pid, int* status) {
  const std::string out =
      sh_out(std::string("sh -c 'echo $$; exec ") + KPX_BENCH_BINARY + " datapath " + args + "' 2>/dev/null", status);
  *pid = out.substr(0, out.find('\n'));
  return out.substr(out.find('\n') + 1);
}

// No namespace or pin directory of that pid's, the root namespace as before.
void expect_nothing_left(const std::string& pid, const std::string& before) {
  ASSERT_FALSE(pid.empty());
  EXPECT_EQ(sh_out("ls /var/run/netns 2>/dev/null | grep '^kpx-bench-" + pid + "' || true"), "");
  EXPECT_EQ(sh_out("ls /sys/fs/bpf | grep '^kpx-bench-" + pid + "' || true"), "");
  EXPECT_EQ(root_namespace_state(), before) << "the root namespace changed";
}

TEST(BenchSmoke, DatapathRunsEveryCaseAndLeavesNothingBehind) {
  const std::string before = root_namespace_state();
  int st = 0;
  std::string pid;
  const std::string out = run_bench(
      "--json --services 1,3 --repeats 2 --iterations 2 --new-flow-frames 2 --mix-flows 2 --uplink-frames 3", &pid,
      &st);
  expect_nothing_left(pid, before);
  ASSERT_EQ(st, 0) << out;
  auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
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
  const std::string out = run_bench("--paths uplink --services 2 --repeats 1 --uplink-frames 2", &pid, &st);
  expect_nothing_left(pid, before);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NE(out.find("kpx-bench datapath, uplink:"), std::string::npos) << out;
  for (const char* c : kUplinkCases) EXPECT_NE(out.find(std::string("\n") + c + " "), std::string::npos) << c;
  EXPECT_EQ(out.find("ns/packet"), std::string::npos) << "the pod cases ran";
}

}  // namespace
}  // namespace kpx::bpftest
