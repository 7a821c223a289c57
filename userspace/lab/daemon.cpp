#include "lab/daemon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <thread>

#include "apiserver/apiserver.h"
#include "apiserver/store.h"
#include "k8s/client.h"
#include "lab/cgroup.h"
#include "lab/dns.h"
#include "lab/endpointslice_controller.h"
#include "lab/lb_controller.h"
#include "lab/kubelet.h"
#include "lab/plan.h"
#include "lab/proc.h"
#include "lab/state.h"
#include "lab/workload.h"
#include "log/log.h"
#include "net/socket.h"

namespace kpx::lab {

namespace {

using apiserver::Json;

// A listening TCP socket on addr:port inside netns, for the API server.
Result<int> listen_in_netns(const std::string& netns, const std::string& addr, int port) {
  auto fd = net::bound_socket_in_netns(netns, SOCK_STREAM, inet_addr(addr.c_str()), static_cast<uint16_t>(port));
  if (!fd) return fd.error();
  return fd->release();
}

// One `kpx agent` per node, restarted if it exits (as a DaemonSet would).
class Agents {
 public:
  Agents(const LabPlan& plan, const std::string& kpx, const std::string& cgroup_root,
         std::vector<std::string> extra_args)
      : plan_(plan), kpx_(kpx), cgroup_root_(cgroup_root), extra_args_(std::move(extra_args)) {}
  ~Agents() { stop(); }

  Status start_all() {
    for (const auto& n : plan_.nodes) KPX_TRY(start(n));
    watcher_ = std::thread([this] { supervise(); });
    return {};
  }

  void stop() {
    if (stopping_.exchange(true)) return;
    if (watcher_.joinable()) watcher_.join();
    std::lock_guard lock(mu_);
    // Signal them all first: they shut down together, not one after another.
    for (auto& [node, pid] : pids_) kill(pid, SIGTERM);
    for (auto& [node, pid] : pids_) terminate(pid, 5000);
    pids_.clear();
  }

 private:
  Status start(const NodePlan& n) {
    // The node's cgroup (its socket-level load balancing's: the agent and
    // `kpx lab exec nodeN` run under it), the agent in its own leaf.
    auto node_cg = make_cgroup(plan_.cgroup_name() + "/node-" + n.name);
    if (!node_cg) return node_cg.error();
    auto cg = make_cgroup(plan_.cgroup_name() + "/node-" + n.name + "/agent");
    if (!cg) return cg.error();
    SpawnOptions so;
    so.argv = {kpx_,
               "agent",
               "--master",
               "http://127.0.0.1:" + std::to_string(kNodeApiPort),
               "--hostname-override",
               n.name,
               "--pin-dir",
               n.pin_dir,
               "--pod-interfaces",
               "veth*",
               "--uplink-interfaces",
               "eth0",
               "--hairpin-snat-ip",
               n.pod_gateway,
               "--cluster-cidr",
               kClusterCidr,
               "--egress-masquerade",
               // ip-masq-agent's default style: private ranges (the pods,
               // the nodes and the client on the fabric) keep the pod's
               // address; the internet sees the node's.
               "--non-masquerade-cidrs",
               "10.0.0.0/8",
               "--healthz-bind-address",
               "127.0.0.1:10256",
               "--metrics-bind-address",
               "127.0.0.1:10249",
               "--socket-lb-cgroup",
               *node_cg};
    so.argv.insert(so.argv.end(), extra_args_.begin(), extra_args_.end());
    so.netns = n.netns;
    so.cgroup = *cg;
    so.log_file = plan_.state_dir() + "/agent-" + n.name + ".log";
    auto pid = spawn(so);
    if (!pid) return pid.error();
    std::lock_guard lock(mu_);
    pids_[n.name] = *pid;
    return {};
  }

  void supervise() {
    std::vector<std::string> dead;
    while (!stopping_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      {
        std::lock_guard lock(mu_);
        for (auto it = pids_.begin(); it != pids_.end();)
          if (waitpid(it->second, nullptr, WNOHANG) == it->second) {
            // Reaped: the pid is no longer ours to signal.
            dead.push_back(it->first);
            it = pids_.erase(it);
          } else {
            ++it;
          }
      }
      std::vector<std::string> retry;
      for (const auto& node : dead) {
        if (stopping_) return;
        kpx::log::warning("lab: the agent of " + node + " is not running; starting it");
        std::this_thread::sleep_for(std::chrono::seconds(1));
        if (stopping_) return;
        if (auto st = start(*plan_.node(node)); !st) {
          kpx::log::error("lab: " + st.error().message);
          retry.push_back(node);  // try again next round
        }
      }
      dead = std::move(retry);
    }
  }

  const LabPlan& plan_;
  std::string kpx_, cgroup_root_;
  std::vector<std::string> extra_args_;  // after the lab's own flags
  std::mutex mu_;
  std::map<std::string, pid_t> pids_;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

}  // namespace

Status run_daemon(const DaemonOptions& o) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);

  LabPlan plan = plan_lab(o.name, o.nodes);
  apiserver::Options ao;
  ao.listen = "127.0.0.1:" + std::to_string(o.api_port);
  ao.bookmark_interval = std::chrono::seconds(5);
  ao.service_cluster_ip_range = kServiceCidr;
  auto api = apiserver::ApiServer::start(ao);
  if (!api) return api.error();
  for (const auto& n : plan.nodes) {
    auto fd = listen_in_netns(n.netns, "127.0.0.1", kNodeApiPort);
    if (!fd) return fd.error();
    KPX_TRY((*api)->add_listener(*fd));
  }
  {
    // The control plane "runs on" node1: pods reach the API server at its
    // address, behind the `kubernetes` Service (cluster_objects()).
    const NodePlan& cp = plan.nodes.front();
    auto fd = listen_in_netns(cp.netns, cp.ip, kNodeApiPort);
    if (!fd) return fd.error();
    KPX_TRY((*api)->add_listener(*fd));
  }
  apiserver::Store& store = (*api)->store();
  k8s::ClientConfig cc;
  cc.server = (*api)->url();
  auto client = k8s::Client::create(cc);
  if (!client) return client.error();
  KPX_TRY(create_all(**client, cluster_objects(plan)));

  auto slices = EndpointSliceController::start(store);
  if (!slices) return slices.error();
  auto lbs = LoadBalancerController::start(store);
  if (!lbs) return lbs.error();

  KubeletOptions ko;
  ko.plan = plan;
  ko.kpx_binary = o.kpx_binary;
  ko.log_dir = plan.state_dir();
  ko.dns_container = [&store](const std::string& netns) -> Result<InProcessContainer> {
    // UDP 0.0.0.0:53 inside the DNS pod's namespace.
    auto sock = net::bound_socket_in_netns(netns, SOCK_DGRAM, INADDR_ANY, 53);
    if (!sock) return sock.error();
    auto server = DnsServer::start(sock->get(), store, kDnsDomain);
    if (!server) return server.error();  // the socket is still ours, and closes here
    sock->release();                     // the server owns it now
    return InProcessContainer(std::shared_ptr<DnsServer>(std::move(*server)));
  };
  auto kubelet = Kubelet::start(store, ko);
  if (!kubelet) return kubelet.error();

  // The internet's one host: an echo server that logs who reached it.
  auto inet_cg = make_cgroup(plan.cgroup_name() + "/internet");
  if (!inet_cg) return inet_cg.error();
  SpawnOptions inet;
  inet.argv = {o.kpx_binary, "lab", "echo-server", "--name", "internet", "--port", "8080", "--log-requests"};
  inet.netns = plan.internet_ns;
  inet.cgroup = *inet_cg;
  inet.log_file = plan.state_dir() + "/internet.log";
  auto inet_pid = spawn(inet);
  if (!inet_pid) return inet_pid.error();

  auto root = cgroup2_root();
  if (!root) return root.error();
  Agents agents(plan, o.kpx_binary, *root, o.agent_args);
  KPX_TRY(agents.start_all());
  KPX_TRY(create_all(**client, default_workload(plan, o.pods_per_node)));

  LabState st;
  st.name = o.name;
  st.nodes = o.nodes;
  st.pods_per_node = o.pods_per_node;
  st.api_port = (*api)->port();
  st.daemon_pid = getpid();
  KPX_TRY(write_state(st));
  kpx::log::info("lab " + o.name + ": API server on " + (*api)->address());

  int sig = 0;
  sigwait(&set, &sig);
  kpx::log::info("lab " + o.name + ": stopping");
  agents.stop();
  (*kubelet)->stop();
  (*slices)->stop();
  (*lbs)->stop();
  terminate(*inet_pid, 1000);
  (*api)->stop();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return {};
}

}  // namespace kpx::lab
