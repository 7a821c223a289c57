// ServiceWriter against real pinned maps: the slot-range flip, backend ids
// and their collection, remove(), list(), and the UDP conntrack flush, with
// conntrack entries made by the real datapath (BPF_PROG_TEST_RUN).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "datapath_fixture.h"

namespace kpx::bpftest {
namespace {

using net::BackendAddr;
using net::Proto;
using net::ServiceAddr;

constexpr const char* kVip = "10.96.0.10";
constexpr const char* kClient = "10.244.3.5";
constexpr const char* kA = "10.244.1.2";
constexpr const char* kB = "10.244.2.3";
constexpr const char* kC = "10.244.2.4";

class ServiceWriterTest : public DatapathTest {
 protected:
  static ServiceAddr svc(const char* vip, uint16_t port, Proto p) { return {ipv4(vip), port, p}; }
  static BackendAddr be(const char* a, uint16_t port) { return {ipv4(a), port}; }

  // The slots of kpx_svc_be that hold a backend id (an ARRAY: a free slot is 0).
  std::set<uint32_t> used_slots() const {
    std::set<uint32_t> out;
    maps->service_slots.scan([&](const uint32_t& slot, const uint32_t& id) {
      if (id) out.insert(slot);
    });
    return out;
  }
  // The slot range a Service's entry points at.
  std::set<uint32_t> range_of(const ServiceAddr& s) const {
    std::set<uint32_t> out;
    auto v = maps->services.lookup(dataplane::service_key(s));
    if (v)
      for (uint32_t i = 0; i < v->backend_count; ++i) out.insert(v->slot_base + i);
    return out;
  }
  // backend address -> id, over the whole backends map (an ARRAY: a free
  // id's value is zeroed).
  std::map<BackendAddr, uint32_t> backend_ids() const {
    std::map<BackendAddr, uint32_t> out;
    maps->backends.scan([&](const uint32_t& id, const kpx_backend_value_v4& v) {
      if (v.addr) out[{v.addr, ntohs(v.port)}] = id;
    });
    return out;
  }
  // The backends the Service's slots point at, in slot order.
  std::vector<BackendAddr> live_backends(const ServiceAddr& s) const {
    std::vector<BackendAddr> out;
    auto v = maps->services.lookup(dataplane::service_key(s));
    if (!v) return out;
    const kpx_service_key_v4 k = dataplane::service_key(s);
    EXPECT_EQ(v->check, kpx_service_check(&k, &*v)) << "the Service entry's check word must match";
    for (uint32_t i = 0; i < v->backend_count; ++i) {
      auto id = maps->service_slots.lookup(v->slot_base + i);
      EXPECT_TRUE(id.has_value() && *id != 0) << "slot " << v->slot_base + i << " empty";
      if (!id || !*id) continue;
      auto b = maps->backends.lookup(*id);
      EXPECT_TRUE(b.has_value() && b->addr != 0) << "backend id " << *id << " empty";
      if (b && b->addr) out.push_back({b->addr, ntohs(b->port)});
    }
    return out;
  }

  // A packet from kClient:sport to vip:vport through the datapath (a SYN
  // for TCP unless told otherwise); returns the backend address it was sent
  // to (0 if not translated).
  uint32_t new_flow(uint8_t proto, uint16_t sport, uint16_t vport, uint8_t tcp_flags = 0x02,
                    const char* vip = kVip) {
    auto r = from_pod(packet::build_frame(spec(proto, kClient, sport, vip, vport, tcp_flags)));
    EXPECT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    auto p = packet::parse_frame(r.out);
    if (!p || p->daddr_be == ipv4(kVip)) return 0;
    return p->daddr_be;
  }
  // The same from a backend's side: a reply from be_addr:be_port to the
  // client's port; returns the source it was rewritten to (as "ip:port",
  // "" if the frame passed untouched).
  std::string reply_from(const char* be_addr, uint16_t be_port, uint8_t proto, uint16_t client_port) {
    auto r = to_pod(packet::build_frame(spec(proto, be_addr, be_port, kClient, client_port, 0x10)));
    EXPECT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    auto p = packet::parse_frame(r.out);
    if (!p || p->saddr_be == ipv4(be_addr)) return "";
    return addr_str(p->saddr_be) + ":" + std::to_string(p->sport);
  }
  // The flows' conntrack entries (FORWARD and REPLY) that involve backend `addr`.
  size_t ct_entries_with_backend(uint8_t proto, uint32_t addr) const {
    size_t n = 0;
    maps->conntrack.for_each([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
      if (k.proto != proto) return;
      if ((k.dir == KPX_CT_FORWARD && v.nat_addr == addr) || (k.dir == KPX_CT_REPLY && k.saddr == addr)) ++n;
    });
    return n;
  }
};

TEST_F(ServiceWriterTest, SetTwiceWritesANewSlotRangeAndFreesTheOld) {
  const ServiceAddr s = svc(kVip, 80, Proto::kTcp);
  ASSERT_TRUE(writer->set(s, {be(kA, 8080), be(kB, 8080)}).ok());
  auto v1 = maps->services.lookup(dataplane::service_key(s));
  ASSERT_TRUE(v1.has_value());
  EXPECT_NE(v1->svc_id, 0u);
  EXPECT_EQ(v1->backend_count, 2u);
  const uint32_t id = v1->svc_id;
  const auto range1 = range_of(s);
  EXPECT_EQ(used_slots(), range1);
  auto ids1 = backend_ids();
  ASSERT_EQ(ids1.size(), 2u);
  ASSERT_TRUE(ids1.count(be(kA, 8080)) && ids1.count(be(kB, 8080)));
  EXPECT_EQ(live_backends(s), (std::vector<BackendAddr>{be(kA, 8080), be(kB, 8080)}));

  ASSERT_TRUE(writer->set(s, {be(kB, 8080), be(kC, 8080)}).ok());
  auto v2 = maps->services.lookup(dataplane::service_key(s));
  ASSERT_TRUE(v2.has_value());
  EXPECT_EQ(v2->svc_id, id) << "svc_id must survive a backend change";
  EXPECT_EQ(v2->backend_count, 2u);
  const auto range2 = range_of(s);
  for (uint32_t slot : range2)
    EXPECT_FALSE(range1.count(slot)) << "the new set must be written to slots no reader of the old entry uses";
  EXPECT_EQ(used_slots(), range2) << "the old range must be zeroed";
  auto ids2 = backend_ids();
  EXPECT_EQ(ids2.size(), 2u);
  EXPECT_FALSE(ids2.count(be(kA, 8080))) << "a backend no Service uses must be zeroed";
  ASSERT_TRUE(ids2.count(be(kB, 8080)) && ids2.count(be(kC, 8080)));
  EXPECT_EQ(ids2[be(kB, 8080)], ids1[be(kB, 8080)]) << "a kept backend keeps its id";
  EXPECT_EQ(live_backends(s), (std::vector<BackendAddr>{be(kB, 8080), be(kC, 8080)}));

  // New flows go to the new set only.
  std::set<uint32_t> seen;
  for (uint16_t p = 0; p < 60; ++p) seen.insert(new_flow(IPPROTO_TCP, static_cast<uint16_t>(20000 + p), 80));
  EXPECT_EQ(seen, (std::set<uint32_t>{ipv4(kB), ipv4(kC)}));

  // A third set, with a changed port of a kept address and a duplicate.
  ASSERT_TRUE(writer->set(s, {be(kC, 9090), be(kC, 9090), be(kC, 8080)}).ok());
  auto v3 = maps->services.lookup(dataplane::service_key(s));
  ASSERT_TRUE(v3.has_value());
  EXPECT_EQ(v3->svc_id, id);
  EXPECT_EQ(v3->backend_count, 2u);
  EXPECT_EQ(used_slots(), range_of(s));
  auto ids3 = backend_ids();
  EXPECT_EQ(ids3.size(), 2u);
  EXPECT_EQ(ids3[be(kC, 8080)], ids2[be(kC, 8080)]);
  EXPECT_EQ(live_backends(s), (std::vector<BackendAddr>{be(kC, 8080), be(kC, 9090)}));

  // An empty set keeps the Service, with no slots.
  ASSERT_TRUE(writer->set(s, {}).ok());
  auto v4 = maps->services.lookup(dataplane::service_key(s));
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->svc_id, id);
  EXPECT_EQ(v4->backend_count, 0u);
  EXPECT_TRUE(used_slots().empty());
  EXPECT_TRUE(backend_ids().empty());
}

TEST_F(ServiceWriterTest, ServicesShareBackendsAndGetTheirOwnIds) {
  const ServiceAddr s1 = svc(kVip, 80, Proto::kTcp), s2 = svc(kVip, 53, Proto::kUdp),
                    s3 = svc("10.96.0.11", 80, Proto::kTcp);
  ASSERT_TRUE(writer->set(s1, {be(kA, 8080), be(kB, 8080)}).ok());
  ASSERT_TRUE(writer->set(s2, {be(kA, 5353)}).ok());
  ASSERT_TRUE(writer->set(s3, {be(kB, 8080)}).ok());
  const uint32_t id1 = maps->services.lookup(dataplane::service_key(s1))->svc_id;
  const uint32_t id2 = maps->services.lookup(dataplane::service_key(s2))->svc_id;
  const uint32_t id3 = maps->services.lookup(dataplane::service_key(s3))->svc_id;
  EXPECT_EQ((std::set<uint32_t>{id1, id2, id3}).size(), 3u);
  // kB:8080 is one backend entry shared by s1 and s3.
  EXPECT_EQ(backend_ids().size(), 3u);
  const uint32_t shared = backend_ids()[be(kB, 8080)];
  const auto v3 = maps->services.lookup(dataplane::service_key(s3));
  ASSERT_TRUE(v3.has_value());
  EXPECT_EQ(*maps->service_slots.lookup(v3->slot_base), shared);

  // s1 drops kB: the entry stays for s3.
  ASSERT_TRUE(writer->set(s1, {be(kA, 8080)}).ok());
  ASSERT_TRUE(backend_ids().count(be(kB, 8080)));
  EXPECT_EQ(live_backends(s3), (std::vector<BackendAddr>{be(kB, 8080)}));
  // s3 goes: now kB is unused and removed; s1 and s2 are untouched.
  ASSERT_TRUE(writer->remove(s3).ok());
  EXPECT_FALSE(backend_ids().count(be(kB, 8080)));
  EXPECT_EQ(live_backends(s1), (std::vector<BackendAddr>{be(kA, 8080)}));
  EXPECT_EQ(live_backends(s2), (std::vector<BackendAddr>{be(kA, 5353)}));
  EXPECT_EQ(maps->services.lookup(dataplane::service_key(s1))->svc_id, id1);
  EXPECT_EQ(maps->services.lookup(dataplane::service_key(s2))->svc_id, id2);
}

TEST_F(ServiceWriterTest, RemoveDeletesTheServiceAndFreesItsSlotsAndUnusedBackends) {
  const ServiceAddr s = svc(kVip, 80, Proto::kTcp);
  ASSERT_TRUE(writer->set(s, {be(kA, 8080), be(kB, 8080)}).ok());
  ASSERT_TRUE(writer->set(s, {be(kA, 8080), be(kB, 8080), be(kC, 8080)}).ok());  // a second range

  auto r = writer->remove(s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(*r);
  EXPECT_FALSE(maps->services.lookup(dataplane::service_key(s)).has_value());
  EXPECT_TRUE(maps->services.keys().empty());
  EXPECT_TRUE(used_slots().empty());
  EXPECT_TRUE(backend_ids().empty());
  EXPECT_TRUE(writer->list().empty());

  auto again = writer->remove(s);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again) << "removing a missing Service reports false";

  // The datapath no longer knows the VIP.
  const Frame f = tcp(kClient, 20000, kVip, 80, 0x02);
  auto rr = from_pod(f);
  ASSERT_EQ(rr.err, 0);
  EXPECT_EQ(rr.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(rr.out, f);
}

TEST_F(ServiceWriterTest, ListReturnsWhatWasSet) {
  EXPECT_TRUE(writer->list().empty());
  const ServiceAddr s1 = svc(kVip, 80, Proto::kTcp), s2 = svc(kVip, 53, Proto::kUdp),
                    s3 = svc("10.96.0.11", 443, Proto::kTcp);
  ASSERT_TRUE(writer->set(s1, {be(kB, 8080), be(kA, 8080), be(kB, 8080)}).ok());
  ASSERT_TRUE(writer->set(s2, {be(kA, 5353)}).ok());
  ASSERT_TRUE(writer->set(s3, {}).ok());
  ASSERT_TRUE(writer->set(s2, {be(kC, 5353), be(kA, 5353)}).ok());

  const auto l = writer->list();
  ASSERT_EQ(l.size(), 3u);
  std::map<ServiceAddr, dataplane::ServiceEntry> by_svc;
  for (const auto& e : l) by_svc[e.svc] = e;
  ASSERT_EQ(by_svc.size(), 3u);
  ASSERT_TRUE(by_svc.count(s1) && by_svc.count(s2) && by_svc.count(s3));
  EXPECT_EQ(by_svc[s1].backends, (std::vector<BackendAddr>{be(kA, 8080), be(kB, 8080)}));
  EXPECT_EQ(by_svc[s2].backends, (std::vector<BackendAddr>{be(kA, 5353), be(kC, 5353)}));
  EXPECT_TRUE(by_svc[s3].backends.empty());
  for (const auto& e : l) {
    auto v = maps->services.lookup(dataplane::service_key(e.svc));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(e.svc_id, v->svc_id);
    EXPECT_EQ(e.slot_base, v->slot_base);
  }
  EXPECT_EQ((std::set<uint32_t>{by_svc[s1].svc_id, by_svc[s2].svc_id, by_svc[s3].svc_id}).size(), 3u);
  EXPECT_TRUE(std::is_sorted(l.begin(), l.end(), [](const auto& a, const auto& b) { return a.svc < b.svc; }));
}

// kube-proxy semantics: when a backend leaves a Service, UDP flows pinned to
// it are flushed (the next datagram picks a live backend), TCP flows keep it.
TEST_F(ServiceWriterTest, UdpFlowsToALeavingBackendAreFlushedTcpFlowsKept) {
  const ServiceAddr su = svc(kVip, 53, Proto::kUdp), st = svc(kVip, 80, Proto::kTcp);
  ASSERT_TRUE(writer->set(su, {be(kA, 5353), be(kB, 5353)}).ok());
  ASSERT_TRUE(writer->set(st, {be(kA, 8080), be(kB, 8080)}).ok());

  // Flows until both protocols have flows on both backends.
  std::map<uint32_t, uint16_t> udp_flow, tcp_flow;  // backend -> a client port using it
  for (uint16_t p = 30000; p < 30200 && (udp_flow.size() < 2 || tcp_flow.size() < 2); ++p) {
    udp_flow.emplace(new_flow(IPPROTO_UDP, p, 53), p);
    tcp_flow.emplace(new_flow(IPPROTO_TCP, p, 80), p);
  }
  ASSERT_EQ(udp_flow.size(), 2u);
  ASSERT_EQ(tcp_flow.size(), 2u);
  ASSERT_GT(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)), 0u);
  ASSERT_GT(ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)), 0u);
  const size_t udp_on_b = ct_entries_with_backend(IPPROTO_UDP, ipv4(kB));
  const size_t tcp_on_a = ct_entries_with_backend(IPPROTO_TCP, ipv4(kA));
  ASSERT_GT(udp_on_b, 0u);
  // The flows on kA carry on (established path, which may also cache the
  // translation per CPU).
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(new_flow(IPPROTO_UDP, udp_flow[ipv4(kA)], 53, 0x10), ipv4(kA));
    EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_flow[ipv4(kA)], 80, 0x10), ipv4(kA));
  }

  // kA leaves both Services.
  ASSERT_TRUE(writer->set(su, {be(kB, 5353)}).ok());
  ASSERT_TRUE(writer->set(st, {be(kB, 8080)}).ok());
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)), 0u) << "UDP flows to the leaving backend flushed";
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), udp_on_b) << "UDP flows to kept backends stay";
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)), tcp_on_a) << "TCP flows keep their backend";

  // The flushed UDP flow's next datagrams go to kB (no copy of the old
  // translation survives anywhere); the TCP flow stays on kA.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(new_flow(IPPROTO_UDP, udp_flow[ipv4(kA)], 53), ipv4(kB));
    EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_flow[ipv4(kA)], 80, 0x10), ipv4(kA));
  }

  // remove(): the UDP Service's flows all go, the TCP Service's stay.
  const size_t tcp_all = ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_TCP, ipv4(kB));
  ASSERT_TRUE(writer->remove(su).ok());
  ASSERT_TRUE(writer->remove(st).ok());
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), 0u);
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_TCP, ipv4(kB)),
            tcp_all);
}

// The flush only touches the Service that changed: another UDP Service with
// the same backend keeps its flows.
TEST_F(ServiceWriterTest, UdpFlushIsPerService) {
  const ServiceAddr s1 = svc(kVip, 53, Proto::kUdp), s2 = svc("10.96.0.11", 53, Proto::kUdp);
  ASSERT_TRUE(writer->set(s1, {be(kA, 5353)}).ok());
  ASSERT_TRUE(writer->set(s2, {be(kA, 5353)}).ok());
  for (int i = 0; i < 3; ++i) {  // new, then established (and cached)
    ASSERT_EQ(new_flow(IPPROTO_UDP, 31000, 53), ipv4(kA));
    ASSERT_EQ(new_flow(IPPROTO_UDP, 31001, 53, 0, "10.96.0.11"), ipv4(kA));
  }
  ASSERT_EQ(ct_size(), 4u);
  ASSERT_TRUE(writer->set(s1, {be(kB, 5353)}).ok());
  EXPECT_EQ(ct_size(), 2u);
  EXPECT_TRUE(ct(kClient, 31001, "10.96.0.11", 53, IPPROTO_UDP, KPX_CT_FORWARD).has_value());
  EXPECT_TRUE(ct(kA, 5353, kClient, 31001, IPPROTO_UDP, KPX_CT_REPLY).has_value());
  EXPECT_FALSE(ct(kClient, 31000, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD).has_value());
  EXPECT_FALSE(ct(kA, 5353, kClient, 31000, IPPROTO_UDP, KPX_CT_REPLY).has_value());
  // The flushed flow moves to kB, the other Service's flow stays on kA.
  EXPECT_EQ(new_flow(IPPROTO_UDP, 31000, 53), ipv4(kB));
  EXPECT_EQ(new_flow(IPPROTO_UDP, 31001, 53, 0, "10.96.0.11"), ipv4(kA));
}

// The same flows through one long-lived Dataplane, as the agent keeps it
// (what compute() gives beyond the map contents, the draining endpoints,
// lives in its memory only), with the flags compute() gives a Service's
// frontends: kube-proxy rejects traffic to a Service without endpoints.
class FlowFlushTest : public ServiceWriterTest {
 protected:
  void SetUp() override {
    ServiceWriterTest::SetUp();
    if (HasFatalFailure()) return;
    auto d = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(d.ok()) << d.error().message;
    dp.emplace(std::move(d).value());
  }
  void TearDown() override {
    dp.reset();
    ServiceWriterTest::TearDown();
  }

  static dataplane::FrontendKey key(const char* addr, uint16_t port, Proto proto,
                                    dataplane::Scope scope = dataplane::Scope::kClusterIP) {
    return {net::IpAddr::from_v4(ipv4(addr)), port, proto, scope};
  }
  static dataplane::Backend endpoint(const char* addr, uint16_t port, bool ready = true, bool serving = true,
                                     bool terminating = false) {
    dataplane::Backend b = dataplane::backend(be(addr, port));
    b.ready = ready;
    b.serving = serving;
    b.terminating = terminating;
    return b;
  }
  static dataplane::Frontend frontend(const std::string& service, std::vector<dataplane::Backend> cluster,
                                      std::vector<dataplane::Backend> draining = {}) {
    dataplane::Frontend fe;
    fe.service = service;
    fe.flags = dataplane::kRejectEmpty;
    fe.cluster = std::move(cluster);
    fe.draining = std::move(draining);
    return fe;
  }
  dataplane::ApplyStats change(dataplane::FrontendDelta delta) {
    auto r = dp->apply_delta(std::move(delta));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : dataplane::ApplyStats{};
  }
  dataplane::ApplyStats set(const dataplane::FrontendKey& k, dataplane::Frontend fe) {
    return change({{k, std::move(fe)}});
  }

  // Client ports whose new flows to vip:vport landed on each backend: new
  // flows from consecutive ports until every backend in `want` has one.
  std::map<uint32_t, uint16_t> flows_on(uint8_t proto, uint16_t vport, const std::set<uint32_t>& want,
                                        uint16_t first_port, const char* vip = kVip) {
    std::map<uint32_t, uint16_t> out;
    for (uint16_t p = first_port; p < first_port + 300 && out.size() < want.size(); ++p) {
      const uint32_t got = new_flow(proto, p, vport, 0x02, vip);
      EXPECT_TRUE(want.count(got)) << "a new flow went to " << addr_str(got);
      out.emplace(got, p);
    }
    EXPECT_EQ(out.size(), want.size()) << "not every backend got a flow";
    return out;
  }

  // TCP (vip:80, backends on 8080) and UDP (vip:53, on 5353) frontends of
  // one Service with these endpoints.
  dataplane::ApplyStats set_web(const std::vector<const char*>& addrs) {
    std::vector<dataplane::Backend> t, u;
    for (const char* a : addrs) {
      t.push_back(endpoint(a, 8080));
      u.push_back(endpoint(a, 5353));
    }
    return change({{key(kVip, 80, Proto::kTcp), frontend("default/web", t)},
                   {key(kVip, 53, Proto::kUdp), frontend("default/web", u)}});
  }

  // The datagram is refused as kube-proxy refuses it: an ICMP port
  // unreachable from the VIP, sent back where it came from.
  void expect_rejected(const Frame& f) {
    auto r = from_pod(f);
    ASSERT_EQ(r.err, 0);
    EXPECT_EQ(r.retval, 7u /* TC_ACT_REDIRECT */);
    auto e = packet::parse_icmp_error(r.out);
    ASSERT_TRUE(e.has_value()) << "not an ICMP error";
    EXPECT_EQ(e->type, 3u);
    EXPECT_EQ(e->code, 3u);
    EXPECT_EQ(addr_str(e->saddr_be), kVip);
    EXPECT_EQ(addr_str(e->daddr_be), kClient);
  }

  std::optional<dataplane::Dataplane> dp;
};

// A UDP Service scaled to zero: its flows go (they would otherwise keep a
// one-way client on a pod that is gone), and the flow's next datagram is
// refused like any datagram to a Service without endpoints, with no state
// left behind; TCP flows stay. Endpoints back: served at once.
TEST_F(FlowFlushTest, AServiceScaledToZeroHasItsUdpFlowsFlushedAndTheirNextDatagramRejected) {
  const auto ku = key(kVip, 53, Proto::kUdp), kt = key(kVip, 80, Proto::kTcp);
  change({{ku, frontend("default/dns", {endpoint(kA, 5353), endpoint(kB, 5353)})},
          {kt, frontend("default/dns", {endpoint(kA, 8080), endpoint(kB, 8080)})}});
  auto udp_flows = flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 32000);
  auto tcp_flows = flows_on(IPPROTO_TCP, 80, {ipv4(kA), ipv4(kB)}, 32000);
  for (const auto& [backend, port] : udp_flows)  // established, and cached per CPU
    for (int i = 0; i < 3; ++i) ASSERT_EQ(new_flow(IPPROTO_UDP, port, 53, 0), backend);
  const size_t udp_entries = ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB));
  const size_t tcp_entries = ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_TCP, ipv4(kB));
  ASSERT_GE(udp_entries, 2 * udp_flows.size());

  auto st = change({{ku, frontend("default/dns", {})}, {kt, frontend("default/dns", {})}});
  EXPECT_EQ(st.updated, 2u);
  EXPECT_EQ(st.udp_flows_flushed, udp_entries) << "every UDP entry of the Service, both directions";
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), 0u);
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_TCP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_TCP, ipv4(kB)),
            tcp_entries) << "TCP flows are never flushed";
  const uint64_t rejects = counter(KPX_CTR_REJECT);
  const size_t entries = ct_size();
  for (const auto& [backend, port] : udp_flows) {
    expect_rejected(udp(kClient, port, kVip, 53));
    expect_rejected(udp(kClient, port, kVip, 53));
  }
  EXPECT_EQ(counter(KPX_CTR_REJECT) - rejects, 2 * udp_flows.size());
  EXPECT_EQ(ct_size(), entries) << "a refused datagram leaves no state";

  // The Service gets an endpoint: the rejected flow's next datagram is served.
  change({{ku, frontend("default/dns", {endpoint(kC, 5353)})}});
  for (const auto& [backend, port] : udp_flows) EXPECT_EQ(new_flow(IPPROTO_UDP, port, 53, 0), ipv4(kC));
}

// A deleted Service: the UDP flows of every one of its frontends go (as
// the agent's full sync removes them: absent from the desired table), a
// Service sharing the backend keeps its own, TCP flows keep theirs, and the
// address is no longer translated.
TEST_F(FlowFlushTest, ADeletedServiceHasTheUdpFlowsOfAllItsFrontendsFlushed) {
  constexpr const char* kExternal = "192.0.2.10";
  constexpr const char* kOther = "10.96.0.11";
  const auto cluster_ip = key(kVip, 53, Proto::kUdp);
  const auto external = key(kExternal, 53, Proto::kUdp, dataplane::Scope::kExternalIP);
  const auto tcp_ip = key(kVip, 80, Proto::kTcp);
  const auto other = key(kOther, 53, Proto::kUdp);
  dataplane::FrontendTable table;
  table[cluster_ip] = frontend("default/dns", {endpoint(kA, 5353), endpoint(kB, 5353)});
  table[external] = frontend("default/dns", {endpoint(kA, 5353), endpoint(kB, 5353)});
  table[tcp_ip] = frontend("default/dns", {endpoint(kA, 8080)});
  table[other] = frontend("default/other", {endpoint(kA, 5353)});
  {
    auto r = dp->apply(table);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->added, 4u);
  }
  auto on_cluster_ip = flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 33000);
  auto on_external = flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 33400, kExternal);
  ASSERT_EQ(new_flow(IPPROTO_UDP, 33800, 53, 0x02, kOther), ipv4(kA));
  ASSERT_EQ(new_flow(IPPROTO_TCP, 33801, 80), ipv4(kA));
  ASSERT_EQ(new_flow(IPPROTO_TCP, 33801, 80, 0x10), ipv4(kA));
  // Every UDP entry but the other Service's flow's two is the deleted one's.
  const size_t deleted_entries =
      ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)) - 2;
  ASSERT_GE(deleted_entries, 2 * (on_cluster_ip.size() + on_external.size()));

  table.erase(cluster_ip);
  table.erase(external);
  table.erase(tcp_ip);
  auto r = dp->apply(table);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->removed, 3u);
  EXPECT_EQ(r->unchanged, 1u);
  EXPECT_EQ(r->udp_flows_flushed, deleted_entries);
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), 2u);
  for (const auto& m : {on_cluster_ip, on_external})
    for (const auto& [backend, port] : m) {
      EXPECT_FALSE(ct(kClient, port, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD).has_value());
      EXPECT_FALSE(ct(kClient, port, kExternal, 53, IPPROTO_UDP, KPX_CT_FORWARD).has_value());
      EXPECT_FALSE(ct(addr_str(backend).c_str(), 5353, kClient, port, IPPROTO_UDP, KPX_CT_REPLY).has_value());
    }
  EXPECT_TRUE(ct(kClient, 33800, kOther, 53, IPPROTO_UDP, KPX_CT_FORWARD).has_value()) << "another Service's flow";
  EXPECT_TRUE(ct(kA, 5353, kClient, 33800, IPPROTO_UDP, KPX_CT_REPLY).has_value());
  EXPECT_TRUE(ct(kClient, 33801, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD).has_value()) << "TCP flows are never flushed";
  EXPECT_EQ(new_flow(IPPROTO_UDP, 33800, 53, 0, kOther), ipv4(kA));
  // The deleted addresses are not translated any more.
  for (const char* vip : {kVip, kExternal}) {
    const Frame f = udp(kClient, on_cluster_ip.begin()->second, vip, 53);
    auto rr = from_pod(f);
    EXPECT_EQ(rr.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(rr.out, f) << vip;
  }
}

// Endpoints coming and going never move an established TCP flow to an
// endpoint that stays, nor a UDP one: their entries are not touched, their
// packets and replies keep their translation, new flows use the new set.
TEST_F(FlowFlushTest, EstablishedFlowsToAnEndpointThatStaysAreNeverMoved) {
  constexpr const char* kD = "10.244.2.5";
  set_web({kA, kB});
  auto tcp_flows = flows_on(IPPROTO_TCP, 80, {ipv4(kA), ipv4(kB)}, 34000);
  auto udp_flows = flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 34000);
  const uint16_t tcp_a = tcp_flows[ipv4(kA)], udp_a = udp_flows[ipv4(kA)];
  ASSERT_EQ(new_flow(IPPROTO_TCP, tcp_a, 80, 0x10), ipv4(kA));
  const auto fwd = ct(kClient, tcp_a, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  const auto rev = ct(kA, 8080, kClient, tcp_a, IPPROTO_TCP, KPX_CT_REPLY);
  const auto ufwd = ct(kClient, udp_a, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD);
  ASSERT_TRUE(fwd && rev && ufwd);

  // B goes and C comes; then D comes and C goes; then B is back.
  const std::vector<std::vector<const char*>> sets = {{kA, kC}, {kA, kD}, {kA, kB, kD}};
  for (size_t round = 0; round < sets.size(); ++round) {
    const auto& set = sets[round];
    std::set<uint32_t> want;
    for (const char* a : set) want.insert(ipv4(a));
    set_web(set);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_a, 80, 0x10), ipv4(kA)) << "the TCP flow stays on A";
      EXPECT_EQ(new_flow(IPPROTO_UDP, udp_a, 53, 0), ipv4(kA)) << "the UDP flow stays on A";
      EXPECT_EQ(reply_from(kA, 8080, IPPROTO_TCP, tcp_a), std::string(kVip) + ":80");
      EXPECT_EQ(reply_from(kA, 5353, IPPROTO_UDP, udp_a), std::string(kVip) + ":53");
    }
    auto f = ct(kClient, tcp_a, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
    auto r = ct(kA, 8080, kClient, tcp_a, IPPROTO_TCP, KPX_CT_REPLY);
    auto uf = ct(kClient, udp_a, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD);
    ASSERT_TRUE(f && r && uf);
    EXPECT_EQ(f->gen, fwd->gen) << "the TCP flow's entry was never replaced";
    EXPECT_EQ(f->created_ns, fwd->created_ns);
    EXPECT_EQ(r->gen, rev->gen);
    EXPECT_EQ(uf->gen, ufwd->gen) << "the UDP flow's entry was never replaced";
    // The established TCP flow to B, which left and came back, kept B too.
    EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_flows[ipv4(kB)], 80, 0x10), ipv4(kB));
    std::set<uint32_t> seen;
    for (uint16_t p = 0; p < 60; ++p) seen.insert(new_flow(IPPROTO_TCP, static_cast<uint16_t>(35000 + 100 * round + p), 80));
    EXPECT_EQ(seen, want) << "new connections use the set as it is now";
  }
}

// An endpoint that terminates while it still serves (ready=false,
// serving=true, terminating=true) next to ready ones gets no new flows,
// but its flows finish there, TCP and UDP (kube-proxy flushes UDP flows
// only to endpoints that stop serving). When it goes, its UDP flows move.
TEST_F(FlowFlushTest, FlowsToATerminatingEndpointFinishThereWhileNewFlowsGoToReadyOnes) {
  const auto kt = key(kVip, 80, Proto::kTcp), ku = key(kVip, 53, Proto::kUdp);
  set_web({kA, kB});
  auto tcp_flows = flows_on(IPPROTO_TCP, 80, {ipv4(kA), ipv4(kB)}, 36000);
  auto udp_flows = flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 36000);
  const uint16_t tcp_b = tcp_flows[ipv4(kB)], udp_b = udp_flows[ipv4(kB)];
  ASSERT_EQ(new_flow(IPPROTO_TCP, tcp_b, 80, 0x10), ipv4(kB));
  ASSERT_EQ(new_flow(IPPROTO_UDP, udp_b, 53, 0), ipv4(kB));  // cached

  // B terminates: compute() leaves it out of the sets, among the draining.
  auto st = change({{kt, frontend("default/web", {endpoint(kA, 8080)}, {endpoint(kB, 8080, false, true, true)})},
                    {ku, frontend("default/web", {endpoint(kA, 5353)}, {endpoint(kB, 5353, false, true, true)})}});
  EXPECT_EQ(st.updated, 2u);
  EXPECT_EQ(st.udp_flows_flushed, 0u) << "flows to a serving endpoint are kept";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_b, 80, 0x10), ipv4(kB)) << "the TCP flow finishes on B";
    EXPECT_EQ(new_flow(IPPROTO_UDP, udp_b, 53, 0), ipv4(kB)) << "the UDP flow finishes on B";
    EXPECT_EQ(reply_from(kB, 8080, IPPROTO_TCP, tcp_b), std::string(kVip) + ":80");
    EXPECT_EQ(reply_from(kB, 5353, IPPROTO_UDP, udp_b), std::string(kVip) + ":53");
  }
  for (uint16_t p = 37000; p < 37060; ++p) {
    EXPECT_EQ(new_flow(IPPROTO_TCP, p, 80), ipv4(kA)) << "new connections go to the ready endpoint";
    EXPECT_EQ(new_flow(IPPROTO_UDP, p, 53), ipv4(kA));
  }
  // Nothing else changes (its conditions are in memory only): no flush.
  st = change({{ku, frontend("default/web", {endpoint(kA, 5353)}, {endpoint(kB, 5353, false, true, true)})}});
  EXPECT_EQ(st.unchanged, 1u);
  EXPECT_EQ(st.udp_flows_flushed, 0u);
  EXPECT_EQ(new_flow(IPPROTO_UDP, udp_b, 53, 0), ipv4(kB));

  // B is gone (or stopped serving): its UDP flows are flushed and move to
  // A, its TCP flows keep it (as kube-proxy leaves TCP entries alone).
  const size_t udp_on_b = ct_entries_with_backend(IPPROTO_UDP, ipv4(kB));
  ASSERT_GE(udp_on_b, 2u);
  st = set_web({kA});
  EXPECT_EQ(st.unchanged, 2u) << "the maps already held this";
  EXPECT_EQ(st.udp_flows_flushed, udp_on_b);
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), 0u);
  EXPECT_EQ(new_flow(IPPROTO_UDP, udp_b, 53, 0), ipv4(kA)) << "the UDP flow moved to a serving endpoint";
  EXPECT_EQ(new_flow(IPPROTO_TCP, tcp_b, 80, 0x10), ipv4(kB));
}

// A terminating endpoint whose Service is deleted: its UDP flows go with
// the Service's.
TEST_F(FlowFlushTest, ADeletedServiceHasItsTerminatingEndpointsUdpFlowsFlushed) {
  const auto ku = key(kVip, 53, Proto::kUdp);
  set(ku, frontend("default/dns", {endpoint(kA, 5353), endpoint(kB, 5353)}));
  flows_on(IPPROTO_UDP, 53, {ipv4(kA), ipv4(kB)}, 38000);
  set(ku, frontend("default/dns", {endpoint(kA, 5353)}, {endpoint(kB, 5353, false, true, true)}));
  const size_t on_b = ct_entries_with_backend(IPPROTO_UDP, ipv4(kB));
  const size_t all = on_b + ct_entries_with_backend(IPPROTO_UDP, ipv4(kA));
  ASSERT_GE(on_b, 2u) << "B's flows outlive its terminating";
  auto st = change({{ku, std::nullopt}});
  EXPECT_EQ(st.removed, 1u);
  EXPECT_EQ(st.udp_flows_flushed, all);
  EXPECT_EQ(ct_entries_with_backend(IPPROTO_UDP, ipv4(kA)) + ct_entries_with_backend(IPPROTO_UDP, ipv4(kB)), 0u);
}

}  // namespace
}  // namespace kpx::bpftest
