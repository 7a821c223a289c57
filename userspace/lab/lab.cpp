#include "lab/lab.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "k8s/client.h"
#include "lab/cgroup.h"
#include "lab/endpointslices.h"
#include "lab/manifest.h"
#include "lab/network.h"
#include "lab/proc.h"
#include "lab/service_env.h"
#include "lab/state.h"
#include "net/netns.h"

namespace kpx::lab {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Result<std::unique_ptr<k8s::Client>> lab_client(const LabState& st) {
  k8s::ClientConfig cc;
  cc.server = "http://127.0.0.1:" + std::to_string(st.api_port);
  k8s::ClientOptions co;
  co.request_timeout = std::chrono::seconds(5);
  return k8s::Client::create(cc, co);
}

struct Running {
  LabState state;
  std::unique_ptr<k8s::Client> client;
};

Result<Running> running_lab(const std::string& name) {
  KPX_TRY(validate_name(name));
  auto st = read_state(name);
  if (!st) return st.error();
  if (!is_lab_daemon(st->daemon_pid, name))
    return not_found("lab '" + name + "' is not running (its daemon is gone); `kpx lab down --name " + name +
                     "` cleans up");
  auto c = lab_client(*st);
  if (!c) return c.error();
  return Running{*st, std::move(*c)};
}

}  // namespace

Result<std::unique_ptr<k8s::Client>> connect_lab(const std::string& name) {
  auto lab = running_lab(name);
  if (!lab) return lab.error();
  return std::move(lab->client);
}

namespace {

Result<json> items(k8s::Client& c, const std::string& path) {
  auto r = c.get(path);
  if (!r) return r.error().to_error();
  return (*r).value("items", json::array());
}

using apiserver::member;
using apiserver::string_at;

std::string or_default(const std::string& s, const std::string& dflt) { return s.empty() ? dflt : s; }

std::string pod_phase(const json& pod) {
  if (member(pod, "metadata").contains("deletionTimestamp")) return "Terminating";
  return or_default(string_at(member(pod, "status"), "phase"), "Pending");
}

std::string tail_of(const std::string& file, size_t lines) {
  std::ifstream f(file);
  std::vector<std::string> all;
  std::string l;
  while (std::getline(f, l)) all.push_back(l);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += "  " + all[i] + "\n";
  return out;
}

// An agent answers /healthz 200 from its start (as kube-proxy does): it has
// programmed the cluster once it reports a successful sync.
bool agent_synced(const std::string& netns) {
  if (http_get_in_netns(netns, 10256, "/healthz") != 200) return false;
  std::string text;
  if (http_get_in_netns(netns, 10249, "/metrics", &text) != 200) return false;
  const std::string name = "\nkubeproxy_sync_proxy_rules_last_timestamp_seconds";
  auto at = text.find(name);
  if (at == std::string::npos) return false;
  auto value = text.find(' ', at + name.size());
  return value != std::string::npos && std::atof(text.c_str() + value + 1) > 0;
}

// Waits until every pod is ready and every node's agent has synced and is healthy.
Status wait_settled(const Running& lab, const LabPlan& plan, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  std::string waiting;
  while (Clock::now() < deadline) {
    waiting.clear();
    auto pods = items(*lab.client, "/api/v1/pods");
    if (!pods) return pods.error();
    for (const auto& p : *pods)
      if (!pod_ready(p))
        waiting += " pod " + string_at(member(p, "metadata"), "namespace") + "/" + string_at(member(p, "metadata"), "name");
    for (const auto& n : plan.nodes)
      if (!agent_synced(n.netns)) waiting += " agent on " + n.name;
    if (waiting.empty()) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return system_error("lab '" + plan.name + "' did not settle in " + std::to_string(limit.count()) +
                      " s; still waiting for:" + waiting);
}

bool cgroup_exists(const LabPlan& plan) {
  for (const auto& cg : list_cgroups(plan.cgroup_name()))
    if (cg == plan.cgroup_name()) return true;
  return false;
}

bool is_pin_dir_of(const std::string& file, const std::string& name) {
  std::string prefix = "kpx-" + name + "-node";
  return file.rfind(prefix, 0) == 0 && file.size() > prefix.size() &&
         file.find_first_not_of("0123456789", prefix.size()) == std::string::npos;
}

bool has_pins(const std::string& name) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/fs/bpf", ec))
    if (is_pin_dir_of(e.path().filename(), name)) return true;
  return false;
}

Status remove_pins(const std::string& name) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/fs/bpf", ec)) {
    if (is_pin_dir_of(e.path().filename(), name)) {
      fs::remove_all(e.path(), ec);
      if (ec) return system_error("remove " + e.path().string() + ": " + ec.message());
    }
  }
  return {};
}

}  // namespace

std::string self_executable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "kpx" : p.string();
}

int http_get_in_netns(const std::string& netns, int port, const std::string& path, std::string* body) {
  int fd = -1;
  {
    auto scope = net::NetnsScope::enter(netns);
    if (!scope) return 0;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) return 0;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  int code = 0;
  if (resp.rfind("HTTP/1.", 0) == 0 && resp.size() > 12) code = std::atoi(resp.c_str() + 9);
  if (body) {
    size_t b = resp.find("\r\n\r\n");
    *body = b == std::string::npos ? "" : resp.substr(b + 4);
  }
  return code;
}

Status lab_up(const LabSpec& spec, int api_port, std::ostream& out) {
  KPX_TRY(validate(spec));
  auto t0 = Clock::now();
  LabPlan plan = plan_lab(spec.name, spec.nodes);
  if (auto st = read_state(spec.name); st && is_lab_daemon(st->daemon_pid, spec.name))
    return invalid_argument("lab '" + spec.name + "' is already running (API server http://127.0.0.1:" +
                            std::to_string(st->api_port) + ")");
  if (api_port < 0 || api_port > 65535) return invalid_argument("--api-port must be between 0 and 65535");
  if (geteuid() != 0) return invalid_argument("the lab needs root (network namespaces, bpffs, cgroups)");
  if (!list_netns(std::string(kNetnsPrefix) + spec.name + "-").empty() || cgroup_exists(plan) || has_pins(spec.name))
    return invalid_argument("a stopped lab '" + spec.name + "' left things behind; run `kpx lab down --name " +
                            spec.name + "` first");
  // The agents pin their maps there; without bpffs they would fail one by one.
  struct statfs sfs{};
  if (statfs("/sys/fs/bpf", &sfs) != 0 || sfs.f_type != BPF_FS_MAGIC)
    return invalid_argument("/sys/fs/bpf is not a bpffs mount (scripts/setup mounts it: mount -t bpf bpf /sys/fs/bpf)");
  // Claiming the state directory is what makes a lab name ours: a second
  // `lab up` of the same name racing this one stops here.
  std::error_code ec;
  fs::create_directories(kStateRoot, ec);
  if (mkdir(plan.state_dir().c_str(), 0755) != 0)
    return errno == EEXIST ? invalid_argument("lab '" + spec.name + "' exists or is being started; `kpx lab down --name " +
                                              spec.name + "` removes it")
                           : system_error("create " + plan.state_dir() + ": " + std::strerror(errno));
  Status st = create_topology(plan);
  if (!st) {
    fs::remove_all(plan.state_dir(), ec);
    return st;
  }
  auto fail = [&](const Error& e) -> Status {
    std::ostringstream ignore;
    (void)lab_down(spec.name, ignore);
    return e;
  };
  auto cg = make_cgroup(plan.cgroup_name() + "/daemon");
  if (!cg) return fail(cg.error());
  SpawnOptions so;
  so.argv = {self_executable(), "lab", "daemon", "--name", spec.name, "--nodes", std::to_string(spec.nodes),
             "--pods-per-node", std::to_string(spec.pods_per_node), "--api-port", std::to_string(api_port)};
  for (const auto& a : spec.agent_args) so.argv.push_back("--agent-arg=" + a);
  so.cgroup = *cg;
  so.log_file = plan.state_dir() + "/daemon.log";
  so.new_session = true;
  auto pid = spawn(so);
  if (!pid) return fail(pid.error());
  // The daemon writes state.json once its API server serves.
  auto deadline = Clock::now() + std::chrono::seconds(10);
  Result<LabState> state = not_found("");
  while (Clock::now() < deadline) {
    state = read_state(spec.name);
    if (state) break;
    if (!is_lab_daemon(*pid, spec.name)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!state)
    return fail(system_error("the lab daemon did not start; the end of its log:\n" + tail_of(so.log_file, 20)));
  auto lab = running_lab(spec.name);
  if (!lab) return fail(lab.error());
  if (auto s = wait_settled(*lab, plan, std::chrono::seconds(30)); !s)
    return fail(Error{s.error().kind, s.error().message + "\ndaemon log:\n" + tail_of(so.log_file, 20)});
  out << "lab " << spec.name << " is up in " << std::fixed << std::setprecision(1) << seconds_since(t0) << " s: "
      << spec.nodes << " nodes, " << spec.pods_per_node << " echo pods per node, one kpx agent per node\n"
      << "API server: http://127.0.0.1:" << state->api_port << "   (kubectl --server http://127.0.0.1:"
      << state->api_port << " get pods,svc -A)\n";
  return {};
}

Status lab_down(const std::string& name, std::ostream& out) {
  KPX_TRY(validate_name(name));
  LabPlan plan = plan_lab(name, 0);
  bool found = false;
  if (auto st = read_state(name); st) {
    found = true;
    // Let the daemon stop its agents and pods in order first.
    if (is_lab_daemon(st->daemon_pid, name)) terminate(st->daemon_pid, 10000);
  }
  std::vector<std::string> problems;
  // Whatever is left (a crashed daemon's children included) ends with the cgroup.
  if (cgroup_exists(plan)) {
    found = true;
    if (auto s = remove_cgroup(plan.cgroup_name()); !s) problems.push_back(s.error().message);
  }
  auto namespaces = list_netns(std::string(kNetnsPrefix) + name + "-");
  found |= !namespaces.empty();
  for (const auto& ns : namespaces)
    if (auto s = remove_netns(ns); !s) problems.push_back(s.error().message);
  found |= has_pins(name);
  if (auto s = remove_pins(name); !s) problems.push_back(s.error().message);
  std::error_code ec;
  found |= fs::exists(plan.state_dir());
  fs::remove_all(plan.state_dir(), ec);
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    return system_error("lab '" + name + "' was not removed completely:" + all);
  }
  out << (found ? "lab " + name + " removed (" + std::to_string(namespaces.size()) + " namespaces)\n"
                : "no lab named " + name + "\n");
  return {};
}

Status lab_down_all(std::ostream& out) {
  std::set<std::string> names;
  for (const auto& n : labs_with_state()) names.insert(n);
  for (const auto& ns : list_netns(kNetnsPrefix)) {
    std::string rest = ns.substr(std::strlen(kNetnsPrefix));
    names.insert(rest.substr(0, rest.find('-')));
  }
  for (const auto& cg : list_cgroups("kpx-lab-")) names.insert(cg.substr(8));
  if (names.empty()) out << "no labs\n";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/fs/bpf", ec)) {
    std::string f = e.path().filename();
    size_t node = f.rfind("-node");
    if (f.rfind("kpx-", 0) == 0 && node != std::string::npos && node > 4 && is_pin_dir_of(f, f.substr(4, node - 4)))
      names.insert(f.substr(4, node - 4));
  }
  std::string failed;
  for (const auto& n : names) {
    if (!validate_name(n)) continue;
    if (auto st = lab_down(n, out); !st) failed += "\n  " + st.error().message;
  }
  if (!failed.empty()) return system_error("some labs were not removed completely:" + failed);
  return {};
}

Status lab_status(const std::string& name, std::ostream& out) {
  auto lab = running_lab(name);
  if (!lab) return lab.error();
  LabPlan plan = plan_lab(name, lab->state.nodes);
  auto pods = items(*lab->client, "/api/v1/pods");
  if (!pods) return pods.error();
  auto svcs = items(*lab->client, "/api/v1/services");
  if (!svcs) return svcs.error();
  auto slices = items(*lab->client, "/apis/discovery.k8s.io/v1/endpointslices");
  if (!slices) return slices.error();
  out << "lab " << name << ": API server http://127.0.0.1:" << lab->state.api_port << " (daemon pid "
      << lab->state.daemon_pid << ")\n\nNODE    ADDRESS     POD CIDR         AGENT\n";
  for (const auto& n : plan.nodes) {
    int code = http_get_in_netns(n.netns, 10256, "/healthz");
    out << std::left << std::setw(8) << n.name << std::setw(12) << n.ip << std::setw(17) << n.pod_cidr
        << (code == 200 ? "healthy" : code == 0 ? "not answering" : "unhealthy (" + std::to_string(code) + ")")
        << "\n";
  }
  out << "\nPOD                            NODE    IP            STATUS      READY\n";
  for (const auto& p : *pods) {
    const json& md = member(p, "metadata");
    std::string id = string_at(md, "namespace") + "/" + string_at(md, "name");
    std::string ip = string_at(member(p, "status"), "podIP");
    out << std::left << std::setw(31) << id << std::setw(8) << or_default(string_at(member(p, "spec"), "nodeName"), "-") << std::setw(14)
        << (ip.empty() ? "-" : ip) << std::setw(12) << pod_phase(p) << (pod_ready(p) ? "yes" : "no") << "\n";
  }
  out << "\nSERVICE                        CLUSTER-IP    PORTS                ENDPOINTS (ready)\n";
  for (const auto& s : *svcs) {
    const json& md = member(s, "metadata");
    const json& spec = member(s, "spec");
    std::string ns = string_at(md, "namespace"), svc = string_at(md, "name");
    std::string ports;
    if (spec.contains("ports") && spec["ports"].is_array())
      for (const auto& p : spec["ports"])
        if (p.is_object() && p.contains("port") && p["port"].is_number_integer())
          ports += (ports.empty() ? "" : ",") + std::to_string(p["port"].get<int>()) + "/" + or_default(string_at(p, "protocol"), "TCP");
    std::string eps;
    for (const auto& sl : *slices) {
      if (string_at(member(sl, "metadata"), "namespace") != ns || string_at(member(member(sl, "metadata"), "labels"), "kubernetes.io/service-name") != svc ||
          !sl.contains("endpoints") || !sl["endpoints"].is_array())
        continue;
      for (const auto& e : sl["endpoints"]) {
        const json& cond = member(e, "conditions");
        if (cond.contains("ready") && cond["ready"] == false) continue;
        if (e.is_object() && e.contains("addresses") && e["addresses"].is_array())
          for (const auto& a : e["addresses"])
            if (a.is_string()) eps += (eps.empty() ? "" : ",") + a.get<std::string>();
      }
    }
    out << std::left << std::setw(31) << ns + "/" + svc << std::setw(14) << or_default(string_at(spec, "clusterIP"), "-")
        << std::setw(21) << ports << (eps.empty() ? "-" : eps) << "\n";
  }
  return {};
}

Status lab_apply(const std::string& name, const std::string& file, std::ostream& out) {
  std::string yaml;
  if (file == "-") {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    yaml = ss.str();
  } else {
    std::ifstream f(file);
    if (!f) return invalid_argument("cannot read " + file);
    std::stringstream ss;
    ss << f.rdbuf();
    yaml = ss.str();
  }
  auto objs = parse_manifests(yaml);
  if (!objs) return objs.error();
  // Check every document before writing any: a bad file changes nothing.
  for (const auto& o : *objs) {
    auto p = collection_path(o);
    if (!p) return p.error();
    if (string_at(member(o, "metadata"), "name").empty())
      return invalid_argument(describe(o) + ": metadata.name is required (a string)");
  }
  auto lab = running_lab(name);
  if (!lab) return lab.error();
  for (const auto& o : *objs) {
    auto r = apply_object(*lab->client, o);
    if (!r) return Error{r.error().kind, describe(o) + ": " + r.error().message};
    out << describe(o) << (*r == Applied::kCreated ? " created" : *r == Applied::kConfigured ? " configured" : " unchanged")
        << "\n";
  }
  return {};
}

Status lab_exec(const std::string& name, const std::string& target, const std::vector<std::string>& argv) {
  if (argv.empty()) return invalid_argument("nothing to run: kpx lab exec TARGET -- COMMAND [ARGS...]");
  auto lab = running_lab(name);
  if (!lab) return lab.error();
  LabPlan plan = plan_lab(name, lab->state.nodes);
  std::string netns;
  std::vector<std::string> env;
  std::string resolv, pod_node;
  if (target == "client") netns = plan.client_ns;
  else if (target == "internet") netns = plan.internet_ns;
  else if (target == "gateway") netns = plan.gateway_ns;
  else if (const NodePlan* n = plan.node(target)) netns = n->netns;
  else {
    std::string ns = "default", pod = target;
    if (auto slash = target.find('/'); slash != std::string::npos) {
      ns = target.substr(0, slash);
      pod = target.substr(slash + 1);
    }
    auto p = lab->client->get("/api/v1/namespaces/" + ns + "/pods/" + pod);
    if (!p)
      return p.error().code == 404
                 ? not_found("no pod " + ns + "/" + pod + " (targets: [NS/]POD, node1..node" +
                             std::to_string(plan.nodes.size()) + ", client, internet, gateway)")
                 : p.error().to_error();
    if (pod_phase(*p) != "Running" && pod_phase(*p) != "Terminating")
      return invalid_argument("pod " + ns + "/" + pod + " is " + pod_phase(*p));
    netns = plan.pod_netns(ns, pod);
    if (p->contains("spec")) pod_node = (*p)["spec"].value("nodeName", "");
    auto svcs = items(*lab->client, "/api/v1/namespaces/" + ns + "/services");
    if (!svcs) return svcs.error();
    std::vector<apiserver::Json> services;
    for (const auto& s : *svcs) services.push_back(apiserver::Json::parse(s.dump()));
    env = service_env(services);
    env.push_back("HOSTNAME=" + pod);
    resolv = "search " + ns + ".svc." + kDnsDomain + " svc." + kDnsDomain + " " + kDnsDomain + "\nnameserver " +
             kDnsServiceIp + "\noptions ndots:5\n";
  }
  int fd = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return system_error("open namespace " + netns + ": " + std::strerror(errno));
  if (!resolv.empty()) {
    // As `ip netns exec` does with /etc/netns/NAME: a private mount
    // namespace where the pod's resolv.conf covers the host's.
    std::string file = plan.state_dir() + "/resolv.conf." + netns;
    {
      std::ofstream f(file);
      f << resolv;
    }
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0 ||
        mount(file.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0)
      return system_error(std::string("set up the pod's resolv.conf: ") + std::strerror(errno));
  }
  // Like a container's processes, what runs here ends with the lab.
  // A node's commands run in its cgroup (socket-level load balancing
  // serves them, as the node's own processes), a pod's with its node's pods.
  const NodePlan* node = plan.node(target);
  const std::string cg_name = node                ? plan.cgroup_name() + "/node-" + node->name + "/exec"
                              : !pod_node.empty() ? plan.pods_cgroup_name(pod_node)
                                                  : plan.cgroup_name() + "/exec";
  if (auto cg = make_cgroup(cg_name); cg) {
    std::ofstream procs(*cg + "/cgroup.procs");
    procs << getpid();
  }
  if (setns(fd, CLONE_NEWNET) != 0) return system_error("enter " + netns + ": " + std::strerror(errno));
  close(fd);
  lab->client.reset();  // its connection is not the command's
  for (const auto& kv : env) putenv(strdup(kv.c_str()));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  return system_error("run " + argv[0] + ": " + std::strerror(errno));
}

}  // namespace kpx::lab
