// Conntrack of datapath v2 in the kernel (BPF_PROG_TEST_RUN): flows that
// heal, dead flows that are no clashes, inserts two CPUs race for, the
// per-CPU cache never serving a translation that is gone, the GC's
// compare-and-swap reaping, TCP ends from either side, and what a pod on
// another interface can and cannot do to a neighbour's flows.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>

#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "datapath_fixture.h"
#include "net/netns.h"

namespace kpx::bpftest {
namespace {

using net::Proto;
using packet::build_frame;
using packet::parse_frame;

constexpr const char* kVip = "10.96.0.10";
constexpr const char* kVip2 = "10.96.0.11";
constexpr const char* kClient = "10.244.3.5";
constexpr const char* kBe1 = "10.244.1.2";
constexpr const char* kBe2 = "10.244.2.3";
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kFinAck = 0x11, kRstAck = 0x14, kSynAck = 0x12;
constexpr uint64_t kSec = 1000000000ULL;

class Conntrack : public DatapathTest {
 protected:
  // The backend a from_pod frame was sent to ("" if not translated).
  std::string dnat_target(const Frame& in, uint32_t ifindex = 0, uint16_t* sport = nullptr) {
    auto r = from_pod(in, ifindex);
    EXPECT_EQ(r.err, 0);
    if (r.retval != TC_ACT_OK) return "";
    auto p = parse_frame(r.out);
    if (!p) return "";
    if (sport) *sport = p->sport;
    return addr_str(p->daddr_be);
  }
  // The source a to_pod frame leaves with ("" if dropped or unparsable).
  std::string revnat_source(const Frame& in, uint32_t ifindex = 0) {
    auto r = to_pod(in, ifindex);
    EXPECT_EQ(r.err, 0);
    if (r.retval != TC_ACT_OK) return "";
    auto p = parse_frame(r.out);
    return p ? addr_str(p->saddr_be) : "";
  }
  std::optional<kpx_ct_value_v4> fwd(const char* c, uint16_t sport, const char* vip, uint16_t port, uint8_t proto,
                                     uint32_t ifindex = kLoIfindex) {
    return maps->conntrack.lookup(ct_key(c, sport, vip, port, proto, KPX_CT_FORWARD, ifindex));
  }
  // Age a flow's FORWARD entry (the one stamp both directions share).
  void age(const kpx_ct_key_v4& fk, uint64_t seconds) {
    auto v = maps->conntrack.lookup(fk);
    ASSERT_TRUE(v.has_value());
    v->last_seen_ns = dataplane::monotonic_coarse_ns() - seconds * kSec;
    ct_write(fk, *v);
  }
  uint32_t version_of(const kpx_ct_key_v4& k) const {
    return maps->ct_versions.lookup(kpx_ct_hash_v4(&k) & (KPX_CT_VER_SLOTS - 1)).value_or(0);
  }
  std::map<std::string, std::vector<uint8_t>> ct_dump() const {
    std::map<std::string, std::vector<uint8_t>> out;
    maps->conntrack.for_each([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
      std::string key(reinterpret_cast<const char*>(&k), sizeof(k));
      const auto* b = reinterpret_cast<const uint8_t*>(&v);
      out[key] = std::vector<uint8_t>(b, b + sizeof(v));
    });
    return out;
  }
};

// ---- healing ------------------------------------------------------------------

TEST_F(Conntrack, AForwardHitWhoseReplyEntryIsGoneRecreatesIt) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  ASSERT_EQ(dnat_target(tcp(kClient, 40000, kVip, 80, kSyn)), kBe1);
  const auto fk = ct_key(kClient, 40000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  const auto rk = ct_key(kBe1, 8080, kClient, 40000, IPPROTO_TCP, KPX_CT_REPLY);
  const auto reply_before = maps->conntrack.lookup(rk);
  ASSERT_TRUE(reply_before.has_value());
  // The REPLY entry is lost (LRU eviction): replies would leave untranslated.
  ASSERT_TRUE(maps->conntrack.erase(rk));
  ASSERT_TRUE(maps->bump_ct_epoch().ok());
  EXPECT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 40000, kSynAck)), kBe1) << "no entry: passes untranslated";
  // The flow's next packet once its stamp is due (the check runs once a second).
  age(fk, 2);
  ASSERT_EQ(dnat_target(tcp(kClient, 40000, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_CT_HEALED), 1u);
  auto healed = maps->conntrack.lookup(rk);
  ASSERT_TRUE(healed.has_value()) << "the REPLY entry must be re-created";
  EXPECT_EQ(healed->gen, reply_before->gen);
  EXPECT_EQ(healed->nat_addr, ipv4(kVip));
  EXPECT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 40000, kAck)), kVip);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 1u) << "the flow kept its backend";
}

TEST_F(Conntrack, GcRemovesForwardEntriesWithoutReplyOnceTheyCannotHeal) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  ASSERT_EQ(dnat_target(tcp(kClient, 40001, kVip, 80, kSyn)), kBe1);
  ASSERT_EQ(dnat_target(tcp(kClient, 40002, kVip, 80, kSyn)), kBe1);
  ASSERT_TRUE(maps->conntrack.erase(ct_key(kBe1, 8080, kClient, 40001, IPPROTO_TCP, KPX_CT_REPLY)));
  const uint64_t now = dataplane::monotonic_coarse_ns();
  // Right away the half flow may still heal: kept.
  auto plan = dataplane::plan_conntrack_gc(*maps, now);
  EXPECT_EQ(plan.half_flows, 0u);
  // Idle past the heal window: removed; the whole flow is untouched.
  auto gc = dataplane::collect_conntrack(*maps, pins.path(), now + 10 * kSec);
  ASSERT_TRUE(gc.ok()) << gc.error().message;
  EXPECT_EQ(gc->half_flows, 1u);
  EXPECT_EQ(gc->reaped, 1u);
  EXPECT_FALSE(fwd(kClient, 40001, kVip, 80, IPPROTO_TCP).has_value());
  EXPECT_TRUE(fwd(kClient, 40002, kVip, 80, IPPROTO_TCP).has_value());
  EXPECT_EQ(ct_size(), 2u);
}

TEST_F(Conntrack, ANewFlowThatFindsNoFreeReplyTupleLeavesNoEntry) {
  // The second flow's natural reply tuple and every source port the
  // allocator would offer it are held by live flows: it cannot be made.
  set_service(kVip, 80, Proto::kUdp, {{kBe1, 53}});
  set_service(kVip2, 80, Proto::kUdp, {{kBe1, 53}});
  ASSERT_EQ(dnat_target(udp(kClient, 5000, kVip, 80)), kBe1);
  // Which ports would the second flow be offered? Take each with a live
  // flow from that port.
  const auto fk2 = ct_key(kClient, 5000, kVip2, 80, IPPROTO_UDP, KPX_CT_FORWARD);
  const uint32_t h = kpx_ct_hash_v4(&fk2);
  for (uint32_t i = 0; i < 8; ++i) {
    const uint16_t port = static_cast<uint16_t>(1024 + (h + i * 0x9e37u) % (65536 - 1024));
    ASSERT_EQ(dnat_target(udp(kClient, port, kVip, 80)), kBe1);
  }
  const size_t entries = ct_size();
  auto r = from_pod(udp(kClient, 5000, kVip2, 80));
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_CLASH), 1u);
  EXPECT_FALSE(maps->conntrack.lookup(fk2).has_value()) << "no FORWARD entry without its REPLY";
  EXPECT_EQ(ct_size(), entries);
}

// ---- dead flows ----------------------------------------------------------------

TEST_F(Conntrack, AClosedFlowsPortTowardsAnotherServiceOnTheSameBackendConnectsAtOnce) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  set_service(kVip2, 80, Proto::kTcp, {{kBe1, 8080}});
  ASSERT_EQ(dnat_target(tcp(kClient, 41000, kVip, 80, kSyn)), kBe1);
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 41000, kSynAck)), kVip);
  ASSERT_EQ(dnat_target(tcp(kClient, 41000, kVip, 80, kRstAck)), kBe1);
  // Same client port, the other Service, the same backend: not a clash.
  uint16_t sport = 0;
  ASSERT_EQ(dnat_target(tcp(kClient, 41000, kVip2, 80, kSyn), 0, &sport), kBe1);
  EXPECT_EQ(sport, 41000) << "a dead flow's tuple is free: no port remap";
  EXPECT_EQ(counter(KPX_CTR_CT_PORT_REMAP), 0u);
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_CLASH), 0u);
  EXPECT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 41000, kSynAck)), kVip2) << "replies are the new flow's";
}

TEST_F(Conntrack, DirectTrafficReusingADeadFlowsReplyTupleIsNeverRewritten) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  set_service(kVip, 81, Proto::kUdp, {{kBe1, 5353}});
  // TCP, ended by the server's RST.
  ASSERT_EQ(dnat_target(tcp(kClient, 42000, kVip, 80, kSyn)), kBe1);
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 42000, kRstAck)), kVip) << "the RST itself is translated";
  const Frame direct = tcp(kBe1, 8080, kClient, 42000, kSynAck);
  auto r = to_pod(direct);
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(r.out, direct) << "a reset flow's REPLY entry must not rewrite a direct connection";
  // UDP, expired.
  ASSERT_EQ(dnat_target(udp(kClient, 42001, kVip, 81)), kBe1);
  age(ct_key(kClient, 42001, kVip, 81, IPPROTO_UDP, KPX_CT_FORWARD), 31);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past any cache slot's sync
  const Frame d2 = udp(kBe1, 5353, kClient, 42001);
  auto r2 = to_pod(d2);
  EXPECT_EQ(r2.out, d2) << "an expired flow's REPLY entry must not rewrite";
}

// A miss on the reply path is remembered per CPU (a negative cache entry),
// so pod-to-pod traffic from a backend's port passes without a hash lookup;
// a flow created afterwards with that reply tuple must be translated on its
// very first reply, on the same CPU.
TEST_F(Conntrack, AReplyTupleRememberedAsMissingIsTranslatedOnceAFlowHasIt) {
  cpu_set_t one, old;
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(old), &old), 0);
  CPU_ZERO(&one);
  CPU_SET(0, &one);
  ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);  // one CPU: one cache
  set_service(kVip, 53, Proto::kUdp, {{kBe1, 5353}});
  const Frame direct = udp(kBe1, 5353, kClient, 43000);
  for (int i = 0; i < 3; ++i) {  // a miss, then served from the negative entry
    auto r = to_pod(direct);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(r.out, direct) << "no flow: passes untouched";
  }
  EXPECT_EQ(counter(KPX_CTR_REVNAT), 0u);
  ASSERT_EQ(dnat_target(udp(kClient, 43000, kVip, 53)), kBe1);
  EXPECT_EQ(revnat_source(direct), kVip) << "the negative entry must be void once the flow exists";
  EXPECT_EQ(counter(KPX_CTR_REVNAT), 1u);
  // And after the flow is flushed from userspace, the tuple passes again.
  ASSERT_TRUE(writer->set({ipv4(kVip), 53, Proto::kUdp}, {{ipv4(kBe2), 5353}}).ok());
  auto r = to_pod(direct);
  EXPECT_EQ(r.out, direct);
  pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
}

TEST_F(Conntrack, AServerRstEndsTheFlowLikeAClientRst) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}, {kBe2, 8080}});
  const std::string be = dnat_target(tcp(kClient, 43000, kVip, 80, kSyn));
  ASSERT_FALSE(be.empty());
  ASSERT_EQ(revnat_source(tcp(be.c_str(), 8080, kClient, 43000, kRstAck)), kVip);
  auto f = fwd(kClient, 43000, kVip, 80, IPPROTO_TCP);
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->flags & KPX_CT_F_RST);
  // A new SYN on the tuple is a new flow at once.
  ASSERT_FALSE(dnat_target(tcp(kClient, 43000, kVip, 80, kSyn)).empty());
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 2u);
  EXPECT_NE(fwd(kClient, 43000, kVip, 80, IPPROTO_TCP)->gen, f->gen);
}

// kube-proxy's conntrack.tcpCloseWaitTimeout is netfilter's CLOSE_WAIT: one
// side's FIN answered by the other side, which stays open (a half-closed
// connection), 1 h by default. A FIN nobody answered keeps netfilter's
// FIN_WAIT, 120 s. The answer usually rides a segment the per-CPU cache
// would have served: the FIN voids that slot, so the answer reaches the
// entry, from either side.
TEST_F(Conntrack, AnAnsweredFinMovesTheFlowToCloseWaitAnUnansweredOneKeepsFinWait) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  kpx_config cfg{};
  cfg.tcp_fin_timeout_s = 120;
  cfg.tcp_close_wait_timeout_s = 3600;
  set_config(cfg);
  for (uint16_t port : {44010, 44011, 44012}) {
    ASSERT_EQ(dnat_target(tcp(kClient, port, kVip, 80, kSyn)), kBe1);
    ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, port, kSynAck)), kVip);
    // Established both ways, twice each: the second of each is served from
    // the per-CPU cache.
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(dnat_target(tcp(kClient, port, kVip, 80, kAck)), kBe1);
      ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, port, kAck)), kVip);
    }
  }
  const kpx_config c = maps->read_config();
  auto timeout_s = [&](uint16_t port) {
    return dataplane::ct_timeout_ns(*fwd(kClient, port, kVip, 80, IPPROTO_TCP), IPPROTO_TCP, c) / kSec;
  };
  // 44010: the client closes, the server answers and stays open.
  ASSERT_EQ(dnat_target(tcp(kClient, 44010, kVip, 80, kFinAck)), kBe1);
  EXPECT_EQ(timeout_s(44010), 120u) << "FIN_WAIT until answered";
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 44010, kAck)), kVip);
  EXPECT_TRUE(fwd(kClient, 44010, kVip, 80, IPPROTO_TCP)->flags & KPX_CT_F_CLOSE_WAIT);
  EXPECT_EQ(timeout_s(44010), 3600u) << "CLOSE_WAIT: tcpCloseWaitTimeout";
  // 44011: the client closes, nothing answers.
  ASSERT_EQ(dnat_target(tcp(kClient, 44011, kVip, 80, kFinAck)), kBe1);
  EXPECT_FALSE(fwd(kClient, 44011, kVip, 80, IPPROTO_TCP)->flags & KPX_CT_F_CLOSE_WAIT);
  EXPECT_EQ(timeout_s(44011), 120u);
  // 44012: the server closes first, the client answers.
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 44012, kFinAck)), kVip);
  ASSERT_EQ(dnat_target(tcp(kClient, 44012, kVip, 80, kAck)), kBe1);
  EXPECT_TRUE(fwd(kClient, 44012, kVip, 80, IPPROTO_TCP)->flags & KPX_CT_F_CLOSE_WAIT);
  EXPECT_EQ(timeout_s(44012), 3600u);
  // Then the other side closes too: the closing timeout, whatever came first.
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 44010, kFinAck)), kVip);
  EXPECT_EQ(timeout_s(44010), uint64_t{KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S});

  // 10 minutes on: the half-closed flow lives, the unanswered FIN expired.
  const uint64_t news = counter(KPX_CTR_DNAT_NEW);
  age(ct_key(kClient, 44011, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD), 600);
  age(ct_key(kClient, 44012, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD), 600);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the cache's one-second sync
  ASSERT_EQ(dnat_target(tcp(kClient, 44012, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), news) << "CLOSE_WAIT outlives FIN_WAIT's 120 s";
  ASSERT_EQ(dnat_target(tcp(kClient, 44011, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), news + 1) << "the unanswered FIN's flow expired";
}

// udpStreamTimeout as netfilter's UDP: a flow answered and still active
// two seconds after it began is a stream (udp_stream_timeout_s); one never
// answered, or answered and then quiet within its first two seconds (a DNS
// query), keeps udp_timeout_s.
TEST_F(Conntrack, AnAnsweredUdpFlowStillActiveAfterTwoSecondsGetsTheStreamTimeout) {
  set_service(kVip, 53, Proto::kUdp, {{kBe1, 5353}});
  kpx_config cfg{};
  cfg.udp_timeout_s = 30;
  cfg.udp_stream_timeout_s = 90;
  set_config(cfg);
  // 45001: a stream; 45002: one-way; 45003: one answer at once, then quiet.
  for (uint16_t port : {45001, 45002, 45003}) ASSERT_EQ(dnat_target(udp(kClient, port, kVip, 53)), kBe1);
  for (uint16_t port : {45001, 45003}) ASSERT_EQ(revnat_source(udp(kBe1, 5353, kClient, port)), kVip);
  auto fk = [](uint16_t port) { return ct_key(kClient, port, kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD); };
  EXPECT_TRUE(maps->conntrack.lookup(fk(45001))->flags & KPX_CT_F_REPLIED);
  EXPECT_FALSE(maps->conntrack.lookup(fk(45002))->flags & KPX_CT_F_REPLIED);
  // When each began and was last seen, as seconds ago.
  auto set_times = [&](uint16_t port, uint64_t began, uint64_t last) {
    auto v = maps->conntrack.lookup(fk(port));
    ASSERT_TRUE(v.has_value());
    const uint64_t now = dataplane::monotonic_coarse_ns();
    v->created_ns = now - began * kSec;
    v->last_seen_ns = now - last * kSec;
    ct_write(fk(port), *v);
  };
  const kpx_config c = maps->read_config();
  auto timeout_s = [&](uint16_t port) {
    return dataplane::ct_timeout_ns(*maps->conntrack.lookup(fk(port)), IPPROTO_UDP, c) / kSec;
  };
  EXPECT_EQ(timeout_s(45001), 30u) << "answered, but not yet two seconds old";
  // All three began 70 s ago and were last seen 60 s ago; 45003 within
  // its first second.
  set_times(45001, 70, 60);
  set_times(45002, 70, 60);
  set_times(45003, 61, 60);
  EXPECT_EQ(timeout_s(45001), 90u);
  EXPECT_EQ(timeout_s(45002), 30u) << "never answered";
  EXPECT_EQ(timeout_s(45003), 30u) << "answered, quiet after its first two seconds";
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the cache's one-second sync
  const uint64_t news = counter(KPX_CTR_DNAT_NEW);
  ASSERT_EQ(dnat_target(udp(kClient, 45001, kVip, 53)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), news) << "the stream lives 60 s idle";
  for (uint16_t port : {45002, 45003}) ASSERT_EQ(dnat_target(udp(kClient, port, kVip, 53)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), news + 2) << "the others expired after 30 s";
  EXPECT_FALSE(maps->conntrack.lookup(fk(45002))->flags & KPX_CT_F_REPLIED) << "a new flow starts unanswered";
}

TEST_F(Conntrack, FinFromBothSidesMovesTheFlowToTheClosingTimeout) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  kpx_config cfg{};
  cfg.tcp_closing_timeout_s = 10;
  cfg.tcp_fin_timeout_s = 120;
  set_config(cfg);
  const auto fk = ct_key(kClient, 44000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  const auto fk2 = ct_key(kClient, 44001, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  for (uint16_t port : {44000, 44001}) {
    ASSERT_EQ(dnat_target(tcp(kClient, port, kVip, 80, kSyn)), kBe1);
    ASSERT_EQ(dnat_target(tcp(kClient, port, kVip, 80, kAck)), kBe1);
    ASSERT_EQ(dnat_target(tcp(kClient, port, kVip, 80, kFinAck)), kBe1);
  }
  // Only 44000's server closes too.
  ASSERT_EQ(revnat_source(tcp(kBe1, 8080, kClient, 44000, kFinAck)), kVip);
  EXPECT_EQ(fwd(kClient, 44000, kVip, 80, IPPROTO_TCP)->flags & (KPX_CT_F_FIN | KPX_CT_F_REPLY_FIN),
            KPX_CT_F_FIN | KPX_CT_F_REPLY_FIN);
  const kpx_config c = maps->read_config();
  EXPECT_EQ(dataplane::ct_timeout_ns(*maps->conntrack.lookup(fk), IPPROTO_TCP, c), 10 * kSec);
  EXPECT_EQ(dataplane::ct_timeout_ns(*maps->conntrack.lookup(fk2), IPPROTO_TCP, c), 120 * kSec);
  // 15 s later: the closed one is gone (a new flow), the half-closed one stays.
  age(fk, 15);
  age(fk2, 15);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(dnat_target(tcp(kClient, 44000, kVip, 80, kAck)), kBe1);
  ASSERT_EQ(dnat_target(tcp(kClient, 44001, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 3u) << "44000 expired after the closing timeout, 44001 did not";
}

// ---- races between CPUs ------------------------------------------------------------

// Two CPUs see the first packets of the same new flows at the same time
// (UDP, multi-queue): each flow must get one backend, whichever CPU wins.
TEST_F(Conntrack, TwoCpusCreatingOneFlowAgreeOnItsBackend) {
  std::vector<std::pair<const char*, uint16_t>> backends;
  static const char* kAddrs[] = {"10.244.5.1", "10.244.5.2", "10.244.5.3", "10.244.5.4",
                                 "10.244.5.5", "10.244.5.6", "10.244.5.7", "10.244.5.8"};
  for (const char* a : kAddrs) backends.push_back({a, 53});
  set_service(kVip, 53, Proto::kUdp, backends);
  if (std::thread::hardware_concurrency() < 2) GTEST_FAIL() << "needs two CPUs";
  constexpr int kFlows = 3000;
  std::vector<uint32_t> got[2];
  std::atomic<int> ready{0};
  auto worker = [&](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    got[cpu].resize(kFlows);
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    for (int i = 0; i < kFlows; ++i) {
      auto r = test_run(obj->from_pod_fd(), udp(kClient, static_cast<uint16_t>(10000 + i), kVip, 53));
      auto p = parse_frame(r.out);
      got[cpu][i] = p ? p->daddr_be : 0;
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  size_t differ = 0;
  for (int i = 0; i < kFlows; ++i) differ += got[0][i] != got[1][i];
  EXPECT_EQ(differ, 0u) << "flows translated to two backends";
  // And the table says the same: each FORWARD's REPLY exists, with its gen.
  for (int i = 0; i < kFlows; ++i) {
    const auto fk = ct_key(kClient, static_cast<uint16_t>(10000 + i), kVip, 53, IPPROTO_UDP, KPX_CT_FORWARD);
    auto fv = maps->conntrack.lookup(fk);
    ASSERT_TRUE(fv.has_value()) << i;
    EXPECT_EQ(fv->nat_addr, got[0][i]);
    auto rv = maps->conntrack.lookup(dataplane::reply_key_of(fk, *fv));
    ASSERT_TRUE(rv.has_value()) << i;
    EXPECT_EQ(rv->gen, fv->gen);
  }
  EXPECT_EQ(ct_size(), 2u * kFlows);
  // Every packet was translated once: as a new flow, as the adopter of the
  // other CPU's, or as an established one.
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW) + counter(KPX_CTR_DNAT_ESTABLISHED), 2u * kFlows);
}

// ---- the cache and validated copies -------------------------------------------------

TEST_F(Conntrack, ACachedFlowReapedByTheGcIsNotServedFromTheCache) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  ASSERT_EQ(dnat_target(tcp(kClient, 45000, kVip, 80, kSyn)), kBe1);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(dnat_target(tcp(kClient, 45000, kVip, 80, kAck)), kBe1);  // cached
  const auto fk = ct_key(kClient, 45000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  const auto fv = *maps->conntrack.lookup(fk);
  const uint32_t epoch = maps->read_config().ct_epoch;
  dataplane::GcPlan plan;
  plan.items.push_back({fk, fv.gen});
  plan.items.push_back({dataplane::reply_key_of(fk, fv), fv.gen});
  auto n = dataplane::reap_conntrack(*maps, pins.path(), plan);
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(maps->read_config().ct_epoch, epoch) << "voided by the tuple's version, not a global flush";
  const uint64_t before = counter(KPX_CTR_DNAT_ESTABLISHED);
  ASSERT_EQ(dnat_target(tcp(kClient, 45000, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_ESTABLISHED), before) << "served a reaped flow from the cache";
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 2u);
}

// An element the kernel hands to another key while a program holds it, or
// one read half-written, fails its check word and is treated as absent: it
// never sends a packet to what it holds.
TEST_F(Conntrack, AnEntryWhoseCheckWordDoesNotMatchIsNeverUsed) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  const auto fk = ct_key(kClient, 46000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD);
  kpx_ct_value_v4 bogus{};
  bogus.nat_addr = ipv4("10.244.9.9");
  bogus.nat_port = htons(9999);
  bogus.gen = 7;
  bogus.flags = KPX_CT_F_SYN | KPX_CT_F_ESTABLISHED;
  bogus.last_seen_ns = dataplane::monotonic_coarse_ns();
  bogus.check = kpx_ct_check_v4(&fk, &bogus) ^ 0x10;  // another key's, or torn
  ASSERT_TRUE(maps->conntrack.update(fk, bogus).ok());
  ASSERT_TRUE(maps->bump_ct_epoch().ok());
  EXPECT_EQ(dnat_target(tcp(kClient, 46000, kVip, 80, kAck)), kBe1);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 1u);
  // A frontend value with a wrong check word is no frontend either.
  auto sv = maps->services.lookup(dataplane::service_key({ipv4(kVip), 80, Proto::kTcp}));
  ASSERT_TRUE(sv.has_value());
  sv->check ^= 0x10;
  ASSERT_TRUE(maps->services.update(dataplane::service_key({ipv4(kVip), 80, Proto::kTcp}), *sv).ok());
  const Frame f = tcp(kClient, 46001, kVip, 80, kSyn);
  auto r = from_pod(f);
  EXPECT_EQ(r.out, f);
}

// GC reads, decides, then reaps: a flow the datapath re-created between the
// read and the reap has another gen and stays.
TEST_F(Conntrack, TheGcNeverDeletesAFlowRecreatedAfterItsRead) {
  set_service(kVip, 80, Proto::kUdp, {{kBe1, 53}, {kBe2, 53}});
  ASSERT_FALSE(dnat_target(udp(kClient, 47000, kVip, 80)).empty());
  const auto fk = ct_key(kClient, 47000, kVip, 80, IPPROTO_UDP, KPX_CT_FORWARD);
  age(fk, 60);  // expired
  auto plan = dataplane::plan_conntrack_gc(*maps, dataplane::monotonic_coarse_ns());
  ASSERT_EQ(plan.expired, 1u);
  ASSERT_EQ(plan.items.size(), 2u);
  // The client speaks again before the reap: a new flow on the same tuple.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const std::string be = dnat_target(udp(kClient, 47000, kVip, 80));
  ASSERT_FALSE(be.empty());
  ASSERT_EQ(counter(KPX_CTR_DNAT_NEW), 2u);
  const auto now_fv = *maps->conntrack.lookup(fk);
  auto n = dataplane::reap_conntrack(*maps, pins.path(), plan);
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 0u) << "the re-created flow must stay";
  auto still = maps->conntrack.lookup(fk);
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(still->gen, now_fv.gen);
  EXPECT_TRUE(maps->conntrack.lookup(dataplane::reply_key_of(fk, now_fv)).has_value());
}

// ---- another pod's interface ---------------------------------------------------------

// Two veth ends in a namespace of the test's own: frames "arriving" on them
// (BPF_PROG_TEST_RUN with their ifindex) are another pod's.
class Neighbours : public Conntrack {
 protected:
  void SetUp() override {
    Conntrack::SetUp();
    ns_ = netns_.add("ct");
    ASSERT_FALSE(ns_.empty());
    ASSERT_EQ(std::system(("ip -n " + ns_ + " link add kpxa type veth peer name kpxb").c_str()), 0);
    ASSERT_EQ(std::system(("ip -n " + ns_ + " link set kpxa up && ip -n " + ns_ + " link set kpxb up").c_str()), 0);
    auto scope = net::NetnsScope::enter(ns_);
    ASSERT_TRUE(scope.ok()) << scope.error().message;
    scope_.emplace(std::move(*scope));
    victim_if_ = if_nametoindex("kpxa");
    attacker_if_ = if_nametoindex("kpxb");
    ASSERT_GT(victim_if_, kLoIfindex);
    ASSERT_GT(attacker_if_, kLoIfindex);
  }
  void TearDown() override {
    scope_.reset();
    Conntrack::TearDown();
  }
  testing::ScopedNetns netns_;
  std::string ns_;
  std::optional<net::NetnsScope> scope_;
  uint32_t victim_if_ = 0, attacker_if_ = 0;
};

TEST_F(Neighbours, SpoofedSynAndRstWithAVictimsTupleLeaveItsEntriesByteIdentical) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}, {kBe2, 8080}});
  const std::string be = dnat_target(tcp(kClient, 48000, kVip, 80, kSyn), victim_if_);
  ASSERT_FALSE(be.empty());
  ASSERT_EQ(dnat_target(tcp(kClient, 48000, kVip, 80, kAck), victim_if_), be);
  ASSERT_EQ(revnat_source(tcp(be.c_str(), 8080, kClient, 48000, kAck), victim_if_), kVip);
  const auto fk = ct_key(kClient, 48000, kVip, 80, IPPROTO_TCP, KPX_CT_FORWARD, victim_if_);
  const auto fv = *maps->conntrack.lookup(fk);
  const auto rk = dataplane::reply_key_of(fk, fv);
  const auto before_f = maps->conntrack.lookup(fk), before_r = maps->conntrack.lookup(rk);
  ASSERT_TRUE(before_f && before_r);

  // The neighbour claims the victim's address and port: SYN, RST, FIN, data,
  // and "replies" of the backend, from its own interface.
  for (uint8_t flags : {kSyn, kRstAck, kFinAck, kAck}) from_pod(tcp(kClient, 48000, kVip, 80, flags), attacker_if_);
  for (uint8_t flags : {kRstAck, kFinAck}) to_pod(tcp(be.c_str(), 8080, kClient, 48000, flags), attacker_if_);

  auto after_f = maps->conntrack.lookup(fk), after_r = maps->conntrack.lookup(rk);
  ASSERT_TRUE(after_f && after_r);
  EXPECT_EQ(std::memcmp(&*before_f, &*after_f, sizeof(kpx_ct_value_v4)), 0) << "FORWARD entry changed";
  EXPECT_EQ(std::memcmp(&*before_r, &*after_r, sizeof(kpx_ct_value_v4)), 0) << "REPLY entry changed";
  // The victim's flow goes on as before.
  EXPECT_EQ(dnat_target(tcp(kClient, 48000, kVip, 80, kAck), victim_if_), be);
  EXPECT_EQ(revnat_source(tcp(be.c_str(), 8080, kClient, 48000, kAck), victim_if_), kVip);
}

TEST_F(Neighbours, APodSendingFromANodeAddressIsDroppedBeforeAnyState) {
  set_service(kVip, 80, Proto::kTcp, {{kBe1, 8080}});
  set_node_addresses("10.244.1.1", {"192.168.50.10"});
  const size_t entries = ct_size();
  for (const char* src : {"10.244.1.1", "192.168.50.10"}) {
    auto r = from_pod(tcp(src, 49000, kVip, 80, kSyn), attacker_if_);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT)) << src;
    r = from_pod(tcp(src, 49001, kBe1, 8080, kSyn), attacker_if_);  // not even to a pod
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT)) << src;
    // A mid-flow segment (the per-CPU cache path) is checked after the
    // cache misses: dropped all the same.
    r = from_pod(tcp(src, 49003, kVip, 80, kAck), attacker_if_);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_SHOT)) << src;
  }
  EXPECT_EQ(counter(KPX_CTR_DROP_SPOOF), 6u);
  EXPECT_EQ(ct_size(), entries);
  EXPECT_EQ(counter(KPX_CTR_DNAT_NEW), 0u);
  // The pod's own address works.
  EXPECT_EQ(dnat_target(tcp(kClient, 49002, kVip, 80, kSyn), attacker_if_), kBe1);
}

TEST_F(Neighbours, OnePodFloodingNewFlowsSpendsOnlyItsOwnBudget) {
  set_service(kVip, 53, Proto::kUdp, {{kBe1, 53}});
  kpx_config cfg{};
  cfg.ct_new_per_sec = 50;
  cfg.ct_new_burst = 100;
  set_config(cfg);
  // The victim's flow, made before the flood.
  ASSERT_EQ(dnat_target(udp(kClient, 50000, kVip, 53), victim_if_), kBe1);
  size_t admitted = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = from_pod(udp("10.244.3.6", static_cast<uint16_t>(20000 + i), kVip, 53), attacker_if_);
    admitted += r.retval == TC_ACT_OK;
  }
  EXPECT_GE(admitted, 100u);
  EXPECT_LE(admitted, 160u) << "the budget bounds one interface's new flows";
  EXPECT_EQ(counter(KPX_CTR_DROP_CT_BUDGET), 1000u - admitted);
  // The neighbour's established flow and its new flows still work.
  EXPECT_EQ(dnat_target(udp(kClient, 50000, kVip, 53), victim_if_), kBe1);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(dnat_target(udp(kClient, static_cast<uint16_t>(51000 + i), kVip, 53), victim_if_), kBe1) << i;
}

}  // namespace
}  // namespace kpx::bpftest
