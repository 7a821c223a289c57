// ICMP errors about translated flows (bpf/lib/icmp.h), run with
// BPF_PROG_TEST_RUN in the Uplink fixture's lab-node namespace: an error
// quotes the datagram as kpx translated it; what reaches the datagram's
// sender must quote it as the sender sent it, with every checksum right
// (recomputed here, independently of the kernel), and nothing in conntrack
// may change.
#include <map>

#include "uplink_fixture.h"

namespace kpx::bpftest {
namespace {

constexpr uint8_t kDestUnreach = 3, kPortUnreach = 3, kFragNeeded = 4, kTimeExceeded = 11;
constexpr const char* kNode2 = "10.0.0.12";
constexpr const char* kGateway = "10.0.0.1";
constexpr uint32_t kMtu = 1280;

using CtSnapshot = std::map<std::vector<uint8_t>, std::vector<uint8_t>>;

class Icmp : public Uplink {
 protected:
  // Every conntrack entry, byte for byte (timestamps included).
  CtSnapshot ct_snapshot() const {
    CtSnapshot s;
    for (const auto& k : maps->conntrack.keys()) {
      auto v = maps->conntrack.lookup(k);
      if (!v) continue;
      const auto* kb = reinterpret_cast<const uint8_t*>(&k);
      const auto* vb = reinterpret_cast<const uint8_t*>(&*v);
      s[std::vector<uint8_t>(kb, kb + sizeof k)] = std::vector<uint8_t>(vb, vb + sizeof *v);
    }
    return s;
  }

  // The IP datagram of a frame (its Ethernet header cut), cut to `len`
  // bytes (0: all of it), as an error quotes it.
  static Frame quote(const Frame& f, size_t len = 0) {
    Frame q(f.begin() + kEthLen, f.end());
    if (len && len < q.size()) q.resize(len);
    return q;
  }

  // The translated error `r`: both of its checksums right, the quoted IP
  // header's too, and, when the quote holds its whole datagram, the quoted
  // L4 checksum. The quote's addresses and ports in `quoted`.
  struct Seen {
    packet::ParsedIcmpError e;
    packet::Parsed quoted{};
  };
  static std::optional<Seen> seen(const HookRun& r) {
    auto e = packet::parse_icmp_error(r.out);
    EXPECT_TRUE(e.has_value()) << "not an ICMP error";
    if (!e) return std::nullopt;
    EXPECT_TRUE(e->ip_csum_ok) << "outer IP checksum";
    EXPECT_TRUE(e->icmp_csum_ok) << "ICMP checksum";
    const Frame& q = e->quoted;
    EXPECT_GE(q.size(), 28u);
    if (q.size() < 28) return std::nullopt;
    const size_t ihl = (q[0] & 0xf) * 4u;
    auto get16 = [&](size_t off) { return static_cast<uint16_t>(q[off] << 8 | q[off + 1]); };
    Seen s{*e};
    std::memcpy(&s.quoted.saddr_be, q.data() + 12, 4);
    std::memcpy(&s.quoted.daddr_be, q.data() + 16, 4);
    s.quoted.proto = q[9];
    s.quoted.sport = get16(ihl);
    s.quoted.dport = get16(ihl + 2);
    EXPECT_EQ(packet::ipv4_header_checksum(q.data(), ihl), get16(10)) << "quoted IP header checksum";
    if (get16(2) == q.size()) {
      Frame inner(kEthLen + q.size(), 0);
      inner[12] = 0x08;
      std::copy(q.begin(), q.end(), inner.begin() + kEthLen);
      auto whole = packet::parse_frame(inner);
      EXPECT_TRUE(whole.has_value());
      if (whole) {
        EXPECT_TRUE(whole->l4_csum_ok) << "quoted L4 checksum";
      }
    }
    return s;
  }

  static uint32_t rest_of(const packet::ParsedIcmpError&, const Frame& out) {
    const size_t icmp = kEthLen + (out[kEthLen] & 0xf) * 4u;
    return static_cast<uint32_t>(out[icmp + 4] << 24 | out[icmp + 5] << 16 | out[icmp + 6] << 8 | out[icmp + 7]);
  }
};

// A pod's ClusterIP flow to a backend on another node: the other node (a
// router on the way) says fragmentation needed, the backend itself that its
// port is closed; both reach the pod about the datagram it sent (to the
// ClusterIP), the backend's from the ClusterIP.
TEST_F(Icmp, ErrorsAboutAPodsClusterIpFlowReachThePodAboutItsOwnDatagram) {
  set_cluster_ip({kRemoteBe});
  auto syn_spec = spec(IPPROTO_TCP, kPodClient, 40000, kClusterIp, 80, kSyn);
  syn_spec.payload_len = 16;
  auto r = pod_in(packet::build_frame(syn_spec), veth_);
  ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  ASSERT_EQ(addr_str(parsed(r).daddr_be), kRemoteBe);
  const Frame sent = r.out;  // the datagram as it left the node
  const CtSnapshot before = ct_snapshot();

  // Fragmentation needed from node2, quoting all of the translated segment.
  auto frag = pod_out(packet::build_icmp_error(ipv4(kNode2), ipv4(kPodClient), kDestUnreach, kFragNeeded, kMtu,
                                               quote(sent)),
                      veth_);
  ASSERT_EQ(frag.err, 0);
  ASSERT_EQ(frag.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto s = seen(frag);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(addr_str(s->e.saddr_be), kNode2) << "a router's error keeps its source";
  EXPECT_EQ(addr_str(s->e.daddr_be), kPodClient);
  EXPECT_EQ(s->e.type, kDestUnreach);
  EXPECT_EQ(s->e.code, kFragNeeded);
  EXPECT_EQ(rest_of(s->e, frag.out) & 0xffff, kMtu) << "the MTU as the router said";
  EXPECT_EQ(addr_str(s->quoted.saddr_be), kPodClient);
  EXPECT_EQ(s->quoted.sport, 40000);
  EXPECT_EQ(addr_str(s->quoted.daddr_be), kClusterIp) << "the pod's own datagram: to the ClusterIP";
  EXPECT_EQ(s->quoted.dport, 80);
  // The quote is the pod's segment byte for byte (its checksums as sent).
  EXPECT_EQ(s->e.quoted, quote(packet::build_frame(syn_spec)));

  // Port unreachable from the backend over UDP, quoting the IP header and 8
  // bytes (RFC 792's minimum): from the ClusterIP.
  auto dns = spec(IPPROTO_UDP, kPodClient, 5353, kClusterIp, 53);
  {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok());
    const dataplane::FrontendKey k{net::IpAddr::from_v4(ipv4(kClusterIp)), 53, Proto::kUdp,
                                   dataplane::Scope::kClusterIP};
    ASSERT_TRUE(dp->upsert(k, dataplane::frontend_of({{ipv4(kRemoteBe), 8053}}, "default/dns")).ok());
  }
  auto u = pod_in(packet::build_frame(dns), veth_);
  ASSERT_EQ(u.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto pu = pod_out(packet::build_icmp_error(ipv4(kRemoteBe), ipv4(kPodClient), kDestUnreach, kPortUnreach, 0,
                                             quote(u.out, 28)),
                    veth_);
  ASSERT_EQ(pu.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto su = seen(pu);
  ASSERT_TRUE(su.has_value());
  EXPECT_EQ(addr_str(su->e.saddr_be), kClusterIp) << "the backend's own error comes from the ClusterIP";
  EXPECT_EQ(addr_str(su->quoted.daddr_be), kClusterIp);
  EXPECT_EQ(su->quoted.dport, 53);
  EXPECT_EQ(su->quoted.sport, 5353);
  EXPECT_EQ(su->e.quoted, quote(packet::build_frame(dns), 28)) << "the pod's datagram as sent, checksum included";

  // Time exceeded, quoting the whole UDP datagram.
  auto te = pod_out(packet::build_icmp_error(ipv4(kNode2), ipv4(kPodClient), kTimeExceeded, 0, 0, quote(u.out)),
                    veth_);
  ASSERT_EQ(te.retval, static_cast<uint32_t>(TC_ACT_OK));
  auto st = seen(te);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(addr_str(st->quoted.daddr_be), kClusterIp);

  EXPECT_EQ(counter(KPX_CTR_ICMP_XLATE), 3u);
  const CtSnapshot now = ct_snapshot();
  for (const auto& [k, v] : before) {
    auto it = now.find(k);
    ASSERT_NE(it, now.end()) << "an entry vanished";
    EXPECT_EQ(it->second, v) << "an error changed an entry (it must keep no flow alive)";
  }
}

// What is no error about a flow of this pod passes as it came: an error
// about another pod's flow, one on another pod's veth, one not addressed to
// the quoted datagram's sender, an echo request, an error about no flow.
// None of it translates, counts or changes state.
TEST_F(Icmp, ErrorsAboutNoFlowOfThePodPassUntouched) {
  set_cluster_ip({kRemoteBe});
  auto r = pod_in(tcp(kPodClient, 40000, kClusterIp, 80, kSyn), veth_);
  ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  const Frame sent = r.out;
  const CtSnapshot before = ct_snapshot();

  auto frag_to = [&](const char* dst, const Frame& about) {
    return packet::build_icmp_error(ipv4(kNode2), ipv4(dst), kDestUnreach, kFragNeeded, kMtu, quote(about));
  };
  const Frame frag = frag_to(kPodClient, sent);
  // Each case: what it is, the frame, and whether it arrives from the pod
  // (kpx_from_pod) or towards it (kpx_to_pod), on which veth.
  struct Case {
    const char* what;
    Frame in;
    bool from_pod;
    uint32_t ifindex;
  };
  const std::vector<Case> cases = {
      {"the same error on another pod's veth", frag, false, other_veth_},
      {"an error about another pod's datagram", frag_to(kLocalBe2, tcp(kLocalBe2, 40000, kRemoteBe, 8080, kSyn)), false,
       veth_},
      {"an error not sent to the datagram's sender", frag_to(kLocalBe2, sent), false, veth_},
      {"an echo request", packet::build_icmp_error(ipv4(kNode2), ipv4(kPodClient), 8, 0, 0x00010001, quote(sent)),
       false, veth_},
      {"an error about a datagram of no flow", frag_to(kPodClient, tcp(kPodClient, 40001, kRemoteBe, 8080, kSyn)),
       false, veth_},
      // A neighbour pod sending the pod's flow's error about its answer, as
      // if it were the pod refusing it: on its own veth, it matches nothing.
      {"a neighbour's forged error about the pod's flow",
       packet::build_icmp_error(ipv4(kPodClient), ipv4(kClusterIp), kDestUnreach, kPortUnreach, 0,
                                quote(tcp(kClusterIp, 80, kPodClient, 40000, kSynAck))),
       true, other_veth_},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const HookRun out = c.from_pod ? pod_in(c.in, c.ifindex) : pod_out(c.in, c.ifindex);
    EXPECT_EQ(out.err, 0);
    EXPECT_EQ(out.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(out.out, c.in) << "passed byte for byte";
  }
  EXPECT_EQ(counter(KPX_CTR_ICMP_XLATE), 0u);
  EXPECT_EQ(ct_snapshot(), before);
}

// The pod refusing its flow's answer (its socket closed meanwhile): the
// error about the answer it got from the ClusterIP goes to the backend,
// about the datagram the backend sent.
TEST_F(Icmp, APodsErrorAboutAnAnswerGoesToTheBackendAboutItsDatagram) {
  set_cluster_ip({kRemoteBe});
  ASSERT_EQ(pod_in(tcp(kPodClient, 40000, kClusterIp, 80, kSyn), veth_).retval, static_cast<uint32_t>(TC_ACT_OK));
  auto reply_spec = spec(IPPROTO_TCP, kRemoteBe, 8080, kPodClient, 40000, kSynAck);
  reply_spec.payload_len = 0;
  auto rr = pod_out(packet::build_frame(reply_spec), veth_);
  ASSERT_EQ(rr.retval, static_cast<uint32_t>(TC_ACT_OK));
  ASSERT_EQ(addr_str(parsed(rr).saddr_be), kClusterIp);

  auto e = pod_in(packet::build_icmp_error(ipv4(kPodClient), ipv4(kClusterIp), kDestUnreach, kPortUnreach, 0,
                                           quote(rr.out)),
                  veth_);
  ASSERT_EQ(e.retval, static_cast<uint32_t>(TC_ACT_OK)) << "the kernel routes it to the backend";
  auto s = seen(e);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(addr_str(s->e.saddr_be), kPodClient);
  EXPECT_EQ(addr_str(s->e.daddr_be), kRemoteBe);
  EXPECT_EQ(s->e.quoted, quote(packet::build_frame(reply_spec))) << "the backend's segment as it sent it";
  EXPECT_EQ(counter(KPX_CTR_ICMP_XLATE), 1u);
}

// A NodePort flow to a backend on another node, source-NATed to this node:
// node2 says fragmentation needed about the translated segment (the client
// learns its path MTU to the NodePort); the gateway says it about the
// answer kpx sent the client (the backend learns its path MTU).
TEST_F(Icmp, NodePortErrorsFromEitherSideReachTheOtherAboutItsOwnDatagram) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  auto syn_spec = spec(IPPROTO_TCP, kClient, 40000, kNode, kNodePort, kSyn);
  syn_spec.payload_len = 8;
  auto r = from_uplink(packet::build_frame(syn_spec));
  ASSERT_EQ(r.retval, kRedirect);
  const auto fwd = parsed(r);
  ASSERT_EQ(addr_str(fwd.saddr_be), kNode);
  const uint16_t snat_port = fwd.sport;
  // The backend's answer, as kpx sends it to the client.
  auto ans_spec = spec(IPPROTO_TCP, kRemoteBe, 8080, kNode, snat_port, kSynAck);
  ans_spec.payload_len = 8;
  auto a = from_uplink(packet::build_frame(ans_spec));
  ASSERT_EQ(a.retval, kRedirect);
  ASSERT_EQ(parsed(a).sport, kNodePort);
  const CtSnapshot before = ct_snapshot();

  auto e = from_uplink(
      packet::build_icmp_error(ipv4(kNode2), ipv4(kNode), kDestUnreach, kFragNeeded, kMtu, quote(r.out)));
  ASSERT_EQ(e.err, 0);
  ASSERT_EQ(e.retval, kRedirect) << "kpx sends it on to the client (its source NAT is kpx's)";
  EXPECT_TRUE(macs_are(e.out, kClientMac));
  auto s = seen(e);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(addr_str(s->e.saddr_be), kNode2);
  EXPECT_EQ(addr_str(s->e.daddr_be), kClient);
  EXPECT_EQ(s->e.quoted, quote(packet::build_frame(syn_spec))) << "the client's segment to the NodePort";
  EXPECT_EQ(rest_of(s->e, e.out) & 0xffff, kMtu);

  // The gateway's error about the answer as kpx sent it.
  auto g = from_uplink(
      packet::build_icmp_error(ipv4(kGateway), ipv4(kNode), kDestUnreach, kFragNeeded, kMtu, quote(a.out)));
  ASSERT_EQ(g.retval, kRedirect);
  EXPECT_TRUE(macs_are(g.out, kNode2Mac)) << "routed to the backend's node";
  auto sg = seen(g);
  ASSERT_TRUE(sg.has_value());
  EXPECT_EQ(addr_str(sg->e.saddr_be), kGateway);
  EXPECT_EQ(addr_str(sg->e.daddr_be), kRemoteBe);
  EXPECT_EQ(sg->e.quoted, quote(packet::build_frame(ans_spec))) << "the backend's segment as it sent it";

  // The client refusing the answer itself (its socket gone): from the
  // node, the backend's peer as it knows it.
  auto c = from_uplink(
      packet::build_icmp_error(ipv4(kClient), ipv4(kNode), kDestUnreach, kPortUnreach, 0, quote(a.out, 28)));
  ASSERT_EQ(c.retval, kRedirect);
  auto sc = seen(c);
  ASSERT_TRUE(sc.has_value());
  EXPECT_EQ(addr_str(sc->e.saddr_be), kNode);
  EXPECT_EQ(addr_str(sc->e.daddr_be), kRemoteBe);
  EXPECT_EQ(sc->e.quoted, quote(packet::build_frame(ans_spec), 28));

  EXPECT_EQ(counter(KPX_CTR_ICMP_XLATE), 3u);
  EXPECT_EQ(ct_snapshot(), before) << "errors keep no flow alive and change no entry";
}

// A frame kpx sends on itself (an uplink flow: kpx routes it, the kernel's
// forwarding never sees it) that is too large for its way: with DF, kpx
// answers as the kernel's forwarding would, with fragmentation needed and
// the way's MTU, from the node, about the frame as the client sent it; a
// frame without DF is dropped and counted (kpx does not fragment).
TEST_F(Icmp, AFrameTooLargeForTheWayKpxSendsItOnGetsFragmentationNeeded) {
  ASSERT_EQ(std::system(("ip -n " + ns_ + " route change 10.244.2.0/24 via 10.0.0.12 dev up0 mtu lock 1280").c_str()),
            0);
  set_nodeport(Proto::kTcp, {kRemoteBe});
  ASSERT_EQ(from_uplink(tcp(kClient, 40000, kNode, kNodePort, kSyn)).retval, kRedirect);

  auto big = spec(IPPROTO_TCP, kClient, 40000, kNode, kNodePort, kAck);
  big.payload_len = 1400;
  big.frag_off = 0x4000;  // DF, as TCP sends
  const Frame in = packet::build_frame(big);
  auto r = from_uplink(in);
  ASSERT_EQ(r.err, 0);
  ASSERT_EQ(r.retval, kRedirect) << "back out of the uplink, to the client";
  auto s = seen(r);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->e.type, kDestUnreach);
  EXPECT_EQ(s->e.code, kFragNeeded);
  EXPECT_EQ(rest_of(s->e, r.out) & 0xffff, 1280u) << "the MTU of the way to the backend's node";
  EXPECT_EQ(addr_str(s->e.saddr_be), kNode);
  EXPECT_EQ(addr_str(s->e.daddr_be), kClient);
  EXPECT_EQ(std::memcmp(s->e.dst_mac, in.data() + 6, 6), 0) << "to the sender's MAC";
  EXPECT_EQ(s->e.quoted, Frame(in.begin() + kEthLen, in.begin() + kEthLen + 28))
      << "the client's header and ports, as it sent them";
  EXPECT_EQ(counter(KPX_CTR_FRAG_NEEDED), 1u);

  // Smaller than the MTU: translated and sent on as ever.
  auto fits = big;
  fits.payload_len = 1200;
  EXPECT_EQ(from_uplink(packet::build_frame(fits)).retval, kRedirect);
  EXPECT_EQ(counter(KPX_CTR_FRAG_NEEDED), 1u);
  EXPECT_EQ(counter(KPX_CTR_DROP_FIB), 0u);

  // Without DF: dropped, counted, no error.
  big.frag_off = 0;
  EXPECT_EQ(from_uplink(packet::build_frame(big)).retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_FIB), 1u);
  EXPECT_EQ(counter(KPX_CTR_FRAG_NEEDED), 1u);
}

// A GSO skb (a backend's TSO burst, crossing veths whole) is measured by
// its segments, as the kernel's forwarding measures it: a 3000-byte
// aggregate of 1448-byte segments fits a 1500 MTU and is sent on; under a
// 1280 MTU its segments do not, and the sender hears fragmentation needed.
TEST_F(Icmp, AGsoAggregateIsMeasuredByItsSegments) {
  set_nodeport(Proto::kTcp, {kRemoteBe});
  ASSERT_EQ(from_uplink(tcp(kClient, 40000, kNode, kNodePort, kSyn)).retval, kRedirect);
  auto burst = spec(IPPROTO_TCP, kClient, 40000, kNode, kNodePort, kAck);
  burst.payload_len = 3000;
  burst.frag_off = 0x4000;
  const Frame in = packet::build_frame(burst);
  auto r = from_uplink(in, 0, 1448);
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.retval, kRedirect);
  EXPECT_EQ(addr_str(packet::parse_frame(r.out)->daddr_be), kRemoteBe) << "translated and sent on whole";
  EXPECT_EQ(counter(KPX_CTR_FRAG_NEEDED), 0u);
  EXPECT_EQ(counter(KPX_CTR_DROP_FIB), 0u);

  ASSERT_EQ(std::system(("ip -n " + ns_ + " route change 10.244.2.0/24 via 10.0.0.12 dev up0 mtu lock 1280").c_str()),
            0);
  auto f = from_uplink(in, 0, 1448);
  ASSERT_EQ(f.retval, kRedirect);
  auto s = seen(f);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->e.code, kFragNeeded);
  EXPECT_EQ(rest_of(s->e, f.out) & 0xffff, 1280u);
  EXPECT_EQ(counter(KPX_CTR_FRAG_NEEDED), 1u);
}

// A pod reaching itself through its Service (hairpin: source NATed to the
// hairpin address) and refusing its own datagram: the error it sends to the
// hairpin address bounces back to it about the datagram it sent to the
// ClusterIP, from the ClusterIP.
TEST_F(Icmp, AHairpinFlowsErrorBouncesBackToThePodAboutItsOwnDatagram) {
  set_node_addresses(kPodGw, {kNode, kPodGw});
  set_cluster_ip({kPodClient});
  auto dg = spec(IPPROTO_TCP, kPodClient, 40000, kClusterIp, 80, kSyn);
  dg.payload_len = 8;
  auto r = pod_in(packet::build_frame(dg), veth_);
  ASSERT_EQ(r.retval, kRedirect) << "bounced back to the pod";
  ASSERT_EQ(addr_str(parsed(r).saddr_be), kPodGw) << "from the hairpin address";
  const CtSnapshot before = ct_snapshot();

  auto e = pod_in(packet::build_icmp_error(ipv4(kPodClient), ipv4(kPodGw), kDestUnreach, kPortUnreach, 0,
                                           quote(r.out)),
                  veth_);
  ASSERT_EQ(e.err, 0);
  ASSERT_EQ(e.retval, kRedirect);
  auto s = seen(e);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(addr_str(s->e.saddr_be), kClusterIp);
  EXPECT_EQ(addr_str(s->e.daddr_be), kPodClient);
  EXPECT_EQ(s->e.quoted, quote(packet::build_frame(dg))) << "the pod's segment to the ClusterIP";
  EXPECT_EQ(counter(KPX_CTR_ICMP_XLATE), 1u);
  EXPECT_EQ(ct_snapshot(), before);
}

}  // namespace
}  // namespace kpx::bpftest
