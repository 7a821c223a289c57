#include "cli/cli.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <CLI/CLI.hpp>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/http_endpoints.h"
#include "log/log.h"
#include "apiserver/apiserver.h"
#include "bpf/log.h"
#include "bpf/object.h"
#include "bpf/pin_lock.h"
#include "bpf/pinned_maps.h"
#include "bpf/tc.h"
#include "cli/lab_cli.h"
#include "dataplane/conntrack.h"
#include "dataplane/counters.h"
#include "dataplane/service_writer.h"
#include "lab/echo.h"
#include "net/endpoint.h"
#include "net/netns.h"

namespace kpx::cli {

namespace {

using json = nlohmann::json;

constexpr int kExitFailure = 1;
// Who else writes an instance's maps: a running agent (Services then come
// from the Kubernetes API) or another kpx command.
constexpr const char* kAgentHint =
    "another process (a running kpx agent, whose Services come from the Kubernetes API, or another kpx command)";
constexpr int kExitUsage = 2;

struct Io {
  std::ostream& out;
  std::ostream& err;
};

int report(const Io& io, const Error& e) {
  io.err << "kpx: " << e.message << "\n";
  return e.kind == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
}

void check_output_format(CLI::Option* o) { o->check(CLI::IsMember({"table", "json"})); }

// ---- svc -------------------------------------------------------------------

int svc_set(const Io& io, const std::string& pin_dir, const std::string& svc_arg,
            const std::vector<std::string>& backend_args) {
  // Parse everything before touching a map: bad input changes nothing.
  auto svc = net::parse_service(svc_arg);
  if (!svc) return report(io, svc.error());
  std::vector<net::BackendAddr> backends;
  for (const auto& b : backend_args) {
    auto be = net::parse_backend(b);
    if (!be) return report(io, be.error());
    backends.push_back(*be);
  }
  auto maps = bpf::PinnedMaps::open_or_create(pin_dir);
  if (!maps) return report(io, maps.error());
  auto lock = bpf::lock_pin_dir(pin_dir, kAgentHint);
  if (!lock) return report(io, lock.error());
  dataplane::ServiceWriter w(*maps);
  if (auto st = w.set(*svc, backends); !st) return report(io, st.error());
  return 0;
}

int svc_del(const Io& io, const std::string& pin_dir, const std::string& svc_arg) {
  auto svc = net::parse_service(svc_arg);
  if (!svc) return report(io, svc.error());
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return report(io, maps.error());
  auto lock = bpf::lock_pin_dir(pin_dir, kAgentHint);
  if (!lock) return report(io, lock.error());
  dataplane::ServiceWriter w(*maps);
  auto removed = w.remove(*svc);
  if (!removed) return report(io, removed.error());
  if (!*removed) return report(io, not_found("no service " + net::format(*svc)));
  return 0;
}

int svc_list(const Io& io, const std::string& pin_dir, const std::string& format) {
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return report(io, maps.error());
  dataplane::ServiceWriter w(*maps);
  auto services = w.list();
  if (format == "json") {
    json arr = json::array();
    for (const auto& s : services) {
      json backends = json::array();
      for (const auto& b : s.backends) backends.push_back(net::format(b));
      arr.push_back({{"service", net::format(s.svc)},
                     {"ip", net::format_ipv4(s.svc.addr_be)},
                     {"port", s.svc.port},
                     {"protocol", net::proto_name(s.svc.proto)},
                     {"id", s.svc_id},
                     {"slot_base", s.slot_base},
                     {"backends", backends}});
    }
    io.out << arr.dump(2) << "\n";
    return 0;
  }
  io.out << std::left << std::setw(26) << "SERVICE" << std::setw(6) << "ID" << "BACKENDS\n";
  for (const auto& s : services) {
    std::string bl;
    for (const auto& b : s.backends) bl += (bl.empty() ? "" : ",") + net::format(b);
    io.out << std::setw(26) << net::format(s.svc) << std::setw(6) << s.svc_id << (bl.empty() ? "<none>" : bl)
           << "\n";
  }
  return 0;
}

// ---- ct, stats -------------------------------------------------------------

int ct_list(const Io& io, const std::string& pin_dir, const std::string& format) {
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return report(io, maps.error());
  auto entries = dataplane::list_conntrack(*maps);
  auto ep = [](uint32_t a, uint16_t p_be) { return net::format(net::BackendAddr{a, ntohs(p_be)}); };
  if (format == "json") {
    json arr = json::array();
    for (const auto& e : entries) {
      arr.push_back({{"direction", e.key.dir == KPX_CT_FORWARD ? "forward" : "reply"},
                     {"protocol", e.key.proto == IPPROTO_UDP ? "UDP" : "TCP"},
                     {"src", ep(e.key.saddr, e.key.sport)},
                     {"dst", ep(e.key.daddr, e.key.dport)},
                     {"nat", ep(e.value.nat_addr, e.value.nat_port)},
                     {"snat", e.value.snat_addr ? net::format_ipv4(e.value.snat_addr) : ""},
                     {"snat_port", e.value.snat_port ? ntohs(e.value.snat_port) : 0},
                     {"interface", e.key.ifindex},
                     {"service_id", e.value.svc_id},
                     {"flags", dataplane::ct_flags_string(e.value.flags)},
                     {"age_s", e.age_s},
                     {"idle_s", e.idle_s}});
    }
    io.out << arr.dump(2) << "\n";
    return 0;
  }
  io.out << std::left << std::setw(8) << "DIR" << std::setw(6) << "PROTO" << std::setw(22) << "SRC"
         << std::setw(22) << "DST" << std::setw(22) << "NAT" << std::setw(6) << "SVC" << std::setw(8)
         << "IDLE" << "FLAGS\n";
  for (const auto& e : entries) {
    io.out << std::setw(8) << (e.key.dir == KPX_CT_FORWARD ? "forward" : "reply") << std::setw(6)
           << (e.key.proto == IPPROTO_UDP ? "UDP" : "TCP") << std::setw(22) << ep(e.key.saddr, e.key.sport)
           << std::setw(22) << ep(e.key.daddr, e.key.dport) << std::setw(22)
           << ep(e.value.nat_addr, e.value.nat_port) << std::setw(6) << e.value.svc_id << std::setw(8)
           << (std::to_string(e.idle_s) + "s") << dataplane::ct_flags_string(e.value.flags) << "\n";
  }
  return 0;
}

int stats(const Io& io, const std::string& pin_dir, const std::string& format) {
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return report(io, maps.error());
  auto counters = dataplane::read_counters(*maps);
  if (!counters) return report(io, counters.error());
  if (format == "json") {
    json obj = json::object();
    for (const auto& [name, v] : *counters) obj[name] = v;
    io.out << obj.dump(2) << "\n";
    return 0;
  }
  for (const auto& [name, v] : *counters) io.out << std::left << std::setw(24) << name << v << "\n";
  return 0;
}

// ---- attach / detach -------------------------------------------------------

Result<int> ifindex_in(const std::string& dev, const std::string& netns) {
  unsigned idx = if_nametoindex(dev.c_str());
  if (idx == 0)
    return not_found("no interface '" + dev + "'" + (netns.empty() ? "" : " in netns '" + netns + "'"));
  return static_cast<int>(idx);
}

int attach(const Io& io, const std::string& pin_dir, const std::string& netns, const std::string& dev) {
  auto obj = bpf::LxcObject::load(pin_dir);
  if (!obj) return report(io, obj.error());
  auto ns = net::NetnsScope::enter(netns);
  if (!ns) return report(io, ns.error());
  auto idx = ifindex_in(dev, netns);
  if (!idx) return report(io, idx.error());
  if (auto st = bpf::tc_attach(*idx, obj->from_pod_fd(), obj->to_pod_fd()); !st) return report(io, st.error());
  return 0;
}

int detach(const Io& io, const std::string& netns, const std::string& dev) {
  auto ns = net::NetnsScope::enter(netns);
  if (!ns) return report(io, ns.error());
  auto idx = ifindex_in(dev, netns);
  if (!idx) return report(io, idx.error());
  if (auto st = bpf::tc_detach(*idx); !st) return report(io, st.error());
  return 0;
}

// ---- config ----------------------------------------------------------------

struct ConfigArgs {
  std::string hairpin_ip;
  std::optional<uint32_t> tcp_syn, tcp_established, tcp_fin, tcp_close_wait, tcp_closing, udp, udp_stream;
  std::optional<uint32_t> new_flows_per_sec, new_flows_burst;
};

int config_set(const Io& io, const std::string& pin_dir, const ConfigArgs& a) {
  std::optional<uint32_t> hairpin;
  if (!a.hairpin_ip.empty()) {
    auto ip = net::parse_ipv4(a.hairpin_ip);
    if (!ip) return report(io, ip.error());
    hairpin = *ip;
  }
  auto maps = bpf::PinnedMaps::open_or_create(pin_dir);
  if (!maps) return report(io, maps.error());
  auto lock = bpf::lock_pin_dir(pin_dir, kAgentHint);
  if (!lock) return report(io, lock.error());
  if (hairpin) {
    auto dp = dataplane::Dataplane::recover(*maps);
    if (!dp) return report(io, dp.error());
    std::vector<uint32_t> nodes;
    maps->node_addrs.for_each([&](const uint32_t& addr, const uint32_t& flags) {
      if (flags & KPX_NODE_ADDR_F_NODE) nodes.push_back(addr);
    });
    if (auto st = dp->set_node_addresses(nodes, *hairpin); !st) return report(io, st.error());
  }
  kpx_config c = maps->read_config();
  if (a.tcp_syn) c.tcp_syn_timeout_s = *a.tcp_syn;
  if (a.tcp_established) c.tcp_established_timeout_s = *a.tcp_established;
  if (a.tcp_fin) c.tcp_fin_timeout_s = *a.tcp_fin;
  if (a.tcp_close_wait) c.tcp_close_wait_timeout_s = *a.tcp_close_wait;
  if (a.tcp_closing) c.tcp_closing_timeout_s = *a.tcp_closing;
  if (a.udp) c.udp_timeout_s = *a.udp;
  if (a.udp_stream) c.udp_stream_timeout_s = *a.udp_stream;
  if (a.new_flows_per_sec) c.ct_new_per_sec = *a.new_flows_per_sec;
  if (a.new_flows_burst) c.ct_new_burst = *a.new_flows_burst;
  if (auto st = maps->config.update(0, c); !st) return report(io, st.error());
  return 0;
}

int config_show(const Io& io, const std::string& pin_dir, const std::string& format) {
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return report(io, maps.error());
  kpx_config c = maps->read_config();
  auto or_default = [](uint32_t v, uint32_t d) { return v ? v : d; };
  json obj = {
      {"hairpin_snat_ip", c.hairpin_addr_v4 ? net::format_ipv4(c.hairpin_addr_v4) : ""},
      {"tcp_syn_timeout_s", or_default(c.tcp_syn_timeout_s, KPX_DEFAULT_TCP_SYN_TIMEOUT_S)},
      {"tcp_established_timeout_s", or_default(c.tcp_established_timeout_s, KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S)},
      {"tcp_fin_timeout_s", or_default(c.tcp_fin_timeout_s, KPX_DEFAULT_TCP_FIN_TIMEOUT_S)},
      {"tcp_close_wait_timeout_s", or_default(c.tcp_close_wait_timeout_s, KPX_DEFAULT_TCP_CLOSE_WAIT_TIMEOUT_S)},
      {"tcp_closing_timeout_s", or_default(c.tcp_closing_timeout_s, KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S)},
      {"udp_timeout_s", or_default(c.udp_timeout_s, KPX_DEFAULT_UDP_TIMEOUT_S)},
      {"udp_stream_timeout_s", or_default(c.udp_stream_timeout_s, KPX_DEFAULT_UDP_STREAM_TIMEOUT_S)},
      {"conntrack_new_flows_per_sec", or_default(c.ct_new_per_sec, KPX_DEFAULT_CT_NEW_PER_SEC)},
      {"conntrack_new_flows_burst", or_default(c.ct_new_burst, KPX_DEFAULT_CT_NEW_BURST)},
      {"node_address", c.node_addr_v4 ? net::format_ipv4(c.node_addr_v4) : ""},
      {"egress_masquerade", (c.flags & KPX_CFG_F_EGRESS_MASQ) != 0},
      {"masquerade_all", (c.flags & KPX_CFG_F_MASQ_ALL) != 0},
  };
  // What kube-proxy's LocalTrafficDetector calls local (ClusterIPs reached
  // from elsewhere are masqueraded).
  if (c.flags & KPX_CFG_F_LOCAL_IF)
    obj["local_traffic"] = "from pod interfaces";
  else if ((c.flags & KPX_CFG_F_LOCAL_CIDR) && c.local_prefix_v4)
    obj["local_traffic"] = net::format_ipv4(c.local_cidr_v4) + "/" + std::to_string(c.local_prefix_v4);
  else if (c.flags & KPX_CFG_F_LOCAL_CIDR)
    obj["local_traffic"] = "node CIDR not known yet";
  else
    obj["local_traffic"] = "not detected";
  if (format == "json") {
    io.out << obj.dump(2) << "\n";
    return 0;
  }
  for (auto& [k, v] : obj.items())
    io.out << std::left << std::setw(28) << k << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  return 0;
}

// ---- lab tools -------------------------------------------------------------

int probe(const Io& io, const std::string& target, int count, int timeout_ms, int interval_ms, bool keep_socket) {
  auto t = net::parse_service(target);
  if (!t) return report(io, t.error());
  lab::ProbeOptions o;
  o.target = *t;
  o.count = count;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  o.interval = std::chrono::milliseconds(interval_ms);
  o.keep_socket = keep_socket;
  if (keep_socket && t->proto != net::Proto::kUdp) return report(io, invalid_argument("--keep-socket is for UDP targets"));
  return lab::run_probe(o, io.out) == count ? 0 : kExitFailure;
}

}  // namespace

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Io io{out, err};
  bpf::install_libbpf_logging();
  CLI::App app{"kpx: an eBPF replacement for kube-proxy", "kpx"};
  app.require_subcommand(1);
  std::string pin_dir = bpf::kDefaultPinDir;
  app.add_option("--pin-dir", pin_dir, "bpffs directory of this instance's maps")->capture_default_str();

  std::string format = "table";
  std::string svc_arg;
  std::vector<std::string> backend_args;
  std::string netns, dev;
  ConfigArgs cfg;
  int rc = 0;

  auto* svc = app.add_subcommand("svc", "program and list Services")->require_subcommand(1);
  auto* svc_set_cmd = svc->add_subcommand("set", "set a Service's backends (none: traffic is dropped)");
  svc_set_cmd->add_option("service", svc_arg, "VIP:PORT/PROTO (tcp|udp)")->required();
  svc_set_cmd->add_option("backends", backend_args, "BACKEND_IP:PORT ...");
  svc_set_cmd->callback([&] { rc = svc_set(io, pin_dir, svc_arg, backend_args); });
  auto* svc_del_cmd = svc->add_subcommand("del", "remove a Service");
  svc_del_cmd->add_option("service", svc_arg, "VIP:PORT/PROTO")->required();
  svc_del_cmd->callback([&] { rc = svc_del(io, pin_dir, svc_arg); });
  auto* svc_list_cmd = svc->add_subcommand("list", "list Services and their backends");
  check_output_format(svc_list_cmd->add_option("-o,--output", format, "table|json"));
  svc_list_cmd->callback([&] { rc = svc_list(io, pin_dir, format); });

  auto* ct = app.add_subcommand("ct", "connection tracking")->require_subcommand(1);
  auto* ct_list_cmd = ct->add_subcommand("list", "list conntrack entries");
  check_output_format(ct_list_cmd->add_option("-o,--output", format, "table|json"));
  ct_list_cmd->callback([&] { rc = ct_list(io, pin_dir, format); });

  auto* stats_cmd = app.add_subcommand("stats", "datapath counters by reason");
  check_output_format(stats_cmd->add_option("-o,--output", format, "table|json"));
  stats_cmd->callback([&] { rc = stats(io, pin_dir, format); });

  auto* attach_cmd = app.add_subcommand("attach", "attach the pod-side programs to a pod veth's host end");
  attach_cmd->add_option("--netns", netns, "network namespace (ip netns name) of the interface");
  attach_cmd->add_option("--dev", dev, "interface")->required();
  attach_cmd->callback([&] { rc = attach(io, pin_dir, netns, dev); });
  auto* detach_cmd = app.add_subcommand("detach", "remove kpx's programs from an interface");
  detach_cmd->add_option("--netns", netns, "network namespace (ip netns name) of the interface");
  detach_cmd->add_option("--dev", dev, "interface")->required();
  detach_cmd->callback([&] { rc = detach(io, netns, dev); });

  auto* config = app.add_subcommand("config", "datapath settings")->require_subcommand(1);
  auto* config_set_cmd = config->add_subcommand("set", "change datapath settings");
  config_set_cmd->add_option("--hairpin-snat-ip", cfg.hairpin_ip,
                             "node-owned IPv4 address a pod reaching itself through a Service is NATed to");
  auto timeout = [](CLI::Option* o) { o->check(CLI::Range(1u, 7u * 86400u)); };
  timeout(config_set_cmd->add_option("--tcp-syn-timeout", cfg.tcp_syn, "seconds"));
  timeout(config_set_cmd->add_option("--tcp-established-timeout", cfg.tcp_established, "seconds"));
  timeout(config_set_cmd->add_option("--tcp-fin-timeout", cfg.tcp_fin, "seconds after a FIN, until it is answered"));
  timeout(config_set_cmd->add_option("--tcp-close-wait-timeout", cfg.tcp_close_wait,
                                     "seconds after one side's FIN is answered, the other side open"));
  timeout(config_set_cmd->add_option("--tcp-closing-timeout", cfg.tcp_closing, "seconds after a RST"));
  timeout(config_set_cmd->add_option("--udp-timeout", cfg.udp, "seconds (UDP without replies, or only just begun)"));
  timeout(config_set_cmd->add_option("--udp-stream-timeout", cfg.udp_stream,
                                     "seconds (UDP answered and still active two seconds after it began)"));
  config_set_cmd
      ->add_option("--conntrack-new-flows-per-sec", cfg.new_flows_per_sec,
                   "new flows a second each pod interface may start (the admission budget)")
      ->check(CLI::Range(1u, 100000000u));
  config_set_cmd->add_option("--conntrack-new-flows-burst", cfg.new_flows_burst, "new flows a pod interface may start at once")
      ->check(CLI::Range(1u, 100000000u));
  config_set_cmd->callback([&] { rc = config_set(io, pin_dir, cfg); });
  auto* config_show_cmd = config->add_subcommand("show", "show datapath settings");
  check_output_format(config_show_cmd->add_option("-o,--output", format, "table|json"));
  config_show_cmd->callback([&] { rc = config_show(io, pin_dir, format); });

  auto* lab_cmd = app.add_subcommand("lab", "the network-namespace lab's tools")->require_subcommand(1);
  lab::EchoServerOptions echo;
  auto* echo_cmd = lab_cmd->add_subcommand("echo-server", "answer TCP and UDP with this pod's name and the client address");
  echo_cmd->add_option("--name", echo.name, "name to answer with")->required();
  echo_cmd->add_option("--port", echo.port, "TCP and UDP port")->capture_default_str();
  echo_cmd->add_option("--exit-after", echo.exit_after_s, "stop after this many seconds (0: never)")
      ->check(CLI::NonNegativeNumber);
  echo_cmd->add_option("--container", echo.container, "container name, added to every answer");
  echo_cmd->add_flag("--log-requests", echo.log_requests, "print a line for every request received");
  echo_cmd->callback([&] {
    if (auto st = lab::run_echo_server(echo, out); !st) rc = report(io, st.error());
  });
  add_lab_commands(*lab_cmd, out, err, rc);
  std::string probe_target;
  int probe_count = 1, probe_timeout_ms = 1000, probe_interval_ms = 0;
  bool probe_keep_socket = false;
  auto* probe_cmd = lab_cmd->add_subcommand("probe", "send requests to an echo server and print who answered");
  probe_cmd->add_option("target", probe_target, "IP:PORT/PROTO")->required();
  probe_cmd->add_option("-c,--count", probe_count, "requests")->check(CLI::Range(1, 100000));
  probe_cmd->add_option("--timeout-ms", probe_timeout_ms, "per request")->check(CLI::Range(1, 60000));
  probe_cmd->add_option("--interval-ms", probe_interval_ms, "pause between requests")->check(CLI::Range(0, 60000));
  probe_cmd->add_flag("--keep-socket", probe_keep_socket,
                      "UDP: one connected socket for every request (reopened after an error), as a resolver keeps one");
  probe_cmd->callback(
      [&] { rc = probe(io, probe_target, probe_count, probe_timeout_ms, probe_interval_ms, probe_keep_socket); });

  apiserver::Options api;
  long api_bookmark_ms = 60000, api_watch_timeout_s = 1800, api_continue_ttl_s = 300;
  auto* api_cmd = app.add_subcommand("apiserver", "in-memory Kubernetes API server for tests and the lab");
  api_cmd->add_option("--listen", api.listen, "HOST:PORT (port 0: any free one)")->capture_default_str();
  api_cmd->add_flag("--allow-any", api.allow_any, "allow a listen address that is not loopback");
  api_cmd->add_option("--compaction-window", api.compaction_window, "events kept for watches and continued lists")
      ->capture_default_str()->check(CLI::Range(1, 100000000));
  api_cmd->add_option("--bookmark-interval-ms", api_bookmark_ms, "watch BOOKMARK period")
      ->capture_default_str()->check(CLI::Range(1, 86400000));
  api_cmd->add_option("--max-watch-timeout-s", api_watch_timeout_s, "longest (and default) watch")
      ->capture_default_str()->check(CLI::Range(1, 86400));
  api_cmd->add_option("--continue-ttl-s", api_continue_ttl_s, "continue tokens expire after this")
      ->capture_default_str()->check(CLI::Range(1, 86400));
  api_cmd->add_option("--service-cluster-ip-range", api.service_cluster_ip_range,
                      "allocate Services' ClusterIPs from this IPv4 CIDR, e.g. 10.96.0.0/16 (default: none)");
  api_cmd->add_option("--service-node-port-range", api.service_node_port_range,
                      "allocate NodePort and LoadBalancer Services' nodePorts from this range (\"\": none)")
      ->capture_default_str();
  bool api_aligned = false;
  api_cmd->add_flag("--aligned-chunks", api_aligned, "one watch event per chunk (default: split and merged)");
  api_cmd->add_flag("--watch-cache,!--no-watch-cache", api.watch_cache,
                    "as kube-apiserver's watch cache: resourceVersion=0 lists come whole, limit ignored "
                    "(--watch-cache=false: paged)")
      ->capture_default_str();
  api_cmd->callback([&] {
    api.bookmark_interval = std::chrono::milliseconds(api_bookmark_ms);
    api.max_watch_timeout = std::chrono::seconds(api_watch_timeout_s);
    api.continue_ttl = std::chrono::seconds(api_continue_ttl_s);
    api.split_watch_chunks = !api_aligned;
    if (auto st = apiserver::run(api, out); !st) rc = report(io, st.error());
  });

  agent::Options ag;
  std::string ag_config, ag_min_sync = "100ms", ag_sync = "30s";
  auto* agent_cmd = app.add_subcommand("agent", "the kube-proxy replacement daemon");
  agent_cmd->add_option("--config", ag_config, "KubeProxyConfiguration file (flags given explicitly override it)");
  auto* o_kubeconfig = agent_cmd->add_option("--kubeconfig", ag.kubeconfig, "kubeconfig (else $KUBECONFIG, ~/.kube/config, in-cluster)");
  agent_cmd->add_option("--master", ag.master, "API server address (overrides the kubeconfig's)");
  auto* o_hostname = agent_cmd->add_option("--hostname-override", ag.hostname_override, "this node's name");
  auto* o_cidr = agent_cmd->add_option("--cluster-cidr", ag.cluster_cidr, "the cluster's pod CIDR");
  auto* o_healthz = agent_cmd->add_option("--healthz-bind-address", ag.healthz_bind_address, "IP:PORT of /healthz")
                        ->capture_default_str();
  auto* o_metrics = agent_cmd->add_option("--metrics-bind-address", ag.metrics_bind_address, "IP:PORT of /metrics")
                        ->capture_default_str();
  // kube-proxy's deprecated port flags: without --config, their port goes to
  // an address given without one, and 0 turns that server off.
  int ag_healthz_port = 10256, ag_metrics_port = 10249;
  auto* o_healthz_port =
      agent_cmd->add_option("--healthz-port", ag_healthz_port, "port of /healthz (0: off; deprecated)")
          ->capture_default_str()
          ->check(CLI::Range(0, 65535));
  auto* o_metrics_port =
      agent_cmd->add_option("--metrics-port", ag_metrics_port, "port of /metrics (0: off; deprecated)")
          ->capture_default_str()
          ->check(CLI::Range(0, 65535));
  auto* o_min_sync = agent_cmd->add_option("--min-sync-period", ag_min_sync, "least time between two syncs (Go duration)")
                         ->capture_default_str();
  auto* o_sync = agent_cmd->add_option("--sync-period", ag_sync,
                                       "a full sync auditing the maps at least this often (Go duration; 0: never)")
                     ->capture_default_str();
  agent_cmd->add_option("--pin-dir", ag.pin_dir, "bpffs directory of the datapath's maps (default: the global --pin-dir)");
  agent_cmd->add_option("--pod-interfaces", ag.pod_interfaces,
                        "glob of the pod veths' host ends to attach to, followed as they come (none: attach nowhere)");
  agent_cmd->add_option("--hairpin-snat-ip", ag.hairpin_snat_ip, "node address for hairpin source NAT");
  agent_cmd->add_option("--uplink-interfaces", ag.uplink_interfaces,
                        "glob of the node's uplinks, where NodePort traffic arrives (none: no north-south)");
  auto* o_np_addrs = agent_cmd->add_option("--nodeport-addresses", ag.nodeport_addresses,
                                           "CIDRs (or 'primary') of the node addresses NodePorts are served on "
                                           "(default: every one)")
                         ->delimiter(',');
  agent_cmd->add_flag("--egress-masquerade", ag.egress_masquerade,
                      "source-NAT pods' traffic out of the cluster to the node's address (needs --cluster-cidr)");
  agent_cmd->add_option("--non-masquerade-cidrs", ag.non_masquerade_cidrs,
                        "destinations pods reach with their own address (default: --cluster-cidr)")
      ->delimiter(',');
  auto* o_hard_fail = agent_cmd->add_flag(
      "--bind-address-hard-fail", ag.bind_address_hard_fail,
      "exit when the healthz or metrics address cannot be bound (else: logged, tried again every 5 s)");
  auto* o_masq_all = agent_cmd->add_flag("--masquerade-all", ag.masquerade_all,
                                        "source-NAT every new flow to a Service to the node's address");
  auto* o_local_mode =
      agent_cmd
          ->add_option("--detect-local-mode", ag.detect_local_mode,
                       "what is local traffic (a ClusterIP reached from elsewhere is masqueraded): ClusterCIDR "
                       "(default), NodeCIDR, InterfaceNamePrefix, BridgeInterface")
          ->check(CLI::IsMember({"ClusterCIDR", "NodeCIDR", "InterfaceNamePrefix", "BridgeInterface"}));
  auto* o_bridge = agent_cmd->add_option("--pod-bridge-interface", ag.pod_bridge_interface,
                                         "the pods' bridge (--detect-local-mode BridgeInterface)");
  auto* o_prefix = agent_cmd->add_option("--pod-interface-name-prefix", ag.pod_interface_name_prefix,
                                         "the pod interfaces' name prefix (--detect-local-mode InterfaceNamePrefix)");
  agent_cmd
      ->add_option("--socket-lb", ag.socket_lb,
                   "socket-level load balancing: host (the node's own processes), all (pods too), off")
      ->check(CLI::IsMember({"host", "all", "off"}))
      ->capture_default_str();
  agent_cmd->add_option("--socket-lb-cgroup", ag.socket_lb_cgroup,
                        "cgroup v2 directory whose sockets are load-balanced at connect (the root on a node; none: off)");
  auto* o_ct_per_core = agent_cmd->add_option("--conntrack-max-per-core", ag.conntrack_max_per_core,
                                              "flows per CPU the conntrack table holds (0: kpx's default size)");
  auto* o_ct_min = agent_cmd->add_option("--conntrack-min", ag.conntrack_min, "least flows the conntrack table holds");
  agent_cmd
      ->add_option("--conntrack-new-flows-per-sec", ag.conntrack_new_per_sec,
                   "new flows one pod interface may open a second (0: " +
                       std::to_string(KPX_DEFAULT_CT_NEW_PER_SEC) + ")")
      ->check(CLI::Range(0u, 100000000u));
  agent_cmd->add_option("--conntrack-new-flows-burst", ag.conntrack_new_burst,
                        "new flows one pod interface may open at once (0: " +
                            std::to_string(KPX_DEFAULT_CT_NEW_BURST) + ")");
  agent_cmd->add_flag("--cleanup", ag.cleanup, "remove the datapath (maps, attachments) and exit");
  auto* o_verbosity = agent_cmd->add_option("-v", ag.verbosity, "log verbosity")->check(CLI::Range(0, 10));
  int ag_max_backoff_ms = 30000;
  agent_cmd->add_option("--api-max-backoff-ms", ag_max_backoff_ms)
      ->check(CLI::Range(1, 3600000))
      ->group("");  // hidden: tests that inject many API faults in a row
  auto* o_qps = agent_cmd->add_option("--kube-api-qps", ag.api_qps, "API requests a second (a negative value: no limit)")
                    ->capture_default_str();
  auto* o_burst = agent_cmd->add_option("--kube-api-burst", ag.api_burst, "API requests at once before --kube-api-qps applies")
                      ->capture_default_str()
                      ->check(CLI::Range(1, 1000000));
  agent_cmd->callback([&] {
    agent::Options o = ag;
    if (!ag_config.empty()) {
      // The file first, then the flags given on the command line.
      agent::Options from_file;
      auto loaded = agent::load_config_file(ag_config, from_file);
      if (!loaded) {
        rc = report(io, loaded.error());
        return;
      }
      // At start, one line each: what kube-proxy would have done that kpx does not.
      if (auto line = loaded->strict_decoding_line(); !line.empty()) log::warning(line);
      if (auto line = loaded->not_honoured_line(); !line.empty()) log::warning(line);
      auto keep = [](CLI::Option* opt, std::string& flag, const std::string& file) {
        if (opt->count() == 0) flag = file;
      };
      keep(o_kubeconfig, o.kubeconfig, from_file.kubeconfig);
      keep(o_hostname, o.hostname_override, from_file.hostname_override);
      keep(o_cidr, o.cluster_cidr, from_file.cluster_cidr);
      keep(o_healthz, o.healthz_bind_address, from_file.healthz_bind_address);
      keep(o_metrics, o.metrics_bind_address, from_file.metrics_bind_address);
      if (o_min_sync->count() == 0) o.min_sync_period = from_file.min_sync_period;
      if (o_sync->count() == 0) o.sync_period = from_file.sync_period;
      if (o_qps->count() == 0) o.api_qps = from_file.api_qps;
      if (o_burst->count() == 0) o.api_burst = from_file.api_burst;
      if (o_verbosity->count() == 0) o.verbosity = from_file.verbosity;
      o.tcp_established_timeout = from_file.tcp_established_timeout;
      o.tcp_close_wait_timeout = from_file.tcp_close_wait_timeout;
      o.udp_timeout = from_file.udp_timeout;
      o.udp_stream_timeout = from_file.udp_stream_timeout;
      if (o_ct_per_core->count() == 0) o.conntrack_max_per_core = from_file.conntrack_max_per_core;
      if (o_ct_min->count() == 0) o.conntrack_min = from_file.conntrack_min;
      if (o_np_addrs->count() == 0) o.nodeport_addresses = from_file.nodeport_addresses;
      if (o_masq_all->count() == 0) o.masquerade_all = from_file.masquerade_all;
      if (o_hard_fail->count() == 0) o.bind_address_hard_fail = from_file.bind_address_hard_fail;
      keep(o_local_mode, o.detect_local_mode, from_file.detect_local_mode);
      keep(o_bridge, o.pod_bridge_interface, from_file.pod_bridge_interface);
      keep(o_prefix, o.pod_interface_name_prefix, from_file.pod_interface_name_prefix);
    }
    // A duration flag given, or every flag's default without a file.
    auto period = [&](CLI::Option* opt, const std::string& text, std::chrono::milliseconds& to) {
      if (opt->count() == 0 && !ag_config.empty()) return true;
      auto d = agent::parse_duration(text);
      if (!d) {
        rc = report(io, invalid_argument(opt->get_name() + ": " + d.error().message));
        return false;
      }
      to = *d;
      return true;
    };
    if (!period(o_min_sync, ag_min_sync, o.min_sync_period) || !period(o_sync, ag_sync, o.sync_period)) return;
    if (ag_config.empty() || o_healthz_port->count() > 0)
      o.healthz_bind_address = agent::address_from_deprecated_port(o.healthz_bind_address, ag_healthz_port);
    if (ag_config.empty() || o_metrics_port->count() > 0)
      o.metrics_bind_address = agent::address_from_deprecated_port(o.metrics_bind_address, ag_metrics_port);
    o.api_max_backoff = std::chrono::milliseconds(ag_max_backoff_ms);
    if (o.pin_dir.empty()) o.pin_dir = pin_dir;
    if (auto st = agent::run_agent(o); !st) rc = report(io, st.error());
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e, out, err);
    return code == 0 ? 0 : kExitUsage;
  }
  return rc;
}

}  // namespace kpx::cli
