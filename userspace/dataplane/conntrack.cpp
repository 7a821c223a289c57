#include "dataplane/conntrack.h"

#include <arpa/inet.h>
#include <time.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace kpx::dataplane {

uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

std::vector<CtEntry> list_conntrack(const bpf::PinnedMaps& maps) {
  const uint64_t now = monotonic_coarse_ns();
  auto since = [now](uint64_t t) { return t < now ? (now - t) / 1000000000ULL : 0; };
  std::vector<CtEntry> out;
  maps.conntrack.for_each([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    out.push_back({k, v, since(v.created_ns), since(v.last_seen_ns)});
  });
  auto order = [](const CtEntry& e) {
    return std::make_tuple(ntohl(e.key.saddr), ntohs(e.key.sport), ntohl(e.key.daddr), ntohs(e.key.dport),
                           e.key.proto, e.key.dir);
  };
  std::sort(out.begin(), out.end(), [&](const CtEntry& a, const CtEntry& b) { return order(a) < order(b); });
  return out;
}

kpx_ct_key_v4 reply_key_of(const kpx_ct_key_v4& forward, const kpx_ct_value_v4& fv) {
  kpx_ct_key_v4 r{};
  r.saddr = fv.nat_addr;
  r.daddr = fv.snat_addr ? fv.snat_addr : forward.saddr;
  r.sport = fv.nat_port;
  r.dport = forward.sport;
  r.proto = forward.proto;
  r.dir = KPX_CT_REPLY;
  return r;
}

kpx_ct_key_v4 forward_key_of(const kpx_ct_key_v4& reply, const kpx_ct_value_v4& rv) {
  kpx_ct_key_v4 f{};
  f.saddr = rv.snat_addr ? rv.snat_addr : reply.daddr;  // hairpin: the original client
  f.daddr = rv.nat_addr;
  f.sport = reply.dport;
  f.dport = rv.nat_port;
  f.proto = reply.proto;
  f.dir = KPX_CT_FORWARD;
  return f;
}

uint64_t ct_timeout_ns(const kpx_ct_value_v4& v, uint8_t proto, const kpx_config& cfg) {
  auto pick = [](uint32_t configured, uint32_t dflt) { return static_cast<uint64_t>(configured ? configured : dflt); };
  uint64_t s;
  if (proto == IPPROTO_TCP) {
    if (v.flags & KPX_CT_F_RST)
      s = pick(cfg.tcp_closing_timeout_s, KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S);
    else if (v.flags & KPX_CT_F_FIN)
      s = pick(cfg.tcp_fin_timeout_s, KPX_DEFAULT_TCP_FIN_TIMEOUT_S);
    else if (v.flags & KPX_CT_F_ESTABLISHED)
      s = pick(cfg.tcp_established_timeout_s, KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S);
    else
      s = pick(cfg.tcp_syn_timeout_s, KPX_DEFAULT_TCP_SYN_TIMEOUT_S);
  } else {
    s = pick(cfg.udp_timeout_s, KPX_DEFAULT_UDP_TIMEOUT_S);
  }
  return s * 1000000000ULL;
}

GcStats collect_conntrack(bpf::PinnedMaps& maps, uint64_t now_ns) {
  // The datapath stamps last-seen at most once a second, and a flow served
  // from the per-CPU cache reaches its entry once a second: keep a margin.
  constexpr uint64_t kMarginNs = 5ULL * 1000000000ULL;
  const kpx_config cfg = maps.read_config();
  GcStats st;
  std::vector<kpx_ct_key_v4> replies;
  for (const auto& k : maps.conntrack.keys()) {
    if (k.dir == KPX_CT_REPLY) {
      replies.push_back(k);
      continue;
    }
    auto v = maps.conntrack.lookup(k);
    if (!v || v->last_seen_ns > now_ns) continue;
    const uint64_t limit = ct_timeout_ns(*v, k.proto, cfg) + kMarginNs;
    if (now_ns - v->last_seen_ns <= limit) continue;
    const kpx_ct_key_v4 r = reply_key_of(k, *v);
    // Replies keep a flow alive too (bpf/lib/conntrack.h ct_reply_recent).
    if (auto rv = maps.conntrack.lookup(r); rv && (rv->last_seen_ns >= now_ns || now_ns - rv->last_seen_ns <= limit))
      continue;
    maps.conntrack.erase(k);
    maps.conntrack.erase(r);
    ++st.expired;
  }
  for (const auto& r : replies) {
    auto v = maps.conntrack.lookup(r);
    if (!v) continue;
    auto fv = maps.conntrack.lookup(forward_key_of(r, *v));
    if (fv && fv->nat_addr == r.saddr && fv->nat_port == r.sport) continue;
    // A flow being created writes FORWARD first, then REPLY: a REPLY without
    // its FORWARD is never a half-made flow.
    if (maps.conntrack.erase(r)) ++st.orphans;
  }
  if (st.expired + st.orphans > 0) (void)maps.bump_ct_epoch();
  return st;
}

std::string ct_flags_string(uint16_t flags) {
  static const std::pair<uint16_t, const char*> kNames[] = {
      {KPX_CT_F_SYN, "SYN"}, {KPX_CT_F_ESTABLISHED, "ESTABLISHED"}, {KPX_CT_F_FIN, "FIN"},
      {KPX_CT_F_RST, "RST"}, {KPX_CT_F_HAIRPIN, "HAIRPIN"},
  };
  std::string s;
  for (const auto& [bit, name] : kNames) {
    if (!(flags & bit)) continue;
    if (!s.empty()) s += '|';
    s += name;
  }
  return s.empty() ? "-" : s;
}

}  // namespace kpx::dataplane
