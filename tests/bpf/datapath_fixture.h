// Shared by the bpf-label tests: the real kpx_lxc object loaded into the
// kernel with its maps pinned in a fresh bpffs directory per test, frames
// crafted in userspace and run through the programs with BPF_PROG_TEST_RUN.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bpf/object.h"
#include "bpf/pinned_maps.h"
#include "dataplane/conntrack.h"
#include "dataplane/counters.h"
#include "dataplane/service_writer.h"
#include "net/endpoint.h"
#include "packet/craft.h"
#include "support/scoped.h"

namespace kpx::bpftest {

using Frame = std::vector<uint8_t>;
using packet::ipv4;

constexpr size_t kEthLen = 14;

// One BPF_PROG_TEST_RUN: err is the syscall's result (0 or -errno), retval
// the TC action the program returned, out the frame as the program left it.
struct RunResult {
  int err = 0;
  uint32_t retval = 0;
  Frame out;
};

// BPF_PROG_TEST_RUN gives a tc program the loopback device (ifindex 1)
// unless ctx names another device of the caller's network namespace.
constexpr uint32_t kLoIfindex = 1;

inline RunResult test_run(int prog_fd, const Frame& in, uint32_t ifindex = 0) {
  RunResult r;
  r.out.assign(in.size() + 512, 0);
  LIBBPF_OPTS(bpf_test_run_opts, o);
  __sk_buff ctx{};
  if (ifindex > kLoIfindex) {
    ctx.ifindex = ifindex;
    o.ctx_in = &ctx;
    o.ctx_size_in = sizeof(ctx);
  }
  o.data_in = in.empty() ? nullptr : in.data();
  o.data_size_in = static_cast<__u32>(in.size());
  o.data_out = r.out.data();
  o.data_size_out = static_cast<__u32>(r.out.size());
  o.repeat = 1;
  r.err = bpf_prog_test_run_opts(prog_fd, &o);
  r.retval = o.retval;
  r.out.resize(r.err == 0 ? o.data_size_out : 0);
  return r;
}

inline packet::FrameSpec spec(uint8_t proto, const char* saddr, uint16_t sport, const char* daddr,
                              uint16_t dport, uint8_t tcp_flags = 0x10) {
  packet::FrameSpec s;
  s.saddr_be = ipv4(saddr);
  s.daddr_be = ipv4(daddr);
  s.sport = sport;
  s.dport = dport;
  s.proto = proto;
  s.tcp_flags = tcp_flags;
  return s;
}

inline Frame tcp(const char* saddr, uint16_t sport, const char* daddr, uint16_t dport,
                 uint8_t flags = 0x10) {
  return packet::build_frame(spec(IPPROTO_TCP, saddr, sport, daddr, dport, flags));
}

inline Frame udp(const char* saddr, uint16_t sport, const char* daddr, uint16_t dport,
                 bool zero_csum = false) {
  auto s = spec(IPPROTO_UDP, saddr, sport, daddr, dport);
  s.udp_zero_csum = zero_csum;
  return packet::build_frame(s);
}

inline std::string addr_str(uint32_t be) { return net::format_ipv4(be); }

// Offsets of the checksum fields of a frame built from s.
inline size_t ip_csum_off() { return kEthLen + 10; }
inline size_t l4_csum_off(const packet::FrameSpec& s) {
  return kEthLen + 20 + s.ip_options_len + (s.proto == IPPROTO_TCP ? 16 : 6);
}

// The frame a correct translation of `in_spec` to `out_spec` produces: the
// input with the new addresses and ports, every other byte as it was. The
// checksum fields are taken from `actual` (an incremental update may
// legitimately differ from a full recomputation in the +0/-0 encoding);
// whether they are right is checked separately with parse_frame. With
// swap_macs the Ethernet addresses are exchanged (hairpin bounce).
inline Frame expected_translation(const packet::FrameSpec& out_spec, const Frame& actual,
                                  bool swap_macs = false, bool keep_l4_csum = false) {
  Frame want = packet::build_frame(out_spec);
  if (actual.size() != want.size()) return want;
  want[ip_csum_off()] = actual[ip_csum_off()];
  want[ip_csum_off() + 1] = actual[ip_csum_off() + 1];
  if (!keep_l4_csum) {
    want[l4_csum_off(out_spec)] = actual[l4_csum_off(out_spec)];
    want[l4_csum_off(out_spec) + 1] = actual[l4_csum_off(out_spec) + 1];
  }
  if (swap_macs) {
    uint8_t tmp[6];
    std::memcpy(tmp, want.data(), 6);
    std::memcpy(want.data(), want.data() + 6, 6);
    std::memcpy(want.data() + 6, tmp, 6);
  }
  return want;
}

// A test with its own pin dir, the object loaded, the maps open.
class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(load(&err)) << err;
    writer.emplace(*maps);
  }
  // Load the object and open its maps; false with *err on failure.
  [[gnu::noinline]] bool load(std::string* err) {
    {
      auto o = bpf::LxcObject::load(pins.path());
      if (!o.ok()) {
        *err = "load: " + o.error().message;
        return false;
      }
      obj.emplace(std::move(o).value());
    }
    auto m = bpf::PinnedMaps::open(pins.path());
    if (!m.ok()) {
      *err = "open maps: " + m.error().message;
      return false;
    }
    maps.emplace(std::move(m).value());
    return true;
  }
  void TearDown() override {
    writer.reset();
    maps.reset();
    obj.reset();
  }

  RunResult from_pod(const Frame& f, uint32_t ifindex = 0) { return test_run(obj->from_pod_fd(), f, ifindex); }
  RunResult to_pod(const Frame& f, uint32_t ifindex = 0) { return test_run(obj->to_pod_fd(), f, ifindex); }

  // The node's hairpin address (and other node-owned addresses), as the
  // agent programs them: map, classification filter and config.
  void set_node_addresses(const char* hairpin, const std::vector<const char*>& nodes = {}) {
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    std::vector<uint32_t> addrs;
    for (const char* n : nodes) addrs.push_back(ipv4(n));
    auto st = dp->set_node_addresses(addrs, hairpin ? ipv4(hairpin) : 0);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  // Program a Service; returns its svc_id (0 on failure, with a test failure).
  uint32_t set_service(const char* vip, uint16_t port, net::Proto proto,
                       const std::vector<std::pair<const char*, uint16_t>>& backends) {
    std::vector<net::BackendAddr> bs;
    for (const auto& [a, p] : backends) bs.push_back({ipv4(a), p});
    const net::ServiceAddr svc{ipv4(vip), port, proto};
    auto st = writer->set(svc, bs);
    EXPECT_TRUE(st.ok()) << st.error().message;
    auto v = maps->services.lookup(dataplane::service_key(svc));
    EXPECT_TRUE(v.has_value());
    return v ? v->svc_id : 0;
  }

  // Write the config's settings; like the CLI, keep the conntrack cache
  // epoch it holds (resetting it could make voided cache slots valid again).
  void set_config(kpx_config cfg) {
    cfg.ct_epoch = maps->read_config().ct_epoch;
    auto st = maps->config.update(0, cfg);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  uint64_t counter(kpx_counter c) const {
    auto r = dataplane::read_counters(*maps);
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok() || r->size() <= static_cast<size_t>(c)) return ~uint64_t{0};
    return (*r)[c].second;
  }
  std::vector<uint64_t> all_counters() const {
    std::vector<uint64_t> out;
    for (uint32_t c = 0; c < KPX_CTR_MAX; ++c) out.push_back(counter(static_cast<kpx_counter>(c)));
    return out;
  }

  static kpx_ct_key_v4 ct_key(const char* saddr, uint16_t sport, const char* daddr, uint16_t dport,
                              uint8_t proto, uint8_t dir, uint32_t ifindex = kLoIfindex) {
    kpx_ct_key_v4 k{};
    k.ifindex = ifindex;
    k.saddr = ipv4(saddr);
    k.daddr = ipv4(daddr);
    k.sport = htons(sport);
    k.dport = htons(dport);
    k.proto = proto;
    k.dir = dir;
    return k;
  }
  std::optional<kpx_ct_value_v4> ct(const char* saddr, uint16_t sport, const char* daddr, uint16_t dport,
                                    uint8_t proto, uint8_t dir) const {
    return maps->conntrack.lookup(ct_key(saddr, sport, daddr, dport, proto, dir));
  }
  size_t ct_size() const { return maps->conntrack.keys().size(); }
  // Overwrite a conntrack entry from userspace. As the ABI asks of any
  // userspace change to conntrack entries, bump config.ct_epoch afterwards,
  // which voids every per-CPU conntrack cache slot still holding the old
  // copy of the entry.
  // A FORWARD entry's REPLY entry is aged with it (no replies either:
  // replies keep a flow alive, see ct_reply_recent).
  void age_reply_like(const kpx_ct_key_v4& fk, const kpx_ct_value_v4& fv) {
    if (fk.dir != KPX_CT_FORWARD) return;
    const kpx_ct_key_v4 rk = dataplane::reply_key_of(fk, fv);
    auto rv = maps->conntrack.lookup(rk);
    if (!rv || rv->last_seen_ns <= fv.last_seen_ns) return;
    rv->last_seen_ns = fv.last_seen_ns;
    ASSERT_TRUE(maps->conntrack.update(rk, *rv).ok());
  }

  // Make a hand-written entry whole, as the datapath writes them: a gen and
  // the check word over the key and the immutable fields.
  static kpx_ct_value_v4 sealed(const kpx_ct_key_v4& k, kpx_ct_value_v4 v) {
    if (v.gen == KPX_CT_GEN_DEAD) v.gen = 0x5eed0001u;
    v.check = kpx_ct_check_v4(&k, &v);
    return v;
  }
  void ct_write(const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    auto st = maps->conntrack.update(k, sealed(k, v));
    ASSERT_TRUE(st.ok()) << st.error().message;
    age_reply_like(k, v);
    auto ep = maps->bump_ct_epoch();
    ASSERT_TRUE(ep.ok()) << ep.error().message;
  }

  testing::ScopedPinDir pins;  // first: destroyed after everything using it
  std::optional<bpf::LxcObject> obj;
  std::optional<bpf::PinnedMaps> maps;
  std::optional<dataplane::ServiceWriter> writer;
};

}  // namespace kpx::bpftest
