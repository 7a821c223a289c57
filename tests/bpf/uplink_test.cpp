// The uplink datapath (bpf/kpx_uplink.bpf.c) and its pod-side halves in
// kpx_lxc, in the Uplink fixture's lab-node namespace (uplink_fixture.h).
#include "uplink_fixture.h"

namespace kpx::bpftest {
namespace {

TEST_F(Uplink, NodePortToABackendOnAnotherNodeIsSourceNatedAndItsReplyTranslatedBack) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  const Frame syn = tcp(kClient, 40000, kNode, kNodePort, kSyn);
  auto r = from_uplink(syn);
  ASSERT_EQ(r.err, 0);
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.daddr_be), kRemoteBe);
  EXPECT_EQ(p.dport, 8080);
  EXPECT_EQ(addr_str(p.saddr_be), kNode) << "externalTrafficPolicy Cluster: masqueraded to the node";
  EXPECT_GE(p.sport, KPX_DEFAULT_SNAT_PORT_MIN);
  EXPECT_TRUE(macs_are(r.out, kNode2Mac)) << "routed via the other node";
  // Every byte but addresses, ports, checksums and MACs as sent.
  auto want_spec = spec(IPPROTO_TCP, kNode, p.sport, kRemoteBe, 8080, kSyn);
  Frame want = expected_translation(want_spec, r.out);
  std::memcpy(want.data(), r.out.data(), 12);
  EXPECT_EQ(r.out, want);

  const auto fk = key(kClient, 40000, kNode, kNodePort, IPPROTO_TCP, KPX_CT_FORWARD, up_if_);
  auto fv = maps->conntrack.lookup(fk);
  ASSERT_TRUE(fv.has_value());
  EXPECT_TRUE(fv->flags & KPX_CT_F_UPLINK);
  EXPECT_EQ(fv->out_ifindex, up_if_) << "the backend's replies come back on the uplink";
  EXPECT_EQ(fv->nat_kind, KPX_NAT_DNAT_SNAT);
  const auto rk = key(kRemoteBe, 8080, kNode, p.sport, IPPROTO_TCP, KPX_CT_REPLY, up_if_);
  ASSERT_TRUE(maps->conntrack.lookup(rk).has_value());
  EXPECT_EQ(dataplane::reply_key_of(fk, *fv).ifindex, up_if_);

  // The reply from the other node: back to the client from the NodePort.
  auto rr = from_uplink(tcp(kRemoteBe, 8080, kNode, p.sport, kSynAck));
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kNode);
  EXPECT_EQ(rp.sport, kNodePort);
  EXPECT_EQ(addr_str(rp.daddr_be), kClient);
  EXPECT_EQ(rp.dport, 40000);
  EXPECT_TRUE(macs_are(rr.out, kClientMac));

  // The established flow keeps its backend and its port.
  auto a = from_uplink(tcp(kClient, 40000, kNode, kNodePort, kAck));
  ASSERT_EQ(a.retval, kRedirect);
  EXPECT_EQ(parsed(a).sport, p.sport);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 1u);
  EXPECT_EQ(counter(KPX_CTR_REVNAT), 1u);
}

TEST_F(Uplink, NodePortOverUdpRoundTrips) {
  set_nodeport(Proto::kUdp, {kRemoteBe});
  auto r = from_uplink(udp(kClient, 5353, kNode, kNodePort));
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.daddr_be), kRemoteBe);
  EXPECT_EQ(addr_str(p.saddr_be), kNode);
  auto rr = from_uplink(udp(kRemoteBe, 8080, kNode, p.sport));
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kNode);
  EXPECT_EQ(rp.sport, kNodePort);
  EXPECT_EQ(addr_str(rp.daddr_be), kClient);
  EXPECT_EQ(rp.dport, 5353);
  // A datagram without a checksum stays without one.
  auto z = from_uplink(udp(kClient, 5354, kNode, kNodePort, /*zero_csum=*/true));
  ASSERT_EQ(z.retval, kRedirect);
  EXPECT_EQ(parsed(z).l4_csum, 0);
}

TEST_F(Uplink, ALocalBackendsReplyEntryIsBoundToTheVethTheKernelDeliversTo) {
  set_nodeport(Proto::kTcp, {kLocalBe});
  auto r = from_uplink(tcp(kClient, 41000, kNode, kNodePort, kSyn));
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.daddr_be), kLocalBe);
  EXPECT_EQ(addr_str(p.saddr_be), kNode);
  EXPECT_TRUE(macs_are(r.out, kLocalBeMac));
  EXPECT_EQ(r.mark, KPX_MARK_BIND) << "marked until the veth is known";
  const auto fk = key(kClient, 41000, kNode, kNodePort, IPPROTO_TCP, KPX_CT_FORWARD, up_if_);
  ASSERT_EQ(maps->conntrack.lookup(fk)->out_ifindex, 0u);
  const auto waiting = key(kLocalBe, 8080, kNode, p.sport, IPPROTO_TCP, KPX_CT_REPLY, 0);
  ASSERT_TRUE(maps->conntrack.lookup(waiting).has_value());

  // Before the binding the backend's reply is no one's: on any veth.
  const Frame reply = tcp(kLocalBe, 8080, kNode, p.sport, kSynAck);
  auto early = pod_in(reply, veth_);
  EXPECT_EQ(early.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(early.out, reply);

  // An unmarked frame binds nothing; the marked one, delivered on veth1, does.
  auto plain = pod_out(r.out, other_veth_);
  EXPECT_EQ(plain.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(maps->conntrack.lookup(fk)->out_ifindex, 0u);
  auto delivered = pod_out(r.out, veth_, KPX_MARK_BIND);
  EXPECT_EQ(delivered.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(delivered.mark, 0u) << "the mark ends where it is consumed";
  EXPECT_EQ(delivered.out, r.out) << "delivered unchanged";
  EXPECT_EQ(maps->conntrack.lookup(fk)->out_ifindex, veth_);
  EXPECT_EQ(counter(KPX_CTR_CT_BOUND), 1u);
  ASSERT_TRUE(maps->conntrack.lookup(key(kLocalBe, 8080, kNode, p.sport, IPPROTO_TCP, KPX_CT_REPLY, veth_)));

  // A neighbour claiming the backend's tuple matches nothing and changes nothing.
  auto before = maps->conntrack.lookup(fk);
  auto spoof = pod_in(tcp(kLocalBe, 8080, kNode, p.sport, 0x04 /* RST */), other_veth_);
  EXPECT_EQ(spoof.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto after = maps->conntrack.lookup(fk);
  ASSERT_TRUE(before && after);
  EXPECT_EQ(std::memcmp(&*before, &*after, sizeof(*before)), 0);

  // The backend's own reply, on its veth: to the client, from the NodePort.
  auto rr = pod_in(reply, veth_);
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kNode);
  EXPECT_EQ(rp.sport, kNodePort);
  EXPECT_EQ(addr_str(rp.daddr_be), kClient);
  EXPECT_EQ(rp.dport, 41000);
  EXPECT_TRUE(macs_are(rr.out, kClientMac));

  // Bound: later frames of the flow are no longer marked.
  auto a = from_uplink(tcp(kClient, 41000, kNode, kNodePort, kAck));
  ASSERT_EQ(a.retval, kRedirect);
  EXPECT_EQ(a.mark, 0u);
}

TEST_F(Uplink, TrafficPolicyLocalKeepsTheClientsAddressAndUsesOnlyLocalEndpoints) {
  set_nodeport_local(Proto::kTcp, {kLocalBe, kRemoteBe}, {kLocalBe});
  for (uint16_t c = 0; c < 8; ++c) {
    const uint16_t sport = static_cast<uint16_t>(44000 + c);
    auto r = from_uplink(tcp(kClient, sport, kNode, kNodePort, kSyn));
    ASSERT_EQ(r.retval, kRedirect);
    auto p = parsed(r);
    EXPECT_EQ(addr_str(p.daddr_be), kLocalBe) << "only the local endpoint";
    EXPECT_EQ(addr_str(p.saddr_be), kClient) << "the backend sees the client";
    EXPECT_EQ(p.sport, sport);
    EXPECT_EQ(r.mark, KPX_MARK_BIND);
    ASSERT_EQ(pod_out(r.out, veth_, r.mark).retval, static_cast<uint32_t>(TC_ACT_OK));
    // Its reply, addressed to the client, is translated on the backend's veth.
    const Frame reply = tcp(kLocalBe, 8080, kClient, sport, kSynAck);
    auto rr = pod_in(reply, veth_);
    ASSERT_EQ(rr.retval, kRedirect);
    auto rp = parsed(rr);
    EXPECT_EQ(addr_str(rp.saddr_be), kNode);
    EXPECT_EQ(rp.sport, kNodePort);
    EXPECT_EQ(addr_str(rp.daddr_be), kClient);
    EXPECT_EQ(rp.dport, sport);
    EXPECT_TRUE(macs_are(rr.out, kClientMac));
    // The same frame from another pod's veth is nobody's reply.
    auto other = pod_in(reply, other_veth_);
    EXPECT_EQ(other.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(other.out, reply);
  }
  // In-cluster clients are not held to the policy (kube-proxy's short
  // circuit): a pod's flows go to any endpoint.
  std::set<std::string> seen;
  for (uint16_t c = 0; c < 64 && seen.size() < 2; ++c) {
    auto r = pod_in(tcp(kPodClient, static_cast<uint16_t>(45000 + c), kNode, kNodePort, kSyn), other_veth_);
    ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    seen.insert(addr_str(parsed(r).daddr_be));
  }
  EXPECT_EQ(seen, (std::set<std::string>{kLocalBe, kRemoteBe}));
}

TEST_F(Uplink, FlowsToOneBackendGetDistinctSourcePortsFromTheSnatRange) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  std::set<uint16_t> ports;
  for (uint16_t c = 0; c < 64; ++c) {
    auto r = from_uplink(tcp(kClient, static_cast<uint16_t>(42000 + c), kNode, kNodePort, kSyn));
    ASSERT_EQ(r.retval, kRedirect);
    auto p = parsed(r);
    EXPECT_GE(p.sport, KPX_DEFAULT_SNAT_PORT_MIN);
    ports.insert(p.sport);
  }
  EXPECT_EQ(ports.size(), 64u);
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_CLASH), 0u);

  // A narrower range, from the config: the ports follow it.
  kpx_config c = maps->read_config();
  c.snat_port_min = 50000;
  c.snat_port_max = 50015;
  set_config(c);
  auto r = from_uplink(tcp(kClient, 43000, kNode, kNodePort, kSyn));
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_GE(p.sport, 50000);
  EXPECT_LE(p.sport, 50015);
}

TEST_F(Uplink, TrafficThatIsNoNodePortPassesUntouched) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  for (const Frame& f : {tcp(kClient, 40000, kNode, 22, kSyn),            // the node's own service
                         tcp(kClient, 40000, kNode, 30081, kSyn),         // no such NodePort
                         udp(kClient, 40000, kNode, kNodePort),           // other protocol
                         tcp(kClient, 40000, kRemoteBe, kNodePort, kSyn), // not a node address
                         tcp(kClient, 40000, kNode, 61000, kAck)}) {      // a port of the SNAT range, no flow
    auto r = from_uplink(f);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(r.out, f);
  }
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Uplink, NodePortAddressesLimitTheAddressesNodePortsAreServedOn) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    auto st = dp->set_node_addresses({ipv4(kNode), ipv4(kPodGw)}, 0, std::vector<uint32_t>{ipv4(kPodGw)});
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  const Frame on_node = tcp(kClient, 40000, kNode, kNodePort, kSyn);
  auto r = from_uplink(on_node);
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << "not a NodePort address";
  EXPECT_EQ(r.out, on_node);
  auto g = from_uplink(tcp(kClient, 40000, kPodGw, kNodePort, kSyn));
  ASSERT_EQ(g.retval, kRedirect);
  EXPECT_EQ(addr_str(parsed(g).daddr_be), kRemoteBe);
  EXPECT_EQ(addr_str(parsed(g).saddr_be), kNode) << "the source is the node's primary address";
}

TEST_F(Uplink, ExternalAndLoadBalancerIpsAreServedLikeNodePorts) {
  auto dp = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(dp.ok()) << dp.error().message;
  const auto fe = dataplane::frontend_of({{ipv4(kRemoteBe), 8080}}, "default/web");
  const dataplane::FrontendKey ext{net::IpAddr::parse("192.0.2.10"), 80, Proto::kTcp,
                                   dataplane::Scope::kExternalIP};
  const dataplane::FrontendKey lb{net::IpAddr::parse("198.51.100.1"), 443, Proto::kUdp,
                                  dataplane::Scope::kLoadBalancer};
  ASSERT_TRUE(dp->upsert(ext, fe).ok());
  ASSERT_TRUE(dp->upsert(lb, fe).ok());
  struct Case {
    Frame in;
    const char* vip;
    uint16_t port;
  };
  for (const Case& c : {Case{tcp(kClient, 40000, "192.0.2.10", 80, kSyn), "192.0.2.10", 80},
                        Case{udp(kClient, 40001, "198.51.100.1", 443), "198.51.100.1", 443}}) {
    auto r = from_uplink(c.in);
    ASSERT_EQ(r.retval, kRedirect) << c.vip;
    auto p = parsed(r);
    EXPECT_EQ(addr_str(p.daddr_be), kRemoteBe);
    EXPECT_EQ(addr_str(p.saddr_be), kNode);
    const Frame reply = p.proto == IPPROTO_TCP ? tcp(kRemoteBe, 8080, kNode, p.sport, kSynAck)
                                               : udp(kRemoteBe, 8080, kNode, p.sport);
    auto rr = from_uplink(reply);
    ASSERT_EQ(rr.retval, kRedirect);
    auto rp = parsed(rr);
    EXPECT_EQ(addr_str(rp.saddr_be), c.vip) << "replies come from the address the client reached";
    EXPECT_EQ(rp.sport, c.port);
    EXPECT_EQ(addr_str(rp.daddr_be), kClient);
  }
  // The same port on an address that is none of them passes.
  const Frame other = tcp(kClient, 40002, "192.0.2.11", 80, kSyn);
  EXPECT_EQ(from_uplink(other).out, other);
}

TEST_F(Uplink, SourceRangesRefuseOtherClientsBeforeAnyStateAndFollowChanges) {
  auto dp = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(dp.ok()) << dp.error().message;
  const dataplane::FrontendKey lb{net::IpAddr::parse("198.51.100.1"), 80, Proto::kTcp,
                                  dataplane::Scope::kLoadBalancer};
  auto fe = dataplane::frontend_of({{ipv4(kRemoteBe), 8080}}, "default/web");
  fe.flags |= dataplane::kSourceRanges;
  fe.source_ranges = {*net::parse_ipv4_cidr("203.0.113.0/24")};
  ASSERT_TRUE(dp->upsert(lb, fe).ok());
  EXPECT_EQ(maps->source_ranges.keys().size(), 1u);

  auto refused = from_uplink(tcp(kClient, 40000, "198.51.100.1", 80, kSyn));
  EXPECT_EQ(refused.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_SOURCE_RANGE), 1u);
  EXPECT_EQ(ct_size(), 0u) << "refused before any conntrack entry";
  auto allowed = from_uplink(tcp("203.0.113.7", 40000, "198.51.100.1", 80, kSyn));
  EXPECT_EQ(allowed.retval, kRedirect);

  // The client's range added: admitted; the ranges (and the flag) gone: open,
  // and nothing left in the map.
  fe.source_ranges.push_back(*net::parse_ipv4_cidr("10.0.0.0/24"));
  ASSERT_TRUE(dp->upsert(lb, fe).ok());
  EXPECT_EQ(maps->source_ranges.keys().size(), 2u);
  EXPECT_EQ(from_uplink(tcp(kClient, 40001, "198.51.100.1", 80, kSyn)).retval, kRedirect);
  fe.source_ranges = {*net::parse_ipv4_cidr("10.0.0.100/32")};
  ASSERT_TRUE(dp->upsert(lb, fe).ok());
  EXPECT_EQ(maps->source_ranges.keys().size(), 1u);
  EXPECT_EQ(from_uplink(tcp("10.0.0.101", 40002, "198.51.100.1", 80, kSyn)).retval,
            static_cast<uint32_t>(TC_ACT_SHOT));
  // A restarted agent reads them back, and changes nothing for the same state.
  auto again = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->frontends().at(lb).fe.source_ranges, fe.source_ranges);
  fe.flags &= ~uint32_t{dataplane::kSourceRanges};
  fe.source_ranges.clear();
  ASSERT_TRUE(again->upsert(lb, fe).ok());
  EXPECT_EQ(maps->source_ranges.keys().size(), 0u);
  EXPECT_EQ(from_uplink(tcp("10.0.0.101", 40003, "198.51.100.1", 80, kSyn)).retval, kRedirect);
  ASSERT_TRUE(again->remove(lb).ok());
}

TEST_F(Uplink, WithoutANodeAddressToMasqueradeToNewFlowsAreDroppedAndCounted) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  kpx_config c = maps->read_config();
  c.node_addr_v4 = 0;
  set_config(c);
  auto r = from_uplink(tcp(kClient, 40000, kNode, kNodePort, kSyn));
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_NODE_ADDR), 1u);
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Uplink, APodReachesANodePortOnItsNodesAddressWithItsOwnSource) {
  set_nodeport(Proto::kTcp, {kLocalBe2});
  auto r = pod_in(tcp(kPodClient, 40000, kNode, kNodePort, kSyn), veth_);
  ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.daddr_be), kLocalBe2);
  EXPECT_EQ(addr_str(p.saddr_be), kPodClient);
  // The reply, delivered to the client pod, comes from the NodePort.
  auto rr = pod_out(tcp(kLocalBe2, 8080, kPodClient, 40000, kSynAck), veth_);
  ASSERT_EQ(rr.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kNode);
  EXPECT_EQ(rp.sport, kNodePort);
}

TEST_F(Uplink, EgressMasqueradeSourceNatsAPodsFlowToTheNodeAndRestoresTheReplies) {
  set_egress_masquerade(true);
  const Frame syn = tcp(kPodClient, 40000, kInternet, 443, kSyn);
  auto r = pod_in(syn, veth_);
  ASSERT_EQ(r.err, 0);
  ASSERT_EQ(r.retval, kRedirect) << "kpx sends it on: its source is the node's now";
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.saddr_be), kNode);
  EXPECT_GE(p.sport, KPX_DEFAULT_SNAT_PORT_MIN);
  EXPECT_EQ(addr_str(p.daddr_be), kInternet);
  EXPECT_EQ(p.dport, 443);
  EXPECT_TRUE(macs_are(r.out, kGatewayMac)) << "routed via the node's gateway";
  auto want_spec = spec(IPPROTO_TCP, kNode, p.sport, kInternet, 443, kSyn);
  Frame want = expected_translation(want_spec, r.out);
  std::memcpy(want.data(), r.out.data(), 12);
  EXPECT_EQ(r.out, want);
  EXPECT_EQ(counter(KPX_CTR_SNAT_EGRESS_NEW), 1u);

  const auto fk = key(kPodClient, 40000, kInternet, 443, IPPROTO_TCP, KPX_CT_FORWARD, veth_);
  auto fv = maps->conntrack.lookup(fk);
  ASSERT_TRUE(fv.has_value()) << "the FORWARD entry is on the pod's veth";
  EXPECT_TRUE(fv->flags & KPX_CT_F_UPLINK);
  EXPECT_EQ(fv->svc_id, 0u) << "no Service";
  EXPECT_EQ(fv->out_ifindex, up_if_);
  const auto rk = key(kInternet, 443, kNode, p.sport, IPPROTO_TCP, KPX_CT_REPLY, up_if_);
  ASSERT_TRUE(maps->conntrack.lookup(rk).has_value()) << "the REPLY entry is on the uplink";
  EXPECT_EQ(dataplane::reply_key_of(fk, *fv).ifindex, up_if_);

  // The internet's answer, on the uplink: back to the pod.
  auto rr = from_uplink(tcp(kInternet, 443, kNode, p.sport, kSynAck));
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kInternet);
  EXPECT_EQ(rp.sport, 443);
  EXPECT_EQ(addr_str(rp.daddr_be), kPodClient);
  EXPECT_EQ(rp.dport, 40000);
  EXPECT_TRUE(macs_are(rr.out, kPodClientMac));
  EXPECT_EQ(counter(KPX_CTR_REVNAT), 1u);

  // The established flow keeps its port; UDP the same.
  auto a = pod_in(tcp(kPodClient, 40000, kInternet, 443, kAck), veth_);
  ASSERT_EQ(a.retval, kRedirect);
  EXPECT_EQ(parsed(a).sport, p.sport);
  auto u = pod_in(udp(kPodClient, 5353, kInternet, 53), veth_);
  ASSERT_EQ(u.retval, kRedirect);
  auto up = parsed(u);
  EXPECT_EQ(addr_str(up.saddr_be), kNode);
  EXPECT_NE(up.sport, p.sport);
  auto ur = from_uplink(udp(kInternet, 53, kNode, up.sport));
  ASSERT_EQ(ur.retval, kRedirect);
  EXPECT_EQ(addr_str(parsed(ur).daddr_be), kPodClient);
  EXPECT_EQ(parsed(ur).dport, 5353);
  EXPECT_EQ(counter(KPX_CTR_SNAT_EGRESS_NEW), 2u);
}

TEST_F(Uplink, EgressMasqueradeLeavesTheClusterNonMasqueradeCidrsAndUnseenConnectionsAlone) {
  auto untouched = [&](const Frame& f, const char* what) {
    auto r = pod_in(f, veth_);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << what;
    EXPECT_EQ(r.out, f) << what;
  };
  // Off: a pod's own address goes out.
  set_egress_masquerade(false);
  untouched(tcp(kPodClient, 40000, kInternet, 443, kSyn), "masquerade off");
  set_egress_masquerade(true, {{"203.0.113.0", 24}});
  untouched(udp(kPodClient, 40001, kRemoteBe, 53), "a pod of the cluster CIDR");
  untouched(tcp(kPodClient, 40002, kInternet, 443, kSyn), "a non-masquerade CIDR");
  ASSERT_TRUE(maps->nomasq.erase(kpx_nomasq_key_v4{24, ipv4("203.0.113.0")}));
  // A segment of a connection kpx did not see open (the pod answering a
  // client that reached it directly) is not taken over.
  untouched(tcp(kPodClient, 8080, kInternet, 50000, kSynAck), "a SYN-ACK");
  untouched(tcp(kPodClient, 8080, kInternet, 50000, kAck), "an ACK");
  EXPECT_EQ(ct_size(), 0u);
  EXPECT_EQ(counter(KPX_CTR_SNAT_EGRESS_NEW), 0u);
  // Without a node address there is nothing to masquerade to: dropped.
  kpx_config c = maps->read_config();
  c.node_addr_v4 = 0;
  set_config(c);
  EXPECT_EQ(pod_in(tcp(kPodClient, 40003, kInternet, 443, kSyn), veth_).retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_NODE_ADDR), 1u);
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Uplink, ANeighbourPodSendingTheSameTupleGetsItsOwnFlowAndCannotTouchAnothers) {
  set_egress_masquerade(true);
  auto mine = pod_in(udp(kPodClient, 5000, kInternet, 53), veth_);
  ASSERT_EQ(mine.retval, kRedirect);
  const uint16_t my_port = parsed(mine).sport;
  // The neighbour forges the same 5-tuple on its own veth.
  auto theirs = pod_in(udp(kPodClient, 5000, kInternet, 53), other_veth_);
  ASSERT_EQ(theirs.retval, kRedirect);
  EXPECT_NE(parsed(theirs).sport, my_port) << "a flow of its own, with its own port";
  // The first pod's flow is as it was, and its replies still reach it.
  auto again = pod_in(udp(kPodClient, 5000, kInternet, 53), veth_);
  EXPECT_EQ(parsed(again).sport, my_port);
  const auto fk = key(kPodClient, 5000, kInternet, 53, IPPROTO_UDP, KPX_CT_FORWARD, veth_);
  auto fv = maps->conntrack.lookup(fk);
  ASSERT_TRUE(fv.has_value());
  EXPECT_EQ(fv->snat_port, htons(my_port));
  // Frames from the outside to a SNAT port nobody holds are no reply.
  auto stray = from_uplink(udp(kInternet, 53, kNode, static_cast<uint16_t>(my_port ^ 1)));
  EXPECT_EQ(stray.retval, static_cast<uint32_t>(TC_ACT_OK));
}


// kube-proxy masquerades off-cluster traffic to a ClusterIP (a client with a
// route to the Service CIDR through a node): what is off-cluster is the
// --detect-local-mode's; a "local" source, or no detection, passes.
TEST_F(Uplink, AClusterIpReachedFromOffClusterIsMasqueradedAsDetectLocalModeDecides) {
  set_cluster_ip({kRemoteBe});
  const Frame syn = tcp(kClient, 41000, kClusterIp, 80, kSyn);
  auto untouched = [&](const Frame& f, const char* what) {
    auto r = from_uplink(f);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << what;
    EXPECT_EQ(r.out, f) << what;
  };
  untouched(syn, "no local detection (ClusterCIDR without a cluster CIDR): not served");
  set_masquerade(KPX_CFG_F_LOCAL_CIDR, "10.244.0.0", 0);
  untouched(syn, "NodeCIDR before the Node's podCIDR is known");
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 0u);
  size_t entries = 0;
  maps->conntrack.for_each([&](const kpx_ct_key_v4&, const kpx_ct_value_v4&) { ++entries; });
  EXPECT_EQ(entries, 0u) << "no state for what passes";

  set_masquerade(KPX_CFG_F_LOCAL_CIDR, "10.244.0.0", 16);
  untouched(tcp("10.244.2.50", 41000, kClusterIp, 80, kSyn), "a source in the local CIDR");
  auto r = from_uplink(syn);
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.saddr_be), kNode) << "masqueraded to the node";
  EXPECT_GE(p.sport, KPX_DEFAULT_SNAT_PORT_MIN);
  EXPECT_EQ(addr_str(p.daddr_be), kRemoteBe);
  EXPECT_EQ(p.dport, 8080);
  EXPECT_TRUE(macs_are(r.out, kNode2Mac));
  Frame want = expected_translation(spec(IPPROTO_TCP, kNode, p.sport, kRemoteBe, 8080, kSyn), r.out);
  std::memcpy(want.data(), r.out.data(), 12);
  EXPECT_EQ(r.out, want);
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 1u);
  ASSERT_TRUE(maps->conntrack.lookup(key(kRemoteBe, 8080, kNode, p.sport, IPPROTO_TCP, KPX_CT_REPLY, up_if_)));

  // The backend's reply, back on the uplink: to the client, from the ClusterIP.
  auto rr = from_uplink(tcp(kRemoteBe, 8080, kNode, p.sport, kSynAck));
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kClusterIp);
  EXPECT_EQ(rp.sport, 80);
  EXPECT_EQ(addr_str(rp.daddr_be), kClient);
  EXPECT_EQ(rp.dport, 41000);
  EXPECT_TRUE(macs_are(rr.out, kClientMac));
  auto a = from_uplink(tcp(kClient, 41000, kClusterIp, 80, kAck));
  ASSERT_EQ(a.retval, kRedirect);
  EXPECT_EQ(parsed(a).sport, p.sport) << "the flow keeps its port";

  // Interface modes: nothing from the uplink is local.
  set_masquerade(KPX_CFG_F_LOCAL_IF);
  auto l = from_uplink(tcp("10.244.2.50", 41001, kClusterIp, 80, kSyn));
  ASSERT_EQ(l.retval, kRedirect);
  EXPECT_EQ(addr_str(parsed(l).saddr_be), kNode);
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 2u);
}

// --masquerade-all (or a pod outside the local CIDR): a pod's new flow to a
// Service is source-NATed to the node and sent on by kpx; the replies of a
// remote backend come back on the uplink, a local one's on its own veth
// (bound when the kernel delivers there), and a neighbour cannot use them.
TEST_F(Uplink, MasqueradeAllSourceNatsAPodsServiceFlowsToTheNodeForRemoteAndLocalBackends) {
  set_masquerade(KPX_CFG_F_MASQ_ALL | KPX_CFG_F_LOCAL_CIDR, "10.244.0.0", 16);
  set_cluster_ip({kRemoteBe});
  auto r = pod_in(tcp(kPodClient, 40000, kClusterIp, 80, kSyn), veth_);
  ASSERT_EQ(r.retval, kRedirect);
  auto p = parsed(r);
  EXPECT_EQ(addr_str(p.saddr_be), kNode);
  EXPECT_GE(p.sport, KPX_DEFAULT_SNAT_PORT_MIN);
  EXPECT_EQ(addr_str(p.daddr_be), kRemoteBe);
  EXPECT_TRUE(macs_are(r.out, kNode2Mac));
  EXPECT_EQ(r.mark, 0u) << "a remote backend: nothing to bind";
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 1u);
  const auto fk = key(kPodClient, 40000, kClusterIp, 80, IPPROTO_TCP, KPX_CT_FORWARD, veth_);
  ASSERT_TRUE(maps->conntrack.lookup(fk));
  EXPECT_EQ(maps->conntrack.lookup(fk)->out_ifindex, up_if_);
  auto rr = from_uplink(tcp(kRemoteBe, 8080, kNode, p.sport, kSynAck));
  ASSERT_EQ(rr.retval, kRedirect);
  auto rp = parsed(rr);
  EXPECT_EQ(addr_str(rp.saddr_be), kClusterIp);
  EXPECT_EQ(rp.sport, 80);
  EXPECT_EQ(addr_str(rp.daddr_be), kPodClient);
  EXPECT_EQ(rp.dport, 40000);
  EXPECT_TRUE(macs_are(rr.out, kPodClientMac));

  // A local backend (veth2 is its interface).
  set_cluster_ip({kLocalBe}, {kLocalBe});
  auto l = pod_in(tcp(kPodClient, 40001, kClusterIp, 80, kSyn), veth_);
  ASSERT_EQ(l.retval, kRedirect);
  auto lp = parsed(l);
  EXPECT_EQ(addr_str(lp.saddr_be), kNode);
  EXPECT_EQ(addr_str(lp.daddr_be), kLocalBe);
  EXPECT_TRUE(macs_are(l.out, kLocalBeMac));
  EXPECT_EQ(l.mark, KPX_MARK_BIND) << "marked until the backend's veth is known";
  const Frame reply = tcp(kLocalBe, 8080, kNode, lp.sport, kSynAck);
  // A neighbour (veth1) claiming the backend's reply: nothing.
  auto spoof = pod_in(reply, veth_);
  EXPECT_EQ(spoof.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(spoof.out, reply);
  auto delivered = pod_out(l.out, other_veth_, KPX_MARK_BIND);
  EXPECT_EQ(delivered.retval, static_cast<uint32_t>(TC_ACT_OK));
  const auto lfk = key(kPodClient, 40001, kClusterIp, 80, IPPROTO_TCP, KPX_CT_FORWARD, veth_);
  EXPECT_EQ(maps->conntrack.lookup(lfk)->out_ifindex, other_veth_);
  auto lr = pod_in(reply, other_veth_);
  ASSERT_EQ(lr.retval, kRedirect);
  auto lrp = parsed(lr);
  EXPECT_EQ(addr_str(lrp.saddr_be), kClusterIp);
  EXPECT_EQ(lrp.sport, 80);
  EXPECT_EQ(addr_str(lrp.daddr_be), kPodClient);
  EXPECT_EQ(lrp.dport, 40001);
  EXPECT_TRUE(macs_are(lr.out, kPodClientMac));
  // Established: still sent on by kpx, no longer marked.
  auto a = pod_in(tcp(kPodClient, 40001, kClusterIp, 80, kAck), veth_);
  ASSERT_EQ(a.retval, kRedirect);
  EXPECT_EQ(a.mark, 0u);
  EXPECT_EQ(parsed(a).sport, lp.sport);
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 2u);

  // Without --masquerade-all a pod of the local CIDR keeps its address; one
  // outside it (NodeCIDR of another node's range) is masqueraded.
  set_masquerade(KPX_CFG_F_LOCAL_CIDR, "10.244.0.0", 16);
  auto keep = pod_in(tcp(kPodClient, 40002, kClusterIp, 80, kSyn), veth_);
  ASSERT_EQ(keep.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(addr_str(parsed(keep).saddr_be), kPodClient);
  set_masquerade(KPX_CFG_F_LOCAL_CIDR, "10.244.7.0", 24);
  auto out = pod_in(tcp(kPodClient, 40003, kClusterIp, 80, kSyn), veth_);
  ASSERT_EQ(out.retval, kRedirect);
  EXPECT_EQ(addr_str(parsed(out).saddr_be), kNode);
  EXPECT_EQ(counter(KPX_CTR_SNAT_SERVICE_NEW), 3u);
}

// The node's own traffic on the uplink (a port that is no NodePort and no
// port of the SNAT range) passes before conntrack; a NodePort's established
// flow keeps its translation after the Service goes (its port's filter bit
// is kept while the flow lives, as kube-proxy's conntrack keeps it).
TEST_F(Uplink, TheNodesOwnTrafficPassesAndANodePortFlowOutlivesItsService) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  for (uint16_t port : {22, 10250, 30081}) {
    const Frame f = tcp(kClient, 41000, kNode, port, kSyn);
    auto r = from_uplink(f);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << port;
    EXPECT_EQ(r.out, f) << port;
  }
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 0u);
  auto r = from_uplink(tcp(kClient, 41000, kNode, kNodePort, kSyn));
  ASSERT_EQ(r.retval, kRedirect);
  const uint16_t sport = parsed(r).sport;

  auto dp = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(dp.ok()) << dp.error().message;
  const dataplane::FrontendKey key{net::IpAddr::from_v4(0), kNodePort, Proto::kTcp, dataplane::Scope::kNodePort};
  auto gone = dp->remove(key);
  ASSERT_TRUE(gone.ok() && *gone);
  auto a = from_uplink(tcp(kClient, 41000, kNode, kNodePort, kAck));
  ASSERT_EQ(a.retval, kRedirect) << "the established flow still reaches conntrack";
  EXPECT_EQ(addr_str(parsed(a).daddr_be), kRemoteBe);
  EXPECT_EQ(parsed(a).sport, sport);
  // A new flow to it has no Service any more: passes.
  const Frame syn = tcp(kClient, 41001, kNode, kNodePort, kSyn);
  auto n = from_uplink(syn);
  EXPECT_EQ(n.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(n.out, syn);
  // A restarted agent finds the flow and keeps the bit too.
  auto again = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(again.ok());
  auto b = from_uplink(tcp(kClient, 41000, kNode, kNodePort, kAck));
  ASSERT_EQ(b.retval, kRedirect);
  EXPECT_EQ(addr_str(parsed(b).daddr_be), kRemoteBe);
}

}  // namespace
}  // namespace kpx::bpftest
