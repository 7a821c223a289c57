#include "lab/kubelet.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "apiserver/store.h"
#include "lab/cgroup.h"
#include "lab/network.h"
#include "lab/proc.h"
#include "log/log.h"

namespace kpx::lab {

using apiserver::Json;
using apiserver::ObjectKey;
using apiserver::string_at;
using Clock = std::chrono::steady_clock;

namespace {

struct RunningPod {
  ObjectKey key;
  std::string uid, node, netns, host_if, ip;
  struct Container {
    std::string name, image;
    int port = 0;
    pid_t pid = -1;  // kpx/echo: the process; -1 while down or in-process
    bool in_process = false;
    int restarts = 0;
    std::string started_at;
  };
  std::vector<Container> containers;
  std::vector<InProcessContainer> in_process;
  bool terminating = false;
  bool ready = false;  // as last reported; the loop thread's
  // A graceful stop (worker thread) and a forced one (the pod removed with
  // grace 0 meanwhile) can race: the first to get here stops the pod.
  std::mutex stop_mu;
  bool stopped = false;
};


// Waits for the echo server's "ready" line on fd.
bool wait_ready(int fd, int timeout_ms) {
  std::string got;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (got.find("ready\n") == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return true;
}

int first_port(const Json& container) {
  if (container.contains("ports") && container["ports"].is_array())
    for (const auto& p : container["ports"])
      if (p.contains("containerPort") && p["containerPort"].is_number_integer()) return p["containerPort"].get<int>();
  return 8080;
}

int prestop_sleep_seconds(const Json& pod) {
  int s = 0;
  for (const auto& c : pod["spec"].value("containers", Json::array())) {
    const Json* sleep = nullptr;
    if (c.contains("lifecycle") && c["lifecycle"].contains("preStop") && c["lifecycle"]["preStop"].contains("sleep"))
      sleep = &c["lifecycle"]["preStop"]["sleep"];
    if (sleep && sleep->contains("seconds") && (*sleep)["seconds"].is_number_integer())
      s = std::max(s, (*sleep)["seconds"].get<int>());
  }
  return std::min(s, 300);
}

// What the API server would have enforced: names end up in namespace
// names and iproute2 batch lines, so nothing else gets that far.
bool dns_name(const std::string& s, size_t max, bool dots) {
  if (s.empty() || s.size() > max || s.front() == '-' || s.back() == '-' || s.front() == '.') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (dots && c == '.'))) return false;
  return true;
}

bool valid_names(const ObjectKey& k) { return dns_name(k.ns, 63, false) && dns_name(k.name, 253, true); }

Json condition(const char* type, bool ok, const std::string& now) {
  return {{"type", type}, {"status", ok ? "True" : "False"}, {"lastProbeTime", nullptr}, {"lastTransitionTime", now}};
}

// A started pod's conditions; Ready and ContainersReady follow its containers.
Json pod_conditions(bool ready, const std::string& now) {
  return Json::array({condition("PodReadyToStartContainers", true, now), condition("Initialized", true, now),
                      condition("Ready", ready, now), condition("ContainersReady", ready, now),
                      condition("PodScheduled", true, now)});
}

}  // namespace

struct Kubelet::Impl {
  Impl(apiserver::Store& s, KubeletOptions opts)
      : store(s), o(std::move(opts)), pods(*apiserver::find_resource("", "v1", "pods")) {}

  void loop();
  void relist(apiserver::Store::WatchCursor& cursor);
  void handle(const Json& pod, bool deleted);
  void handle_safely(const Json& pod, bool deleted);
  void schedule(const ObjectKey& key, const std::string& uid);
  void start_pod(const Json& pod, const NodePlan& node);
  Status start_containers(const Json& pod, RunningPod& rp);
  Result<pid_t> start_echo(const RunningPod& rp, const RunningPod::Container& c);
  Json container_statuses(const RunningPod& rp);
  void check_containers();
  void graceful_stop(std::shared_ptr<RunningPod> rp, int prestop_s, int grace_s);
  void stop_now(RunningPod& rp, int grace_ms);
  void set_status(const ObjectKey& key, const std::string& uid, const std::function<void(Json&)>& edit);
  // A phase with the reason and message kubectl shows.
  void set_phase(const ObjectKey& key, const std::string& uid, const char* phase, const char* reason,
                 const std::string& message);
  void report_ready(RunningPod& rp, bool ready);
  void release(const RunningPod& rp);

  apiserver::Store& store;
  KubeletOptions o;
  const apiserver::ResourceType& pods;
  std::mutex mu;  // running, used_ips, host_ifs, workers
  std::map<ObjectKey, std::shared_ptr<RunningPod>> running;
  std::map<std::string, std::set<int>> used_ips;  // node -> host parts in use
  std::set<std::string> host_ifs;
  std::map<ObjectKey, std::string> scheduling;  // placed by schedule(), not started yet: key -> node
  int load(const std::string& node) const;  // under mu
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers;
  void join_finished_workers();
  std::atomic<bool> stopping{false};
  std::thread thread;
  uint32_t if_counter = 0;
};

void Kubelet::Impl::join_finished_workers() {
  std::vector<std::thread> finished;
  {
    std::lock_guard lock(mu);
    for (auto it = workers.begin(); it != workers.end();)
      if (*it->done) {
        finished.push_back(std::move(it->thread));
        it = workers.erase(it);
      } else {
        ++it;
      }
  }
  for (auto& t : finished) t.join();
}

void Kubelet::Impl::handle_safely(const Json& pod, bool deleted) {
  // A malformed pod (the lab's API server, like a real one with
  // --validate=false, stores what it is given) must not end the kubelet.
  try {
    handle(pod, deleted);
  } catch (const std::exception& e) {
    const Json& md = apiserver::member(pod, "metadata");
    kpx::log::warning("lab kubelet: pod " + string_at(md, "namespace") + "/" + string_at(md, "name") + " skipped: " + e.what());
  }
}

void Kubelet::Impl::loop() {
  apiserver::Store::WatchCursor cursor{};
  relist(cursor);
  while (!stopping) {
    auto wake = store.wait(pods, cursor, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
    join_finished_workers();
    check_containers();
    switch (wake.reason) {
      case apiserver::WakeReason::kEvents:
        for (const auto& e : wake.events) handle_safely(*e.object, e.type == apiserver::EventType::kDeleted);
        break;
      case apiserver::WakeReason::kTimeout:
        break;
      case apiserver::WakeReason::kStopped:
        return;
      default:  // dropped, expired or compacted: start again from a list
        relist(cursor);
    }
  }
}

void Kubelet::Impl::relist(apiserver::Store::WatchCursor& cursor) {
  auto page = store.list(pods, "", apiserver::Selector{}, 0, std::nullopt, std::nullopt);
  if (!page) return;
  std::set<ObjectKey> seen;
  for (const auto& p : page->items) {
    if ((*p).contains("metadata") && (*p)["metadata"].is_object())
      seen.insert({string_at((*p)["metadata"], "namespace"), string_at((*p)["metadata"], "name")});
    handle_safely(*p, false);
  }
  std::vector<std::shared_ptr<RunningPod>> gone;
  {
    std::lock_guard lock(mu);
    for (const auto& [k, rp] : running)
      if (!seen.count(k)) gone.push_back(rp);
  }
  for (auto& rp : gone) stop_now(*rp, 0);
  cursor = store.watch_cursor(page->rv);
}

void Kubelet::Impl::handle(const Json& pod, bool deleted) {
  const Json& md = pod["metadata"];
  ObjectKey key{string_at(md, "namespace"), string_at(md, "name")};
  std::string uid = string_at(md, "uid");
  std::shared_ptr<RunningPod> rp;
  {
    std::lock_guard lock(mu);
    auto it = running.find(key);
    if (it != running.end()) rp = it->second;
  }
  if (rp && rp->uid != uid) {  // a new pod of the same name: the old one is gone
    stop_now(*rp, 0);
    rp.reset();
  }
  if (deleted) {
    {
      std::lock_guard lock(mu);
      scheduling.erase(key);
    }
    if (rp) stop_now(*rp, 0);
    return;
  }
  if (!pod.contains("spec") || !pod["spec"].is_object()) {
    set_phase(key, uid, "Failed", "InvalidSpec", "the pod has no spec object");
    return;
  }
  if (!valid_names(key)) {
    set_phase(key, uid, "Failed", "InvalidName", "namespace must be a DNS label and name a DNS subdomain");
    return;
  }
  std::string node_name = string_at(pod["spec"], "nodeName");
  if (md.contains("deletionTimestamp")) {
    if (!rp) {
      // Never started here (or already stopped): nothing to wait for.
      {
        std::lock_guard lock(mu);
        scheduling.erase(key);
      }
      (void)store.remove(pods, key, apiserver::DeletePreconditions{uid, ""});
      return;
    }
    std::lock_guard lock(mu);
    if (rp->terminating) return;
    rp->terminating = true;
    int grace = md.contains("deletionGracePeriodSeconds") && md["deletionGracePeriodSeconds"].is_number_integer()
                    ? md["deletionGracePeriodSeconds"].get<int>()
                    : 30;
    int prestop = std::min(prestop_sleep_seconds(pod), grace);  // preStop counts against the grace
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers.push_back({std::thread([this, rp, prestop, grace, done] {
                         graceful_stop(rp, prestop, grace);
                         *done = true;
                       }),
                       done});
    return;
  }
  if (rp) return;  // running; status already reported
  if (node_name.empty()) {
    schedule(key, uid);
    return;
  }
  const NodePlan* node = o.plan.node(node_name);
  if (!node) {
    set_status(key, uid, [&](Json& st) {
      st["phase"] = "Pending";
      st["conditions"] = Json::array({condition("PodScheduled", false, apiserver::rfc3339_now())});
      st["conditions"][0]["reason"] = "NodeNotFound";
      st["conditions"][0]["message"] = "no node named " + node_name + " in this lab";
    });
    return;
  }
  if (string_at(pod["status"], "phase") == "Failed") return;
  start_pod(pod, *node);
}

void Kubelet::Impl::schedule(const ObjectKey& key, const std::string& uid) {
  std::string best;
  {
    std::lock_guard lock(mu);
    int least = 1 << 30;
    for (const auto& n : o.plan.nodes)
      if (load(n.name) < least) {
        least = load(n.name);
        best = n.name;
      }
    scheduling[key] = best;
  }
  auto r = store.update(pods, key, [&](const Json& cur) -> apiserver::ApiResult<Json> {
    Json next = cur;
    if (string_at(cur["metadata"], "uid") != uid || !string_at(cur["spec"], "nodeName").empty()) return next;
    next["spec"]["nodeName"] = best;
    Json conds = Json::array({condition("PodScheduled", true, apiserver::rfc3339_now())});
    next["status"]["conditions"] = conds;
    return next;
  });
  if (!r) {
    std::lock_guard lock(mu);
    scheduling.erase(key);
  }
}

int Kubelet::Impl::load(const std::string& node) const {
  int n = 0;
  for (const auto& [k, rp] : running) n += rp->node == node;
  for (const auto& [k, nd] : scheduling) n += nd == node;
  return n;
}

void Kubelet::Impl::set_status(const ObjectKey& key, const std::string& uid, const std::function<void(Json&)>& edit) {
  (void)store.update(pods, key, [&](const Json& cur) -> apiserver::ApiResult<Json> {
    Json next = cur;
    if (string_at(cur["metadata"], "uid") != uid) return next;
    if (!next.contains("status") || !next["status"].is_object()) next["status"] = Json::object();
    edit(next["status"]);
    return next;
  });
}

void Kubelet::Impl::start_pod(const Json& pod, const NodePlan& node) {
  const Json& md = pod["metadata"];
  auto rp = std::make_shared<RunningPod>();
  rp->key = {string_at(md, "namespace"), string_at(md, "name")};
  rp->uid = string_at(md, "uid");
  rp->node = node.name;
  rp->netns = o.plan.pod_netns(rp->key.ns, rp->key.name);
  bool full = false;
  {
    std::lock_guard lock(mu);
    scheduling.erase(rp->key);
    auto& used = used_ips[node.name];
    int host = 2;
    while (used.count(host)) ++host;
    if (host > 254) {
      kpx::log::warning("lab kubelet: node " + node.name + " has no free pod address");
      full = true;
    } else {
      used.insert(host);
      rp->ip = node.pod_cidr.substr(0, node.pod_cidr.rfind('.') + 1) + std::to_string(host);
    }
  }
  if (full) {
    set_phase(rp->key, rp->uid, "Pending", "NoPodAddress", "node " + node.name + " has no free address in " + node.pod_cidr);
    return;
  }
  {
    std::lock_guard lock(mu);
    char name[16];
    do {
      snprintf(name, sizeof name, "veth%08x",
               static_cast<unsigned>(std::hash<std::string>{}(rp->uid) + if_counter++ * 2654435761u));
    } while (host_ifs.count(name));
    rp->host_if = name;
    host_ifs.insert(rp->host_if);
    running[rp->key] = rp;
  }
  Status st = add_pod_network(node, PodNetwork{rp->netns, rp->host_if, rp->ip});
  if (st) st = start_containers(pod, *rp);
  std::string now = apiserver::rfc3339_now();
  if (!st) {
    kpx::log::warning("lab kubelet: pod " + rp->key.ns + "/" + rp->key.name + ": " + st.error().message);
    stop_now(*rp, 0);
    set_phase(rp->key, rp->uid, "Failed", "ContainerCannotRun", st.error().message);
    return;
  }
  set_status(rp->key, rp->uid, [&](Json& s) {
    s["phase"] = "Running";
    s["hostIP"] = node.ip;
    s["hostIPs"] = Json::array({{{"ip", node.ip}}});
    s["podIP"] = rp->ip;
    s["podIPs"] = Json::array({{{"ip", rp->ip}}});
    s["startTime"] = now;
    s["qosClass"] = "BestEffort";
    s["conditions"] = pod_conditions(true, now);
    s["containerStatuses"] = container_statuses(*rp);
  });
  rp->ready = true;
}

Status Kubelet::Impl::start_containers(const Json& pod, RunningPod& rp) {
  const Json containers = pod["spec"].value("containers", Json::array());
  if (!containers.is_array() || containers.empty()) return invalid_argument("the pod has no containers");
  for (const auto& c : containers) {
    RunningPod::Container rc;
    rc.image = string_at(c, "image");
    rc.name = string_at(c, "name");
    rc.port = first_port(c);
    std::string base = rc.image.substr(0, rc.image.find(':'));
    if (base == "kpx/dns") {
      if (!o.dns_container) return invalid_argument("kpx/dns is not available");
      auto h = o.dns_container(rp.netns);
      if (!h) return h.error();
      rp.in_process.push_back(*h);
      rc.in_process = true;
    } else if (base != "kpx/echo") {
      return invalid_argument("container " + rc.name + ": image '" + rc.image +
                              "' cannot run in the lab (it runs kpx/echo and kpx/dns)");
    } else {
      auto pid = start_echo(rp, rc);
      if (!pid) return pid.error();
      rc.pid = *pid;
    }
    rc.started_at = apiserver::rfc3339_now();
    rp.containers.push_back(rc);
  }
  return {};
}

Result<pid_t> Kubelet::Impl::start_echo(const RunningPod& rp, const RunningPod::Container& c) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return system_error("pipe");
  SpawnOptions so;
  so.argv = {o.kpx_binary, "lab", "echo-server", "--name", rp.key.name, "--container", c.name,
             "--port", std::to_string(c.port)};
  so.netns = rp.netns;
  // Under its node's cgroup, as a node's pods are under its root: the node's
  // socket hooks see them (and, but with --socket-lb all, leave them to the
  // per-packet path).
  auto cg = make_cgroup(o.plan.pods_cgroup_name(rp.node));
  if (!cg) {
    close(fds[0]);
    close(fds[1]);
    return cg.error();
  }
  so.cgroup = *cg;
  so.log_file = o.log_dir + "/pod-" + rp.key.ns + "-" + rp.key.name + ".log";
  so.stdout_pipe_fd = fds[1];
  auto pid = spawn(so);
  close(fds[1]);
  if (!pid) {
    close(fds[0]);
    return pid.error();
  }
  bool ready = wait_ready(fds[0], 5000);
  close(fds[0]);
  if (!ready) {
    terminate(*pid, 0);
    return system_error("container " + c.name + " did not become ready (see " + so.log_file + ")");
  }
  return *pid;
}

Json Kubelet::Impl::container_statuses(const RunningPod& rp) {
  Json statuses = Json::array();
  for (const auto& c : rp.containers) {
    bool up = c.in_process || c.pid > 0;
    Json st = {{"name", c.name},
               {"image", c.image},
               {"imageID", ""},
               {"containerID", c.in_process ? "kpx://daemon" : "kpx://" + std::to_string(c.pid)},
               {"ready", up},
               {"started", up},
               {"restartCount", c.restarts}};
    st["state"] = up ? Json{{"running", {{"startedAt", c.started_at}}}}
                     : Json{{"waiting", {{"reason", "CrashLoopBackOff"}}}};
    statuses.push_back(st);
  }
  return statuses;
}

// restartPolicy Always, as a kubelet: an echo server that exits takes its
// pod out of Ready (so out of the Services) until it is running again.
void Kubelet::Impl::check_containers() {
  std::vector<std::shared_ptr<RunningPod>> pods;
  {
    std::lock_guard lock(mu);
    for (const auto& [k, rp] : running)
      if (!rp->terminating) pods.push_back(rp);
  }
  for (auto& rp : pods) {
    std::unique_lock stop_lock(rp->stop_mu, std::try_to_lock);
    if (!stop_lock || rp->stopped) continue;  // being stopped: not ours to restart
    for (auto& c : rp->containers) {
      int wst = 0;
      if (c.pid <= 0 || waitpid(c.pid, &wst, WNOHANG) != c.pid) continue;
      int code = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
      kpx::log::warning("lab kubelet: container " + c.name + " of pod " + rp->key.ns + "/" + rp->key.name +
                        " exited (" + std::to_string(code) + "); restarting it");
      c.pid = -1;
      ++c.restarts;
      report_ready(*rp, false);
      auto pid = start_echo(*rp, c);
      if (!pid) {
        kpx::log::warning("lab kubelet: " + pid.error().message);
        continue;  // tried again on the next round: the pod stays not ready
      }
      c.pid = *pid;
      c.started_at = apiserver::rfc3339_now();
    }
    if (rp->ready) continue;
    bool all_up = true;
    for (const auto& c : rp->containers) all_up &= c.in_process || c.pid > 0;
    if (all_up) report_ready(*rp, true);
  }
}

void Kubelet::Impl::report_ready(RunningPod& rp, bool ready) {
  std::string now = apiserver::rfc3339_now();
  set_status(rp.key, rp.uid, [&](Json& s) {
    s["conditions"] = pod_conditions(ready, now);
    s["containerStatuses"] = container_statuses(rp);
  });
  rp.ready = ready;
}

void Kubelet::Impl::set_phase(const ObjectKey& key, const std::string& uid, const char* phase, const char* reason,
                              const std::string& message) {
  set_status(key, uid, [&](Json& st) {
    st["phase"] = phase;
    st["reason"] = reason;
    st["message"] = message;
  });
}

void Kubelet::Impl::graceful_stop(std::shared_ptr<RunningPod> rp, int prestop_s, int grace_s) {
  auto start = Clock::now();
  // preStop: the endpoint is already terminating (not ready) while this
  // runs, so Services stop sending new connections before SIGTERM.
  auto prestop_end = start + std::chrono::seconds(prestop_s);
  while (!stopping && Clock::now() < prestop_end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto left = std::chrono::seconds(grace_s) - (Clock::now() - start);
  int left_ms = static_cast<int>(std::max<int64_t>(
      100, std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
  stop_now(*rp, left_ms);
  if (!stopping) (void)store.remove(pods, rp->key, apiserver::DeletePreconditions{rp->uid, ""});
}

void Kubelet::Impl::stop_now(RunningPod& rp, int grace_ms) {
  std::lock_guard stop_lock(rp.stop_mu);
  if (rp.stopped) return;
  rp.stopped = true;
  for (auto& c : rp.containers)
    if (c.pid > 0) terminate(c.pid, grace_ms);
  rp.containers.clear();
  rp.in_process.clear();
  if (auto st = remove_netns(rp.netns); !st) kpx::log::warning("lab kubelet: " + st.error().message);
  release(rp);
}

void Kubelet::Impl::release(const RunningPod& rp) {
  std::lock_guard lock(mu);
  auto it = running.find(rp.key);
  if (it == running.end() || it->second.get() != &rp) return;
  int host = std::stoi(rp.ip.substr(rp.ip.rfind('.') + 1));
  used_ips[rp.node].erase(host);
  host_ifs.erase(rp.host_if);
  running.erase(it);
}

Kubelet::Kubelet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Kubelet::~Kubelet() { stop(); }

Result<std::unique_ptr<Kubelet>> Kubelet::start(apiserver::Store& store, KubeletOptions options) {
  auto impl = std::make_unique<Impl>(store, std::move(options));
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] { raw->loop(); });
  return std::unique_ptr<Kubelet>(new Kubelet(std::move(impl)));
}

void Kubelet::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  if (impl_->thread.joinable()) impl_->thread.join();
  std::vector<Impl::Worker> workers;
  {
    std::lock_guard lock(impl_->mu);
    workers.swap(impl_->workers);
  }
  for (auto& w : workers) w.thread.join();
  std::vector<std::shared_ptr<RunningPod>> left;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [k, rp] : impl_->running) left.push_back(rp);
  }
  // Signal every container first, then wait for each: pods stop together.
  for (auto& rp : left)
    for (const auto& c : rp->containers)
      if (c.pid > 0) kill(c.pid, SIGTERM);
  for (auto& rp : left) impl_->stop_now(*rp, 500);
}

}  // namespace kpx::lab
