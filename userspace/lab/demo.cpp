#include "lab/demo.h"

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "k8s/client.h"
#include "lab/echo.h"
#include "lab/http_get.h"
#include "lab/lab.h"
#include "lab/plan.h"
#include "lab/proc.h"
#include "lab/workload.h"

namespace kpx::lab {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

class Demo {
 public:
  Demo(std::string name, std::ostream& out) : name_(std::move(name)), out_(out) {}

  Status run();

 private:
  Status connect();
  // `kpx lab exec TARGET -- argv...`: the same path a user takes.
  RunResult exec(const std::string& target, const std::vector<std::string>& argv);
  std::vector<ProbeAnswer> probe(const std::string& from, const std::string& target, int count,
                                 int interval_ms = 0, int timeout_ms = 1000);
  Result<json> get(const std::string& path);
  std::string pod_ip(const std::string& pod);
  std::string cluster_ip(const std::string& ns, const std::string& svc);
  Status wait_ready(const std::vector<std::string>& pods, std::chrono::seconds limit);
  Status wait_answers(const std::string& from, const std::string& target, size_t backends);
  void heading(const std::string& title, const std::string& what);
  std::string by_pod(const std::vector<ProbeAnswer>& answers);
  Status check(bool ok, const std::string& failure);

  Status container_to_container();
  Status pod_to_pod();
  Status pod_to_service();
  Status hairpin();
  Status discovery();
  Status scaling();
  Status node_port();
  Status node_local();
  Status cluster_ip_from_outside();
  Status local_policy();
  Status health_check();
  Status load_balancer();
  Status source_ranges();
  Status internet();
  std::string load_balancer_ip(const std::string& svc);

  std::string name_;
  std::ostream& out_;
  std::unique_ptr<k8s::Client> client_;
  int step_ = 0;
};

Status Demo::connect() {
  auto c = connect_lab(name_);
  if (!c) return c.error();
  client_ = std::move(*c);
  return {};
}

RunResult Demo::exec(const std::string& target, const std::vector<std::string>& argv) {
  std::vector<std::string> full = {self_executable(), "lab", "exec", "--name", name_, target, "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  auto r = lab::run(full);
  return r ? *r : RunResult{-1, r.error().message};
}

std::vector<ProbeAnswer> Demo::probe(const std::string& from, const std::string& target, int count, int interval_ms,
                                     int timeout_ms) {
  auto r = exec(from, {self_executable(), "lab", "probe", target, "--count", std::to_string(count), "--timeout-ms",
                       std::to_string(timeout_ms), "--interval-ms", std::to_string(interval_ms)});
  return parse_probe_output(r.out);
}

Result<json> Demo::get(const std::string& path) {
  auto r = client_->get(path);
  if (!r) return r.error().to_error();
  return *r;
}

std::string Demo::pod_ip(const std::string& pod) {
  auto p = get("/api/v1/namespaces/default/pods/" + pod);
  return p && (*p).contains("status") ? (*p)["status"].value("podIP", "") : "";
}

std::string Demo::cluster_ip(const std::string& ns, const std::string& svc) {
  auto s = get("/api/v1/namespaces/" + ns + "/services/" + svc);
  return s ? (*s)["spec"].value("clusterIP", "") : "";
}

Status Demo::wait_ready(const std::vector<std::string>& pods, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  for (const auto& p : pods)
    while (pod_ip(p).empty()) {
      if (Clock::now() > deadline) return system_error("pod " + p + " did not become ready");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  return {};
}

// Until the agents have every backend: probes answered by `backends` pods.
Status Demo::wait_answers(const std::string& from, const std::string& target, size_t backends) {
  auto deadline = Clock::now() + std::chrono::seconds(10);
  std::set<std::string> seen;
  while (Clock::now() < deadline) {
    for (const auto& a : probe(from, target, 10, 0, 300))
      if (a.ok) seen.insert(a.pod);
    if (seen.size() >= backends) return {};
  }
  return system_error("only " + std::to_string(seen.size()) + " of " + std::to_string(backends) + " backends of " +
                      target + " answered");
}

void Demo::heading(const std::string& title, const std::string& what) {
  out_ << "\n" << ++step_ << ". " << title << "\n   " << what << "\n";
}

std::string Demo::by_pod(const std::vector<ProbeAnswer>& answers) {
  std::map<std::string, int> n;
  int failed = 0;
  for (const auto& a : answers) a.ok ? ++n[a.pod] : ++failed;
  std::string s;
  for (const auto& [pod, c] : n) s += " " + pod + "×" + std::to_string(c);
  if (failed) s += " failed×" + std::to_string(failed);
  return s;
}

Status Demo::check(bool ok, const std::string& failure) {
  if (ok) return {};
  out_ << "   FAILED: " << failure << "\n";
  return system_error(failure);
}

Status Demo::container_to_container() {
  heading("Container to container, over localhost",
          "pod 'duo' runs two containers (echo on 8080, sidecar on 9090) in one network namespace");
  auto a = probe("duo", "127.0.0.1:9090/tcp", 1);
  auto b = probe("duo", "127.0.0.1:8080/udp", 1);
  bool ok = a.size() == 1 && a[0].ok && a[0].container == "sidecar" && b.size() == 1 && b[0].ok &&
            b[0].container == "echo";
  if (ok) {
    out_ << "   duo → 127.0.0.1:9090/tcp: answered by pod=" << a[0].pod << " container=" << a[0].container
         << ", which saw client " << a[0].client << "\n";
    out_ << "   duo → 127.0.0.1:8080/udp: answered by pod=" << b[0].pod << " container=" << b[0].container << "\n";
  }
  return check(ok, "container-to-container over localhost did not answer as expected");
}

Status Demo::pod_to_pod() {
  std::string same = pod_ip("echo-1-2"), other = pod_ip("echo-2-1"), me = pod_ip("echo-1-1");
  heading("Pod to pod on one node",
          "echo-1-1 (" + me + ") → echo-1-2 (" + same + "): through node1's cbr0 bridge, no NAT");
  auto a = probe("echo-1-1", same + ":8080/tcp", 1);
  bool ok = a.size() == 1 && a[0].ok && a[0].pod == "echo-1-2" && a[0].client_ip() == me;
  if (ok) out_ << "   answered by " << a[0].pod << ", which saw the client as " << a[0].client << "\n";
  KPX_TRY(check(ok, "pod to pod on one node"));
  heading("Pod to pod across nodes", "echo-1-1 (" + me + ") → echo-2-1 (" + other +
                                         "): cbr0 → node1 → fabric → node2 (host-gw route) → cbr0, no NAT");
  auto b = probe("echo-1-1", other + ":8080/tcp", 1);
  ok = b.size() == 1 && b[0].ok && b[0].pod == "echo-2-1" && b[0].client_ip() == me;
  if (ok) out_ << "   answered by " << b[0].pod << ", which saw the client as " << b[0].client << "\n";
  return check(ok, "pod to pod across nodes");
}

Status Demo::pod_to_service() {
  std::string vip = cluster_ip("default", "echo"), me = pod_ip("echo-1-1");
  for (const char* proto : {"tcp", "udp"}) {
    heading(std::string("Pod to Service (ClusterIP, ") + proto + ")",
            "echo-1-1 → service echo " + vip + ":80/" + proto + "; kpx on node1's pod veth picks a backend (DNAT)");
    auto a = probe("echo-1-1", vip + ":80/" + proto, 30);
    std::set<std::string> nodes;
    bool all_ok = !a.empty(), reply_from_vip = true;
    for (const auto& r : a) {
      all_ok &= r.ok;
      if (r.ok) nodes.insert(r.pod.substr(0, r.pod.rfind('-')));
      reply_from_vip &= !r.ok || r.from == vip + ":80";
    }
    std::set<std::string> seen_as;
    for (const auto& r : a)
      if (r.ok && r.pod != "echo-1-1") seen_as.insert(r.client_ip());
    std::string seen;
    for (const auto& ip : seen_as) seen += (seen.empty() ? "" : ", ") + ip;
    out_ << "   30 requests:" << by_pod(a) << "\n   replies came from " << vip
         << ":80 (reverse NAT on the way back)" << (reply_from_vip ? "" : " — NOT ALL")
         << "\n   the other pods saw the client as " << seen << " (its own address: no SNAT between pods)\n";
    all_ok &= seen_as.size() == 1 && *seen_as.begin() == me;
    KPX_TRY(check(all_ok && nodes.size() >= 2 && reply_from_vip,
                  std::string("pod to Service over ") + proto + ": not every request answered from both nodes"));
  }
  return {};
}

Status Demo::hairpin() {
  std::string vip = cluster_ip("default", "loner"), me = pod_ip("loner");
  heading("Hairpin: a pod reaching itself through its own Service",
          "loner (" + me + ") → service loner " + vip + ":80/tcp, whose only backend is loner");
  auto a = probe("loner", vip + ":80/tcp", 3);
  bool ok = a.size() == 3;
  for (const auto& r : a) ok &= r.ok && r.pod == "loner" && r.client_ip() != me;
  if (ok)
    out_ << "   answered by " << a[0].pod << ", which saw the client as " << a[0].client
         << " (source NAT to node1's hairpin address, so the reply comes back through kpx)\n";
  return check(ok, "hairpin");
}

Status Demo::discovery() {
  heading("Service discovery by environment", "kpx lab exec gives pods <SVC>_SERVICE_HOST/PORT as the kubelet does");
  auto env = exec("echo-2-1", {"sh", "-c", "echo $ECHO_SERVICE_HOST:$ECHO_SERVICE_PORT"});
  std::string hostport = env.out.substr(0, env.out.find('\n'));
  out_ << "   in echo-2-1: ECHO_SERVICE_HOST:ECHO_SERVICE_PORT = " << hostport << "\n";
  KPX_TRY(check(hostport == cluster_ip("default", "echo") + ":80", "env discovery: got '" + hostport + "'"));
  auto a = probe("echo-2-1", hostport + "/tcp", 1);
  KPX_TRY(check(a.size() == 1 && a[0].ok, "probe of the env's address"));
  out_ << "   probe " << hostport << "/tcp: answered by " << a[0].pod << "\n";

  heading("Service discovery by DNS",
          std::string("glibc's resolver in the pod asks kube-dns at ") + kDnsServiceIp +
              ":53/udp, itself a ClusterIP Service behind kpx");
  for (const std::string& n : {std::string("echo.default.svc.cluster.local"), std::string("echo"),
                               std::string("kube-dns.kube-system")}) {
    auto r = exec("echo-2-1", {"getent", "hosts", n});
    std::string ip = r.out.substr(0, r.out.find_first_of(" \t\n"));
    out_ << "   getent hosts " << n << " → " << (r.status == 0 ? ip : "(no answer)") << "\n";
    std::string want = n.rfind("kube-dns", 0) == 0 ? kDnsServiceIp : cluster_ip("default", "echo");
    KPX_TRY(check(r.status == 0 && ip == want, "DNS lookup of " + n + ": " + r.out));
  }
  // An ExternalName Service is a CNAME; to a cluster name, glibc follows it
  // and reports the target as the canonical name, the Service as its alias.
  auto alias = exec("echo-2-1", {"getent", "hosts", "echo-alias"});
  std::istringstream words(alias.out);
  std::string ip, canonical;
  words >> ip >> canonical;
  out_ << "   getent hosts echo-alias → ExternalName echo-alias: CNAME " << canonical << " → " << ip << "\n";
  KPX_TRY(check(alias.status == 0 && canonical == "echo.default.svc.cluster.local" &&
                    ip == cluster_ip("default", "echo"),
                "ExternalName echo-alias: " + alias.out));
  auto nx = exec("echo-2-1", {"getent", "hosts", "nosuch.default.svc.cluster.local"});
  out_ << "   getent hosts nosuch.default.svc.cluster.local → " << (nx.status == 2 ? "not found" : "?") << "\n";
  return check(nx.status == 2, "an unknown name should not resolve");
}

Status Demo::scaling() {
  std::string vip = cluster_ip("default", "echo");
  heading("Scaling a Service while a client loops",
          "echo-1-1 sends a request every 20 ms to " + vip + ":80/tcp while pods are added, then deleted "
          "(graceful: terminating endpoints leave the Service before their pods stop)");
  std::vector<ProbeAnswer> answers;
  std::thread loop([&] { answers = probe("echo-1-1", vip + ":80/tcp", 250, 20, 1000); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<json> extra;
  for (int i = 1; i <= 2; ++i) extra.push_back(echo_pod("echo-extra-" + std::to_string(i), "default", {{"app", "echo"}}, "", {8080}));
  Status st = create_all(*client_, extra);
  if (st) st = wait_ready({"echo-extra-1", "echo-extra-2"}, std::chrono::seconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  out_ << "   scaled up: echo-extra-1, echo-extra-2 added\n";
  for (const std::string p : {"echo-extra-1", "echo-extra-2", "echo-2-3"})
    if (st) {
      auto r = client_->send("DELETE", "/api/v1/namespaces/default/pods/" + p, nullptr);
      if (!r) st = r.error().to_error();
    }
  out_ << "   scaled down: echo-extra-1, echo-extra-2, echo-2-3 deleted\n";
  loop.join();
  KPX_TRY(st);
  int failed = 0;
  std::set<std::string> extras_seen;
  for (const auto& a : answers) {
    failed += !a.ok;
    if (a.ok && a.pod.rfind("echo-extra", 0) == 0) extras_seen.insert(a.pod);
  }
  out_ << "   " << answers.size() << " requests:" << by_pod(answers) << "\n";
  return check(answers.size() == 250 && failed == 0 && extras_seen.size() == 2,
               std::to_string(failed) + " requests failed while scaling (or the new pods never answered)");
}

Status Demo::internet() {
  heading("Pod to the internet",
          std::string("echo-1-1 → ") + kInternetIp + ":8080/udp: node1 → gateway → internet; kpx masquerades it to "
                                                    "node1's address (the internet has no route to pod addresses)");
  auto a = probe("echo-1-1", std::string(kInternetIp) + ":8080/udp", 1, 0, 1000);
  const bool ok = a.size() == 1 && a[0].ok && a[0].client_ip() == "10.0.0.11";
  out_ << "   the internet host saw the request from " << (a.empty() ? "(nothing)" : a[0].client) << "; the reply "
       << (a.size() == 1 && a[0].ok ? "came back to the pod" : "never came back") << "\n";
  return check(ok, "pod to the internet: not masqueraded to node1's address and answered");
}

std::string Demo::load_balancer_ip(const std::string& svc) {
  for (int i = 0; i < 200; ++i) {
    auto s = get("/api/v1/namespaces/default/services/" + svc);
    if (s && (*s).contains("status") && (*s)["status"].contains("loadBalancer") &&
        (*s)["status"]["loadBalancer"].contains("ingress"))
      return (*s)["status"]["loadBalancer"]["ingress"][0].value("ip", "");
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return "";
}

namespace {
// The nodes ("echo-N") whose pods answered.
std::set<std::string> answering_nodes(const std::vector<ProbeAnswer>& a) {
  std::set<std::string> nodes;
  for (const auto& r : a)
    if (r.ok) nodes.insert(r.pod.substr(0, r.pod.rfind('-')));
  return nodes;
}
// Every request answered, from `from`, by a backend that saw the client as `ip`.
bool all_seen_as(const std::vector<ProbeAnswer>& a, const std::string& ip, const std::string& from) {
  bool ok = !a.empty();
  for (const auto& r : a) ok &= r.ok && r.client_ip() == ip && r.from == from;
  return ok;
}
bool none_answered(const std::vector<ProbeAnswer>& a) {
  bool none = !a.empty();
  for (const auto& r : a) none &= !r.ok;
  return none;
}
}  // namespace

// The echo pods the scaling step leaves (it deletes echo-2-3).
constexpr size_t kEchoPodsLeft = 5;

Status Demo::node_port() {
  for (const auto& [node, node_ip] : {std::pair{"node1", "10.0.0.11"}, std::pair{"node2", "10.0.0.12"}}) {
    const std::string target = std::string(node_ip) + ":30080/tcp";
    heading(std::string("External client to a NodePort on ") + node,
            "client (" + std::string(kClientIp) + ") → " + target +
                "; kpx on the node's uplink picks any backend (DNAT) and source-NATs to the node "
                "(externalTrafficPolicy Cluster)");
    KPX_TRY(wait_answers("client", target, kEchoPodsLeft));
    auto a = probe("client", target, 12);
    out_ << "   12 requests:" << by_pod(a) << "\n   every backend saw the client as " << node_ip
         << "; the replies came from " << node_ip << ":30080\n";
    KPX_TRY(check(answering_nodes(a).size() == 2 && all_seen_as(a, node_ip, std::string(node_ip) + ":30080"),
                  "NodePort " + target + ": not answered from both nodes through the node's address"));
  }
  return {};
}

Status Demo::node_local() {
  const std::string vip = cluster_ip("default", "echo");
  heading("The node itself as a client (socket-level load balancing)",
          "kpx lab exec node1 runs in node1's cgroup, where kpx's connect/sendmsg hooks send a socket to a "
          "backend when it is made; getpeername and recvfrom still name the Service");
  bool ok = true;
  for (const std::string& target : {vip + ":80/udp", std::string("127.0.0.1:30080/tcp"), std::string("10.0.0.11:30080/tcp")}) {
    KPX_TRY(wait_answers("node1", target, kEchoPodsLeft));
    auto a = probe("node1", target, 12);
    const std::string frontend = target.substr(0, target.rfind('/'));
    bool named = !a.empty();
    for (const auto& r : a) named &= r.ok && r.from == frontend;
    out_ << "   node1 → " << target << ", 12 requests:" << by_pod(a) << (named ? "; every reply from " + frontend : "")
         << "\n";
    ok &= named && answering_nodes(a).size() == 2;
  }
  const std::string api = cluster_ip("default", "kubernetes");
  const HttpAnswer v = parse_http_answer(exec("node1", {"bash", "-c", http_get_command(api, 443, "/version")}).out);
  const size_t at = v.body.find("\"gitVersion\"");
  out_ << "   node1 → the kubernetes Service " << api << ":443: "
       << (at == std::string::npos ? "NO ANSWER" : v.body.substr(at, v.body.find(',', at) - at)) << "\n";
  ok &= at != std::string::npos;
  return check(ok, "node-local client: a Service was not reached through socket-level load balancing");
}

Status Demo::cluster_ip_from_outside() {
  const std::string vip = cluster_ip("default", "echo");
  const std::string target = vip + ":80/tcp";
  heading("External client to a ClusterIP through node1",
          "client routes " + vip + " via 10.0.0.11; the client is outside the cluster CIDR (--detect-local-mode "
          "ClusterCIDR), so kpx on node1's uplink masquerades it, as kube-proxy does");
  auto add = exec("client", {"ip", "route", "add", vip + "/32", "via", "10.0.0.11"});
  KPX_TRY(check(add.status == 0, "could not route " + vip + " through node1 in the client: " + add.out));
  KPX_TRY(wait_answers("client", target, kEchoPodsLeft));
  auto a = probe("client", target, 12);
  (void)exec("client", {"ip", "route", "del", vip + "/32", "via", "10.0.0.11"});
  out_ << "   12 requests:" << by_pod(a) << "\n   every backend saw the client as 10.0.0.11; the replies came from "
       << vip << ":80\n";
  return check(answering_nodes(a).size() == 2 && all_seen_as(a, "10.0.0.11", vip + ":80"),
               "ClusterIP from outside: not answered from both nodes, masqueraded to node1");
}

Status Demo::local_policy() {
  heading("externalTrafficPolicy Local",
          "client → 10.0.0.11:30081/tcp (the NodePort of LoadBalancer web-local, one pod, on node1): local "
          "endpoints only, no source NAT");
  KPX_TRY(wait_answers("client", "10.0.0.11:30081/tcp", 1));
  auto a = probe("client", "10.0.0.11:30081/tcp", 3);
  out_ << "   3 requests:" << by_pod(a) << ", which saw the client as itself (" << kClientIp << ")\n";
  KPX_TRY(check(all_seen_as(a, kClientIp, "10.0.0.11:30081"), "traffic policy Local: the client's address was not kept"));
  auto b = probe("client", "10.0.0.12:30081/tcp", 2, 0, 300);
  out_ << "   client → 10.0.0.12:30081/tcp: " << (none_answered(b) ? "no answer" : "ANSWERED")
       << " (node2 has no local endpoint and drops, as kube-proxy does)\n";
  return check(none_answered(b), "traffic policy Local: a node without local endpoints answered");
}

Status Demo::health_check() {
  auto svc = get("/api/v1/namespaces/default/services/web-local");
  const int port = svc ? (*svc)["spec"].value("healthCheckNodePort", 0) : 0;
  heading("Health check node port (externalTrafficPolicy Local)",
          "web-local is a LoadBalancer: the API server gave it healthCheckNodePort " + std::to_string(port) +
              ", where the cloud's load balancer asks each node whether it has local endpoints");
  KPX_TRY(check(port > 0 && port < 65536, "web-local has no healthCheckNodePort"));
  bool ok = true;
  for (const auto& [node, ip, want] : {std::tuple{"node1", "10.0.0.11", 200}, std::tuple{"node2", "10.0.0.12", 503}}) {
    // The agent opens the listener at its first sync of the Service.
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    HttpAnswer a;
    for (;;) {
      a = parse_http_answer(exec("client", {"bash", "-c", http_get_command(ip, static_cast<uint16_t>(port))}).out);
      if (a.code == want || Clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    out_ << "   client → http://" << ip << ":" << port << "/ (" << node << "): "
         << (a.code ? a.status_line : "no answer") << ", X-Load-Balancing-Endpoint-Weight: "
         << a.header("X-Load-Balancing-Endpoint-Weight") << "\n";
    std::istringstream body(a.body);
    for (std::string line; std::getline(body, line);) out_ << "      " << line << "\n";
    const std::string local = want == 200 ? "1" : "0";
    ok &= a.code == want && a.body.find("\"localEndpoints\": " + local + ",") != std::string::npos;
  }
  out_ << "   (kube-proxy's answer: 200 where the Service has ready local endpoints, else 503)\n";
  return check(ok, "health check node port: node1 should answer 200 with 1 local endpoint, node2 503 with 0");
}

Status Demo::load_balancer() {
  const std::string lb_ip = load_balancer_ip("echo-lb");
  KPX_TRY(check(!lb_ip.empty(), "no load balancer IP was assigned to echo-lb"));
  for (const std::string& vip : {lb_ip, std::string("192.0.2.10")}) {
    const bool lb = vip == lb_ip;
    heading(lb ? "External client to a LoadBalancer IP" : "External client to an external IP",
            lb ? "the lab's load-balancer controller gave service echo-lb " + vip +
                     " (status.loadBalancer.ingress); the gateway routes the pool to the nodes (ECMP)"
               : "service echo-ext lists " + vip + " in spec.externalIPs; the gateway routes it to the nodes");
    KPX_TRY(wait_answers("client", vip + ":80/tcp", kEchoPodsLeft));
    auto a = probe("client", vip + ":80/tcp", 12);
    bool from_vip = !a.empty();
    for (const auto& r : a) from_vip &= r.ok && r.from == vip + ":80";
    out_ << "   12 requests:" << by_pod(a) << "\n   replies came from " << vip << ":80\n";
    KPX_TRY(check(from_vip && answering_nodes(a).size() == 2, vip + ": not answered from both nodes"));
  }
  return {};
}

Status Demo::source_ranges() {
  const std::string vip = load_balancer_ip("echo-ranges");
  heading("loadBalancerSourceRanges",
          "service echo-ranges (" + vip + ") admits 203.0.113.0/24 only; its NodePort 30090 is not restricted");
  KPX_TRY(wait_answers("client", "10.0.0.11:30090/tcp", 1));
  auto a = probe("client", vip + ":80/tcp", 2, 0, 300);
  out_ << "   client → " << vip << ":80/tcp: "
       << (none_answered(a) ? "refused (dropped before any state, counted as drop_source_range)" : "ANSWERED")
       << "\n   client → 10.0.0.11:30090/tcp: answered\n";
  return check(!vip.empty() && none_answered(a), "source ranges: the client was not refused");
}

Status Demo::run() {
  KPX_TRY(connect());
  // The demo's own objects, beside the default `echo` workload.
  std::vector<json> objs = {echo_pod("duo", "default", {{"app", "duo"}}, "node1", {8080, 9090}),
                            echo_pod("loner", "default", {{"app", "loner"}}, "node1", {8080})};
  objs.push_back({{"apiVersion", "v1"},
                  {"kind", "Service"},
                  {"metadata", {{"name", "loner"}, {"namespace", "default"}}},
                  {"spec",
                   {{"selector", {{"app", "loner"}}},
                    {"ports", json::array({{{"port", 80}, {"targetPort", 8080}, {"protocol", "TCP"}}})}}}});
  // A DNS alias (manifests/examples/externalname.yaml).
  objs.push_back({{"apiVersion", "v1"},
                  {"kind", "Service"},
                  {"metadata", {{"name", "echo-alias"}, {"namespace", "default"}}},
                  {"spec", {{"type", "ExternalName"}, {"externalName", "echo.default.svc.cluster.local"}}}});
  // North-south: manifests/examples/nodeport*.yaml and loadbalancer*.yaml.
  auto service = [](const std::string& name, json spec) {
    spec["selector"] = spec.contains("selector") ? spec["selector"] : json{{"app", "echo"}};
    return json{{"apiVersion", "v1"},
                {"kind", "Service"},
                {"metadata", {{"name", name}, {"namespace", "default"}}},
                {"spec", spec}};
  };
  auto tcp_port = [](int node_port) {
    json p = {{"name", "tcp"}, {"port", 80}, {"targetPort", 8080}, {"protocol", "TCP"}};
    if (node_port) p["nodePort"] = node_port;
    return json::array({p});
  };
  objs.push_back(service("echo-nodeport", {{"type", "NodePort"}, {"ports", tcp_port(30080)}}));
  objs.push_back(echo_pod("web-local-1", "default", {{"app", "web-local"}}, "node1", {8080}));
  objs.push_back(service("web-local", {{"type", "LoadBalancer"},
                                       {"externalTrafficPolicy", "Local"},
                                       {"selector", {{"app", "web-local"}}},
                                       {"ports", tcp_port(30081)}}));
  objs.push_back(service("echo-lb", {{"type", "LoadBalancer"}, {"ports", tcp_port(0)}}));
  objs.push_back(service("echo-ext", {{"externalIPs", json::array({"192.0.2.10"})}, {"ports", tcp_port(0)}}));
  objs.push_back(service("echo-ranges", {{"type", "LoadBalancer"},
                                         {"loadBalancerSourceRanges", json::array({"203.0.113.0/24"})},
                                         {"ports", tcp_port(30090)}}));
  KPX_TRY(create_all(*client_, objs));
  KPX_TRY(wait_ready({"duo", "loner", "web-local-1"}, std::chrono::seconds(10)));
  KPX_TRY(wait_answers("echo-1-1", cluster_ip("default", "echo") + ":80/tcp", 6));
  for (auto step : {&Demo::container_to_container, &Demo::pod_to_pod, &Demo::pod_to_service, &Demo::hairpin,
                    &Demo::discovery, &Demo::scaling, &Demo::node_port, &Demo::node_local, &Demo::cluster_ip_from_outside, &Demo::local_policy, &Demo::health_check,
                    &Demo::load_balancer, &Demo::source_ranges, &Demo::internet})
    KPX_TRY((this->*step)());
  return {};
}

}  // namespace

Status lab_demo(const std::string& name, bool keep, std::ostream& out) {
  LabSpec spec;
  spec.name = name;
  KPX_TRY(lab_up(spec, 0, out));
  out << "\nkpx lab status --name " << name << "\n";
  (void)lab_status(name, out);
  Demo demo(name, out);
  Status st;
  try {
    st = demo.run();
  } catch (const std::exception& e) {  // the lab still goes down below
    st = system_error(std::string("the demo stopped: ") + e.what());
  }
  out << "\n" << (st ? "every path worked" : "a path FAILED: " + st.error().message) << "\n";
  if (!keep) {
    if (auto down = lab_down(name, out); !down && st) st = down;
  } else {
    out << "the lab is still running: kpx lab status --name " << name << "; kpx lab down --name " << name << "\n";
  }
  return st;
}

}  // namespace kpx::lab
