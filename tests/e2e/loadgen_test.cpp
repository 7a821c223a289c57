// kpx-bench loadgen against kpx-bench loadserver (and the lab's echo
// server) over a veth pair between two namespaces of the test's own, every
// mode with small counts: the JSON's counts add up, percentiles are in
// order, failures are counted by reason and never hang the run. Nothing is
// made in the root namespace; the namespaces (and so the veths) go at the
// end, also when a test fails.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "support/scoped.h"

namespace kpx::e2e {
namespace {

using nlohmann::json;
using testing::sh;
using testing::sh_out;

constexpr const char* kClientAddr = "10.77.0.1";
constexpr const char* kServerAddr = "10.77.0.2";
constexpr const char* kSilentAddr = "10.77.0.9";   // on the link, nobody answers its ARP
constexpr const char* kServer = "10.77.0.2:9000";  // loadserver
constexpr const char* kEcho = "10.77.0.2:8080";    // the lab's echo server
constexpr const char* kNobody = "10.77.0.2:9001";  // no listener

struct LoadRun {
  int status = -1;
  json doc;
  double wall_s = 0;
};

// Two namespaces joined by a veth made inside the client's (its peer moved
// straight into the server's), loadserver and the echo server in the
// server's.
class VethPair {
 public:
  VethPair() {
    client_ = netns_.add("lgc");
    server_ = netns_.add("lgs");
    if (client_.empty() || server_.empty()) return;
    const std::string cmds[] = {
        "ip -n " + client_ + " link add lg0 type veth peer name lg1 netns " + server_,
        "ip -n " + client_ + " addr add " + kClientAddr + "/24 dev lg0",
        "ip -n " + client_ + " link set lg0 up",
        "ip -n " + server_ + " addr add " + kServerAddr + "/24 dev lg1",
        "ip -n " + server_ + " link set lg1 up",
    };
    for (const std::string& c : cmds)
      if (sh(c) != 0) return;
    procs_.spawn({"ip", "netns", "exec", server_, KPX_BENCH_BINARY, "loadserver", "--port", "9000", "--name",
                  "srv", "--exit-after-s", "600"});
    procs_.spawn({"ip", "netns", "exec", server_, KPX_BINARY, "lab", "echo-server", "--name", "echo",
                  "--port", "8080"});
    for (int i = 0; i < 100 && !ready_; ++i) {
      ready_ = loadgen("crr --target " + std::string(kServer) + " --count 1 --timeout-ms 200").status == 0 &&
               loadgen("crr --target " + std::string(kEcho) + " --count 1 --request-size 0 --timeout-ms 200")
                       .status == 0;
      if (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  bool ready() const { return ready_; }
  const std::string& client() const { return client_; }
  const std::string& server() const { return server_; }

  // kpx-bench loadgen ARGS in the client's namespace: exit status, JSON
  // document (null if none), wall time.
  LoadRun loadgen(const std::string& args) const {
    LoadRun r;
    const auto t0 = std::chrono::steady_clock::now();
    const std::string out =
        sh_out("ip netns exec " + client_ + " " + KPX_BENCH_BINARY + " loadgen " + args, &r.status);
    r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.doc = json::parse(out, nullptr, false);
    if (r.doc.is_discarded()) r.doc = nullptr;
    return r;
  }

 private:
  // Declared first, destroyed last: the servers are stopped before their namespace goes.
  testing::ScopedNetns netns_;
  testing::ScopedProcesses procs_;
  std::string client_, server_;
  bool ready_ = false;
};

class Loadgen : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(pair_.ready()) << "loadserver and the echo server never answered"; }
  LoadRun loadgen(const std::string& args) { return pair_.loadgen(args); }
  VethPair pair_;
};

// min <= p50 <= p90 <= p99 <= p999 <= max, `count` samples.
void expect_ordered(const json& l, uint64_t count, const std::string& what) {
  ASSERT_TRUE(l.is_object()) << what;
  EXPECT_EQ(l["count"].get<uint64_t>(), count) << what;
  double prev = 0;
  for (const char* k : {"min", "p50", "p90", "p99", "p999", "max"}) {
    const double v = l[k].get<double>();
    EXPECT_GE(v, prev) << what << " " << k << ": " << l.dump();
    prev = v;
  }
  if (count > 0) {
    EXPECT_GT(l["min"].get<double>(), 0) << what;
  }
}

void expect_no_failures(const json& j) {
  EXPECT_EQ(j["failed"], 0) << j.dump();
  for (const auto& [reason, n] : j["failures"].items()) EXPECT_EQ(n, 0) << reason;
  EXPECT_EQ(j["first_error"], "");
}

TEST_F(Loadgen, CrrAtTheMaximumRateCompletesEveryConnection) {
  const LoadRun r = loadgen(std::string("crr --target ") + kServer + " --count 200 --concurrency 8");
  ASSERT_TRUE(r.doc.is_object());
  const json& j = r.doc;
  EXPECT_EQ(r.status, 0) << j.dump();
  EXPECT_EQ(j["mode"], "crr");
  EXPECT_EQ(j["schedule"], "max_rate");
  EXPECT_EQ(j["requested"], 200);
  EXPECT_EQ(j["started"], 200);
  EXPECT_EQ(j["completed"], 200);
  EXPECT_EQ(j["unfinished"], 0);
  EXPECT_EQ(j["not_started"], 0);
  expect_no_failures(j);
  EXPECT_GT(j["rate"].get<double>(), 0);
  expect_ordered(j["latency_us"], 200, "latency");
  expect_ordered(j["connect_us"], 200, "connect");
  // The connect is part of the CRR.
  EXPECT_LE(j["connect_us"]["p50"].get<double>(), j["latency_us"]["p50"].get<double>());
  EXPECT_EQ(j["backends"], json({{"srv", 200}}));
  EXPECT_EQ(j["bytes_received"], 200 * 128);  // loadserver's default response size
  EXPECT_GE(j["cpu"]["process_user_s"].get<double>() + j["cpu"]["process_system_s"].get<double>(), 0);
  EXPECT_TRUE(j["cpu"]["machine_busy_s"].is_number());
}

TEST_F(Loadgen, CrrOpenLoopKeepsTheScheduleAndMeasuresFromIt) {
  const LoadRun r = loadgen(std::string("crr --target ") + kServer + " --count 200 --rate 1000");
  ASSERT_TRUE(r.doc.is_object());
  const json& j = r.doc;
  EXPECT_EQ(r.status, 0) << j.dump();
  EXPECT_EQ(j["schedule"], "open_loop");
  EXPECT_EQ(j["latency_from"], "due_time");
  EXPECT_EQ(j["completed"], 200);
  expect_no_failures(j);
  // The last is due at 199 ms: the run cannot be shorter, nor, at 1000/s, faster.
  EXPECT_GE(j["elapsed_s"].get<double>(), 0.199);
  EXPECT_LE(j["rate"].get<double>(), 1010);
  EXPECT_GT(j["rate"].get<double>(), 0);
  expect_ordered(j["latency_us"], 200, "latency");
  expect_ordered(j["connect_us"], 200, "connect");
  ASSERT_TRUE(j.contains("start_lag_us"));
  EXPECT_EQ(j["start_lag_us"]["count"], 200);
  EXPECT_EQ(j["capped_starts"], 0);
}

TEST_F(Loadgen, CrrOpenLoopPastItsInflightCapCountsTheWait) {
  // One in flight at most, 100000 due a second: nearly every start waits,
  // and that wait is in its latency (from the due time), not hidden.
  const LoadRun r =
      loadgen(std::string("crr --target ") + kServer + " --count 200 --rate 100000 --max-inflight 1");
  ASSERT_TRUE(r.doc.is_object());
  const json& j = r.doc;
  EXPECT_EQ(j["completed"], 200) << j.dump();
  EXPECT_GT(j["capped_starts"].get<uint64_t>(), 0u);
  EXPECT_GT(j["latency_us"]["max"].get<double>(), j["connect_us"]["max"].get<double>());
  EXPECT_GT(j["start_lag_us"]["max"].get<double>(), 0);
}

TEST_F(Loadgen, CrrMeasuresTheLabEchoServerToo) {
  for (const char* size : {"0", "64"}) {
    const LoadRun r =
        loadgen(std::string("crr --target ") + kEcho + " --count 200 --concurrency 4 --request-size " + size);
    ASSERT_TRUE(r.doc.is_object()) << size;
    EXPECT_EQ(r.status, 0) << size << " " << r.doc.dump();
    EXPECT_EQ(r.doc["completed"], 200) << size;
    expect_no_failures(r.doc);
    EXPECT_EQ(r.doc["backends"], json({{"echo", 200}})) << size;
  }
}

TEST_F(Loadgen, RrRunsForItsDurationOnKeptConnections) {
  const LoadRun r = loadgen(std::string("rr --target ") + kServer + " --connections 4 --duration-s 1");
  ASSERT_TRUE(r.doc.is_object());
  const json& j = r.doc;
  EXPECT_EQ(r.status, 0) << j.dump();
  EXPECT_EQ(j["mode"], "rr");
  expect_no_failures(j);
  EXPECT_EQ(j["connect_failed"], 0);
  const uint64_t n = j["completed"];
  EXPECT_GT(n, 0u);
  EXPECT_GT(j["rate"].get<double>(), 0);
  EXPECT_GE(j["elapsed_s"].get<double>(), 1.0);
  EXPECT_LT(j["elapsed_s"].get<double>(), 1.5);
  expect_ordered(j["latency_us"], n, "latency");
}

TEST_F(Loadgen, RrStopsAtItsCount) {
  const LoadRun r =
      loadgen(std::string("rr --target ") + kServer + " --connections 4 --count 1000 --duration-s 30");
  ASSERT_TRUE(r.doc.is_object());
  EXPECT_EQ(r.status, 0) << r.doc.dump();
  EXPECT_EQ(r.doc["completed"], 1000);
  EXPECT_EQ(r.doc["unfinished"], 0);
  expect_ordered(r.doc["latency_us"], 1000, "latency");
  EXPECT_LT(r.wall_s, 20);
}

TEST_F(Loadgen, StreamMovesBulkDataBothWays) {
  for (const char* dir : {"send", "receive"}) {
    const LoadRun r = loadgen(std::string("stream --target ") + kServer + " --duration-s 1 --direction " + dir);
    ASSERT_TRUE(r.doc.is_object()) << dir;
    const json& j = r.doc;
    EXPECT_EQ(r.status, 0) << dir << " " << j.dump();
    EXPECT_EQ(j["direction"], dir);
    expect_no_failures(j);
    EXPECT_GT(j["bytes"].get<uint64_t>(), 0u) << dir;
    EXPECT_GT(j["gbit_s"].get<double>(), 0) << dir;
    EXPECT_GE(j["elapsed_s"].get<double>(), 1.0) << dir;
  }
}

TEST_F(Loadgen, StreamStopsAtItsByteCountAndCountsWhatArrived) {
  for (const char* dir : {"send", "receive"}) {
    const LoadRun r = loadgen(std::string("stream --target ") + kServer +
                          " --duration-s 30 --max-bytes 10000000 --direction " + dir);
    ASSERT_TRUE(r.doc.is_object()) << dir;
    EXPECT_EQ(r.status, 0) << dir << " " << r.doc.dump();
    EXPECT_EQ(r.doc["bytes"], 10000000) << dir;  // send: all of it acknowledged by the server
    EXPECT_LT(r.wall_s, 20) << dir;
  }
}

TEST_F(Loadgen, NoListenerIsRefusedNotAHang) {
  const LoadRun crr = loadgen(std::string("crr --target ") + kNobody + " --count 20 --concurrency 4");
  ASSERT_TRUE(crr.doc.is_object());
  EXPECT_EQ(crr.status, 1);
  EXPECT_EQ(crr.doc["completed"], 0);
  EXPECT_EQ(crr.doc["failed"], 20);
  EXPECT_EQ(crr.doc["failures"]["refused"], 20) << crr.doc.dump();
  EXPECT_EQ(crr.doc["first_error"], "connect: Connection refused");
  EXPECT_EQ(crr.doc["latency_us"]["count"], 0);
  EXPECT_LT(crr.wall_s, 5);
  const LoadRun rr = loadgen(std::string("rr --target ") + kNobody + " --connections 2 --duration-s 5");
  ASSERT_TRUE(rr.doc.is_object());
  EXPECT_EQ(rr.status, 1);
  EXPECT_EQ(rr.doc["failures"]["refused"], 2) << rr.doc.dump();
  EXPECT_EQ(rr.doc["completed"], 0);
  EXPECT_LT(rr.wall_s, 4);  // nothing to wait for: not the whole duration
  const LoadRun st = loadgen(std::string("stream --target ") + kNobody + " --duration-s 5");
  ASSERT_TRUE(st.doc.is_object());
  EXPECT_EQ(st.status, 1);
  EXPECT_EQ(st.doc["failures"]["refused"], 1) << st.doc.dump();
  EXPECT_LT(st.wall_s, 4);
}

TEST_F(Loadgen, ASilentAddressTimesOut) {
  const LoadRun r = loadgen(std::string("crr --target ") + kSilentAddr +
                        ":9000 --count 3 --concurrency 3 --timeout-ms 300");
  ASSERT_TRUE(r.doc.is_object());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.doc["failures"]["timeout"], 3) << r.doc.dump();
  EXPECT_EQ(r.doc["first_error"], "connect: Connection timed out");
  EXPECT_LT(r.wall_s, 3);
}

TEST(LoadgenCli, BadInputIsRefusedWithExitTwo) {
  for (const char* args :
       {"crr --target 10.77.0.2", "crr --target 10.77.0.2:0", "crr --target 10.77.0.2:99999",
        "crr --target x:80", "crr", "crr --target 10.77.0.2:80 --count 0",
        "crr --target 10.77.0.2:80 --rate 10 --concurrency 3", "crr --target 10.77.0.2:80 --max-inflight 10",
        "rr --target 10.77.0.2:80 --connections 0", "stream --target 10.77.0.2:80 --direction up",
        "bogus --target 10.77.0.2:80", ""}) {
    int st = 0;
    const std::string out = sh_out(std::string(KPX_BENCH_BINARY) + " loadgen " + args + " 2>&1", &st);
    EXPECT_EQ(st, 2) << args << ": " << out;
    EXPECT_FALSE(out.empty()) << args;
  }
  int st = 0;
  sh_out(std::string(KPX_BENCH_BINARY) + " loadserver --port 0 2>&1", &st);
  EXPECT_EQ(st, 2);
  // Hidden from kpx-bench --help, as crr-client is.
  const std::string help = sh_out(std::string(KPX_BENCH_BINARY) + " --help");
  EXPECT_EQ(help.find("\n  loadgen"), std::string::npos) << help;
  EXPECT_EQ(help.find("\n  loadserver"), std::string::npos) << help;
  EXPECT_NE(help.find("\n  datapath"), std::string::npos) << help;
}

std::string root_namespace_state() {
  return sh_out(
      "ip -o link show | awk '{print $2}'; ip -o addr show | awk '{print $2, $4}'; ip route show table all");
}

TEST(LoadgenCleanup, TheNamespacesAndTheirServersGo) {
  const std::string before = root_namespace_state();
  std::string client, server, servers;
  {
    VethPair pair;
    ASSERT_TRUE(pair.ready());
    client = pair.client();
    server = pair.server();
    servers = sh_out("ip netns pids " + server);
    EXPECT_EQ(pair.loadgen(std::string("crr --target ") + kServer + " --count 10").status, 0);
  }
  const std::string left = sh_out("ip netns list | grep -E '^(" + client + "|" + server + ")( |$)' || true");
  EXPECT_EQ(left, "");
  ASSERT_FALSE(servers.empty());
  for (size_t at = 0, nl; (nl = servers.find('\n', at)) != std::string::npos; at = nl + 1)
    EXPECT_NE(sh("kill -0 " + servers.substr(at, nl - at) + " 2>/dev/null"), 0)
        << "server " << servers.substr(at, nl - at) << " is left";
  EXPECT_EQ(root_namespace_state(), before);
}

}  // namespace
}  // namespace kpx::e2e
