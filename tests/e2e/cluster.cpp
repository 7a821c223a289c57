#include "e2e/cluster.h"

#include <unistd.h>

namespace kpx::e2e {

using testing::sh;
using testing::sh_out;

namespace {

bool run_all(const std::vector<std::string>& cmds) {
  for (const auto& c : cmds)
    if (sh(c) != 0) return false;
  return true;
}

}  // namespace

Cluster::Cluster(int nodes) {
  for (int n = 1; n <= nodes; ++n) {
    std::string ns = netns_.add("n" + std::to_string(n) + "-");
    if (ns.empty()) {
      ok_ = false;
      return;
    }
    nodes_.push_back(ns);
    pins_.push_back(std::make_unique<testing::ScopedPinDir>());
    std::string gw = "10.244." + std::to_string(n) + ".1";
    ok_ &= run_all({"ip -n " + ns + " link add cbr0 type bridge",
                    "ip -n " + ns + " addr add " + gw + "/24 dev cbr0", "ip -n " + ns + " link set cbr0 up",
                    "ip netns exec " + ns + " sysctl -qw net.ipv4.ip_forward=1"});
    ok_ &= kpx(n, "config set --hairpin-snat-ip " + gw) == 0;
    next_host_ip_[n] = 10;
  }
  // Node wire: node1's eth0 <-> nodeN's eth0 for N>1 (a point-to-point veth
  // each), with host-gw routes to every other node's pod CIDR.
  for (int n = 2; n <= nodes; ++n) {
    std::string a = nodes_[0], b = nodes_[static_cast<size_t>(n - 1)];
    std::string if_a = "eth" + std::to_string(n), if_b = "eth0";
    std::string ip_a = "10.0." + std::to_string(n) + ".1", ip_b = "10.0." + std::to_string(n) + ".2";
    ok_ &= run_all({"ip -n " + a + " link add " + if_a + " type veth peer name " + if_b + " netns " + b,
                    "ip -n " + a + " addr add " + ip_a + "/30 dev " + if_a, "ip -n " + a + " link set " + if_a + " up",
                    "ip -n " + b + " addr add " + ip_b + "/30 dev " + if_b, "ip -n " + b + " link set " + if_b + " up",
                    "ip -n " + a + " route add 10.244." + std::to_string(n) + ".0/24 via " + ip_b,
                    "ip -n " + b + " route add default via " + ip_a});
  }
}

Cluster::~Cluster() = default;

const Pod& Cluster::add_pod(int node, const std::string& name, bool echo) {
  Pod p;
  p.name = name;
  p.node = node;
  p.ns = netns_.add("p-");
  p.ip = "10.244." + std::to_string(node) + "." + std::to_string(next_host_ip_[node]++);
  p.host_veth = testing::unique_name("kv");
  std::string nns = node_ns(node);
  ok_ &= !p.ns.empty() &&
         run_all({"ip -n " + nns + " link add " + p.host_veth + " type veth peer name eth0 netns " + p.ns,
                  "ip -n " + nns + " link set " + p.host_veth + " master cbr0 up",
                  "ip -n " + p.ns + " addr add " + p.ip + "/24 dev eth0", "ip -n " + p.ns + " link set eth0 up",
                  "ip -n " + p.ns + " route add default via 10.244." + std::to_string(node) + ".1"});
  ok_ &= kpx(node, "attach --netns " + nns + " --dev " + p.host_veth) == 0;
  if (echo) {
    procs_.spawn({"ip", "netns", "exec", p.ns, KPX_BINARY, "lab", "echo-server", "--name", name, "--port", "8080",
                  "--exit-after", "600"});
    bool listening = false;
    for (int i = 0; i < 100 && !listening; ++i) {
      listening = !sh_out("ip netns exec " + p.ns + " ss -Hltn 'sport = :8080'").empty();
      if (!listening) usleep(20000);
    }
    ok_ &= listening;
  }
  return pods_[name] = p;
}

int Cluster::kpx(int node, const std::string& args, std::string* out) const {
  std::string cmd = std::string(KPX_BINARY) + " --pin-dir " + pin_dir(node) + " " + args;
  if (!out) return sh(cmd);
  int st = 0;
  *out = sh_out(cmd, &st);
  return st;
}

bool Cluster::kpx_all(const std::string& args) const {
  for (int n = 1; n <= static_cast<int>(nodes_.size()); ++n)
    if (kpx(n, args) != 0) return false;
  return true;
}

int Cluster::exec(const std::string& pod, const std::string& cmd) const {
  return sh("ip netns exec " + pods_.at(pod).ns + " " + cmd);
}

std::vector<ProbeResult> Cluster::probe(const std::string& pod, const std::string& target, int count,
                                        int timeout_ms) const {
  std::string out = sh_out("ip netns exec " + pods_.at(pod).ns + " " + KPX_BINARY + " lab probe " + target +
                           " --count " + std::to_string(count) + " --timeout-ms " + std::to_string(timeout_ms));
  return lab::parse_probe_output(out);
}

}  // namespace kpx::e2e
