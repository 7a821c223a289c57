// The pod-side tc datapath (bpf/kpx_lxc.bpf.c) loaded into the kernel and
// driven with BPF_PROG_TEST_RUN: DNAT of new and established flows, reverse
// NAT, pass-through, malformed input, fragments, hairpin, backend spread and
// the conntrack TCP states and timeouts. Output frames are parsed and their
// checksums recomputed in userspace (packet/craft), independently of the
// kernel's checksum helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "datapath_fixture.h"

namespace kpx::bpftest {
namespace {

using net::Proto;
using packet::FrameSpec;
using packet::build_frame;
using packet::parse_frame;

constexpr const char* kVip = "10.96.0.10";
constexpr const char* kClient = "10.244.3.5";
constexpr const char* kBe1 = "10.244.1.2";
constexpr const char* kBe2 = "10.244.2.3";
constexpr const char* kBe3 = "10.244.2.4";
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kSynAck = 0x12, kFinAck = 0x11, kRstAck = 0x14;
constexpr uint64_t kSec = 1000000000ULL;

// Counter deltas since construction: `expect_only` checks that exactly the
// given counters moved, by exactly the given amounts.
class CounterDelta {
 public:
  explicit CounterDelta(std::vector<uint64_t> before) : before_(std::move(before)) {}
  void expect_only(const std::map<kpx_counter, uint64_t>& moved, const std::vector<uint64_t>& now) const {
    ASSERT_EQ(now.size(), before_.size());
    for (uint32_t c = 0; c < KPX_CTR_MAX; ++c) {
      auto it = moved.find(static_cast<kpx_counter>(c));
      uint64_t want = it == moved.end() ? 0 : it->second;
      EXPECT_EQ(now[c] - before_[c], want) << "counter " << dataplane::counter_name(c);
    }
  }

 private:
  std::vector<uint64_t> before_;
};

class Datapath : public DatapathTest {
 protected:
  CounterDelta delta() const { return CounterDelta(all_counters()); }
  void expect_counters(const CounterDelta& d, const std::map<kpx_counter, uint64_t>& moved) const {
    d.expect_only(moved, all_counters());
  }

  uint32_t tcp_service() {
    return set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}, {kBe2, 8080}});
  }
  uint32_t udp_service() {
    return set_service(kVip, 53, Proto::kUdp, {{kBe1, 5353}, {kBe2, 5353}});
  }

  // Run `in` (built from in_spec) through kpx_from_pod and check it came out
  // as a DNAT to one of `backends` on be_port, everything else unchanged and
  // checksums valid. Returns the chosen backend address (0 on failure).
  uint32_t expect_dnat(const FrameSpec& in_spec, const std::vector<const char*>& backends, uint16_t be_port) {
    const Frame in = build_frame(in_spec);
    auto r = from_pod(in);
    EXPECT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    auto p = parse_frame(r.out);
    EXPECT_TRUE(p.has_value());
    if (!p) return 0;
    std::set<uint32_t> allowed;
    for (const char* b : backends) allowed.insert(ipv4(b));
    EXPECT_TRUE(allowed.count(p->daddr_be)) << "dst " << addr_str(p->daddr_be) << " is not a backend";
    EXPECT_EQ(p->dport, be_port);
    EXPECT_EQ(p->saddr_be, in_spec.saddr_be);
    EXPECT_EQ(p->sport, in_spec.sport);
    EXPECT_EQ(p->proto, in_spec.proto);
    EXPECT_TRUE(p->ip_csum_ok);
    EXPECT_TRUE(p->l4_csum_ok);
    FrameSpec out_spec = in_spec;
    out_spec.daddr_be = p->daddr_be;
    out_spec.dport = be_port;
    EXPECT_EQ(r.out, expected_translation(out_spec, r.out, false, in_spec.udp_zero_csum));
    if (in_spec.proto == IPPROTO_UDP && in_spec.udp_zero_csum) {
      EXPECT_EQ(p->l4_csum, 0) << "UDP without checksum must stay without";
    } else if (in_spec.proto == IPPROTO_UDP) {
      EXPECT_NE(p->l4_csum, 0) << "a UDP checksum must not turn into 'no checksum'";
    }
    return allowed.count(p->daddr_be) ? p->daddr_be : 0;
  }

  // Run a reply (built from in_spec) through kpx_to_pod and check its source
  // became vip:vport, everything else unchanged, checksums valid.
  void expect_revnat(const FrameSpec& in_spec, const char* vip, uint16_t vport) {
    const Frame in = build_frame(in_spec);
    auto r = to_pod(in);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    auto p = parse_frame(r.out);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->saddr_be, ipv4(vip));
    EXPECT_EQ(p->sport, vport);
    EXPECT_EQ(p->daddr_be, in_spec.daddr_be);
    EXPECT_EQ(p->dport, in_spec.dport);
    EXPECT_TRUE(p->ip_csum_ok);
    EXPECT_TRUE(p->l4_csum_ok);
    FrameSpec out_spec = in_spec;
    out_spec.saddr_be = ipv4(vip);
    out_spec.sport = vport;
    EXPECT_EQ(r.out, expected_translation(out_spec, r.out, false, in_spec.udp_zero_csum));
    if (in_spec.proto == IPPROTO_UDP && in_spec.udp_zero_csum) {
      EXPECT_EQ(p->l4_csum, 0);
    }
  }

  // The frame passes through `prog` byte-identical with TC_ACT_OK.
  void expect_unchanged(int prog_fd, const Frame& in, const std::string& what) {
    auto r = test_run(prog_fd, in);
    ASSERT_EQ(r.err, 0) << what;
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << what;
    EXPECT_EQ(r.out, in) << what;
  }
  void expect_unchanged_both(const Frame& in, const std::string& what) {
    expect_unchanged(obj->from_pod_fd(), in, "from_pod: " + what);
    expect_unchanged(obj->to_pod_fd(), in, "to_pod: " + what);
  }
};

std::string ip_of(uint32_t be) { return addr_str(be); }

// ---- 1. new TCP flow ----------------------------------------------------------

TEST_F(Datapath, TcpNewFlowIsTranslatedToABackendAndTracked) {
  const uint32_t svc_id = tcp_service();
  ASSERT_NE(svc_id, 0u);
  auto d = delta();
  const FrameSpec syn = spec(IPPROTO_TCP, kClient, 40000, kVip, 80, kSyn);
  const uint32_t be = expect_dnat(syn, {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  expect_counters(d, {{KPX_CTR_DNAT_NEW, 1}});

  auto fwd = ct(kClient, 40000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value()) << "no FORWARD entry keyed by client -> VIP";
  EXPECT_EQ(fwd->nat_addr, be);
  EXPECT_EQ(fwd->nat_port, htons(8080));
  EXPECT_EQ(fwd->snat_addr, 0u);
  EXPECT_EQ(fwd->svc_id, svc_id);
  EXPECT_EQ(fwd->flags, KPX_CT_F_SYN);
  EXPECT_NE(fwd->created_ns, 0u);
  EXPECT_EQ(fwd->last_seen_ns, fwd->created_ns);
  EXPECT_LE(fwd->created_ns, dataplane::monotonic_coarse_ns());

  const std::string be_s = ip_of(be);
  auto rep = ct(be_s.c_str(), 8080, kClient, 40000, IPPROTO_TCP, KPX_CT_REPLY);
  ASSERT_TRUE(rep.has_value()) << "no REPLY entry keyed by backend -> client";
  EXPECT_EQ(rep->nat_addr, ipv4(kVip));
  EXPECT_EQ(rep->nat_port, htons(80));
  EXPECT_EQ(rep->snat_addr, 0u);
  EXPECT_EQ(rep->svc_id, svc_id);
  EXPECT_EQ(rep->flags & KPX_CT_F_HAIRPIN, 0);
  EXPECT_EQ(ct_size(), 2u);  // exactly the two entries of this flow
}

// ---- 2. established flow ----------------------------------------------------------

TEST_F(Datapath, TcpEstablishedFlowStaysOnItsBackend) {
  tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 40001, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  auto d = delta();
  for (int i = 0; i < 50; ++i) {
    FrameSpec ack = spec(IPPROTO_TCP, kClient, 40001, kVip, 80, kAck);
    ack.ip_id = static_cast<uint16_t>(0x100 + i);
    ack.payload_len = static_cast<size_t>(i * 13 % 200);
    ASSERT_EQ(expect_dnat(ack, {kBe1, kBe2}, 8080), be) << "packet " << i << " changed backend";
  }
  expect_counters(d, {{KPX_CTR_DNAT_ESTABLISHED, 50}});
  auto fwd = ct(kClient, 40001, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_EQ(fwd->flags, KPX_CT_F_SYN | KPX_CT_F_ESTABLISHED);
  EXPECT_EQ(fwd->nat_addr, be);
  EXPECT_EQ(ct_size(), 2u);
}

// ---- 3. reply path ----------------------------------------------------------------

TEST_F(Datapath, TcpReplyGetsTheVipAsSource) {
  tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 40002, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  const std::string be_s = ip_of(be);
  auto d = delta();
  for (uint8_t flags : {kSynAck, kAck, kFinAck}) {
    expect_revnat(spec(IPPROTO_TCP, be_s.c_str(), 8080, kClient, 40002, flags), kVip, 80);
  }
  expect_counters(d, {{KPX_CTR_REVNAT, 3}});
  auto rep = ct(be_s.c_str(), 8080, kClient, 40002, IPPROTO_TCP, KPX_CT_REPLY);
  ASSERT_TRUE(rep.has_value());
  EXPECT_TRUE(rep->flags & KPX_CT_F_SYN);
  EXPECT_TRUE(rep->flags & KPX_CT_F_ESTABLISHED);
  EXPECT_TRUE(rep->flags & KPX_CT_F_FIN);
  // The server's FIN is the flow's: its FORWARD entry knows it.
  auto fwd = ct(kClient, 40002, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_TRUE(fwd->flags & KPX_CT_F_REPLY_FIN);
  EXPECT_FALSE(fwd->flags & KPX_CT_F_FIN) << "the client sent no FIN";
}

TEST_F(Datapath, ReplyWithoutConntrackEntryPassesUnchanged) {
  tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 40003, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  const std::string be_s = ip_of(be);
  const std::string other = ip_of(be == ipv4(kBe1) ? ipv4(kBe2) : ipv4(kBe1));
  auto d = delta();
  // The other backend, another port of the backend, another client port,
  // another client, and UDP with the tracked TCP tuple.
  expect_unchanged(obj->to_pod_fd(), tcp(other.c_str(), 8080, kClient, 40003, kSynAck), "other backend");
  expect_unchanged(obj->to_pod_fd(), tcp(be_s.c_str(), 8081, kClient, 40003, kSynAck), "other port");
  expect_unchanged(obj->to_pod_fd(), tcp(be_s.c_str(), 8080, kClient, 40004, kSynAck), "other dport");
  expect_unchanged(obj->to_pod_fd(), tcp(be_s.c_str(), 8080, "10.244.3.6", 40003, kSynAck), "other client");
  expect_unchanged(obj->to_pod_fd(), udp(be_s.c_str(), 8080, kClient, 40003), "udp");
  // The tracked reply sent the wrong way (through from_pod) is not a Service packet.
  expect_unchanged(obj->from_pod_fd(), tcp(be_s.c_str(), 8080, kClient, 40003, kSynAck), "from_pod");
  expect_counters(d, {{KPX_CTR_PASS, 6}});
  EXPECT_EQ(ct_size(), 2u);
}

// ---- 4. UDP -----------------------------------------------------------------------

TEST_F(Datapath, UdpNewFlowReplyAndEstablished) {
  const uint32_t svc_id = udp_service();
  auto d = delta();
  const FrameSpec q = spec(IPPROTO_UDP, kClient, 33000, kVip, 53);
  const uint32_t be = expect_dnat(q, {kBe1, kBe2}, 5353);
  ASSERT_NE(be, 0u);
  const std::string be_s = ip_of(be);
  auto fwd = ct(kClient, 33000, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_EQ(fwd->nat_addr, be);
  EXPECT_EQ(fwd->nat_port, htons(5353));
  EXPECT_EQ(fwd->svc_id, svc_id);
  EXPECT_EQ(fwd->flags, 0);  // no TCP state for UDP
  auto rep = ct(be_s.c_str(), 5353, kClient, 33000, IPPROTO_UDP, KPX_CT_REPLY);
  ASSERT_TRUE(rep.has_value());
  EXPECT_EQ(rep->nat_addr, ipv4(kVip));
  EXPECT_EQ(rep->nat_port, htons(53));
  EXPECT_EQ(rep->svc_id, svc_id);

  expect_revnat(spec(IPPROTO_UDP, be_s.c_str(), 5353, kClient, 33000), kVip, 53);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(expect_dnat(q, {kBe1, kBe2}, 5353), be);
  expect_counters(d, {{KPX_CTR_DNAT_NEW, 1}, {KPX_CTR_REVNAT, 1}, {KPX_CTR_DNAT_ESTABLISHED, 10}});
  EXPECT_EQ(ct_size(), 2u);
}

TEST_F(Datapath, UdpWithoutChecksumStaysWithoutChecksum) {
  udp_service();
  FrameSpec q = spec(IPPROTO_UDP, kClient, 33001, kVip, 53);
  q.udp_zero_csum = true;
  ASSERT_EQ(parse_frame(build_frame(q))->l4_csum, 0);
  const uint32_t be = expect_dnat(q, {kBe1, kBe2}, 5353);  // checks l4_csum stays 0
  ASSERT_NE(be, 0u);
  const std::string be_s = ip_of(be);
  FrameSpec a = spec(IPPROTO_UDP, be_s.c_str(), 5353, kClient, 33001);
  a.udp_zero_csum = true;
  expect_revnat(a, kVip, 53);  // checks l4_csum stays 0
  // Established packets of the same flow too.
  ASSERT_EQ(expect_dnat(q, {kBe1, kBe2}, 5353), be);
  // And a flow with a checksum in the same Service still gets a real one.
  const FrameSpec c = spec(IPPROTO_UDP, kClient, 33002, kVip, 53);
  ASSERT_NE(expect_dnat(c, {kBe1, kBe2}, 5353), 0u);
}

// ---- 5. pass-through ---------------------------------------------------------------

TEST_F(Datapath, NonServiceTrafficPassesUnchanged) {
  tcp_service();
  udp_service();
  auto d = delta();
  expect_unchanged_both(tcp(kClient, 40000, "10.96.0.11", 80, kSyn), "tcp to a non-VIP");
  expect_unchanged_both(tcp(kClient, 40000, kBe1, 8080, kSyn), "tcp to a pod");
  expect_unchanged_both(tcp(kClient, 40000, kVip, 81, kSyn), "tcp to the VIP, other port");
  expect_unchanged_both(tcp(kClient, 40000, kVip, 53, kSyn), "tcp to the UDP service's port");
  expect_unchanged_both(udp(kClient, 40000, kVip, 80), "udp to the TCP service's port");
  expect_unchanged_both(udp(kClient, 40000, kVip, 54), "udp to the VIP, other port");
  expect_unchanged_both(udp(kClient, 40000, "10.96.0.12", 53), "udp to a non-VIP");
  // The VIP as source is not Service traffic either.
  expect_unchanged_both(tcp(kVip, 80, kClient, 40000, kSynAck), "tcp from the VIP");
  expect_counters(d, {{KPX_CTR_PASS, 16}});
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Datapath, IcmpArpAndIpv6PassUnchanged) {
  tcp_service();
  // ICMP echo to the VIP (a UDP frame turned into protocol 1, header checksum fixed).
  Frame icmp = udp(kClient, 0x0800, kVip, 80);
  icmp[kEthLen + 9] = IPPROTO_ICMP;
  icmp[kEthLen + 10] = icmp[kEthLen + 11] = 0;
  const uint16_t c = packet::ipv4_header_checksum(icmp.data() + kEthLen, 20);
  icmp[kEthLen + 10] = static_cast<uint8_t>(c >> 8);
  icmp[kEthLen + 11] = static_cast<uint8_t>(c);
  // ARP request (who-has VIP) and an IPv6 frame.
  Frame arp(kEthLen + 28, 0);
  std::memset(arp.data(), 0xff, 6);
  arp[6] = 0x02, arp[11] = 0x02;
  arp[12] = 0x08, arp[13] = 0x06;
  const uint8_t arp_body[8] = {0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01};
  std::memcpy(arp.data() + kEthLen, arp_body, 8);
  const uint32_t vip = ipv4(kVip);
  std::memcpy(arp.data() + kEthLen + 24, &vip, 4);
  Frame v6 = tcp(kClient, 40000, kVip, 80, kSyn);  // IPv4 bytes under the IPv6 ethertype
  v6[12] = 0x86, v6[13] = 0xdd;
  Frame vlan = tcp(kClient, 40000, kVip, 80, kSyn);  // 802.1Q: kpx does not look inside
  vlan[12] = 0x81, vlan[13] = 0x00;
  Frame eth_only(kEthLen, 0);  // an Ethernet header alone (LLDP ethertype)
  eth_only[12] = 0x88, eth_only[13] = 0xcc;

  auto d = delta();
  expect_unchanged_both(icmp, "icmp");
  expect_unchanged_both(arp, "arp");
  expect_unchanged_both(v6, "ipv6 ethertype");
  expect_unchanged_both(vlan, "vlan ethertype");
  expect_unchanged_both(eth_only, "ethernet header only");
  expect_counters(d, {{KPX_CTR_PASS, 2}, {KPX_CTR_PASS_NON_IPV4, 8}});
  EXPECT_EQ(ct_size(), 0u);
}

// ---- 6. malformed input -----------------------------------------------------------

// Every prefix of a Service frame, from 0 bytes to its full headers. The
// kernel's BPF_PROG_TEST_RUN refuses some short inputs itself, before the
// program runs: anything shorter than an Ethernet header, and (in recent
// kernels, e.g. 6.18) an IPv4 frame without a complete 20-byte IPv4 header.
// Those runs must fail with EINVAL; every run that the kernel accepts must
// pass the frame unchanged.
TEST_F(Datapath, TruncatedFramesAreNeverRewritten) {
  tcp_service();
  udp_service();
  size_t ran = 0;
  for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
    const Frame full = proto == IPPROTO_TCP ? tcp(kClient, 40000, kVip, 80, kSyn) : udp(kClient, 40000, kVip, 53);
    const size_t hdr_len = kEthLen + 20 + (proto == IPPROTO_TCP ? 20 : 8);
    for (size_t len = 0; len <= hdr_len; ++len) {
      const Frame in(full.begin(), full.begin() + static_cast<long>(len));
      for (int prog : {obj->from_pod_fd(), obj->to_pod_fd()}) {
        auto r = test_run(prog, in);
        if (len < kEthLen) {
          EXPECT_EQ(r.err, -EINVAL) << "len " << len;
          continue;
        }
        if (r.err != 0) {
          EXPECT_EQ(r.err, -EINVAL) << "len " << len;
          EXPECT_LT(len, kEthLen + 20) << "the kernel refused a frame with a full IPv4 header";
          continue;
        }
        ++ran;
        EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK)) << "len " << len;
        EXPECT_EQ(r.out, in) << "len " << len;
      }
    }
  }
  // The prefixes with a full IPv4 header (34 .. 54 and 34 .. 42 bytes) always run.
  EXPECT_GE(ran, 2u * ((54 - 34 + 1) + (42 - 34 + 1)));
  EXPECT_EQ(ct_size(), 0u);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 0u);
  EXPECT_EQ(counter(KPX_CTR_PASS_MALFORMED), ran);

  // Short frames of other ethertypes run from 14 bytes on, and pass.
  Frame arp(kEthLen + 28, 0);
  arp[12] = 0x08, arp[13] = 0x06;
  for (size_t len = kEthLen; len <= arp.size(); ++len)
    expect_unchanged_both(Frame(arp.begin(), arp.begin() + static_cast<long>(len)),
                          "arp len " + std::to_string(len));
}

// A frame whose IPv4 tot_len matches it, holding only part of the TCP/UDP header.
TEST_F(Datapath, TruncatedL4HeaderIsNeverRewritten) {
  tcp_service();
  udp_service();
  auto d = delta();
  uint64_t runs = 0;
  for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
    const Frame full = proto == IPPROTO_TCP ? tcp(kClient, 40000, kVip, 80, kSyn) : udp(kClient, 40000, kVip, 53);
    const size_t l4h = proto == IPPROTO_TCP ? 20 : 8;
    for (size_t l4 = 0; l4 < l4h; ++l4) {
      Frame in(full.begin(), full.begin() + static_cast<long>(kEthLen + 20 + l4));
      const uint16_t tot = static_cast<uint16_t>(20 + l4);
      in[kEthLen + 2] = static_cast<uint8_t>(tot >> 8);
      in[kEthLen + 3] = static_cast<uint8_t>(tot);
      in[kEthLen + 10] = in[kEthLen + 11] = 0;
      const uint16_t c = packet::ipv4_header_checksum(in.data() + kEthLen, 20);
      in[kEthLen + 10] = static_cast<uint8_t>(c >> 8);
      in[kEthLen + 11] = static_cast<uint8_t>(c);
      expect_unchanged_both(in, "l4 bytes " + std::to_string(l4));
      runs += 2;
    }
    // Header complete in the frame, but tot_len says it is not.
    Frame in = full;
    const uint16_t tot = static_cast<uint16_t>(20 + l4h - 1);
    in[kEthLen + 2] = static_cast<uint8_t>(tot >> 8);
    in[kEthLen + 3] = static_cast<uint8_t>(tot);
    in[kEthLen + 10] = in[kEthLen + 11] = 0;
    const uint16_t c = packet::ipv4_header_checksum(in.data() + kEthLen, 20);
    in[kEthLen + 10] = static_cast<uint8_t>(c >> 8);
    in[kEthLen + 11] = static_cast<uint8_t>(c);
    expect_unchanged_both(in, "tot_len short of the l4 header");
    runs += 2;
  }
  expect_counters(d, {{KPX_CTR_PASS_MALFORMED, runs}});
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Datapath, InvalidIpv4HeadersAreNeverRewritten) {
  tcp_service();
  const Frame good = tcp(kClient, 40000, kVip, 80, kSyn);
  auto fix_csum = [](Frame& f) {
    f[kEthLen + 10] = f[kEthLen + 11] = 0;
    const uint16_t c = packet::ipv4_header_checksum(f.data() + kEthLen, 20);
    f[kEthLen + 10] = static_cast<uint8_t>(c >> 8);
    f[kEthLen + 11] = static_cast<uint8_t>(c);
  };
  auto d = delta();
  uint64_t runs = 0;
  for (uint8_t ihl = 0; ihl < 5; ++ihl) {
    Frame f = good;
    f[kEthLen] = static_cast<uint8_t>(0x40 | ihl);
    fix_csum(f);
    expect_unchanged_both(f, "ihl " + std::to_string(ihl));
    runs += 2;
  }
  for (uint8_t version : {0, 5, 6, 15}) {
    Frame f = good;
    f[kEthLen] = static_cast<uint8_t>(version << 4 | 5);
    fix_csum(f);
    expect_unchanged_both(f, "version " + std::to_string(version));
    runs += 2;
  }
  const uint16_t frame_ip_len = static_cast<uint16_t>(good.size() - kEthLen);
  for (uint16_t tot : {uint16_t(frame_ip_len + 1), uint16_t(1500), uint16_t(0xffff), uint16_t(19), uint16_t(0)}) {
    Frame f = good;
    f[kEthLen + 2] = static_cast<uint8_t>(tot >> 8);
    f[kEthLen + 3] = static_cast<uint8_t>(tot);
    fix_csum(f);
    expect_unchanged_both(f, "tot_len " + std::to_string(tot));
    runs += 2;
  }
  // IHL pointing past the end of a short frame (options claimed, not there).
  {
    Frame f(good.begin(), good.begin() + kEthLen + 24);
    f[kEthLen] = 0x4f;
    f[kEthLen + 2] = 0, f[kEthLen + 3] = 24;
    expect_unchanged_both(f, "ihl 15 in a 24-byte packet");
    runs += 2;
  }
  expect_counters(d, {{KPX_CTR_PASS_MALFORMED, runs}});
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Datapath, IpOptionsAreSkippedAndTranslated) {
  tcp_service();
  udp_service();
  uint16_t sport = 41000;
  for (uint8_t opts : {uint8_t{4}, uint8_t{8}, uint8_t{40}}) {
    for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
      SCOPED_TRACE("options " + std::to_string(opts) + " proto " + std::to_string(proto));
      const uint16_t vport = proto == IPPROTO_TCP ? 80 : 53, bport = proto == IPPROTO_TCP ? 8080 : 5353;
      FrameSpec q = spec(proto, kClient, ++sport, kVip, vport, kSyn);
      q.ip_options_len = opts;
      const uint32_t be = expect_dnat(q, {kBe1, kBe2}, bport);
      ASSERT_NE(be, 0u);
      const std::string be_s = ip_of(be);
      FrameSpec a = spec(proto, be_s.c_str(), bport, kClient, sport, kSynAck);
      a.ip_options_len = opts;
      expect_revnat(a, kVip, vport);
      auto fwd = ct(kClient, sport, kVip, vport, proto, KPX_CT_FORWARD);
      ASSERT_TRUE(fwd.has_value());
      EXPECT_EQ(fwd->nat_addr, be);
    }
  }
}

TEST_F(Datapath, FirstFragmentOfServiceTrafficIsDropped) {
  tcp_service();
  udp_service();
  auto d = delta();
  for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
    FrameSpec s = spec(proto, kClient, 42000, kVip, proto == IPPROTO_TCP ? 80 : 53, kSyn);
    s.frag_off = 0x2000;  // MF, offset 0
    auto r = from_pod(build_frame(s));
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  }
  expect_counters(d, {{KPX_CTR_DROP_FRAGMENT, 2}});
  EXPECT_EQ(ct_size(), 0u);

  // A fragment of a tracked flow (established path) and of its reply too.
  const uint32_t be = expect_dnat(spec(IPPROTO_UDP, kClient, 42001, kVip, 53), {kBe1, kBe2}, 5353);
  ASSERT_NE(be, 0u);
  const std::string be_s = ip_of(be);
  auto d2 = delta();
  FrameSpec f = spec(IPPROTO_UDP, kClient, 42001, kVip, 53);
  f.frag_off = 0x2000;
  EXPECT_EQ(from_pod(build_frame(f)).retval, static_cast<uint32_t>(TC_ACT_SHOT));
  FrameSpec rf = spec(IPPROTO_UDP, be_s.c_str(), 5353, kClient, 42001);
  rf.frag_off = 0x2000;
  EXPECT_EQ(to_pod(build_frame(rf)).retval, static_cast<uint32_t>(TC_ACT_SHOT));
  expect_counters(d2, {{KPX_CTR_DROP_FRAGMENT, 2}});

  // A first fragment that is not Service traffic is none of kpx's business.
  FrameSpec other = spec(IPPROTO_UDP, kClient, 42002, "10.96.0.99", 53);
  other.frag_off = 0x2000;
  expect_unchanged_both(build_frame(other), "fragment to a non-VIP");
}

TEST_F(Datapath, NonFirstFragmentsPassUnchanged) {
  tcp_service();
  udp_service();
  auto d = delta();
  uint64_t runs = 0;
  for (uint16_t frag_off : {uint16_t{0x0005}, uint16_t{0x2005}, uint16_t{0x1fff}}) {
    for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
      FrameSpec s = spec(proto, kClient, 42000, kVip, proto == IPPROTO_TCP ? 80 : 53, kSyn);
      s.frag_off = frag_off;
      expect_unchanged_both(build_frame(s), "frag_off " + std::to_string(frag_off));
      runs += 2;
    }
  }
  expect_counters(d, {{KPX_CTR_PASS, runs}});
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Datapath, DontFragmentIsNotAFragment) {
  tcp_service();
  FrameSpec s = spec(IPPROTO_TCP, kClient, 42003, kVip, 80, kSyn);
  s.frag_off = 0x4000;  // DF
  ASSERT_NE(expect_dnat(s, {kBe1, kBe2}, 8080), 0u);
}

// ---- 7. no backends -----------------------------------------------------------------

TEST_F(Datapath, ServiceWithoutBackendsDrops) {
  set_service(kVip, 80, Proto::kTcp, {});
  set_service(kVip, 53, Proto::kUdp, {});
  auto d = delta();
  for (const Frame& f : {tcp(kClient, 43000, kVip, 80, kSyn), tcp(kClient, 43000, kVip, 80, kAck),
                         udp(kClient, 43000, kVip, 53)}) {
    auto r = from_pod(f);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  }
  expect_counters(d, {{KPX_CTR_DROP_NO_BACKEND, 3}});
  EXPECT_EQ(ct_size(), 0u);
  // Backends appear: the next packet is translated.
  tcp_service();
  ASSERT_NE(expect_dnat(spec(IPPROTO_TCP, kClient, 43000, kVip, 80, kSyn), {kBe1, kBe2}, 8080), 0u);
}

// ---- 8. hairpin -----------------------------------------------------------------------

TEST_F(Datapath, HairpinWithoutHairpinAddressDrops) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  auto d = delta();
  auto r = from_pod(tcp(kBe1, 44000, kVip, 80, kSyn));
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  expect_counters(d, {{KPX_CTR_DROP_NO_HAIRPIN_ADDR, 1}});
  EXPECT_EQ(ct_size(), 0u);
}

TEST_F(Datapath, HairpinIsSourceNatedAndBounced) {
  const uint32_t svc_id = set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  constexpr const char* kHairpin = "10.244.1.1";
  set_node_addresses(kHairpin);

  auto d = delta();
  const FrameSpec syn = spec(IPPROTO_TCP, kBe1, 44001, kVip, 80, kSyn);
  const Frame in = build_frame(syn);
  auto r = from_pod(in);
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
  auto p = parse_frame(r.out);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->saddr_be, ipv4(kHairpin));
  EXPECT_EQ(p->sport, 44001);
  EXPECT_EQ(p->daddr_be, ipv4(kBe1));
  EXPECT_EQ(p->dport, 8080);
  EXPECT_TRUE(p->ip_csum_ok);
  EXPECT_TRUE(p->l4_csum_ok);
  FrameSpec out_spec = syn;
  out_spec.saddr_be = ipv4(kHairpin);
  out_spec.daddr_be = ipv4(kBe1);
  out_spec.dport = 8080;
  EXPECT_EQ(r.out, expected_translation(out_spec, r.out, /*swap_macs=*/true));
  ASSERT_GE(r.out.size(), 12u);
  EXPECT_TRUE(std::equal(r.out.begin(), r.out.begin() + 6, in.begin() + 6));
  EXPECT_TRUE(std::equal(r.out.begin() + 6, r.out.begin() + 12, in.begin()));
  expect_counters(d, {{KPX_CTR_DNAT_NEW, 1}, {KPX_CTR_HAIRPIN, 1}});

  auto fwd = ct(kBe1, 44001, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_TRUE(fwd->flags & KPX_CT_F_HAIRPIN);
  EXPECT_TRUE(fwd->flags & KPX_CT_F_SYN);
  EXPECT_EQ(fwd->snat_addr, ipv4(kHairpin));
  EXPECT_EQ(fwd->nat_addr, ipv4(kBe1));
  EXPECT_EQ(fwd->nat_port, htons(8080));
  EXPECT_EQ(fwd->svc_id, svc_id);
  auto rep = ct(kBe1, 8080, kHairpin, 44001, IPPROTO_TCP, KPX_CT_REPLY);
  ASSERT_TRUE(rep.has_value()) << "REPLY entry keyed backend -> hairpin address";
  EXPECT_TRUE(rep->flags & KPX_CT_F_HAIRPIN);
  EXPECT_EQ(rep->nat_addr, ipv4(kVip));
  EXPECT_EQ(rep->nat_port, htons(80));
  EXPECT_EQ(rep->snat_addr, ipv4(kBe1));
  EXPECT_EQ(ct_size(), 2u);

  // The pod answers the hairpin address; kpx_from_pod restores VIP:80 as
  // source and the pod as destination, and bounces it back.
  auto d2 = delta();
  const FrameSpec reply = spec(IPPROTO_TCP, kBe1, 8080, kHairpin, 44001, kSynAck);
  const Frame rin = build_frame(reply);
  auto rr = from_pod(rin);
  ASSERT_EQ(rr.err, 0);
  EXPECT_EQ(rr.retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
  auto rp = parse_frame(rr.out);
  ASSERT_TRUE(rp.has_value());
  EXPECT_EQ(rp->saddr_be, ipv4(kVip));
  EXPECT_EQ(rp->sport, 80);
  EXPECT_EQ(rp->daddr_be, ipv4(kBe1));
  EXPECT_EQ(rp->dport, 44001);
  EXPECT_TRUE(rp->ip_csum_ok);
  EXPECT_TRUE(rp->l4_csum_ok);
  FrameSpec rout = reply;
  rout.saddr_be = ipv4(kVip);
  rout.sport = 80;
  rout.daddr_be = ipv4(kBe1);
  EXPECT_EQ(rr.out, expected_translation(rout, rr.out, /*swap_macs=*/true));
  expect_counters(d2, {{KPX_CTR_REVNAT, 1}});

  // The rest of the flow takes the established path, still source NATed.
  auto d3 = delta();
  FrameSpec ack = syn;
  ack.tcp_flags = kAck;
  FrameSpec aout = out_spec;
  aout.tcp_flags = kAck;
  for (int i = 0; i < 5; ++i) {
    auto ar = from_pod(build_frame(ack));
    ASSERT_EQ(ar.err, 0);
    EXPECT_EQ(ar.retval, static_cast<uint32_t>(TC_ACT_REDIRECT)) << "segment " << i;
    EXPECT_EQ(ar.out, expected_translation(aout, ar.out, true)) << "segment " << i;
    ASSERT_TRUE(parse_frame(ar.out).has_value());
    EXPECT_TRUE(parse_frame(ar.out)->l4_csum_ok);
    EXPECT_TRUE(parse_frame(ar.out)->ip_csum_ok);
  }
  expect_counters(d3, {{KPX_CTR_DNAT_ESTABLISHED, 5}});
  // ... and the pod's later replies still come back from the VIP.
  FrameSpec reply_ack = reply;
  reply_ack.tcp_flags = kAck;
  FrameSpec rout_ack = rout;
  rout_ack.tcp_flags = kAck;
  for (int i = 0; i < 3; ++i) {
    auto rr2 = from_pod(build_frame(reply_ack));
    ASSERT_EQ(rr2.err, 0);
    EXPECT_EQ(rr2.retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
    EXPECT_EQ(rr2.out, expected_translation(rout_ack, rr2.out, true)) << "reply " << i;
  }

  // Another client of the same Service is not source NATed.
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 44002, kVip, 80, kSyn), {kBe1}, 8080), ipv4(kBe1));
  EXPECT_EQ(ct(kClient, 44002, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD)->snat_addr, 0u);
}

// ---- 9. backend spread ---------------------------------------------------------------

TEST_F(Datapath, NewFlowsSpreadOverAllBackends) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}, {kBe2, 8080}, {kBe3, 8080}});
  constexpr int kFlows = 3000;
  std::map<uint32_t, int> per_backend;
  for (int i = 0; i < kFlows; ++i) {
    auto r = from_pod(tcp(kClient, static_cast<uint16_t>(10000 + i), kVip, 80, kSyn));
    ASSERT_EQ(r.err, 0);
    ASSERT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    auto p = parse_frame(r.out);
    ASSERT_TRUE(p.has_value());
    ASSERT_EQ(p->dport, 8080);
    ASSERT_TRUE(p->ip_csum_ok && p->l4_csum_ok);
    per_backend[p->daddr_be]++;
  }
  EXPECT_EQ(per_backend.size(), 3u);
  for (const char* b : {kBe1, kBe2, kBe3}) {
    EXPECT_GE(per_backend[ipv4(b)], kFlows / 5) << b << " got too few of " << kFlows << " flows";
  }
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), static_cast<uint64_t>(kFlows));
  EXPECT_EQ(ct_size(), 2u * kFlows);
}

// ---- 10. TCP state and timeouts --------------------------------------------------------

TEST_F(Datapath, FinAndRstAreRecorded) {
  tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 45000, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45000, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45000, kVip, 80, kFinAck), {kBe1, kBe2}, 8080), be);
  auto fwd = ct(kClient, 45000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_EQ(fwd->flags, KPX_CT_F_SYN | KPX_CT_F_ESTABLISHED | KPX_CT_F_FIN);
  // The closing flow keeps its backend for its last ACK.
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45000, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);

  const uint32_t be2 = expect_dnat(spec(IPPROTO_TCP, kClient, 45001, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45001, kVip, 80, kRstAck), {kBe1, kBe2}, 8080), be2);
  auto rst = ct(kClient, 45001, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  ASSERT_TRUE(rst.has_value());
  EXPECT_TRUE(rst->flags & KPX_CT_F_RST);
}

TEST_F(Datapath, SynRetransmissionKeepsTheEntry) {
  tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 45002, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  const auto key = ct_key(kClient, 45002, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  auto v = maps->conntrack.lookup(key);
  ASSERT_TRUE(v.has_value());
  v->created_ns = 12345;  // a marker: kept if the entry is reused, replaced if re-created
  ct_write(key, *v);
  auto d = delta();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45002, kVip, 80, kSyn), {kBe1, kBe2}, 8080), be);
  expect_counters(d, {{KPX_CTR_DNAT_ESTABLISHED, 5}});
  EXPECT_EQ(maps->conntrack.lookup(key)->created_ns, 12345u);
  EXPECT_EQ(maps->conntrack.lookup(key)->flags, KPX_CT_F_SYN);
}

TEST_F(Datapath, SynOnAnEstablishedTupleMakesANewFlow) {
  const uint32_t svc_id = tcp_service();
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 45003, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45003, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
  const auto key = ct_key(kClient, 45003, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  auto v = maps->conntrack.lookup(key);
  ASSERT_TRUE(v.has_value());
  ASSERT_EQ(v->flags, KPX_CT_F_SYN | KPX_CT_F_ESTABLISHED);
  v->created_ns = 12345;
  ct_write(key, *v);

  auto d = delta();
  const uint64_t before = dataplane::monotonic_coarse_ns();
  const uint32_t nbe = expect_dnat(spec(IPPROTO_TCP, kClient, 45003, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(nbe, 0u);
  expect_counters(d, {{KPX_CTR_DNAT_NEW, 1}});
  auto nv = maps->conntrack.lookup(key);
  ASSERT_TRUE(nv.has_value());
  EXPECT_EQ(nv->flags, KPX_CT_F_SYN) << "re-created entry starts over";
  EXPECT_NE(nv->created_ns, 12345u);
  EXPECT_GE(nv->created_ns, before);
  EXPECT_EQ(nv->nat_addr, nbe);
  EXPECT_EQ(nv->svc_id, svc_id);
  const std::string nbe_s = ip_of(nbe);
  auto rep = ct(nbe_s.c_str(), 8080, kClient, 45003, IPPROTO_TCP, KPX_CT_REPLY);
  ASSERT_TRUE(rep.has_value());
  EXPECT_EQ(rep->nat_addr, ipv4(kVip));
  // The same holds after a FIN: a SYN on a closing tuple is a new connection.
  ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 45003, kVip, 80, kFinAck), {kBe1, kBe2}, 8080), nbe);
  auto d2 = delta();
  expect_dnat(spec(IPPROTO_TCP, kClient, 45003, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  expect_counters(d2, {{KPX_CTR_DNAT_NEW, 1}});
  EXPECT_EQ(maps->conntrack.lookup(key)->flags, KPX_CT_F_SYN);
}

// A new connection on a reused tuple may land on another backend; once it
// has, every later segment follows the new entry, never a copy of the old
// one (a cached translation included).
TEST_F(Datapath, ReusedTupleFollowsItsNewBackend) {
  tcp_service();
  const uint16_t sport = 45004;
  uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  ASSERT_NE(be, 0u);
  bool moved = false;
  for (int round = 0; round < 40 && !moved; ++round) {
    // The connection runs: some segments without SYN/FIN/RST.
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
    // A new connection reuses the tuple.
    const uint32_t nbe = expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
    ASSERT_NE(nbe, 0u);
    moved = nbe != be;
    be = nbe;
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kAck), {kBe1, kBe2}, 8080), be)
          << "round " << round << ": a segment of the new connection went to the old backend";
  }
  EXPECT_TRUE(moved) << "40 new connections on one tuple all picked the same of two backends";
  // The reply direction follows too.
  const std::string be_s = ip_of(be);
  expect_revnat(spec(IPPROTO_TCP, be_s.c_str(), 8080, kClient, sport, kAck), kVip, 80);
}

// Entries older than their state's timeout are treated as absent. Timeouts
// are set short through the config map, and last_seen_ns moved back.
TEST_F(Datapath, IdleEntriesExpire) {
  const uint64_t now0 = dataplane::monotonic_coarse_ns();
  ASSERT_GT(now0, 120 * kSec) << "the test moves time stamps 120 s back";
  tcp_service();
  udp_service();
  kpx_config cfg{};
  cfg.tcp_established_timeout_s = 5;
  cfg.udp_timeout_s = 5;
  set_config(cfg);

  struct Case {
    uint8_t proto;
    uint16_t vport, bport;
    uint16_t expect_flags;  // of the re-created entry, after an ACK / a datagram
  };
  for (const Case& c : {Case{IPPROTO_TCP, 80, 8080, KPX_CT_F_ESTABLISHED}, Case{IPPROTO_UDP, 53, 5353, 0}}) {
    SCOPED_TRACE(c.proto == IPPROTO_TCP ? "tcp" : "udp");
    const FrameSpec first = spec(c.proto, kClient, 46000, kVip, c.vport, kSyn);
    const FrameSpec next = spec(c.proto, kClient, 46000, kVip, c.vport, kAck);
    const uint32_t be = expect_dnat(first, {kBe1, kBe2}, c.bport);
    ASSERT_EQ(expect_dnat(next, {kBe1, kBe2}, c.bport), be);
    const auto key = ct_key(kClient, 46000, kVip, c.vport, c.proto, KPX_CT_FORWARD);

    // Idle 2 s of 5: still the same flow, last_seen refreshed.
    auto v = maps->conntrack.lookup(key);
    ASSERT_TRUE(v.has_value());
    uint64_t now = dataplane::monotonic_coarse_ns();
    v->last_seen_ns = now - 2 * kSec;
    v->created_ns = 12345;
    ct_write(key, *v);
    auto d = delta();
    ASSERT_EQ(expect_dnat(next, {kBe1, kBe2}, c.bport), be);
    expect_counters(d, {{KPX_CTR_DNAT_ESTABLISHED, 1}});
    v = maps->conntrack.lookup(key);
    EXPECT_EQ(v->created_ns, 12345u);
    EXPECT_GE(v->last_seen_ns, now);

    // Idle 60 s of 5: expired, the next packet makes a new flow.
    now = dataplane::monotonic_coarse_ns();
    v->last_seen_ns = now - 60 * kSec;
    ct_write(key, *v);
    auto d2 = delta();
    ASSERT_NE(expect_dnat(next, {kBe1, kBe2}, c.bport), 0u);
    expect_counters(d2, {{KPX_CTR_DNAT_NEW, 1}});
    v = maps->conntrack.lookup(key);
    EXPECT_NE(v->created_ns, 12345u);
    EXPECT_GE(v->created_ns, now);
    EXPECT_EQ(v->last_seen_ns, v->created_ns);
    EXPECT_EQ(v->flags, c.expect_flags);
  }

  // Another CPU may stamp the entry between this CPU's clock read and its
  // read of last_seen_ns: a stamp slightly ahead of "now" is a flow seen
  // just now, never an expired one.
  {
    const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, 46003, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
    ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 46003, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
    const auto key = ct_key(kClient, 46003, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
    auto v = maps->conntrack.lookup(key);
    ASSERT_TRUE(v.has_value());
    v->last_seen_ns = dataplane::monotonic_coarse_ns() + kSec / 2;
    v->created_ns = 12345;
    ct_write(key, *v);
    auto d = delta();
    ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, 46003, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
    expect_counters(d, {{KPX_CTR_DNAT_ESTABLISHED, 1}});
    EXPECT_EQ(maps->conntrack.lookup(key)->created_ns, 12345u) << "entry re-created: stamp ahead of now taken as expiry";
  }

  // The defaults apply where config has 0: a TCP entry that saw a FIN
  // (120 s) idle for 200 s is gone, an established one (86400 s) is not.
  set_config(kpx_config{});
  for (uint16_t sport : {uint16_t{46001}, uint16_t{46002}}) {
    const bool closing = sport == 46001;
    const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
    ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, closing ? kFinAck : kAck), {kBe1, kBe2},
                          8080),
              be);
    const auto key = ct_key(kClient, sport, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
    auto v = maps->conntrack.lookup(key);
    ASSERT_TRUE(v.has_value());
    v->last_seen_ns = dataplane::monotonic_coarse_ns() - 200 * kSec;
    v->created_ns = 12345;
    ct_write(key, *v);
    auto d = delta();
    expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kAck), {kBe1, kBe2}, 8080);
    expect_counters(d, {{closing ? KPX_CTR_DNAT_NEW : KPX_CTR_DNAT_ESTABLISHED, 1}});
    EXPECT_EQ(maps->conntrack.lookup(key)->created_ns == 12345u, !closing);
  }
}

// Without any epoch bump, a change to a flow's conntrack entry takes effect
// within a second: a translation the datapath keeps elsewhere (the per-CPU
// conntrack cache) is re-checked against the entry at least once a second,
// so a cached flow cannot escape its timeout.
TEST_F(Datapath, ConntrackEntryChangesTakeEffectWithinASecond) {
  tcp_service();
  kpx_config cfg{};
  cfg.tcp_established_timeout_s = 5;
  set_config(cfg);
  const uint16_t sport = 46100;
  const uint32_t be = expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kSyn), {kBe1, kBe2}, 8080);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kAck), {kBe1, kBe2}, 8080), be);
  const auto key = ct_key(kClient, sport, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  auto v = maps->conntrack.lookup(key);
  ASSERT_TRUE(v.has_value());
  ASSERT_GT(dataplane::monotonic_coarse_ns(), 60 * kSec);
  v->last_seen_ns = dataplane::monotonic_coarse_ns() - 60 * kSec;
  v->created_ns = 12345;
  ASSERT_TRUE(maps->conntrack.update(key, *v).ok());  // deliberately no epoch bump
  age_reply_like(key, *v);
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  auto d = delta();
  ASSERT_NE(expect_dnat(spec(IPPROTO_TCP, kClient, sport, kVip, 80, kAck), {kBe1, kBe2}, 8080), 0u);
  expect_counters(d, {{KPX_CTR_DNAT_NEW, 1}});
  EXPECT_NE(maps->conntrack.lookup(key)->created_ns, 12345u) << "an expired flow kept its translation";
}

}  // namespace
}  // namespace kpx::bpftest

namespace kpx::bpftest {
namespace {

// A REPLY entry left behind by a flow that ended must not rewrite a later,
// direct connection between the same addresses and ports to the VIP.
TEST_F(Datapath, StaleReplyEntryDoesNotRewriteADirectConnection) {
  set_service("10.96.0.10", 80, net::Proto::kTcp, {{"10.244.2.3", 8080}});
  ASSERT_EQ(from_pod(tcp("10.244.1.2", 40000, "10.96.0.10", 80, 0x02)).retval, TC_ACT_OK);
  // The flow goes away (GC, LRU eviction): only its REPLY entry is left.
  ASSERT_TRUE(maps->conntrack.erase(ct_key("10.244.1.2", 40000, "10.96.0.10", 80, IPPROTO_TCP, KPX_CT_FORWARD)));
  ASSERT_TRUE(maps->bump_ct_epoch().ok());
  // The client now connects to the pod directly; the pod's SYN-ACK must
  // reach it unchanged, from the pod's own address.
  Frame synack = tcp("10.244.2.3", 8080, "10.244.1.2", 40000, 0x12);
  auto r = to_pod(synack);
  EXPECT_EQ(r.retval, TC_ACT_OK);
  EXPECT_EQ(r.out, synack);
}

// Two flows whose replies would share one tuple (the same client port to
// the same backend through two Services): the second gets another source
// port (as netfilter's NAT does), both connect, each keeps its replies.
TEST_F(Datapath, ReplyTupleClashGetsANewSourcePort) {
  set_service("10.96.0.10", 53, net::Proto::kUdp, {{"10.244.2.3", 53}});
  set_service("10.96.0.11", 53, net::Proto::kUdp, {{"10.244.2.3", 53}});
  ASSERT_EQ(from_pod(udp("10.244.1.2", 5000, "10.96.0.10", 53)).retval, TC_ACT_OK);
  auto r2 = from_pod(udp("10.244.1.2", 5000, "10.96.0.11", 53));
  EXPECT_EQ(r2.retval, TC_ACT_OK);
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_CLASH), 0u);
  EXPECT_EQ(counter(KPX_CTR_CT_PORT_REMAP), 1u);
  auto p2 = packet::parse_frame(r2.out);
  ASSERT_TRUE(p2);
  EXPECT_EQ(addr_str(p2->daddr_be), "10.244.2.3");
  EXPECT_EQ(addr_str(p2->saddr_be), "10.244.1.2");
  const uint16_t new_port = p2->sport;
  EXPECT_NE(new_port, 5000) << "the second flow must leave with another source port";
  EXPECT_TRUE(p2->l4_csum_ok && p2->ip_csum_ok);
  // The first flow's replies keep their VIP and port.
  auto r = to_pod(udp("10.244.2.3", 53, "10.244.1.2", 5000));
  auto p = packet::parse_frame(r.out);
  ASSERT_TRUE(p);
  EXPECT_EQ(addr_str(p->saddr_be), "10.96.0.10") << "the first flow's replies keep their VIP";
  EXPECT_EQ(p->dport, 5000);
  // The second's come to the new port and go back to the client's own.
  auto rr = to_pod(udp("10.244.2.3", 53, "10.244.1.2", new_port));
  auto pp = packet::parse_frame(rr.out);
  ASSERT_TRUE(pp);
  EXPECT_EQ(addr_str(pp->saddr_be), "10.96.0.11");
  EXPECT_EQ(pp->dport, 5000) << "the reply must reach the client's socket port";
  EXPECT_TRUE(pp->l4_csum_ok && pp->ip_csum_ok);
  // Retransmissions of either flow keep their translation.
  auto again = from_pod(udp("10.244.1.2", 5000, "10.96.0.11", 53));
  auto pa = packet::parse_frame(again.out);
  ASSERT_TRUE(pa);
  EXPECT_EQ(pa->sport, new_port);
  EXPECT_EQ(from_pod(udp("10.244.1.2", 5000, "10.96.0.10", 53)).retval, TC_ACT_OK);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 2u);
  EXPECT_EQ(ct_size(), 4u);
}

}  // namespace
}  // namespace kpx::bpftest

namespace kpx::bpftest {
namespace {

TEST_F(Datapath, ConntrackGcDeletesDeadFlowsAndOrphansOnly) {
  set_service("10.96.0.10", 80, net::Proto::kTcp, {{"10.244.2.3", 8080}});
  // A live flow and a dead one (idle for a day past its established timeout).
  ASSERT_EQ(from_pod(tcp("10.244.1.2", 40000, "10.96.0.10", 80, 0x02)).retval, TC_ACT_OK);
  ASSERT_EQ(from_pod(tcp("10.244.1.2", 40000, "10.96.0.10", 80, 0x10)).retval, TC_ACT_OK);
  ASSERT_EQ(from_pod(tcp("10.244.1.5", 41000, "10.96.0.10", 80, 0x02)).retval, TC_ACT_OK);
  ASSERT_EQ(ct_size(), 4u);
  const uint64_t now = dataplane::monotonic_coarse_ns();
  auto dead_key = ct_key("10.244.1.5", 41000, "10.96.0.10", 80, IPPROTO_TCP, KPX_CT_FORWARD);
  auto dead = *maps->conntrack.lookup(dead_key);
  dead.last_seen_ns = now - 200ULL * 1000000000ULL;  // SYN only: 120 s timeout
  ASSERT_TRUE(maps->conntrack.update(dead_key, dead).ok());
  age_reply_like(dead_key, dead);  // and no reply since
  // An orphan REPLY entry (its flow is gone).
  kpx_ct_key_v4 orphan = ct_key("10.244.2.3", 8080, "10.244.1.9", 43000, IPPROTO_TCP, KPX_CT_REPLY);
  kpx_ct_value_v4 ov{};
  ov.nat_addr = ipv4("10.96.0.10");
  ov.nat_port = htons(80);
  ASSERT_TRUE(maps->conntrack.update(orphan, sealed(orphan, ov)).ok());
  auto version = [&](const kpx_ct_key_v4& k) {
    return maps->ct_versions.lookup(kpx_ct_hash_v4(&k) & (KPX_CT_VER_SLOTS - 1)).value_or(0);
  };
  const uint32_t dead_ver = version(dead_key), orphan_ver = version(orphan);

  auto gc = *dataplane::collect_conntrack(*maps, pins.path(), now);
  EXPECT_EQ(gc.expired, 1u);
  EXPECT_EQ(gc.orphans, 1u);
  EXPECT_EQ(ct_size(), 2u) << "only the live flow's two entries remain";
  EXPECT_TRUE(ct("10.244.1.2", 40000, "10.96.0.10", 80, IPPROTO_TCP, KPX_CT_FORWARD).has_value());
  EXPECT_NE(version(dead_key), dead_ver) << "deleting an entry must void its per-CPU cache slots";
  EXPECT_NE(version(orphan), orphan_ver);
  // Nothing more to do the second time.
  gc = *dataplane::collect_conntrack(*maps, pins.path(), now);
  EXPECT_EQ(gc.expired + gc.orphans, 0u);
}

}  // namespace
}  // namespace kpx::bpftest

namespace kpx::bpftest {
namespace {

// Traffic in either direction keeps a flow: the server's answers stamp the
// flow's FORWARD entry (once a second), so a UDP client silent for longer
// than the timeout while the server kept answering keeps its backend.
TEST_F(Datapath, RepliesKeepAFlowAlive) {
  set_service("10.96.0.10", 53, net::Proto::kUdp, {{"10.244.2.3", 53}, {"10.244.2.4", 53}});
  ASSERT_EQ(from_pod(udp("10.244.1.2", 5300, "10.96.0.10", 53)).retval, TC_ACT_OK);
  const auto fk = ct_key("10.244.1.2", 5300, "10.96.0.10", 53, IPPROTO_UDP, KPX_CT_FORWARD);
  auto fv = *maps->conntrack.lookup(fk);
  const uint64_t now = dataplane::monotonic_coarse_ns();
  // The client has been silent for 25 s of the 30 s timeout.
  fv.last_seen_ns = now - 25ULL * 1000000000ULL;
  fv.created_ns = 777;
  ct_write(fk, fv);
  // The server answers: that stamps the flow.
  const std::string be = addr_str(fv.nat_addr);
  ASSERT_EQ(to_pod(udp(be.c_str(), 53, "10.244.1.2", 5300)).retval, TC_ACT_OK);
  const auto stamped = maps->conntrack.lookup(fk);
  ASSERT_TRUE(stamped.has_value());
  EXPECT_GE(stamped->last_seen_ns, now) << "a reply must keep its flow alive";
  // 25 s later than the client's last datagram plus more: still the same flow.
  const uint64_t new_flows = counter(KPX_CTR_DNAT_NEW);
  ASSERT_EQ(from_pod(udp("10.244.1.2", 5300, "10.96.0.10", 53)).retval, TC_ACT_OK);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), new_flows);
  EXPECT_EQ(maps->conntrack.lookup(fk)->created_ns, 777u);
  // And the GC agrees, even 20 s from now (45 s after the client spoke).
  auto gc = dataplane::collect_conntrack(*maps, pins.path(), now + 20ULL * 1000000000ULL);
  ASSERT_TRUE(gc.ok()) << gc.error().message;
  EXPECT_EQ(gc->expired, 0u);
  EXPECT_EQ(ct_size(), 2u);
}

}  // namespace
}  // namespace kpx::bpftest
