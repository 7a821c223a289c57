#include "agent/agent.h"

#include <bpf/libbpf.h>
#include <netinet/in.h>

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "agent/addresses.h"
#include "agent/api_feed.h"
#include "agent/configz.h"
#include "agent/http_endpoints.h"
#include "agent/interfaces.h"
#include "agent/service_health.h"
#include "agent/sync_loop.h"
#include "bpf/object.h"
#include "bpf/pin_lock.h"
#include "bpf/tc.h"
#include "dataplane/conntrack.h"
#include "dataplane/counters.h"
#include "k8s/config.h"
#include "k8s/reflector.h"
#include "log/log.h"
#include "net/endpoint.h"
#include "net/netns.h"

namespace kpx::agent {

namespace {

// The node addresses NodePorts are served on (nullopt: every one), from
// --nodeport-addresses: CIDRs and "primary".
Result<std::optional<std::vector<uint32_t>>> nodeport_addresses(const Options& o, const std::vector<uint32_t>& node,
                                                               uint32_t primary) {
  if (o.nodeport_addresses.empty()) return std::optional<std::vector<uint32_t>>{};
  std::vector<uint32_t> out;
  for (const std::string& spec : o.nodeport_addresses) {
    if (spec == "primary") {
      if (primary) out.push_back(primary);
      continue;
    }
    auto cidr = net::parse_ipv4_cidr(spec);
    if (!cidr) return invalid_argument("--nodeport-addresses: " + cidr.error().message);
    for (uint32_t a : node)
      if (cidr->contains(a)) out.push_back(a);
  }
  return std::optional<std::vector<uint32_t>>{std::move(out)};
}

// kube-proxy's: twice its default syncPeriod.
constexpr auto kHealthTimeout = std::chrono::seconds(60);

// An empty address turns that server off, as kube-proxy's does.
Result<std::optional<BindAddress>> optional_bind_address(const std::string& s) {
  if (s.empty()) return std::optional<BindAddress>{};
  auto b = parse_bind_address(s);
  if (!b) return b.error();
  return std::optional<BindAddress>{*b};
}

Status write_datapath_config(bpf::PinnedMaps& maps, const Options& o) {
  kpx_config c = maps.read_config();
  auto secs = [](std::chrono::seconds s) { return static_cast<uint32_t>(s.count()); };
  if (o.tcp_established_timeout.count() > 0) c.tcp_established_timeout_s = secs(o.tcp_established_timeout);
  if (o.tcp_close_wait_timeout.count() > 0) c.tcp_close_wait_timeout_s = secs(o.tcp_close_wait_timeout);
  if (o.udp_timeout.count() > 0) c.udp_timeout_s = secs(o.udp_timeout);
  if (o.udp_stream_timeout.count() > 0) c.udp_stream_timeout_s = secs(o.udp_stream_timeout);
  if (o.conntrack_new_per_sec > 100000000) return invalid_argument("--conntrack-new-flows-per-sec: at most 100000000");
  c.ct_new_per_sec = o.conntrack_new_per_sec;
  c.ct_new_burst = o.conntrack_new_burst;
  return maps.config.update(0, c);
}

// The first IPv4 CIDR of a comma list (kube-proxy's per-family lists).
Result<std::optional<net::Ipv4Cidr>> first_ipv4_cidr(const std::string& list, const std::string& what) {
  for (size_t at = 0; at <= list.size();) {
    size_t comma = list.find(',', at);
    std::string one = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (!one.empty() && one.find(':') == std::string::npos) {
      auto c = net::parse_ipv4_cidr(one);
      if (!c) return invalid_argument(what + ": " + c.error().message);
      return std::optional<net::Ipv4Cidr>{*c};
    }
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return std::optional<net::Ipv4Cidr>{};
}

std::string local_mode(const Options& o) { return o.detect_local_mode.empty() ? "ClusterCIDR" : o.detect_local_mode; }

// kube-proxy's checks of the local-traffic detection settings (a config
// file's values are not checked by the flag parser).
Status check_local_detection(const Options& o) {
  const std::string mode = local_mode(o);
  if (mode == "ClusterCIDR" || mode == "NodeCIDR") return {};
  if (mode == "BridgeInterface") {
    if (o.pod_bridge_interface.empty())
      return invalid_argument("--detect-local-mode BridgeInterface needs --pod-bridge-interface");
    return {};
  }
  if (mode == "InterfaceNamePrefix") {
    if (o.pod_interface_name_prefix.empty())
      return invalid_argument("--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix");
    return {};
  }
  return invalid_argument("--detect-local-mode: unknown mode " + mode +
                          " (ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface)");
}

// kube-proxy's masquerade of Service traffic as the datapath's flags
// (KPX_CFG_F_MASQ_ALL, KPX_CFG_F_LOCAL_*) and local CIDR. node_pod_cidrs:
// the Node's podCIDRs (NodeCIDR mode; "" until known: nothing is local
// nor masqueraded meanwhile, as kube-proxy waits for them).
Status write_masquerade_config(bpf::PinnedMaps& maps, const Options& o, const std::string& node_pod_cidrs) {
  const std::string mode = local_mode(o);
  uint32_t flags = o.masquerade_all ? uint32_t{KPX_CFG_F_MASQ_ALL} : 0u;
  std::optional<net::Ipv4Cidr> local;
  if (mode == "ClusterCIDR") {
    auto c = first_ipv4_cidr(o.cluster_cidr, "--cluster-cidr");
    if (!c) return c.error();
    local = *c;
    if (local) flags |= KPX_CFG_F_LOCAL_CIDR;
  } else if (mode == "NodeCIDR") {
    auto c = first_ipv4_cidr(node_pod_cidrs, "the Node's podCIDRs");
    if (!c) return c.error();
    local = *c;
    flags |= KPX_CFG_F_LOCAL_CIDR;
  } else {
    flags |= KPX_CFG_F_LOCAL_IF;
  }
  kpx_config c = maps.read_config();
  constexpr uint32_t kMine = KPX_CFG_F_MASQ_ALL | KPX_CFG_F_LOCAL_CIDR | KPX_CFG_F_LOCAL_IF;
  c.local_cidr_v4 = local ? local->addr_be : 0;
  c.local_prefix_v4 = local ? local->prefix : 0;
  c.flags = (c.flags & ~kMine) | flags;
  return maps.config.update(0, c);
}

// Socket-level load balancing's scope: the agent's own network namespace
// (the node's; SO_NETNS_COOKIE), or every one with --socket-lb all.
Status write_socket_lb_config(bpf::PinnedMaps& maps, const Options& o, bool on) {
  uint64_t cookie = 0;
  if (on) {
    auto c = net::netns_cookie();
    if (!c) return c.error();
    cookie = *c;
  }
  kpx_config c = maps.read_config();
  c.sock_netns_cookie_lo = static_cast<uint32_t>(cookie);
  c.sock_netns_cookie_hi = static_cast<uint32_t>(cookie >> 32);
  c.flags = (c.flags & ~uint32_t{KPX_CFG_F_SOCK_LB_ALL}) |
            (on && o.socket_lb == "all" ? uint32_t{KPX_CFG_F_SOCK_LB_ALL} : 0u);
  return maps.config.update(0, c);
}

// Where socket-level load balancing's sockets live: the agent's network
// namespace (the node's), and with --socket-lb all also those of the
// processes in the hooked cgroup's tree (pods' namespaces), each once.
std::vector<std::string> socket_lb_namespaces(const Options& o) {
  std::vector<std::string> out = {""};
  if (o.socket_lb != "all") return out;
  struct stat self {};
  if (stat("/proc/self/ns/net", &self) != 0) return out;
  std::set<ino_t> seen = {self.st_ino};
  std::error_code ec;
  std::vector<std::string> dirs = {o.socket_lb_cgroup};
  for (auto it = std::filesystem::recursive_directory_iterator(o.socket_lb_cgroup, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (it->is_directory(ec)) dirs.push_back(it->path().string());
  for (const auto& d : dirs) {
    std::ifstream procs(d + "/cgroup.procs");
    for (int pid; procs >> pid;) {
      const std::string ns = "/proc/" + std::to_string(pid) + "/ns/net";
      struct stat st {};
      if (stat(ns.c_str(), &st) == 0 && seen.insert(st.st_ino).second) out.push_back(ns);
    }
  }
  return out;
}

// The node's primary address, the cluster CIDR and egress masquerading
// (with its non-masquerade CIDRs, kpx_nomasq_v4: the new ones first, then
// the flag, then what went).
Status write_north_south_config(bpf::PinnedMaps& maps, const Options& o, uint32_t primary) {
  // kube-proxy takes a comma list (one per family): the IPv4 one.
  auto cluster_cidr = first_ipv4_cidr(o.cluster_cidr, "--cluster-cidr");
  if (!cluster_cidr) return cluster_cidr.error();
  const std::optional<net::Ipv4Cidr> cluster = *cluster_cidr;
  std::set<std::pair<uint32_t, uint8_t>> want;
  if (o.egress_masquerade) {
    if (!cluster) return invalid_argument("--egress-masquerade needs --cluster-cidr (an IPv4 pod CIDR)");
    if (o.non_masquerade_cidrs.empty()) want.insert({cluster->addr_be, cluster->prefix});
    for (const std::string& spec : o.non_masquerade_cidrs) {
      auto c = net::parse_ipv4_cidr(spec);
      if (!c) return invalid_argument("--non-masquerade-cidrs: " + c.error().message);
      want.insert({c->addr_be, c->prefix});
    }
    if (want.size() > KPX_MAX_NOMASQ_CIDRS)
      return invalid_argument("--non-masquerade-cidrs: more than " + std::to_string(KPX_MAX_NOMASQ_CIDRS));
  }
  for (const auto& [a, len] : want) KPX_TRY(maps.nomasq.update(kpx_nomasq_key_v4{len, a}, 1));
  kpx_config c = maps.read_config();
  c.node_addr_v4 = primary;
  c.cluster_cidr_v4 = cluster ? cluster->addr_be : 0;
  c.cluster_prefix_v4 = cluster ? cluster->prefix : 0;
  c.flags = (c.flags & ~uint32_t{KPX_CFG_F_EGRESS_MASQ}) | (o.egress_masquerade ? uint32_t{KPX_CFG_F_EGRESS_MASQ} : 0u);
  KPX_TRY(maps.config.update(0, c));
  std::vector<kpx_nomasq_key_v4> stale;
  maps.nomasq.for_each([&](const kpx_nomasq_key_v4& k, const uint32_t&) {
    if (!want.count({k.addr, static_cast<uint8_t>(k.prefixlen)})) stale.push_back(k);
  });
  for (const auto& k : stale) maps.nomasq.erase(k);
  if (o.egress_masquerade && !primary)
    log::warning("--egress-masquerade: no primary address (no IPv4 on --uplink-interfaces): pods' traffic out of "
                 "the cluster is dropped (counter drop_no_node_addr)");
  return {};
}

Status cleanup(const Options& o) {
  std::optional<bpf::UniqueFd> lock;  // held until the maps are gone
  // Pins of any kpx ABI version (the refusal of another version names this).
  KPX_TRY(bpf::check_pin_dir(o.pin_dir));
  if (std::filesystem::is_directory(o.pin_dir)) {
    auto l = bpf::lock_pin_dir(o.pin_dir, "a running kpx agent: stop it first");
    if (!l) return l.error();
    lock = std::move(*l);
  }
  for (const std::string* glob : {&o.pod_interfaces, &o.uplink_interfaces}) {
    if (glob->empty()) continue;
    auto follower = InterfaceFollower::open(*glob, [](int ifindex, const std::string& name) {
      if (auto st = bpf::tc_detach(ifindex); !st) log::warning("detach " + name + ": " + st.error().message);
      else log::info("detached from " + name);
      return true;
    });
    if (!follower) return follower.error();
    follower->scan();
  }
  if (!o.socket_lb_cgroup.empty()) {
    auto n = bpf::detach_sock_hooks(o.socket_lb_cgroup);
    if (!n) return n.error();
    log::info("detached " + std::to_string(*n) + " socket hooks from " + o.socket_lb_cgroup);
  }
  KPX_TRY(bpf::remove_pin_dir(o.pin_dir));
  log::info("removed the datapath maps in " + o.pin_dir);
  return {};
}

}  // namespace

Status run_agent(const Options& o) {
  log::set_verbosity(o.verbosity);
  if (o.cleanup) return cleanup(o);
  KPX_TRY(check_local_detection(o));
  if (o.socket_lb != "host" && o.socket_lb != "all" && o.socket_lb != "off")
    return invalid_argument("--socket-lb: " + o.socket_lb + " (host, all or off)");

  auto healthz_addr = optional_bind_address(o.healthz_bind_address);
  if (!healthz_addr) return healthz_addr.error();
  auto metrics_addr = optional_bind_address(o.metrics_bind_address);
  if (!metrics_addr) return metrics_addr.error();
  // --master replaces the server address of whatever configuration is found
  // (kubeconfig or in-cluster, keeping its credentials); with none found it
  // means an unauthenticated server (tests, the lab).
  Result<k8s::ClientConfig> client_config = k8s::load_client_config(o.kubeconfig);
  if (!client_config && !o.master.empty() && o.kubeconfig.empty()) client_config = k8s::ClientConfig{};
  if (!client_config) return client_config.error();
  if (!o.master.empty()) {
    client_config->server = o.master;
    client_config->source = "--master" + (client_config->source.empty() ? "" : " with " + client_config->source);
  }
  // Signals are taken by sigwait below, never by the worker threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  uint32_t hairpin = 0;
  if (!o.hairpin_snat_ip.empty()) {
    auto ip = net::parse_ipv4(o.hairpin_snat_ip);
    if (!ip) return invalid_argument("--hairpin-snat-ip: " + ip.error().message);
    hairpin = *ip;
  }
  // Load the datapath first: its maps are created, or reused as pinned.
  const int ncpu = libbpf_num_possible_cpus();
  const uint32_t ct_entries =
      bpf::conntrack_entries(o.conntrack_max_per_core, o.conntrack_min, ncpu > 0 ? static_cast<uint32_t>(ncpu) : 1);
  auto object = bpf::LxcObject::load(o.pin_dir, /*load_programs=*/!o.pod_interfaces.empty(), ct_entries);
  if (!object) return object.error();
  std::optional<bpf::UplinkObject> uplink;
  if (!o.uplink_interfaces.empty()) {
    auto u = bpf::UplinkObject::load(o.pin_dir);
    if (!u) return u.error();
    uplink.emplace(std::move(*u));
  }
  std::optional<bpf::SockObject> sock;
  if (!o.socket_lb_cgroup.empty() && o.socket_lb != "off") {
    auto s = bpf::SockObject::load(o.pin_dir);
    if (!s) return s.error();
    sock.emplace(std::move(*s));
  }
  auto maps = bpf::PinnedMaps::open(o.pin_dir);
  if (!maps) return maps.error();
  if (maps->ct_max_entries != ct_entries)
    log::warning("the pinned conntrack table holds " + std::to_string(maps->ct_max_entries) +
                 " entries, the conntrack flags ask for " + std::to_string(ct_entries) +
                 ": kept (a table is sized when made; `kpx agent --cleanup` drops it)");
  // Held for the agent's life: it alone writes these maps.
  auto pin_lock = bpf::lock_pin_dir(o.pin_dir, "another process (is a kpx agent already running on them?)");
  if (!pin_lock) return pin_lock.error();
  KPX_TRY(write_datapath_config(*maps, o));
  KPX_TRY(write_masquerade_config(*maps, o, ""));
  KPX_TRY(write_socket_lb_config(*maps, o, sock.has_value()));
  if (sock) {
    KPX_TRY(sock->attach(o.socket_lb_cgroup));
    log::info("socket-level load balancing (" + o.socket_lb + ") on the sockets of cgroup " + o.socket_lb_cgroup);
  } else if (!o.socket_lb_cgroup.empty()) {
    auto n = bpf::detach_sock_hooks(o.socket_lb_cgroup);
    if (n && *n) log::info("--socket-lb off: detached " + std::to_string(*n) + " socket hooks");
  }
  {
    const std::string mode = local_mode(o);
    std::string how = o.masquerade_all ? "every new flow to a Service is masqueraded to the node (--masquerade-all)"
                                       : "flows to a ClusterIP from non-local sources are masqueraded to the node";
    if (mode == "ClusterCIDR" && o.cluster_cidr.empty() && !o.masquerade_all)
      how = "no --cluster-cidr for --detect-local-mode ClusterCIDR: no local traffic detection, ClusterIPs are "
            "served to pods only";
    else if (mode == "InterfaceNamePrefix" || mode == "BridgeInterface")
      how += "; local: traffic from the pod interfaces (" + o.pod_interfaces + "), as the " +
             (mode == "BridgeInterface" ? "bridge " + o.pod_bridge_interface + "'s ports"
                                        : "interfaces " + o.pod_interface_name_prefix + "*") +
             " would be";
    log::info("detect-local-mode " + mode + ": " + how);
  }
  auto dp = dataplane::Dataplane::recover(*maps);
  if (!dp) return dp.error();
  dp->remove_leftovers();
  if (sock && !sock->can_destroy_udp_sockets()) {
    log::warning("this kernel has no bpf_sock_destroy (Linux 6.5): UDP sockets connected through a Service keep a "
                 "removed backend until their owner closes them");
  } else if (sock) {
    // A UDP socket connected through a frontend keeps its backend until
    // closed: when the backend leaves, the socket is destroyed, so that
    // its owner (a resolver) connects again (kube-proxy clears the UDP
    // conntrack entries instead; these sockets have none).
    bpf::SockObject* sock_ptr = &*sock;
    dp->set_lost_udp_sink([sock_ptr, &o](const std::vector<kpx_sock_lost_key>& lost) -> size_t {
      auto n = sock_ptr->destroy_udp_sockets(lost, socket_lb_namespaces(o));
      if (!n) {
        log::warning("destroy UDP sockets connected to removed backends: " + n.error().message);
        return 0;
      }
      if (*n) log::info("destroyed " + std::to_string(*n) + " UDP sockets connected to removed backends");
      return static_cast<size_t>(*n);
    });
  }
  // The node's own addresses: a pod sending from one of them is dropped
  // before any state is made; NodePorts are served on them; the uplink's
  // primary one is the masquerade source. Read now, then followed (below).
  bpf::PinnedMaps* maps_ptr = &*maps;
  auto apply_addresses = [&o, hairpin, maps_ptr](dataplane::Dataplane& d, const NodeAddresses& na) -> Status {
    auto np_addrs = nodeport_addresses(o, na.all, na.primary);
    if (!np_addrs) return np_addrs.error();
    KPX_TRY(d.set_node_addresses(na.all, hairpin, *np_addrs));
    KPX_TRY(write_north_south_config(*maps_ptr, o, na.primary));
    if (!o.uplink_interfaces.empty())
      log::info(na.primary ? "north-south traffic is source-NATed to " + net::format_ipv4(na.primary)
                           : "no IPv4 address on the uplinks (" + o.uplink_interfaces +
                                 "): NodePort traffic from outside is dropped (counter drop_no_node_addr)");
    return {};
  };
  const NodeAddresses node_addrs = read_node_addresses(o.uplink_interfaces);
  KPX_TRY(apply_addresses(*dp, node_addrs));
  log::info("recovered " + std::to_string(dp->frontends().size()) + " frontends from " + o.pin_dir);

  // kube-proxy's client-side rate limit (clientConnection.qps/burst, --kube-api-qps/--kube-api-burst).
  k8s::ClientOptions client_options;
  client_options.qps = o.api_qps;
  client_options.burst = o.api_burst;
  auto client = k8s::Client::create(*client_config, client_options);
  if (!client) return client.error();
  if (auto v = (*client)->version(); v.ok())
    log::info("API server " + (*client)->server() + " version " + v->value("gitVersion", std::string("?")));
  else
    log::warning("API server " + (*client)->server() + " not answering yet: " + v.error().message);

  Metrics metrics;
  const std::string node = node_name(o);
  SyncLoop sync(*dp, metrics, o.min_sync_period, kHealthTimeout, proxy::ComputeConfig{node});
  sync.set_sync_period(o.sync_period);
  auto endpoints = HttpEndpoints::start(
      *healthz_addr, *metrics_addr, sync.health(), metrics,
      [maps_ptr] {
        auto c = dataplane::read_counters(*maps_ptr);
        return c ? *c : std::vector<std::pair<std::string, uint64_t>>{};
      },
      configz(o).dump(), BindPolicy{o.bind_address_hard_fail});
  if (!endpoints) return endpoints.error();
  log::info("healthz on port " + std::to_string((*endpoints)->healthz_port()) + ", metrics on port " +
            std::to_string((*endpoints)->metrics_port()));
  // healthCheckNodePorts on the NodePort addresses as of start (as
  // kube-proxy resolves them once; every address when unset, which covers
  // later ones), answering as of the last sync that wrote the maps.
  auto hc_addrs = nodeport_addresses(o, node_addrs.all, node_addrs.primary);
  if (!hc_addrs) return hc_addrs.error();
  ServiceHealthServer health_checks(*hc_addrs, [&sync] { return sync.health().state().healthy; });
  sync.set_health_check_sink([&health_checks](const proxy::HealthChecks& hc) { health_checks.sync(hc); });

  k8s::ReflectorHandlers svc_handlers, slice_handlers, node_handlers;
  feed_services(svc_handlers, sync, metrics);
  feed_endpoint_slices(slice_handlers, sync, metrics);
  // NodeCIDR: what is local follows the Node's podCIDRs.
  std::string node_pod_cidrs;  // the node reflector's thread only
  auto set_node = [&sync, &o, &node_pod_cidrs, maps_ptr](const nlohmann::json& obj) {
    auto n = k8s::decode_node(obj);
    if (!n) return;
    if (local_mode(o) == "NodeCIDR") {
      std::string cidrs = n->pod_cidr;
      for (const auto& c : n->pod_cidrs) cidrs += "," + c;
      if (cidrs != node_pod_cidrs) {
        node_pod_cidrs = cidrs;
        auto st = sync.with_dataplane([&](dataplane::Dataplane&) { return write_masquerade_config(*maps_ptr, o, cidrs); });
        if (!st) log::error("detect-local-mode NodeCIDR: " + st.error().message);
        else log::info("detect-local-mode NodeCIDR: local traffic is from the Node's podCIDRs (" + cidrs + ")");
      }
    }
    sync.update(Source::kNode, [&](proxy::Model& m) { m.set_node(std::move(*n)); });
  };
  // /healthz's node eligibility (kube-proxy's NodeEligibleHandler). A Node
  // deleted, or gone from a relist, is not eligible: kube-proxy judges its
  // last state instead, which rarely has a deletionTimestamp, but a node
  // the API no longer has should not draw load balancer traffic.
  auto eligibility = [&sync](const nlohmann::json* obj) {
    const bool eligible = obj && node_eligible(*obj);
    if (!sync.health().set_node_eligible(eligible)) return;
    log::info(eligible ? "this Node is eligible again: /healthz answers as the proxy's health"
              : obj
                  ? "this Node is being deleted (deletionTimestamp or ToBeDeletedByClusterAutoscaler taint): "
                    "/healthz answers 503"
                  : "this Node was deleted: /healthz answers 503");
  };
  auto node_seen = std::make_shared<bool>(false);  // the node reflector's thread only
  node_handlers.on_replace = [set_node, eligibility, node_seen](std::vector<nlohmann::json> items) {
    for (const auto& i : items) set_node(i);
    if (!items.empty())
      eligibility(&items.back());
    else if (*node_seen)
      eligibility(nullptr);
    *node_seen = *node_seen || !items.empty();
  };
  node_handlers.on_event = [set_node, eligibility, node_seen](k8s::EventType type,
                                                              const nlohmann::json& obj) {
    *node_seen = true;
    if (type == k8s::EventType::kDeleted) return eligibility(nullptr);
    set_node(obj);
    eligibility(&obj);
  };
  k8s::ReflectorOptions ropts;
  ropts.max_backoff = o.api_max_backoff;
  ropts.initial_backoff = std::min(ropts.initial_backoff, ropts.max_backoff);
  k8s::Reflector services(**client, k8s::services_resource(), svc_handlers, ropts);
  k8s::Reflector slices(**client, k8s::endpoint_slices_resource(), slice_handlers, ropts);
  k8s::Reflector node_reflector(**client, k8s::node_resource(node), node_handlers, ropts);

  std::vector<std::jthread> threads;
  threads.emplace_back([&](std::stop_token st) { sync.run(st); });
  threads.emplace_back([&](std::stop_token st) { services.run(st); });
  threads.emplace_back([&](std::stop_token st) { slices.run(st); });
  threads.emplace_back([&](std::stop_token st) { node_reflector.run(st); });

  // Conntrack GC: the datapath expires entries lazily; dead flows must not
  // fill the LRU and push out live idle ones.
  threads.emplace_back([&](std::stop_token st) {
    std::mutex mu;
    std::condition_variable_any cv;
    while (!st.stop_requested()) {
      std::unique_lock lk(mu);
      cv.wait_for(lk, st, std::chrono::seconds(10), [] { return false; });
      if (st.stop_requested()) return;
      auto gc = dataplane::collect_conntrack(*maps_ptr, o.pin_dir, dataplane::monotonic_coarse_ns());
      if (!gc) {
        log::warning("conntrack GC: " + gc.error().message);
        continue;
      }
      metrics.conntrack_gc_deleted += gc->reaped;
      if (gc->reaped > 0)
        log::debug(1, "conntrack GC: " + std::to_string(gc->expired) + " expired flows, " +
                          std::to_string(gc->orphans) + " orphan reply entries, " +
                          std::to_string(gc->half_flows) + " flows without a reply entry; " +
                          std::to_string(gc->reaped) + " entries removed");
      if (auto st = sync.release_unreferenced(gc->live); !st)
        log::warning("classification filter: " + st.error().message);
    }
  });

  std::optional<InterfaceFollower> follower;
  if (!o.pod_interfaces.empty()) {
    auto f = InterfaceFollower::open(
        o.pod_interfaces,
        [&](int ifindex, const std::string& name) {
          if (auto st = bpf::tc_attach(ifindex, object->from_pod_fd(), object->to_pod_fd()); !st) {
            log::warning("attach to " + name + ": " + st.error().message);
            return false;
          }
          metrics.attached_interfaces++;
          log::info("attached to " + name);
          return true;
        },
        [&](int) { metrics.attached_interfaces--; });
    if (!f) return f.error();
    follower.emplace(std::move(*f));
    follower->scan();
    threads.emplace_back([&](std::stop_token st) { follower->run(st); });
  }
  std::optional<InterfaceFollower> uplink_follower;
  if (uplink) {
    auto f = InterfaceFollower::open(o.uplink_interfaces, [&](int ifindex, const std::string& name) {
      if (auto st = bpf::tc_attach(ifindex, uplink->from_uplink_fd(), -1); !st) {
        log::warning("attach to uplink " + name + ": " + st.error().message);
        return false;
      }
      log::info("attached to uplink " + name);
      return true;
    });
    if (!f) return f.error();
    uplink_follower.emplace(std::move(*f));
    uplink_follower->scan();
    threads.emplace_back([&](std::stop_token st) { uplink_follower->run(st); });
  }

  // Addresses added or removed at run time: applied between syncs.
  auto addr_follower = AddressFollower::open(o.uplink_interfaces, node_addrs, [&](const NodeAddresses& na) {
    std::string list;
    for (uint32_t a : na.all) list += (list.empty() ? "" : ", ") + net::format_ipv4(a);
    log::info("the node's addresses changed: " + (list.empty() ? std::string("none") : list));
    if (auto st = sync.with_dataplane([&](dataplane::Dataplane& d) { return apply_addresses(d, na); }); !st)
      log::warning("applying the node's new addresses: " + st.error().message);
  });
  if (!addr_follower) return addr_follower.error();
  threads.emplace_back([&](std::stop_token st) { addr_follower->run(st); });

  int sig = 0;
  sigwait(&signals, &sig);
  log::info(std::string("shutting down on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
            "; the datapath stays in place (kpx agent --cleanup removes it)");
  for (auto& t : threads) t.request_stop();
  threads.clear();  // joins
  health_checks.stop();
  (*endpoints)->stop();
  return {};
}

}  // namespace kpx::agent
