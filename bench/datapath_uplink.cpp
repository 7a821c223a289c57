// kpx-bench datapath, the uplink cases.
//
// How they are measured
// ---------------------
// kpx_from_uplink routes what it translates itself (lib/fib.h): a FIB
// lookup and the neighbour's MAC, in the network namespace of the thread
// that calls BPF_PROG_TEST_RUN, on the skb's input device (ctx.ifindex). So
// the bench makes a namespace that looks like a lab node (as
// tests/bpf/uplink_test.cpp does): the uplink up0 with the node's address
// 10.0.0.11, another node 10.0.0.12 routing 10.244.2.0/24, this node's pod
// network on pods0 and a pod veth, permanent neighbours, ip_forward on. The
// programs only run under BPF_PROG_TEST_RUN there: nothing is attached,
// anywhere, and nothing is made in the root namespace.
//
// Every case is one BPF_PROG_TEST_RUN with repeat = 1 per frame. A looped
// run cannot measure an established NodePort flow: the skb is not reset
// between runs, and the translated frame (node -> backend) translates back
// only to a frame for the node's own address, which the FIB does not
// forward (the pod cases' mirror entries have no uplink equivalent that
// stays on the measured path). So, as the pod cases' new_flow and mix, each
// frame gets its own call, and the floor is measured the same way: the
// kernel's figure then includes the fixed cost of one timed run in every
// case alike, which the "above floor" rows take out. Per round and Service
// count, `frames` frames of every case, the order of the cases rotating
// frame by frame; a case's figure for the round is the median over its
// frames, and the table gives the median over rounds.
//
//  - floor: the pod cases' floor as they measure it for their one-run
//    cases (floor_single): kpx_floor, the empty tc program, one run per
//    call on the default skb (no ctx: loopback), on established_remote's
//    frame. What one timed call costs by itself; every other case is given
//    against it ("above floor", "x floor").
//  - empty_program: a reference, not kpx: the same empty program on the
//    uplink's skb (ctx ifindex up0), as every kpx_from_uplink case runs:
//    that the uplink's skb adds nothing of its own to the floor.
//  - node_pass: kpx_from_uplink on a frame to the node's address on a port
//    that is no NodePort (22): the filter says "node address", the cache
//    and conntrack miss, it is no reply port, the frontend lookup misses,
//    it passes. The uplink's pass path for traffic to the node.
//  - established_remote / established_local: an ACK of a NodePort flow
//    (opened by its SYN before the round) to a backend on another node
//    (30080) and to a pod on this node (30081, its REPLY entry bound to the
//    pod's veth by one kpx_to_pod run, as the kernel's delivery binds it):
//    the per-CPU cache (or conntrack on a conflict miss), DNAT + SNAT to the
//    node, the FIB lookup, MACs and the redirect.
//  - new_flow_remote / new_flow_local: `frames` distinct SYNs (source port
//    20000 + k) to each NodePort: backend pick, a SNAT port, both conntrack
//    entries, the FIB lookup and the redirect (the local flow's frame marked
//    for the binding). Their entries are removed every 256 frames (a
//    backend's SNAT range, 4,536 ports by default, must not crowd: a SYN
//    that finds the 8 ports it may try taken is dropped, as on a node with
//    that many flows to one backend), the established flows' after the
//    round, so conntrack holds the prefill alone between rounds (checked
//    at the start of each). A removal bumps the conntrack epoch (the ABI's
//    rule), so the established cases' next frame after one is a per-CPU
//    cache miss: one frame in 256, which the median does not see.
// Every run is checked after it is timed (the check costs the figure
// nothing), and the bench fails on the first that is wrong: the verdict and
// mark; the kpx cases' frames translated as they must be (to the backend's
// address and port 8080, from the node's address with the flow's SNAT port,
// checksums right, to the next hop's MAC: node2's, or the local pod's) or,
// on the pass paths, unchanged; each new flow in conntrack with the backend
// and SNAT port its SYN got; and the counters grown by exactly the frames
// each path was sent. The established flows' SYN and first ACK are checked
// the same way before the round.
//
// The ClusterIP Services and the conntrack prefill of each Service count
// are those of the pod cases (same addresses, one flow per Service), on the
// uplink's own maps, written through dataplane::Dataplane with the
// NodePorts.
#include "datapath_uplink.h"

#include <arpa/inet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "dataplane/conntrack.h"
#include "kpx_floor.skel.h"
#include "lab/network.h"
#include "lab/proc.h"
#include "net/netns.h"
#include "packet/craft.h"

namespace kpx::bench {
namespace {

// ---- the node --------------------------------------------------------------

constexpr const char* kNode = "10.0.0.11";
constexpr const char* kPodGw = "10.244.1.1";
constexpr const char* kClient = "10.0.0.100";    // outside the cluster, on the uplink's network
constexpr const char* kLocalBe = "10.244.1.5";   // a pod of this node
constexpr const char* kRemoteBe = "10.244.2.7";  // a pod of node2
constexpr uint16_t kRemoteNodePort = 30080, kLocalNodePort = 30081;
constexpr uint16_t kRemoteSport = 40000, kLocalSport = 40001, kNodePassSport = 40002, kNewFlowSportBase = 20000;
constexpr uint8_t kSyn = 0x02, kAck = 0x10;
// New flows are checked and removed every this many frames (see settle).
constexpr uint32_t kNewFlowBatch = 256;
constexpr uint32_t kRedirect = TC_ACT_REDIRECT;
const uint8_t kNode2Mac[6] = {0x02, 0, 0, 0, 0, 0x12};
const uint8_t kLocalBeMac[6] = {0x02, 0, 0, 0, 0x02, 0x05};

// `ip -batch` lines, run inside the namespace.
constexpr const char* kTopology =
    "link add up0 type veth peer name up1\n"
    "link set up0 up\n"
    "link set up1 up\n"
    "addr add 10.0.0.11/24 dev up0\n"
    "link add pods0 type veth peer name pods1\n"
    "link set pods0 up\n"
    "link set pods1 up\n"
    "addr add 10.244.1.1/24 dev pods0\n"
    "link add veth1 type veth peer name veth2\n"
    "link set veth1 up\n"
    "link set veth2 up\n"
    "route add 10.244.2.0/24 via 10.0.0.12 dev up0\n"
    "neigh add 10.0.0.12 lladdr 02:00:00:00:00:12 dev up0 nud permanent\n"
    "neigh add 10.0.0.100 lladdr 02:00:00:00:01:00 dev up0 nud permanent\n"
    "neigh add 10.244.1.5 lladdr 02:00:00:00:02:05 dev pods0 nud permanent\n";

uint32_t be(const char* a) {
  in_addr x{};
  inet_pton(AF_INET, a, &x);
  return x.s_addr;
}

// The cases, in the table's order.
const char* const kUplinkCases[] = {"floor",           "empty_program",  "node_pass", "established_remote",
                                    "established_local", "new_flow_remote", "new_flow_local"};


}  // namespace

// ---- setup --------------------------------------------------------------------

UplinkBench::~UplinkBench() = default;

Result<std::unique_ptr<UplinkBench>> UplinkBench::create(uint32_t frames) {
  std::unique_ptr<UplinkBench> b(new UplinkBench());
  b->frames_ = frames;
  const std::string& ns = b->netns_.name();
  KPX_TRY(b->netns_.create());
  KPX_TRY(lab::run_ok({"ip", "-n", ns, "-batch", "-"}, kTopology));
  KPX_TRY(lab::set_netns_sysctl(ns, "ipv4/ip_forward", "1"));  // a node forwards
  {
    auto scope = net::NetnsScope::enter(ns);
    if (!scope) return scope.error();
    b->up_if_ = if_nametoindex("up0");
    b->veth_ = if_nametoindex("veth1");
  }
  if (!b->up_if_ || !b->veth_) return system_error("the interfaces of " + ns + " are missing");

  KPX_TRY(b->pin_.create());
  auto lxc = bpf::LxcObject::load(b->pin_.path());
  if (!lxc) return lxc.error();
  b->lxc_.emplace(std::move(*lxc));
  auto up = bpf::UplinkObject::load(b->pin_.path());
  if (!up) return up.error();
  b->uplink_.emplace(std::move(*up));
  auto maps = bpf::PinnedMaps::open(b->pin_.path());
  if (!maps) return maps.error();
  b->maps_.emplace(std::move(*maps));
  bpf::PinnedMaps& m = *b->maps_;
  auto dp = dataplane::Dataplane::recover(m);
  if (!dp) return dp.error();
  b->dp_.emplace(std::move(*dp));
  KPX_TRY(b->dp_->set_node_addresses({be(kNode), be(kPodGw)}, 0));
  {
    kpx_config c = m.read_config();
    c.node_addr_v4 = be(kNode);  // what Cluster-policy NodePort flows are masqueraded to
    // Every new flow comes from the uplink: its admission budget must not
    // turn the new-flow cases into drops after a few rounds.
    c.ct_new_per_sec = 100000000;
    c.ct_new_burst = 100000000;
    KPX_TRY(m.config.update(0, c));
    // The source ports the masqueraded flows get (lib/uplink.h uplink_snat_ports).
    b->snat_.min = c.snat_port_min ? c.snat_port_min : KPX_DEFAULT_SNAT_PORT_MIN;
    b->snat_.max = c.snat_port_max ? c.snat_port_max : KPX_DEFAULT_SNAT_PORT_MAX;
  }
  for (auto [port, backend] : {std::pair{kRemoteNodePort, kRemoteBe}, std::pair{kLocalNodePort, kLocalBe}}) {
    const dataplane::FrontendKey key{net::IpAddr::from_v4(0), port, net::Proto::kTcp, dataplane::Scope::kNodePort};
    KPX_TRY(b->dp_->upsert(key, dataplane::frontend_of({{be(backend), kBackendPort}}, "bench/nodeport")));
  }
  b->ctrs_.emplace(m.counters.get());
  b->empty_.reset(kpx_floor__open_and_load());
  if (!b->empty_) return errno_error("load kpx_floor", errno);
  // Conntrack room: the prefill, the two established flows and both new-flow
  // cases' 2 entries a frame, for up to a batch of frames.
  const uint64_t need = 4ULL * std::min(frames, kNewFlowBatch) + 16;
  if (need >= m.ct_max_entries) return invalid_argument("--uplink-frames does not fit conntrack");
  b->ct_room_ = static_cast<uint32_t>((m.ct_max_entries - need) / 2);
  return b;
}

// The pod cases' ClusterIP Services [0, n), through the Dataplane.
Status UplinkBench::set_services(uint32_t n) {
  dataplane::ServiceDelta delta;
  for (uint32_t i = std::min(n, cur_services_); i < std::max(n, cur_services_); ++i) {
    const net::ServiceAddr svc{vip_be(i), kServicePort, net::Proto::kTcp};
    if (i < n)
      delta[svc] = std::vector<net::BackendAddr>{{backend_be(i, 0), kBackendPort}, {backend_be(i, 1), kBackendPort}};
    else
      delta[svc] = std::nullopt;
  }
  if (!delta.empty()) {
    auto st = dp_->apply_delta(dataplane::frontends_of(delta));
    if (!st) return st.error();
  }
  cur_services_ = n;
  return {};
}

Status UplinkBench::set_prefill(uint32_t flows) {
  if (flows < cur_prefill_) KPX_TRY(remove_prefill(*maps_, flows, cur_prefill_));
  if (flows > cur_prefill_) KPX_TRY(add_prefill(*maps_, cur_prefill_, flows));
  cur_prefill_ = flows;
  return {};
}

// ---- one round ------------------------------------------------------------------

namespace {

// What a case's runs must give: the verdict, the mark, and the frame either
// unchanged or translated (to the backend's address and port, from the node
// with a port of the SNAT range, checksums right, to the next hop's MAC).
struct Expect {
  uint32_t retval = TC_ACT_OK;
  uint32_t mark = 0;
  const char* backend = nullptr;  // null: the frame comes out as it went in
  const uint8_t* mac = nullptr;
  uint16_t snat_port = 0;  // the source port it must get (0: any of the SNAT range)
};

// A case of one round: its program, the skb's device, its frames (one, or
// one per frame index), what every run must give, and what the runs gave.
struct Case {
  const char* name;
  int prog_fd;
  RunCtx ctx;
  std::vector<Frame> frames;
  Expect expect;
  std::vector<uint16_t> snat_ports;  // translated cases: the source port of each run's frame
  std::vector<uint32_t> ns;
};

// Fails unless a run gave what e says; a translated frame's source port
// goes to *snat_port.
Status check_run(const std::string& what, const Expect& e, const RunResult& r, const Frame& in, const Frame& out,
                 const SnatRange& snat, uint16_t* snat_port) {
  if (r.retval != e.retval || r.mark != e.mark)
    return system_error(what + ": verdict " + std::to_string(r.retval) + ", mark " + std::to_string(r.mark) +
                        "; expected " + std::to_string(e.retval) + ", mark " + std::to_string(e.mark));
  if (!e.backend) {
    if (out != in) return system_error(what + ": the frame was changed");
    return {};
  }
  auto p = packet::parse_frame(out);
  const bool port_ok = p && (e.snat_port ? p->sport == e.snat_port : p->sport >= snat.min && p->sport <= snat.max);
  if (!p || p->daddr_be != be(e.backend) || p->dport != kBackendPort || p->saddr_be != be(kNode) || !port_ok ||
      !p->ip_csum_ok || !p->l4_csum_ok || out.size() < 6 || std::memcmp(out.data(), e.mac, 6) != 0)
    return system_error(what + ": kpx_from_uplink did not translate the frame to " + e.backend + ":" +
                        std::to_string(kBackendPort) + " from " + kNode + " (SNAT port " +
                        (e.snat_port ? std::to_string(e.snat_port)
                                     : std::to_string(snat.min) + "-" + std::to_string(snat.max)) +
                        ") towards the next hop's MAC");
  if (snat_port) *snat_port = p->sport;
  return {};
}

}  // namespace

// The established flows: opened by their SYN, the local one's REPLY entry
// bound to the pod's veth as the kernel's delivery binds it (kpx_to_pod on
// the marked frame), then one ACK each, every run checked. Returns the
// source port each flow was given.
Result<std::pair<uint16_t, uint16_t>> UplinkBench::open_established(std::vector<kpx_ct_key_v4>& made) {
  bpf::PinnedMaps& m = *maps_;
  const RunCtx on_uplink{up_if_, 0};
  const uint32_t client = be(kClient), node = be(kNode);
  uint16_t ports[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    const bool local = i == 1;
    const uint16_t port = local ? kLocalNodePort : kRemoteNodePort, sport = local ? kLocalSport : kRemoteSport;
    const std::string what = local ? "established_local" : "established_remote";
    Expect e{kRedirect, local ? KPX_MARK_BIND : 0u, local ? kLocalBe : kRemoteBe, local ? kLocalBeMac : kNode2Mac};
    Frame out;
    const Frame syn = tcp_frame(client, node, sport, port, kSyn);
    made.push_back(ct_key(client, node, sport, port, KPX_CT_FORWARD, up_if_));
    auto r = test_run(uplink_->from_uplink_fd(), syn, 1, &out, on_uplink);
    if (!r) return r.error();
    KPX_TRY(check_run(what + " (its SYN)", e, *r, syn, out, snat_, &ports[i]));
    auto fv = m.conntrack.lookup(made.back());
    if (!fv || fv->nat_addr != be(e.backend) || ntohs(fv->snat_port) != ports[i])
      return system_error(what + ": conntrack does not hold the flow as its SYN was translated");
    if (local) {
      auto bind = test_run(lxc_->to_pod_fd(), out, 1, nullptr, RunCtx{veth_, KPX_MARK_BIND});
      if (!bind) return bind.error();
      fv = m.conntrack.lookup(made.back());
      if (!fv || fv->out_ifindex != veth_) return system_error(what + ": the flow was not bound to veth1");
    }
    e.mark = 0;  // bound (or never to be): the ACKs go unmarked
    e.snat_port = ports[i];
    const Frame ack = tcp_frame(client, node, sport, port, kAck);
    r = test_run(uplink_->from_uplink_fd(), ack, 1, &out, on_uplink);
    if (!r) return r.error();
    KPX_TRY(check_run(what + " (its first ACK)", e, *r, ack, out, snat_, nullptr));
  }
  return std::pair{ports[0], ports[1]};
}

Status UplinkBench::measure(uint32_t n, UplinkResults& res) {
  KPX_TRY(set_services(n));
  const uint32_t pf = std::min(n, ct_room_);
  KPX_TRY(set_prefill(pf));
  res.prefill_flows[n] = pf;
  res.frames = frames_;
  bpf::PinnedMaps& m = *maps_;
  // The prefill claimed in the output is really there, and nothing else is.
  if (const size_t have = m.conntrack.keys().size(); have != 2 * static_cast<size_t>(pf))
    return system_error("uplink: conntrack holds " + std::to_string(have) + " entries, expected " +
                        std::to_string(2 * pf));
  KPX_TRY(check_interrupt());

  auto scope = net::NetnsScope::enter(netns_.name());  // the FIB the programs consult
  if (!scope) return scope.error();
  Counters& ctrs = *ctrs_;
  const int from_uplink = uplink_->from_uplink_fd();
  const int empty = bpf_program__fd(empty_->progs.kpx_floor);
  const RunCtx on_uplink{up_if_, 0};
  const uint32_t client = be(kClient), node = be(kNode);
  std::vector<kpx_ct_key_v4> made;  // FORWARD keys of the established cases' flows

  auto ports = open_established(made);
  if (!ports) {
    (void)erase_flows(m, made);
    return ports.error();
  }
  const Frame est_remote = tcp_frame(client, node, kRemoteSport, kRemoteNodePort, kAck);
  const Expect unchanged{};
  const Expect to_remote{kRedirect, 0, kRemoteBe, kNode2Mac}, to_local{kRedirect, KPX_MARK_BIND, kLocalBe, kLocalBeMac};
  std::vector<Case> cases = {
      // As the pod cases' floor_single: the empty program, one run per call, the default skb.
      {"floor", empty, RunCtx{}, {est_remote}, unchanged, {}, {}},
      {"empty_program", empty, on_uplink, {est_remote}, unchanged, {}, {}},
      {"node_pass", from_uplink, on_uplink, {tcp_frame(client, node, kNodePassSport, 22, kAck)}, unchanged, {}, {}},
      {"established_remote", from_uplink, on_uplink, {est_remote},
       Expect{kRedirect, 0, kRemoteBe, kNode2Mac, ports->first}, {}, {}},
      {"established_local", from_uplink, on_uplink, {tcp_frame(client, node, kLocalSport, kLocalNodePort, kAck)},
       Expect{kRedirect, 0, kLocalBe, kLocalBeMac, ports->second}, {}, {}},
      {"new_flow_remote", from_uplink, on_uplink, {}, to_remote, {}, {}},
      {"new_flow_local", from_uplink, on_uplink, {}, to_local, {}, {}},
  };
  Case* const new_flows[2] = {&cases[5], &cases[6]};
  std::vector<kpx_ct_key_v4> new_keys[2];  // per new-flow case, per frame: the FORWARD key
  for (uint32_t k = 0; k < frames_; ++k) {
    const uint16_t sport = static_cast<uint16_t>(kNewFlowSportBase + k);
    for (int i = 0; i < 2; ++i) {
      const uint16_t port = i == 0 ? kRemoteNodePort : kLocalNodePort;
      new_flows[i]->frames.push_back(tcp_frame(client, node, sport, port, kSyn));
      new_keys[i].push_back(ct_key(client, node, sport, port, KPX_CT_FORWARD, up_if_));
    }
  }

  // The new flows of frames [from, to): each in conntrack as its SYN was
  // translated (the backend, the SNAT port its frame got), then removed,
  // also after a failure. Every kNewFlowBatch frames, so that neither
  // conntrack nor a backend's SNAT ports fill up: the SNAT range (4,536
  // ports by default) is each backend's, and a SYN finding the
  // KPX_PORT_TRIES ports it may try taken is dropped (CT_ERR_CLASH), as
  // it would be on a node with that many flows to one backend.
  size_t entries = 0;
  auto settle = [&](uint32_t from, uint32_t to) {
    Status s;
    std::vector<kpx_ct_key_v4> keys;
    for (int i = 0; i < 2; ++i) {
      const Case& c = *new_flows[i];
      for (uint32_t k = from; k < to; ++k) {
        keys.push_back(new_keys[i][k]);
        if (!s || k >= c.snat_ports.size()) continue;  // a failure ended the round before this frame
        auto fv = m.conntrack.lookup(new_keys[i][k]);
        if (!fv || fv->nat_addr != be(c.expect.backend) || ntohs(fv->snat_port) != c.snat_ports[k])
          s = system_error(std::string(c.name) + ", frame " + std::to_string(k) +
                           ": conntrack does not hold the flow as its SYN was translated");
      }
    }
    entries += erase_flows(m, keys);
    return s;
  };

  Status st;
  std::map<kpx_counter, uint64_t> before;
  for (kpx_counter c : {KPX_CTR_PASS, KPX_CTR_DNAT_ESTABLISHED, KPX_CTR_DNAT_NEW}) {
    auto v = ctrs.get(c);
    if (!v) st = v.error();
    else before[c] = *v;
  }
  // Frame by frame, every case once, the order rotating; every run's
  // output checked (after the timed run: the check costs the figure nothing).
  Frame out;
  uint32_t settled = 0;  // new flows [0, settled) checked and removed
  for (uint32_t k = 0; k < frames_ && st; ++k) {
    for (size_t step = 0; step < cases.size() && st; ++step) {
      Case& c = cases[(step + k) % cases.size()];
      const Frame& in = c.frames.size() == 1 ? c.frames[0] : c.frames[k];
      auto r = test_run(c.prog_fd, in, 1, &out, c.ctx);
      uint16_t sport = 0;
      if (!r) st = r.error();
      else st = check_run(std::string(c.name) + ", frame " + std::to_string(k), c.expect, *r, in, out, snat_, &sport);
      if (!st) break;
      c.ns.push_back(r->ns);
      if (c.expect.backend) c.snat_ports.push_back(sport);
    }
    if (st && ((k + 1) % kNewFlowBatch == 0 || k + 1 == frames_)) {
      st = settle(settled, k + 1);
      settled = k + 1;
    }
  }
  if (settled < frames_) (void)settle(settled, frames_);  // after a failure: the removal only
  // Each path taken exactly as often as it was sent frames.
  if (st) st = expect_counter_delta(ctrs, KPX_CTR_PASS, before[KPX_CTR_PASS], frames_, "uplink node_pass");
  if (st)
    st = expect_counter_delta(ctrs, KPX_CTR_DNAT_ESTABLISHED, before[KPX_CTR_DNAT_ESTABLISHED], 2ULL * frames_,
                              "uplink established");
  if (st) st = expect_counter_delta(ctrs, KPX_CTR_DNAT_NEW, before[KPX_CTR_DNAT_NEW], 2ULL * frames_, "uplink new");
  entries += erase_flows(m, made);  // also after a failure
  if (!st) return st;
  // Two entries a flow, and established_local's reservation of its REPLY
  // tuple on interface 0 (it is bound; the new local flows are not).
  const size_t expected = 2 * (made.size() + 2 * static_cast<size_t>(frames_)) + 1;
  if (entries != expected)
    return system_error("uplink: " + std::to_string(entries) + " of " + std::to_string(expected) +
                        " conntrack entries of the round's flows were there");
  for (const Case& c : cases) res.cases[c.name][n].push_back(median(c.ns));
  return {};
}

// ---- output -------------------------------------------------------------------

namespace {

struct UplinkSummary {
  std::map<std::string, std::map<uint32_t, double>> ns;  // median over rounds
  double floor(uint32_t n) const { return ns.at("floor").at(n); }
};

UplinkSummary summarize(const UplinkResults& res) {
  UplinkSummary s;
  for (const auto& [c, by_count] : res.cases)
    for (const auto& [n, vals] : by_count) s.ns[c][n] = median(vals);
  return s;
}

}  // namespace

void print_uplink_table(const UplinkResults& res, const std::vector<uint32_t>& counts, std::ostream& out) {
  const UplinkSummary s = summarize(res);
  const size_t rounds = res.cases.at("floor").at(counts.front()).size();
  const int w = 10;
  const size_t label = 21;
  auto cell = [&](const std::string& t) {
    return (t.size() < static_cast<size_t>(w) ? std::string(w - t.size(), ' ') : "") + t;
  };
  auto row_label = [&](const std::string& l) { return l + std::string(label - std::min(label, l.size()), ' '); };
  out << "\nkpx-bench datapath, uplink: kpx_from_uplink, ns per frame under BPF_PROG_TEST_RUN, median of " << rounds
      << " rounds\n";
  out << "  one call per frame (repeat=1), " << res.frames
      << " frames per case, round and Service count, the cases interleaved frame by frame (order rotating);"
         " a round's figure is the median over its frames\n";
  out << "  in a namespace of the bench's own that looks like a lab node: uplink up0 " << kNode << ", node2 10.0.0.12"
      << " routing 10.244.2.0/24, pods on pods0 10.244.1.0/24\n";
  out << "  NodePort " << kRemoteNodePort << "/TCP -> " << kRemoteBe << ":" << kBackendPort
      << " (another node: DNAT, SNAT to the node, FIB redirect out of up0);  NodePort " << kLocalNodePort
      << "/TCP -> " << kLocalBe << ":" << kBackendPort << " (a pod here: DNAT, SNAT, FIB redirect to pods0)\n";
  out << "  floor: the empty tc program (kpx_floor), one run per call on the default skb, as the pod cases'"
         " floor_single: what one timed call costs by itself\n";
  out << "  empty_program: a reference, not kpx: the same empty program on the uplink's skb (ifindex up0), as the"
         " kpx cases run\n";
  out << "  node_pass: kpx_from_uplink on a frame to the node's address, port 22 (no Service): its pass path\n";
  out << "  established_*: a NodePort flow's ACK (cache hit, translate, route); new_flow_*: " << res.frames
      << " distinct SYNs (backend pick, SNAT port, two conntrack entries, route), removed after each round\n";
  out << "  every run checked: verdict and mark, the frame translated (backend address and port, node source and"
         " SNAT port, checksums, next hop's MAC) or unchanged, new flows in conntrack as translated, counters\n";
  out << "  conntrack prefill: one established flow (FORWARD+REPLY) per Service:";
  for (uint32_t n : counts) out << " " << n << "->" << 2 * res.prefill_flows.at(n);
  out << " entries\n\n";

  auto block = [&](const char* title, auto value, int prec, bool with_floor) {
    out << std::string(label, ' ') << "Services\n" << row_label(title);
    for (uint32_t n : counts) out << cell(std::to_string(n));
    out << "\n";
    for (const char* c : kUplinkCases) {
      if (!with_floor && std::strcmp(c, "floor") == 0) continue;
      out << row_label(c);
      for (uint32_t n : counts) out << cell(fmt(value(c, n), prec));
      out << "\n";
    }
    out << "\n";
  };
  block("ns/frame", [&](const char* c, uint32_t n) { return s.ns.at(c).at(n); }, 1, true);
  block("above floor", [&](const char* c, uint32_t n) { return s.ns.at(c).at(n) - s.floor(n); }, 1, false);
  block("x floor", [&](const char* c, uint32_t n) { return s.ns.at(c).at(n) / s.floor(n); }, 2, false);
}

nlohmann::json uplink_json(const UplinkResults& res, const std::vector<uint32_t>& counts) {
  using nlohmann::json;
  const UplinkSummary s = summarize(res);
  json j;
  json floor = json::object();
  for (uint32_t n : counts) floor[std::to_string(n)] = s.floor(n);
  j["floor_ns"] = floor;
  json cases = json::object();
  for (const char* c : kUplinkCases) {
    json by = json::object();
    for (uint32_t n : counts) {
      const auto& vals = res.cases.at(c).at(n);
      by[std::to_string(n)] = {
          {"ns", s.ns.at(c).at(n)},
          {"above_floor_ns", s.ns.at(c).at(n) - s.floor(n)},
          {"ratio_to_floor", s.ns.at(c).at(n) / s.floor(n)},
          {"min_ns", *std::min_element(vals.begin(), vals.end())},
          {"samples", vals},
      };
    }
    cases[c] = by;
  }
  j["cases"] = cases;
  j["frames"] = res.frames;
  json pre = json::object();
  for (uint32_t n : counts)
    pre[std::to_string(n)] = {{"flows", res.prefill_flows.at(n)}, {"entries", 2 * res.prefill_flows.at(n)}};
  j["conntrack_prefill"] = pre;
  j["method"] = {
      {"all", "kpx_from_uplink in a node-like namespace of the bench's own, BPF_PROG_TEST_RUN repeat=1 per frame "
              "(ctx ifindex: the uplink), frames per case per round, the cases interleaved frame by frame; "
              "per round the median over the frames; every run's verdict, mark and output frame checked"},
      {"floor", "kpx_floor (empty tc program), repeat=1 on the default skb, as the pod cases' floor_single: the cost "
                "of one timed call; above_floor_ns and ratio_to_floor are against it"},
      {"empty_program", "reference, not kpx: kpx_floor on the uplink's skb (ctx ifindex up0), as the kpx cases run"},
      {"node_pass", "kpx_from_uplink, a frame to the node's address, port 22: conntrack and frontend lookups miss, "
                    "it passes"},
      {"established_remote", "ACK of a NodePort flow to a backend on another node: cache hit, DNAT+SNAT, FIB redirect"},
      {"established_local", "ACK of a NodePort flow to a local pod, REPLY entry bound: cache hit, DNAT+SNAT, FIB "
                            "redirect"},
      {"new_flow_remote", "distinct SYNs to a NodePort with a backend on another node: pick, SNAT port, 2 entries, "
                          "FIB redirect"},
      {"new_flow_local", "distinct SYNs to a NodePort with a local backend: as remote, the frame marked for the "
                         "REPLY entry's binding"},
  };
  return j;
}

}  // namespace kpx::bench
