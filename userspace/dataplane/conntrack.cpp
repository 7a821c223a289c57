#include "dataplane/conntrack.h"

#include "bpf/gc_object.h"

#include <arpa/inet.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace kpx::dataplane {

uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

bool ct_valid(const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
  return v.gen != KPX_CT_GEN_DEAD && v.check == kpx_ct_check_v4(&k, &v);
}

std::vector<CtEntry> list_conntrack(const bpf::PinnedMaps& maps) {
  const uint64_t now = monotonic_coarse_ns();
  auto since = [now](uint64_t t) { return t < now ? (now - t) / 1000000000ULL : 0; };
  std::vector<CtEntry> out;
  maps.conntrack.scan([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    if (ct_valid(k, v)) out.push_back({k, v, since(v.created_ns), since(v.last_seen_ns)});
  });
  auto order = [](const CtEntry& e) {
    return std::make_tuple(ntohl(e.key.saddr), ntohs(e.key.sport), ntohl(e.key.daddr), ntohs(e.key.dport),
                           e.key.proto, e.key.dir, e.key.ifindex);
  };
  std::sort(out.begin(), out.end(), [&](const CtEntry& a, const CtEntry& b) { return order(a) < order(b); });
  out.erase(std::unique(out.begin(), out.end(),
                        [&](const CtEntry& a, const CtEntry& b) { return order(a) == order(b); }),
            out.end());
  return out;
}

kpx_ct_key_v4 reply_key_of(const kpx_ct_key_v4& forward, const kpx_ct_value_v4& fv) {
  kpx_ct_key_v4 r{};
  r.saddr = fv.nat_addr;
  r.daddr = fv.snat_addr ? fv.snat_addr : forward.saddr;
  r.sport = fv.nat_port;
  r.dport = fv.snat_port ? fv.snat_port : forward.sport;
  r.proto = forward.proto;
  r.dir = KPX_CT_REPLY;
  // An uplink flow's REPLY entry is where the backend's replies arrive.
  r.ifindex = (fv.flags & KPX_CT_F_UPLINK) ? fv.out_ifindex : forward.ifindex;
  return r;
}

kpx_ct_key_v4 forward_key_of(const kpx_ct_key_v4& reply, const kpx_ct_value_v4& rv) {
  kpx_ct_key_v4 f{};
  f.saddr = rv.snat_addr ? rv.snat_addr : reply.daddr;  // hairpin: the original client
  f.daddr = rv.nat_addr;
  f.sport = rv.snat_port ? rv.snat_port : reply.dport;  // port remap: the client's own port
  f.dport = rv.nat_port;
  f.proto = reply.proto;
  f.dir = KPX_CT_FORWARD;
  f.ifindex = (rv.flags & KPX_CT_F_UPLINK) ? rv.out_ifindex : reply.ifindex;
  return f;
}

uint64_t ct_timeout_ns(const kpx_ct_value_v4& v, uint8_t proto, const kpx_config& cfg) {
  return static_cast<uint64_t>(kpx_ct_timeout_s(&v, proto, &cfg)) * 1000000000ULL;
}

namespace {

struct KeyLess {
  bool operator()(const kpx_ct_key_v4& a, const kpx_ct_key_v4& b) const {
    return std::memcmp(&a, &b, sizeof(a)) < 0;
  }
};
using Table = std::map<kpx_ct_key_v4, kpx_ct_value_v4, KeyLess>;

Table read_table(const bpf::PinnedMaps& maps) {
  Table t;
  maps.conntrack.scan([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) { t[k] = v; });
  return t;
}

void add_refs(FlowRefs& refs, const kpx_ct_key_v4& fk, const kpx_ct_value_v4& fv) {
  // A pod's masqueraded egress flow (no frontend: svc_id 0) goes through
  // no frontend or backend bit.
  if ((fv.flags & KPX_CT_F_UPLINK) && fv.svc_id == 0) return;
  refs.frontend_slots.insert(kpx_filter_slot_addr_v4(fk.daddr));
  refs.backend_slots.insert(kpx_filter_slot_backend_v4(fv.nat_addr, fv.nat_port, fk.proto));
  // An uplink flow to a NodePort: its port's slot (kpx_from_uplink's
  // port filter), kept as a backend's.
  if (fv.flags & KPX_CT_F_UPLINK) refs.backend_slots.insert(kpx_filter_slot_backend_v4(0, fk.dport, fk.proto));
}

}  // namespace

FlowRefs flow_refs(const bpf::PinnedMaps& maps) {
  FlowRefs refs;
  maps.conntrack.scan([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    if (k.dir == KPX_CT_FORWARD && ct_valid(k, v)) add_refs(refs, k, v);
  });
  return refs;
}

GcPlan plan_conntrack_gc(const bpf::PinnedMaps& maps, uint64_t now_ns) {
  // The datapath stamps last-seen at most once a second, and a flow served
  // from the per-CPU cache reaches its entry once a second: keep a margin.
  // A FORWARD entry without its REPLY heals at its next stamp; one that
  // stays without it for longer than kHealWindowNs carries no traffic.
  constexpr uint64_t kMarginNs = 5ULL * 1000000000ULL;
  constexpr uint64_t kHealWindowNs = 3ULL * 1000000000ULL;
  const kpx_config cfg = maps.read_config();
  const Table t = read_table(maps);
  GcPlan plan;
  auto idle = [&](const kpx_ct_value_v4& v) { return v.last_seen_ns < now_ns ? now_ns - v.last_seen_ns : 0; };
  std::set<kpx_ct_key_v4, KeyLess> doomed;
  auto doom = [&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    if (doomed.insert(k).second) plan.items.push_back({k, v.gen});
  };
  for (const auto& [k, v] : t) {
    if (k.dir != KPX_CT_FORWARD || !ct_valid(k, v)) continue;
    const kpx_ct_key_v4 r = reply_key_of(k, v);
    auto rit = t.find(r);
    const bool has_reply = rit != t.end() && ct_valid(r, rit->second) && rit->second.gen == v.gen;
    if (idle(v) > ct_timeout_ns(v, k.proto, cfg) + kMarginNs) {
      doom(k, v);
      if (has_reply) doom(r, rit->second);
      ++plan.expired;
      continue;
    }
    if (!has_reply && idle(v) > kHealWindowNs) {
      doom(k, v);
      ++plan.half_flows;
      continue;
    }
    add_refs(plan.live, k, v);
  }
  for (const auto& [r, v] : t) {
    if (r.dir != KPX_CT_REPLY || doomed.count(r) || !ct_valid(r, v)) continue;
    const kpx_ct_key_v4 f = forward_key_of(r, v);
    auto fit = t.find(f);
    // A flow being created writes FORWARD first, then REPLY: a REPLY without
    // its FORWARD is never a half-made flow.
    if (fit != t.end() && ct_valid(f, fit->second) && fit->second.gen == v.gen && !doomed.count(f)) continue;
    doom(r, v);
    ++plan.orphans;
  }
  return plan;
}

Result<size_t> reap_conntrack(const bpf::PinnedMaps& maps, const std::string& pin_dir, const GcPlan& plan) {
  if (plan.items.empty()) return size_t{0};
  auto gc = bpf::GcObject::load(pin_dir);
  if (!gc) return gc.error();
  std::vector<bpf::ReapItem> items;
  items.reserve(plan.items.size());
  for (const auto& it : plan.items) items.push_back({it.key, it.gen});
  auto n = gc->reap(items);
  (void)maps;
  return n;
}

Result<GcStats> collect_conntrack(const bpf::PinnedMaps& maps, const std::string& pin_dir, uint64_t now_ns) {
  GcPlan plan = plan_conntrack_gc(maps, now_ns);
  GcStats st;
  st.expired = plan.expired;
  st.orphans = plan.orphans;
  st.half_flows = plan.half_flows;
  auto n = reap_conntrack(maps, pin_dir, plan);
  if (!n) return n.error();
  st.reaped = *n;
  st.live = std::move(plan.live);
  return st;
}

std::string ct_flags_string(uint16_t flags) {
  static const std::pair<uint16_t, const char*> kNames[] = {
      {KPX_CT_F_SYN, "SYN"}, {KPX_CT_F_ESTABLISHED, "ESTABLISHED"}, {KPX_CT_F_FIN, "FIN"},
      {KPX_CT_F_RST, "RST"}, {KPX_CT_F_HAIRPIN, "HAIRPIN"}, {KPX_CT_F_REPLY_FIN, "REPLY_FIN"},
      {KPX_CT_F_PORT_REMAP, "PORT_REMAP"},
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
