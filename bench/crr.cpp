// CRRs against the lab's echo server, and kpx-bench socket-lb's lab part.
//
// The echo server's TCP protocol (userspace/lab/echo.cpp): it answers every
// connection it accepts with one line, "pod=NAME client=IP:PORT ...", and
// shuts its side down; it reads nothing. So one CRR is: socket(), a
// blocking connect() (the request is the connection itself), read() until
// the reply's newline, close() with SO_LINGER 0 (RST: neither side keeps a
// TIME_WAIT entry over thousands of CRRs to one address and port). A CRR is
// timed from socket() to close(), each separately. Given several targets,
// the client goes to each in turn, CRR by CRR (A, B, A, B, ...), so that a
// case and its floor see the same moments of a machine whose speed drifts
// (on this VM, from one second to the next, by more than what socket LB
// saves); it gives the median and the mean of each target's CRRs.
//
// The lab part: `kpx lab up --name kbs<pid>` (the defaults: 2 nodes x 3 echo
// pods), then a Service of the bench's own, default/crr (80/TCP ->
// targetPort 8080), over one pod of its own, crr-backend on node1, so the
// ClusterIP has exactly one backend and every case reaches the same
// server. Two clients on node1, each run as `kpx lab exec ... --
// kpx-bench crr-client`:
//  - node1 itself: the command joins node1's cgroup and namespace, where
//    its agent runs socket-level load balancing: a connect() to the
//    ClusterIP is sent to the pod's address once, then every packet goes
//    as if to the pod directly;
//  - pod default/echo-1-1 (a pod of the default workload on node1, no
//    backend of crr): its packets go through kpx_from_pod / kpx_to_pod on
//    the veths, one conntrack flow per CRR.
// Each client's run alternates its two cases: the backend pod's address and
// port (no Service: kpx's pass paths only; the floor) and the ClusterIP.
// Per round one run of each client (node1, then the pod), `crrs` CRRs to
// each target; the table gives the median over rounds of the runs'
// medians. node1's counters are read around every run: socket LB (sock_lb)
// must have served each of node1's ClusterIP CRRs and nothing of the pod's,
// the per-packet path (dnat_new) each of the pod's and nothing of node1's.
#include "crr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iomanip>
#include <thread>

#include "bpf/fd.h"
#include "bpf/pinned_maps.h"
#include "k8s/client.h"
#include "lab/lab.h"
#include "lab/manifest.h"
#include "lab/proc.h"
#include "lab/workload.h"
#include "net/endpoint.h"
#include "prog_run.h"

namespace kpx::bench {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// ---- the client -------------------------------------------------------------------

namespace {

// One CRR: the reply line, or why there was none.
Result<std::string> one_crr(const sockaddr_in& dst, const timeval& timeout) {
  bpf::UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error("socket", errno);
  const linger rst{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
  // SO_SNDTIMEO bounds a blocking connect() too (it then fails EINPROGRESS).
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0)
    return errno == EINPROGRESS ? system_error("connect: timeout") : errno_error("connect", errno);
  std::string reply;
  char buf[512];
  while (reply.find('\n') == std::string::npos) {
    const ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN ? system_error("read: timeout") : errno_error("read", errno);
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (reply.rfind("pod=", 0) != 0) return system_error("not an echo server's reply: '" + reply + "'");
  return reply.substr(0, reply.find('\n'));
}

}  // namespace

int run_crr_client(const CrrClientOptions& o, std::ostream& out, std::ostream& err) {
  struct Target {
    std::string name;
    sockaddr_in addr{};
    std::vector<double> ns;
    std::map<std::string, uint64_t> backends;  // which pod answered, how often
  };
  std::vector<Target> targets;
  for (const std::string& t : o.targets) {
    auto b = net::parse_backend(t);
    if (!b) {
      err << "kpx-bench crr-client: --target " << t << ": " << b.error().message << "\n";
      return 2;
    }
    Target x;
    x.name = t;
    x.addr.sin_family = AF_INET;
    x.addr.sin_addr.s_addr = b->addr_be;
    x.addr.sin_port = htons(b->port);
    x.ns.reserve(o.count);
    targets.push_back(std::move(x));
  }
  const timeval timeout{static_cast<time_t>(o.timeout_ms / 1000), static_cast<suseconds_t>(o.timeout_ms % 1000 * 1000)};
  const auto cap = Clock::now() + std::chrono::seconds(o.max_seconds);
  uint32_t done = 0;
  for (; done < o.count && Clock::now() < cap; ++done) {
    for (Target& t : targets) {
      const auto t0 = Clock::now();
      auto reply = one_crr(t.addr, timeout);
      const auto t1 = Clock::now();
      if (!reply) {
        err << "kpx-bench crr-client: CRR " << done + 1 << " to " << t.name << ": " << reply.error().message << "\n";
        return 1;
      }
      t.ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
      ++t.backends[reply->substr(4, reply->find(' ') - 4)];
    }
  }
  json results = json::array();
  for (Target& t : targets) {
    double sum = 0;
    for (double v : t.ns) sum += v;
    const double mean = t.ns.empty() ? 0 : sum / static_cast<double>(t.ns.size());
    std::vector<double> sorted = t.ns;
    std::sort(sorted.begin(), sorted.end());
    const double p99 = sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
    results.push_back({{"target", t.name},
                       {"median_ns", median(t.ns)},
                       {"mean_ns", mean},
                       {"p99_ns", p99},
                       {"min_ns", sorted.empty() ? 0 : sorted.front()},
                       {"backends", t.backends}});
    if (!o.json)
      out << done << " CRRs to " << t.name << ": median " << fmt(median(t.ns), 0) << " ns, mean " << fmt(mean, 0)
          << " ns, p99 " << fmt(p99, 0) << " ns\n";
  }
  if (o.json) out << json{{"count", done}, {"targets", results}}.dump() << "\n";
  return 0;
}

// ---- the lab part ------------------------------------------------------------------

namespace {

constexpr const char* kClientPod = "echo-1-1";
constexpr uint16_t kCrrPort = 80, kEchoPort = 8080;
const char* const kCrrCases[] = {"node1_to_pod_ip", "node1_to_cluster_ip", "pod_to_pod_ip", "pod_to_cluster_ip"};
const char* const kCrrLabels[] = {"node1 -> backend pod IP (floor)", "node1 -> ClusterIP (socket LB)",
                                  "pod -> backend pod IP (floor)", "pod -> ClusterIP (per-packet tc)"};
const char* floor_of(const std::string& c) { return c.rfind("node1", 0) == 0 ? "node1_to_pod_ip" : "pod_to_pod_ip"; }

// A lab of the bench's own: `kpx lab down` on destruction, also when `up`
// failed half way (down removes what a failed up left).
class BenchLab {
 public:
  BenchLab() : name_("kbs" + std::to_string(getpid())) {}
  ~BenchLab() {
    if (started_) (void)lab::run({KPX_BINARY, "lab", "down", "--name", name_});
  }
  BenchLab(const BenchLab&) = delete;
  BenchLab& operator=(const BenchLab&) = delete;

  Status up() {
    started_ = true;
    auto r = lab::run({KPX_BINARY, "lab", "up", "--name", name_});
    if (!r) return r.error();
    if (r->status != 0) return system_error("kpx lab up --name " + name_ + " failed: " + r->out);
    return {};
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool started_ = false;
};

// `kpx-bench crr-client` inside the lab, CRR by CRR to each target in turn:
// its JSON document.
Result<json> run_client(const std::string& lab, const std::string& where, const std::vector<std::string>& targets,
                        uint32_t count) {
  std::vector<std::string> argv = {KPX_BINARY, "lab", "exec", "--name", lab, where, "--", lab::self_executable(),
                                   "crr-client", "--count", std::to_string(count), "--json"};
  std::string what = "crr-client in " + where + " to";
  for (const std::string& t : targets) {
    argv.insert(argv.end(), {"--target", t});
    what += " " + t;
  }
  auto r = lab::run(argv);
  if (!r) return r.error();
  if (r->status != 0) return system_error(what + ": " + r->out);
  const size_t at = r->out.find('{');
  json j = at == std::string::npos ? json() : json::parse(r->out.substr(at), nullptr, false);
  if (!j.is_object() || !j.contains("targets") || j["targets"].size() != targets.size())
    return system_error(what + " printed no figures: " + r->out);
  return j;
}

// The crr Service and its one backend pod; their ClusterIP and pod IP once
// the pod is ready.
Status make_service(const std::string& lab, CrrResults& res, std::ostream& err) {
  auto client = lab::connect_lab(lab);
  if (!client) return client.error();
  const json labels = {{"app", "kpx-bench-crr"}};
  const json svc = {{"apiVersion", "v1"},
                    {"kind", "Service"},
                    {"metadata", {{"name", "crr"}, {"namespace", "default"}}},
                    {"spec",
                     {{"selector", labels},
                      {"ports", json::array({{{"name", "tcp"}, {"port", kCrrPort}, {"targetPort", kEchoPort},
                                              {"protocol", "TCP"}}})}}}};
  for (const json& obj : {svc, lab::echo_pod("crr-backend", "default", labels, "node1", {kEchoPort})}) {
    auto a = lab::apply_object(**client, obj);
    if (!a) return Error{a.error().kind, lab::describe(obj) + ": " + a.error().message};
  }
  auto s = (*client)->get("/api/v1/namespaces/default/services/crr");
  if (!s) return s.error().to_error();
  res.cluster_ip = (*s)["spec"].value("clusterIP", "");
  if (res.cluster_ip.empty()) return system_error("Service default/crr got no ClusterIP");
  err << "kpx-bench socket-lb: waiting for pod crr-backend\n";
  for (int i = 0; i < 300 && res.backend.empty(); ++i) {
    auto p = (*client)->get("/api/v1/namespaces/default/pods/crr-backend");
    if (!p) return p.error().to_error();
    const json& st = (*p).value("status", json::object());
    for (const json& c : st.value("conditions", json::array()))
      if (c.value("type", "") == "Ready" && c.value("status", "") == "True") res.backend = st.value("podIP", "");
    if (res.backend.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (res.backend.empty()) return system_error("pod crr-backend was not ready after 30 s");
  return {};
}

}  // namespace

Result<CrrResults> measure_crr(uint32_t rounds, uint32_t crrs, std::ostream& err) {
  CrrResults res;
  res.rounds = rounds;
  res.crrs = crrs;
  res.client_pod = std::string("default/") + kClientPod;
  BenchLab lab;
  res.lab = lab.name();
  err << "kpx-bench socket-lb: kpx lab up --name " << lab.name() << "\n";
  KPX_TRY(lab.up());
  KPX_TRY(make_service(lab.name(), res, err));
  const std::string vip = res.cluster_ip + ":" + std::to_string(kCrrPort),
                    pod_ip = res.backend + ":" + std::to_string(kEchoPort);
  // Both clients reach the ClusterIP once the agents have programmed it.
  for (const char* where : {"node1", kClientPod}) {
    Result<json> ok = system_error("not tried");
    for (int i = 0; i < 100 && !(ok = run_client(lab.name(), where, {vip}, 1)); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!ok) return Error{ok.error().kind, "the Service never answered: " + ok.error().message};
  }
  auto maps = bpf::PinnedMaps::open("/sys/fs/bpf/kpx-" + lab.name() + "-node1");
  if (!maps) return maps.error();
  Counters ctrs(maps->counters.get());
  for (uint32_t r = 0; r < rounds; ++r) {
    err << "kpx-bench socket-lb: CRR round " << r + 1 << "/" << rounds << "\n";
    for (const char* client : {"node1", "pod"}) {
      KPX_TRY(check_interrupt());
      const std::string c = client, floor = c + "_to_pod_ip", to_vip = c + "_to_cluster_ip";
      auto sl0 = ctrs.get(KPX_CTR_SOCK_LB), dn0 = ctrs.get(KPX_CTR_DNAT_NEW);
      if (!sl0 || !dn0) return !sl0 ? sl0.error() : dn0.error();
      auto j = run_client(lab.name(), c == "node1" ? "node1" : kClientPod, {pod_ip, vip}, crrs);
      if (!j) return j.error();
      auto sl1 = ctrs.get(KPX_CTR_SOCK_LB), dn1 = ctrs.get(KPX_CTR_DNAT_NEW);
      if (!sl1 || !dn1) return !sl1 ? sl1.error() : dn1.error();
      for (const auto& [name, t] : {std::pair{floor, (*j)["targets"][0]}, std::pair{to_vip, (*j)["targets"][1]}}) {
        res.median_ns[name].push_back(t["median_ns"]);
        res.mean_ns[name].push_back(t["mean_ns"]);
        res.done[name] += (*j)["count"].get<uint64_t>();
      }
      res.sock_lb[c] += *sl1 - *sl0;
      res.dnat_new[c] += *dn1 - *dn0;
    }
  }
  // Each client's ClusterIP CRRs took the path they name, and nothing else
  // did (the floors' addresses are no frontend's).
  const uint64_t node_vip = res.done["node1_to_cluster_ip"], pod_vip = res.done["pod_to_cluster_ip"];
  if (res.sock_lb["node1"] != node_vip || res.dnat_new["node1"] != 0)
    return system_error("node1's " + std::to_string(node_vip) + " ClusterIP CRRs: node1's sock_lb counter grew by " +
                        std::to_string(res.sock_lb["node1"]) + " (expected as many) and dnat_new by " +
                        std::to_string(res.dnat_new["node1"]) + " (expected 0)");
  if (res.dnat_new["pod"] != pod_vip || res.sock_lb["pod"] != 0)
    return system_error("the pod's " + std::to_string(pod_vip) + " ClusterIP CRRs: node1's dnat_new counter grew by " +
                        std::to_string(res.dnat_new["pod"]) + " (expected as many) and sock_lb by " +
                        std::to_string(res.sock_lb["pod"]) + " (expected 0)");
  return res;
}

json crr_json(const CrrResults& r) {
  json cases;
  for (const char* c : kCrrCases) {
    const double ns = median(r.median_ns.at(c)), floor = median(r.median_ns.at(floor_of(c)));
    cases[c] = {{"ns", ns},
                {"mean_ns", median(r.mean_ns.at(c))},
                {"samples", r.median_ns.at(c)},
                {"crrs", r.done.at(c)},
                {"floor", floor_of(c)},
                {"ratio_to_floor", floor > 0 ? ns / floor : 0},
                {"above_floor_ns", ns - floor}};
  }
  json counters;
  for (const char* client : {"node1", "pod"})
    counters[client] = {{"cluster_ip_crrs", r.done.at(std::string(client) + "_to_cluster_ip")},
                        {"sock_lb_delta", r.sock_lb.at(client)},
                        {"dnat_new_delta", r.dnat_new.at(client)}};
  return {{"lab", r.lab},
          {"crrs_per_case", r.crrs},
          {"service", "default/crr"},
          {"cluster_ip", r.cluster_ip + ":" + std::to_string(kCrrPort)},
          {"backend", r.backend + ":" + std::to_string(kEchoPort) + " (pod default/crr-backend on node1)"},
          {"client_pod", r.client_pod + " (node1)"},
          {"cases", cases},
          {"node1_counters_by_client", counters}};
}

void print_crr_table(const CrrResults& r, std::ostream& out) {
  const json j = crr_json(r);
  out << "\nkpx-bench socket-lb, CRR: ns per connect+reply+close against the lab's echo server, median of "
      << r.rounds << " rounds\n"
      << "  per round one run per client, " << r.crrs
      << " CRRs to each of its two targets in turn (floor, ClusterIP, floor, ...); a round's figure: the run's median\n"
      << "  lab " << r.lab << ": Service default/crr " << j["cluster_ip"].get<std::string>() << "/TCP -> "
      << j["backend"].get<std::string>() << "\n"
      << "  clients: node1 itself (kpx lab exec node1: socket LB) and pod " << j["client_pod"].get<std::string>()
      << " (kpx_from_pod / kpx_to_pod per packet)\n\n";
  const size_t label = 36;
  out << std::left << std::setw(label) << "case" << std::right << std::setw(11) << "median ns" << std::setw(11)
      << "mean ns" << std::setw(10) << "x floor" << std::setw(13) << "above floor" << "\n";
  for (size_t i = 0; i < std::size(kCrrCases); ++i) {
    const json& c = j["cases"][kCrrCases[i]];
    out << std::left << std::setw(label) << kCrrLabels[i] << std::right << std::setw(11) << fmt(c["ns"], 0)
        << std::setw(11) << fmt(c["mean_ns"], 0) << std::setw(10) << fmt(c["ratio_to_floor"], 2) << std::setw(13)
        << fmt(c["above_floor_ns"], 0) << "\n";
  }
  out << "\nnode1's counters: sock_lb +" << r.sock_lb.at("node1") << " (dnat_new +" << r.dnat_new.at("node1")
      << ") over node1's runs, for its " << r.done.at("node1_to_cluster_ip") << " ClusterIP CRRs; dnat_new +"
      << r.dnat_new.at("pod") << " (sock_lb +" << r.sock_lb.at("pod") << ") over the pod's, for its "
      << r.done.at("pod_to_cluster_ip") << "\n";
}

}  // namespace kpx::bench
