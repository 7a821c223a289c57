// The LabTest fixture: a lab of its own for each test (`kpx lab up`, well
// under a second), helpers to reach into it (exec, probe, kubectl), and the
// check that `kpx lab down` leaves nothing behind.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "lab/echo.h"
#include "lab/http_get.h"
#include "lab/proc.h"
#include "support/dns_message.h"
#include "support/scoped.h"

namespace kpx::e2e {

using json = nlohmann::json;
using lab::ProbeAnswer;
using testing::sh;
using testing::sh_out;
namespace fs = std::filesystem;

// What the root namespace looks like: interfaces, addresses, routes, rules.
inline std::string root_namespace_state() {
  return sh_out("ip -o link show | awk '{print $2}'; ip -o addr show | awk '{print $2, $4}'; "
                "ip route show table all; ip rule show; nft list ruleset 2>/dev/null | md5sum");
}

class LabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int seq = 0;
    name_ = "e" + std::to_string(getpid()) + "x" + std::to_string(seq++);
    root_before_ = root_namespace_state();
    std::string out;
    int rc = kpx("lab up --name " + name_ + up_args(), &out);
    ASSERT_EQ(rc, 0) << out;
    std::ifstream f("/run/kpx-lab/" + name_ + "/state.json");
    json st = json::parse(f);
    api_ = "http://127.0.0.1:" + std::to_string(st["apiPort"].get<int>());
    daemon_pid_ = st["daemonPid"].get<int>();
  }

  virtual std::string up_args() const { return ""; }

  void TearDown() override {
    if (HasFailure())  // the lab's own logs say what went wrong
      std::cerr << sh_out("tail -n 15 /run/kpx-lab/" + name_ + "/*.log 2>&1");
    std::string out;
    EXPECT_EQ(kpx("lab down --name " + name_, &out), 0) << out;
    expect_nothing_left();
  }

  void expect_nothing_left() {
    EXPECT_EQ(sh_out("ls /var/run/netns | grep '^kpxlab-" + name_ + "-' || true"), "");
    EXPECT_EQ(sh_out("ls /sys/fs/bpf | grep '^kpx-" + name_ + "-' || true"), "");
    EXPECT_EQ(sh_out("grep -h cgroup2 /proc/mounts | awk '{print $2}' | xargs -I{} ls {} | grep '^kpx-lab-" + name_ +
                     "$' || true"),
              "");
    EXPECT_FALSE(fs::exists("/run/kpx-lab/" + name_));
    EXPECT_FALSE(lab::running(daemon_pid_)) << "the lab daemon still runs";
    // [l]: the pattern must not match the shell running pgrep.
    EXPECT_EQ(sh_out("pgrep -f '[l]ab daemon --name " + name_ + " ' || true"), "");
    EXPECT_EQ(sh_out("pgrep -f '[k]px-" + name_ + "-node' || true"), "") << "agents still run";
    EXPECT_EQ(root_namespace_state(), root_before_) << "the root namespace changed";
  }

  int kpx(const std::string& args, std::string* out = nullptr) {
    int st = 0;
    std::string o = sh_out(std::string(KPX_BINARY) + " " + args + " 2>&1", &st);
    if (out) *out = o;
    return st;
  }

  // `kpx lab exec` of a shell command line in a pod, node or `client`.
  std::string exec(const std::string& target, const std::string& cmd, int* status = nullptr) {
    return sh_out(std::string(KPX_BINARY) + " lab exec --name " + name_ + " " + target + " -- bash -c '" + cmd + "'",
                  status);
  }

  std::vector<ProbeAnswer> probe(const std::string& from, const std::string& target, int count,
                                 const std::string& extra = "") {
    return lab::parse_probe_output(exec(from, std::string(KPX_BINARY) + " lab probe " + target + " --count " +
                                                  std::to_string(count) + " " + extra));
  }

  // One DNS query from a pod to kube-dns, sent and read by bash itself
  // (/dev/udp, one datagram through dd): the answer's bytes as they came.
  std::optional<testing::DnsResponse> ask_dns(const std::string& pod, const std::string& name, uint16_t qtype) {
    std::string bytes;
    char hex[8];
    for (uint8_t b : testing::dns_query(name, qtype)) {
      snprintf(hex, sizeof hex, "\\x%02x", b);
      bytes += hex;
    }
    std::string out = exec(pod, "exec 3<>/dev/udp/10.96.0.10/53 && printf \"" + bytes +
                                    "\" >&3 && timeout 3 dd bs=512 count=1 <&3 2>/dev/null | od -An -v -tx1");
    std::vector<uint8_t> answer;
    std::istringstream words(out);
    for (std::string w; words >> w;) answer.push_back(static_cast<uint8_t>(std::stoi(w, nullptr, 16)));
    return testing::parse_dns_response(answer);
  }

  json kubectl_json(const std::string& args) {
    std::string out = sh_out("kubectl --server " + api_ + " " + args + " -o json");
    auto j = json::parse(out, nullptr, false);
    return j.is_discarded() ? json() : j;
  }
  std::string pod_ip(const std::string& pod) {
    json p = kubectl_json("get pod " + pod);
    return p.is_object() && p.contains("status") ? p["status"].value("podIP", "") : "";
  }
  std::string cluster_ip(const std::string& svc, const std::string& ns = "default") {
    json s = kubectl_json("-n " + ns + " get service " + svc);
    return s.is_object() ? s["spec"].value("clusterIP", "") : "";
  }
  int apply(const std::string& example) {
    std::string out;
    int rc = kpx("lab apply --name " + name_ + " -f " + KPX_SOURCE_DIR + "/manifests/examples/" + example, &out);
    EXPECT_EQ(rc, 0) << out;
    return rc;
  }
  // The IP the lab's load-balancer controller gave a Service ("" if none came).
  std::string load_balancer_ip(const std::string& svc) {
    for (int i = 0; i < 200; ++i) {
      json s = kubectl_json("get service " + svc);
      if (s.is_object() && s.contains("status") && s["status"].contains("loadBalancer") &&
          s["status"]["loadBalancer"].contains("ingress"))
        return s["status"]["loadBalancer"]["ingress"][0].value("ip", "");
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return "";
  }
  bool wait_pod(const std::string& pod) {
    for (int i = 0; i < 200; ++i) {
      if (!pod_ip(pod).empty()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  // Probes until `want` distinct pods have answered (the agents program
  // within milliseconds of the EndpointSlice; this bounds the wait).
  std::set<std::string> answering(const std::string& from, const std::string& target, size_t want) {
    std::set<std::string> seen;
    for (int round = 0; round < 20 && seen.size() < want; ++round)
      for (const auto& a : probe(from, target, 20, "--timeout-ms 300"))
        if (a.ok) seen.insert(a.pod);
    return seen;
  }

  // `count` requests from `from` to target (IP:PORT/PROTO) all answered,
  // each naming frontend (IP:PORT) as its peer, by backends on both nodes.
  void expect_answered_from_both_nodes(const std::string& from, const std::string& target,
                                       const std::string& frontend, int count) {
    std::set<std::string> nodes;
    for (const auto& r : probe(from, target, count)) {
      EXPECT_TRUE(r.ok) << from << " to " << target << ": " << r.line;
      EXPECT_EQ(r.from, frontend) << "the peer is the frontend: " << r.line;
      nodes.insert(r.pod.substr(0, 6));
    }
    EXPECT_EQ(nodes.size(), 2u) << from << " to " << target << ": backends on both nodes";
  }

  // A client in `from` (on node1) keeps one connected UDP socket to a
  // one-pod Service while its pod is replaced; see the test below.
  void connected_udp_socket_follows_a_replaced_backend(const std::string& from) {
    auto pod = [](const std::string& name) {
      return "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"" + name +
             "\",\"labels\":{\"app\":\"resolver\"}},\"spec\":{\"terminationGracePeriodSeconds\":10,\"containers\":[{"
             "\"name\":\"echo\",\"image\":\"kpx/echo\",\"ports\":[{\"containerPort\":8080}],"
             "\"lifecycle\":{\"preStop\":{\"sleep\":{\"seconds\":8}}}}]}}\n";
    };
    const std::string svc =
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"resolver\"},\"spec\":{\"selector\":{"
        "\"app\":\"resolver\"},\"ports\":[{\"name\":\"dns\",\"protocol\":\"UDP\",\"port\":53,\"targetPort\":8080}]}}\n";
    auto create = [&](const std::string& obj) {
      return sh("printf '%s' '" + obj + "' | kubectl --server " + api_ + " create --validate=false -f - >/dev/null");
    };
    ASSERT_EQ(create(pod("resolver-a") + svc), 0);
    ASSERT_TRUE(wait_pod("resolver-a"));
    const std::string target = cluster_ip("resolver") + ":53/udp";
    ASSERT_EQ(answering(from, target, 1), (std::set<std::string>{"resolver-a"}));

    std::vector<ProbeAnswer> answers;
    std::thread client(
        [&] { answers = probe(from, target, 100, "--keep-socket --interval-ms 50 --timeout-ms 300"); });
    // The new pod comes and serves, then the old one leaves the Service:
    // relabelled, it is removed from the slice while it still runs and
    // answers (a socket still on it would get answers, and no ICMP error
    // from a closed port would end the socket instead). A pod that is
    // deleted first terminates while still serving: flows to it are left to
    // finish, as kube-proxy leaves them (UdpFlushTest), until it is gone.
    EXPECT_EQ(create(pod("resolver-b")), 0);
    EXPECT_TRUE(wait_pod("resolver-b"));
    EXPECT_EQ(answering(from, target, 2).size(), 2u);
    EXPECT_EQ(sh("kubectl --server " + api_ +
                 " patch pod resolver-a --type merge -p '{\"metadata\":{\"labels\":{\"app\":\"retired\"}}}' >/dev/null"),
              0);
    client.join();

    ASSERT_EQ(answers.size(), 100u);
    std::string order;
    for (const auto& a : answers) order += a.ok ? a.pod.substr(9) + " " : "- ";
    size_t i = 0, failed = 0;
    for (; i < answers.size() && answers[i].ok; ++i) EXPECT_EQ(answers[i].pod, "resolver-a") << order;
    for (; i < answers.size() && !answers[i].ok; ++i) {
      ++failed;
      EXPECT_EQ(answers[i].line.find("timeout"), std::string::npos) << "the socket's error, not a lost reply: " << order;
    }
    EXPECT_EQ(failed, 1u) << order;
    EXPECT_GE(answers.size() - i, 10u) << "the client reconnected and was answered: " << order;
    for (; i < answers.size(); ++i) {
      EXPECT_TRUE(answers[i].ok) << order;
      EXPECT_EQ(answers[i].pod, "resolver-b") << order;
      EXPECT_EQ(answers[i].from, target.substr(0, target.size() - 4)) << "the peer is the Service: " << answers[i].line;
    }
    std::string out;
    ASSERT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-node1 stats -o json", &out), 0) << out;
    EXPECT_EQ(json::parse(out, nullptr, false).value("sock_udp_destroyed", uint64_t{0}), 1u) << out;
  }

  std::string name_, api_, root_before_;
  int daemon_pid_ = 0;
};

}  // namespace kpx::e2e
