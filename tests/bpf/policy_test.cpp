// What a new flow to a frontend without a usable endpoint gets, as kube-proxy
// decides it (pkg/proxy/iptables: a Service without endpoints is REJECTed,
// one under traffic policy Local without an endpoint on this node is
// DROPped), from a pod and from outside, run with BPF_PROG_TEST_RUN in the
// Uplink fixture's lab-node namespace: the ICMP port unreachable kpx writes
// is parsed and its checksums recomputed here, independently of the kernel.
#include "uplink_fixture.h"

namespace kpx::bpftest {
namespace {

constexpr uint8_t kIcmpDestUnreach = 3, kIcmpPortUnreach = 3;
constexpr uint64_t kSecond = 1000000000ULL;

class Policy : public Uplink {
 protected:
  // A frontend of scope `scope` at addr:port with the flags compute() gives
  // every frontend (kube-proxy rejects when it has no endpoints) and these
  // cluster and local sets.
  // Returns its svc_id.
  uint32_t set_frontend(dataplane::Scope scope, const char* addr, uint16_t port, Proto proto,
                        const std::vector<const char*>& cluster, const std::vector<const char*>& local = {},
                        uint32_t extra_flags = 0, uint32_t affinity_timeout_s = 0) {
    auto dp = dataplane::Dataplane::recover(*maps);
    EXPECT_TRUE(dp.ok()) << dp.error().message;
    if (!dp.ok()) return 0;
    std::vector<net::BackendAddr> bs;
    for (const char* b : cluster) bs.push_back({ipv4(b), 8080});
    dataplane::Frontend fe = dataplane::frontend_of(bs, "default/web");
    fe.flags |= dataplane::kRejectEmpty | extra_flags;
    for (const char* b : local) fe.local.push_back(dataplane::backend({ipv4(b), 8080}));
    fe.affinity_timeout_s = affinity_timeout_s;
    const dataplane::FrontendKey key{net::IpAddr::from_v4(ipv4(addr)), port, proto, scope};
    auto st = dp->upsert(key, fe);
    EXPECT_TRUE(st.ok()) << st.error().message;
    auto v = maps->services.lookup(dataplane::service_key(key));
    return v ? v->svc_id : 0;
  }

  // `r` is `in` refused: an ICMP port unreachable from the address `in` was
  // sent to, back to its sender (MACs swapped), quoting its IP header and
  // the first 8 bytes after it, both checksums right, sent back out of the
  // interface it came in on.
  static void expect_port_unreachable(const HookRun& r, const Frame& in) {
    ASSERT_EQ(r.err, 0);
    ASSERT_EQ(r.retval, kRedirect);
    auto e = packet::parse_icmp_error(r.out);
    ASSERT_TRUE(e.has_value()) << "not an ICMP error: " << r.out.size() << " bytes";
    EXPECT_EQ(e->type, kIcmpDestUnreach);
    EXPECT_EQ(e->code, kIcmpPortUnreach);
    EXPECT_TRUE(e->ip_csum_ok);
    EXPECT_TRUE(e->icmp_csum_ok);
    auto orig = packet::parse_frame(in);
    ASSERT_TRUE(orig.has_value());
    EXPECT_EQ(addr_str(e->saddr_be), addr_str(orig->daddr_be)) << "from the address the client asked for";
    EXPECT_EQ(addr_str(e->daddr_be), addr_str(orig->saddr_be));
    EXPECT_EQ(std::memcmp(e->dst_mac, in.data() + 6, 6), 0) << "to the sender's MAC";
    EXPECT_EQ(std::memcmp(e->src_mac, in.data(), 6), 0);
    const size_t ihl = (in[kEthLen] & 0xf) * 4u;
    const Frame quoted(in.begin() + kEthLen, in.begin() + static_cast<long>(kEthLen + ihl + 8));
    EXPECT_EQ(e->quoted, quoted) << "the offending header and its ports, as sent";
  }
};

TEST_F(Policy, AClusterIpWithoutEndpointsAnswersAPodsTcpAndUdpWithPortUnreachable) {
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, {});
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 53, Proto::kUdp, {});
  packet::FrameSpec with_options = spec(IPPROTO_TCP, kPodClient, 40002, kClusterIp, 80, kSyn);
  with_options.ip_options_len = 12;  // the quoted header is the whole of it
  const std::vector<Frame> frames = {tcp(kPodClient, 40000, kClusterIp, 80, kSyn),
                                     udp(kPodClient, 40001, kClusterIp, 53), packet::build_frame(with_options)};
  for (const Frame& f : frames) expect_port_unreachable(pod_in(f, veth_), f);
  EXPECT_EQ(counter(KPX_CTR_REJECT), frames.size());
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_BACKEND), 0u);
  EXPECT_EQ(ct_size(), 0u) << "a refused flow leaves no state";

  // Endpoints appear: the next SYN is translated, at once.
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, {kLocalBe});
  auto r = pod_in(frames[0], veth_);
  ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(addr_str(parsed(r).daddr_be), kLocalBe);
}

TEST_F(Policy, ANodePortWithoutEndpointsIsRefusedBackOutOfTheUplink) {
  set_frontend(dataplane::Scope::kNodePort, "0.0.0.0", kNodePort, Proto::kTcp, {});
  set_frontend(dataplane::Scope::kNodePort, "0.0.0.0", kNodePort, Proto::kUdp, {});
  for (const Frame& f : {tcp(kClient, 41000, kNode, kNodePort, kSyn), udp(kClient, 41001, kNode, kNodePort)})
    expect_port_unreachable(from_uplink(f), f);
  EXPECT_EQ(counter(KPX_CTR_REJECT), 2u);
  EXPECT_EQ(ct_size(), 0u);
}

// kube-proxy rejects only a Service without endpoints anywhere: under
// policy Local with endpoints on other nodes it drops (a client must not
// learn "refused" from a node the load balancer should not have chosen).
TEST_F(Policy, TrafficPolicyLocalWithoutALocalEndpointDropsAndIsCounted) {
  set_frontend(dataplane::Scope::kNodePort, "0.0.0.0", kNodePort, Proto::kUdp, {kRemoteBe}, {},
               dataplane::kLocalOnly);
  auto r = from_uplink(udp(kClient, 5000, kNode, kNodePort));
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_LOCAL), 1u);
  EXPECT_EQ(counter(KPX_CTR_REJECT), 0u);
  EXPECT_EQ(ct_size(), 0u);
  // Pods are not held to the external policy (kube-proxy's short circuit).
  auto p = pod_in(udp(kPodClient, 5001, kNode, kNodePort), veth_);
  ASSERT_EQ(p.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(addr_str(parsed(p).daddr_be), kRemoteBe);
}

TEST_F(Policy, InternalTrafficPolicyLocalSendsPodsToLocalEndpointsOnlyAndDropsWithoutOne) {
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, {kLocalBe, kRemoteBe}, {kLocalBe},
               dataplane::kLocalOnly);
  for (uint16_t c = 0; c < 32; ++c) {
    auto r = pod_in(tcp(kPodClient, static_cast<uint16_t>(42000 + c), kClusterIp, 80, kSyn), veth_);
    ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(addr_str(parsed(r).daddr_be), kLocalBe) << "only the endpoint on this node";
  }
  // The local endpoint leaves; the remote one stays: drop, not reject.
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, {kRemoteBe}, {}, dataplane::kLocalOnly);
  auto d = pod_in(tcp(kPodClient, 42100, kClusterIp, 80, kSyn), veth_);
  EXPECT_EQ(d.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_LOCAL), 1u);
  EXPECT_EQ(counter(KPX_CTR_REJECT), 0u);
  // None anywhere: rejected.
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, {}, {}, dataplane::kLocalOnly);
  const Frame syn = tcp(kPodClient, 42101, kClusterIp, 80, kSyn);
  expect_port_unreachable(pod_in(syn, veth_), syn);
}

// Every error spends the new-flow budget of the interface the frame came
// in on: a pod flooding an empty Service exhausts its own budget (its
// frames are then dropped, counted), and a neighbour pod and a client
// outside are still answered.
TEST_F(Policy, AFloodToAnEmptyServiceSpendsOnlyTheSendersBudget) {
  kpx_config c = maps->read_config();
  c.ct_new_per_sec = 1;
  c.ct_new_burst = 8;
  set_config(c);
  set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 53, Proto::kUdp, {});
  set_frontend(dataplane::Scope::kNodePort, "0.0.0.0", kNodePort, Proto::kUdp, {});
  uint64_t refused = 0;
  for (uint16_t i = 0; i < 64; ++i)
    if (pod_in(udp(kPodClient, static_cast<uint16_t>(20000 + i), kClusterIp, 53), veth_).retval == kRedirect)
      ++refused;
  EXPECT_GE(refused, 1u);
  EXPECT_LE(refused, 9u) << "at most the burst (and a token refilled meanwhile)";
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_BUDGET), 64 - refused);
  const Frame neighbour = udp(kLocalBe2, 20100, kClusterIp, 53);
  expect_port_unreachable(pod_in(neighbour, other_veth_), neighbour);
  const Frame outside = udp(kClient, 20101, kNode, kNodePort);
  expect_port_unreachable(from_uplink(outside), outside);
}

// ---- sessionAffinity ClientIP ------------------------------------------------------

constexpr const char* kBe[] = {"10.244.2.10", "10.244.2.11", "10.244.2.12", "10.244.2.13"};

class Affinity : public Policy {
 protected:
  uint32_t sticky_service(const std::vector<const char*>& backends, uint32_t timeout_s = 100) {
    return set_frontend(dataplane::Scope::kClusterIP, kClusterIp, 80, Proto::kTcp, backends, {},
                        dataplane::kAffinity, timeout_s);
  }
  // The backend a new connection from `client` (on `ifindex`) goes to.
  std::string connect_from(const char* client, uint32_t ifindex) {
    auto r = pod_in(tcp(client, next_port_++, kClusterIp, 80, kSyn), ifindex);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    return r.retval == TC_ACT_OK ? addr_str(parsed(r).daddr_be) : "";
  }
  std::optional<kpx_affinity_value> entry(uint32_t svc_id, const char* client, uint32_t ifindex) {
    return maps->affinity.lookup(kpx_affinity_key_v4{svc_id, ifindex, ipv4(client), 0});
  }
  uint32_t backend_id_of(const char* addr) {
    for (uint32_t id = 1; id < 64; ++id)
      if (auto b = maps->backends.lookup(id); b && b->addr == ipv4(addr)) return id;
    return 0;
  }
  uint16_t next_port_ = 30000;
};

TEST_F(Affinity, AClientsNewConnectionsStayOnOneBackendWhileItIsInTheSet) {
  const uint32_t svc_id = sticky_service({kBe[0], kBe[1], kBe[2], kBe[3]});
  ASSERT_NE(svc_id, 0u);
  const std::string first = connect_from(kPodClient, veth_);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(connect_from(kPodClient, veth_), first);
  auto e = entry(svc_id, kPodClient, veth_);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->backend_id, backend_id_of(first.c_str()));

  // Others join the set (its order changes): the client stays.
  sticky_service({"10.244.2.2", kBe[0], kBe[1], kBe[2], kBe[3], "10.244.2.20"});
  for (int i = 0; i < 8; ++i) EXPECT_EQ(connect_from(kPodClient, veth_), first);

  // Its backend leaves: the next connection goes elsewhere and sticks there.
  std::vector<const char*> rest;
  for (const char* b : kBe)
    if (first != b) rest.push_back(b);
  sticky_service(rest);
  const std::string second = connect_from(kPodClient, veth_);
  EXPECT_NE(second, first);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(connect_from(kPodClient, veth_), second);
}

// The entry is the client's (address and interface): a neighbour pod
// sending with the client's address makes and refreshes its own, and
// other clients are spread as without affinity.
TEST_F(Affinity, ANeighbourSpoofingTheClientsAddressCannotMoveOrRefreshIt) {
  const uint32_t svc_id = sticky_service({kBe[0], kBe[1], kBe[2], kBe[3]});
  const std::string mine = connect_from(kPodClient, veth_);
  const auto before = entry(svc_id, kPodClient, veth_);
  ASSERT_TRUE(before.has_value());
  for (int i = 0; i < 16; ++i) connect_from(kPodClient, other_veth_);
  const auto after = entry(svc_id, kPodClient, veth_);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->backend_id, before->backend_id);
  EXPECT_EQ(after->last_used_ns, before->last_used_ns) << "the neighbour's frames never touch the client's entry";
  EXPECT_TRUE(entry(svc_id, kPodClient, other_veth_).has_value()) << "the neighbour has one of its own";
  EXPECT_EQ(connect_from(kPodClient, veth_), mine);
  std::set<std::string> spread;
  for (uint16_t c = 0; c < 64 && spread.size() < 2; ++c) {
    const std::string client = "10.244.1." + std::to_string(100 + c);
    spread.insert(connect_from(client.c_str(), other_veth_));
  }
  EXPECT_EQ(spread.size(), 2u) << "different clients are not all sent to one backend";
}

// Fresh within timeoutSeconds of its last use, then free: an entry past the
// timeout is not followed (a new pick replaces it); one within is, even
// when it names a backend the client never reached (written here by hand).
TEST_F(Affinity, TheTimeoutCountsFromTheLastNewConnection) {
  const uint32_t svc_id = sticky_service({kBe[0], kBe[1], kBe[2], kBe[3]}, 30);
  connect_from(kPodClient, veth_);
  const kpx_affinity_key_v4 key{svc_id, veth_, ipv4(kPodClient), 0};
  const uint64_t now = dataplane::monotonic_coarse_ns();
  ASSERT_TRUE(maps->affinity.update(key, kpx_affinity_value{backend_id_of(kBe[3]), 0, now - 29 * kSecond}).ok());
  EXPECT_EQ(connect_from(kPodClient, veth_), kBe[3]) << "29 s after its last use: followed (by a scan)";
  auto e = entry(svc_id, kPodClient, veth_);
  ASSERT_TRUE(e.has_value());
  EXPECT_GE(e->last_used_ns, now) << "and refreshed";
  EXPECT_EQ(e->slot_hint, 3u);

  ASSERT_TRUE(maps->affinity.update(key, kpx_affinity_value{backend_id_of(kBe[3]), 3, now - 31 * kSecond}).ok());
  const std::string picked = connect_from(kPodClient, veth_);
  e = entry(svc_id, kPodClient, veth_);
  ASSERT_TRUE(e.has_value());
  EXPECT_GE(e->last_used_ns, now) << "31 s: a new pick, remembered afresh";
  EXPECT_EQ(e->backend_id, backend_id_of(picked.c_str()));
}

// The entries are pinned: an agent that restarts (here: the programs loaded
// again over the same pins) keeps every client on its backend; and clients
// from outside are remembered as well, on the uplink.
TEST_F(Affinity, SurvivesReloadingTheProgramsAndHoldsForNodePortClients) {
  sticky_service({kBe[0], kBe[1], kBe[2], kBe[3]});
  const std::string mine = connect_from(kPodClient, veth_);
  obj.reset();
  std::string err;
  ASSERT_TRUE(load(&err)) << err;
  for (int i = 0; i < 8; ++i) EXPECT_EQ(connect_from(kPodClient, veth_), mine);

  set_frontend(dataplane::Scope::kNodePort, "0.0.0.0", kNodePort, Proto::kTcp, {kBe[0], kBe[1], kBe[2], kBe[3]},
               {}, dataplane::kAffinity);
  std::set<std::string> seen;
  for (uint16_t c = 0; c < 16; ++c) {
    auto r = from_uplink(tcp(kClient, static_cast<uint16_t>(47000 + c), kNode, kNodePort, kSyn));
    ASSERT_EQ(r.retval, kRedirect);
    seen.insert(addr_str(parsed(r).daddr_be));
  }
  EXPECT_EQ(seen.size(), 1u) << "one outside client, one backend";
}

}  // namespace
}  // namespace kpx::bpftest
