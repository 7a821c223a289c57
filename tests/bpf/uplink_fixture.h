// The Uplink fixture: the uplink datapath (bpf/kpx_uplink.bpf.c) and its
// pod-side halves in kpx_lxc, run with BPF_PROG_TEST_RUN inside a namespace
// of the test's own that looks like a lab node: an uplink with the node's
// address, a route to another node's pod CIDR, a local pod network, and
// permanent neighbours, so that the programs' FIB lookups give known
// interfaces and MACs.
#pragma once

#include <net/if.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

#include "dataplane/dataplane.h"
#include "datapath_fixture.h"
#include "net/netns.h"

namespace kpx::bpftest {

using net::Proto;

inline constexpr const char* kNode = "10.0.0.11";     // this node, on the uplink
inline constexpr const char* kClient = "10.0.0.100";  // outside the cluster
inline constexpr const char* kPodGw = "10.244.1.1";   // this node's pod network
inline constexpr const char* kLocalBe = "10.244.1.5";
inline constexpr const char* kLocalBe2 = "10.244.1.6";
inline constexpr const char* kRemoteBe = "10.244.2.7";
inline constexpr const char* kPodClient = "10.244.1.9";
inline constexpr uint16_t kNodePort = 30080;
inline constexpr uint8_t kSyn = 0x02, kSynAck = 0x12, kAck = 0x10;
inline constexpr uint32_t kRedirect = 7;  // TC_ACT_REDIRECT

inline constexpr uint8_t kNode2Mac[6] = {0x02, 0, 0, 0, 0, 0x12};
inline constexpr uint8_t kClientMac[6] = {0x02, 0, 0, 0, 0x01, 0x00};
inline constexpr uint8_t kLocalBeMac[6] = {0x02, 0, 0, 0, 0x02, 0x05};
inline constexpr uint8_t kPodClientMac[6] = {0x02, 0, 0, 0, 0x02, 0x09};
inline constexpr uint8_t kGatewayMac[6] = {0x02, 0, 0, 0, 0, 0x01};
inline constexpr const char* kInternet = "203.0.113.10";
inline constexpr const char* kClusterIp = "10.96.0.10";

struct HookRun {
  int err = 0;
  uint32_t retval = 0;
  uint32_t mark = 0;  // skb->mark as the program left it
  Frame out;
};

// gso_size: run the frame as a GSO skb of segments of that size (a TSO
// sender's or GRO's aggregate).
inline HookRun run(int prog_fd, const Frame& in, uint32_t ifindex, uint32_t mark = 0, uint32_t gso_size = 0) {
  HookRun r;
  r.out.assign(in.size() + 512, 0);
  LIBBPF_OPTS(bpf_test_run_opts, o);
  __sk_buff ctx{}, ctx_out{};
  ctx.ifindex = ifindex;
  ctx.mark = mark;
  ctx.gso_size = gso_size;
  if (gso_size) ctx.gso_segs = static_cast<uint32_t>((in.size() + gso_size - 1) / gso_size);
  o.ctx_in = &ctx;
  o.ctx_size_in = sizeof(ctx);
  o.ctx_out = &ctx_out;
  o.ctx_size_out = sizeof(ctx_out);
  o.data_in = in.data();
  o.data_size_in = static_cast<__u32>(in.size());
  o.data_out = r.out.data();
  o.data_size_out = static_cast<__u32>(r.out.size());
  o.repeat = 1;
  r.err = bpf_prog_test_run_opts(prog_fd, &o);
  r.retval = o.retval;
  r.mark = ctx_out.mark;
  r.out.resize(r.err == 0 ? o.data_size_out : 0);
  return r;
}

class Uplink : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (HasFatalFailure()) return;
    auto up = bpf::UplinkObject::load(pins.path());
    ASSERT_TRUE(up.ok()) << up.error().message;
    uplink_.emplace(std::move(*up));

    ns_ = netns_.add("up");
    ASSERT_FALSE(ns_.empty());
    const std::string ip = "ip -n " + ns_ + " ";
    for (const char* c :
         {"link add up0 type veth peer name up1", "link set up0 up", "link set up1 up",
          "addr add 10.0.0.11/24 dev up0", "link add pods0 type veth peer name pods1", "link set pods0 up",
          "link set pods1 up",
          "addr add 10.244.1.1/24 dev pods0", "link add veth1 type veth peer name veth2",
          "link set veth1 up", "link set veth2 up", "route add 10.244.2.0/24 via 10.0.0.12 dev up0",
          "neigh add 10.0.0.12 lladdr 02:00:00:00:00:12 dev up0 nud permanent",
          "neigh add 10.0.0.100 lladdr 02:00:00:00:01:00 dev up0 nud permanent",
          "neigh add 10.244.1.5 lladdr 02:00:00:00:02:05 dev pods0 nud permanent",
          "neigh add 10.244.1.9 lladdr 02:00:00:00:02:09 dev pods0 nud permanent",
          // The internet, via the node's gateway.
          "route add 203.0.113.0/24 via 10.0.0.1 dev up0",
          "neigh add 10.0.0.1 lladdr 02:00:00:00:00:01 dev up0 nud permanent"})
      ASSERT_EQ(std::system((ip + c).c_str()), 0) << c;
    auto scope = net::NetnsScope::enter(ns_);
    ASSERT_TRUE(scope.ok()) << scope.error().message;
    scope_.emplace(std::move(*scope));
    {
      std::ofstream fwd("/proc/sys/net/ipv4/ip_forward");  // this namespace's: a node forwards
      fwd << "1";
    }
    up_if_ = if_nametoindex("up0");
    pods_if_ = if_nametoindex("pods0");
    veth_ = if_nametoindex("veth1");
    other_veth_ = if_nametoindex("veth2");
    ASSERT_TRUE(up_if_ && pods_if_ && veth_ && other_veth_);

    set_node_addresses(nullptr, {kNode, kPodGw});
    kpx_config c = maps->read_config();
    c.node_addr_v4 = ipv4(kNode);
    set_config(c);
  }
  void TearDown() override {
    scope_.reset();
    uplink_.reset();
    DatapathTest::TearDown();
  }

  // A NodePort frontend on every node address.
  void set_nodeport(Proto proto, const std::vector<const char*>& backends, uint16_t port = kNodePort) {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    std::vector<net::BackendAddr> bs;
    for (const char* b : backends) bs.push_back({ipv4(b), 8080});
    const dataplane::FrontendKey key{net::IpAddr::from_v4(0), port, proto, dataplane::Scope::kNodePort};
    auto st = dp->upsert(key, dataplane::frontend_of(bs, "default/web"));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  // A NodePort with externalTrafficPolicy Local: the cluster set, and the
  // node's own endpoints as the local set.
  void set_nodeport_local(Proto proto, const std::vector<const char*>& cluster, const std::vector<const char*>& local) {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    std::vector<net::BackendAddr> bs;
    for (const char* b : cluster) bs.push_back({ipv4(b), 8080});
    dataplane::Frontend fe = dataplane::frontend_of(bs, "default/web");
    fe.flags |= dataplane::kLocalOnly;
    for (const char* b : local) fe.local.push_back(dataplane::backend({ipv4(b), 8080}));
    const dataplane::FrontendKey key{net::IpAddr::from_v4(0), kNodePort, proto, dataplane::Scope::kNodePort};
    auto st = dp->upsert(key, fe);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  // Egress masquerade on, the cluster CIDR 10.244.0.0/16, and these
  // non-masquerade CIDRs.
  void set_egress_masquerade(bool on, const std::vector<std::pair<const char*, uint32_t>>& nomasq = {}) {
    kpx_config c = maps->read_config();
    c.flags = on ? (c.flags | KPX_CFG_F_EGRESS_MASQ) : (c.flags & ~uint32_t{KPX_CFG_F_EGRESS_MASQ});
    c.cluster_cidr_v4 = ipv4("10.244.0.0");
    c.cluster_prefix_v4 = 16;
    set_config(c);
    for (const auto& [a, len] : nomasq) ASSERT_TRUE(maps->nomasq.update(kpx_nomasq_key_v4{len, ipv4(a)}, 1).ok());
  }

  // A ClusterIP (10.96.0.10:80): the cluster set, and which of it is on
  // this node (the local set, as compute() writes it).
  void set_cluster_ip(const std::vector<const char*>& cluster, const std::vector<const char*>& local = {}) {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    std::vector<net::BackendAddr> bs;
    for (const char* b : cluster) bs.push_back({ipv4(b), 8080});
    dataplane::Frontend fe = dataplane::frontend_of(bs, "default/web");
    for (const char* b : local) fe.local.push_back(dataplane::backend({ipv4(b), 8080}));
    const dataplane::FrontendKey key{net::IpAddr::from_v4(ipv4(kClusterIp)), 80, Proto::kTcp,
                                     dataplane::Scope::kClusterIP};
    auto st = dp->upsert(key, fe);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  // kube-proxy's masquerade settings as the agent writes them.
  void set_masquerade(uint32_t flags, const char* local_cidr = nullptr, uint8_t prefix = 0) {
    kpx_config c = maps->read_config();
    c.flags = (c.flags & ~uint32_t{KPX_CFG_F_MASQ_ALL | KPX_CFG_F_LOCAL_CIDR | KPX_CFG_F_LOCAL_IF}) | flags;
    c.local_cidr_v4 = local_cidr ? ipv4(local_cidr) : 0;
    c.local_prefix_v4 = prefix;
    set_config(c);
  }

  HookRun from_uplink(const Frame& f, uint32_t mark = 0, uint32_t gso_size = 0) {
    return run(uplink_->from_uplink_fd(), f, up_if_, mark, gso_size);
  }
  HookRun pod_in(const Frame& f, uint32_t ifindex) { return run(obj->from_pod_fd(), f, ifindex); }
  HookRun pod_out(const Frame& f, uint32_t ifindex, uint32_t mark = 0) { return run(obj->to_pod_fd(), f, ifindex, mark); }

  static bool macs_are(const Frame& f, const uint8_t* dst) { return f.size() >= 6 && std::memcmp(f.data(), dst, 6) == 0; }

  kpx_ct_key_v4 key(const char* s, uint16_t sp, const char* d, uint16_t dp, uint8_t proto, uint8_t dir,
                    uint32_t ifindex) const {
    return ct_key(s, sp, d, dp, proto, dir, ifindex);
  }

  std::optional<bpf::UplinkObject> uplink_;
  testing::ScopedNetns netns_;
  std::string ns_;
  std::optional<net::NetnsScope> scope_;
  uint32_t up_if_ = 0, pods_if_ = 0, veth_ = 0, other_veth_ = 0;
};

// The translated frame: parsed, checksums right.
inline packet::Parsed parsed(const HookRun& r) {
  auto p = packet::parse_frame(r.out);
  EXPECT_TRUE(p.has_value());
  if (!p) return {};
  EXPECT_TRUE(p->ip_csum_ok);
  EXPECT_TRUE(p->l4_csum_ok);
  return *p;
}

}  // namespace kpx::bpftest
