#include "dataplane/dataplane.h"

#include "dataplane/conntrack.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>


namespace kpx::dataplane {

namespace {

net::BackendAddr backend_of(const kpx_backend_value_v4& v) { return {v.addr, ntohs(v.port)}; }

// local: the backend is on this node (KPX_BE_F_LOCAL: where a masqueraded
// flow's replies come from). A pod's address is on one node, so the flag
// is fixed with the backend's id.
kpx_backend_value_v4 backend_value(const net::BackendAddr& b, bool local) {
  kpx_backend_value_v4 v{};
  v.addr = b.addr_be;
  v.port = htons(b.port);
  v.flags = local ? KPX_BE_F_LOCAL : 0;
  return v;
}

// The IPv4 address of a contract address (0 for IPv6: refused before use).
uint32_t v4_of(const net::IpAddr& a) { return a.v4().value_or(0); }

net::BackendAddr v4_backend(const Backend& b) { return {v4_of(b.addr), b.port}; }

// The slot contents of a frontend: the cluster set, then the local set.
std::vector<net::BackendAddr> slot_order(const Frontend& fe) {
  std::vector<net::BackendAddr> out;
  out.reserve(fe.cluster.size() + fe.local.size());
  for (const auto& b : fe.cluster) out.push_back(v4_backend(b));
  for (const auto& b : fe.local) out.push_back(v4_backend(b));
  return out;
}

bool is_v4(const net::IpAddr& a) { return a.family == net::IpAddr::Family::kV4; }

// The endpoints a UDP frontend stops serving, to `lost` as {svc_id,
// backend}: those it had (its slots and its draining endpoints) that are in
// neither of its new ones (none when it goes: after == nullptr). An
// endpoint that still serves keeps its flows, as kube-proxy keeps them
// (pkg/proxy/conntrack: only entries to endpoints that are not serving go).
void add_lost(std::vector<std::pair<uint32_t, net::BackendAddr>>& lost, uint32_t svc_id,
              const std::vector<net::BackendAddr>& before_slots, const Frontend& before,
              const std::vector<net::BackendAddr>& after_slots, const Frontend* after) {
  std::set<net::BackendAddr> keep(after_slots.begin(), after_slots.end());
  if (after)
    for (const auto& d : after->draining)
      if (is_v4(d.addr)) keep.insert(v4_backend(d));
  std::set<net::BackendAddr> had(before_slots.begin(), before_slots.end());
  for (const auto& d : before.draining)
    if (is_v4(d.addr)) had.insert(v4_backend(d));
  for (const auto& b : had)
    if (!keep.count(b)) lost.push_back({svc_id, b});
}

// Ids not in `used`, below the next free one, for reuse; returns next free.
uint32_t free_ids(const std::set<uint32_t>& used, std::vector<uint32_t>* free_list) {
  uint32_t next = used.empty() ? 1 : *used.rbegin() + 1;
  uint32_t expect = 1;
  for (uint32_t u : used) {
    for (; expect < u; ++expect) free_list->push_back(expect);
    expect = u + 1;
  }
  std::reverse(free_list->begin(), free_list->end());  // pop_back gives the lowest
  return next;
}

// Whether the maps, as `st` says they are, already hold these entries:
// the slots in order, the cluster set's length, the flags and the
// affinity timeout (the rest of a Frontend is memory only).
bool holds_entries(const FrontendState& st, const std::vector<net::BackendAddr>& slots, size_t cluster_count,
                   const Frontend& fe) {
  return st.whole && st.backends == slots && st.cluster_count == cluster_count && st.fe.flags == fe.flags &&
         st.fe.affinity_timeout_s == fe.affinity_timeout_s;
}

}  // namespace

kpx_service_key_v4 service_key(const FrontendKey& key) {
  kpx_service_key_v4 k{};
  k.addr = v4_of(key.addr);
  k.port = htons(key.port);
  k.proto = static_cast<uint8_t>(key.proto);
  k.scope = static_cast<uint8_t>(key.scope);
  return k;
}

kpx_service_key_v4 service_key(const net::ServiceAddr& svc) { return service_key(cluster_ip_key(svc)); }

ServiceTable cluster_ips(const std::map<FrontendKey, FrontendState>& frontends) {
  ServiceTable out;
  for (const auto& [key, st] : frontends)
    if (key.scope == Scope::kClusterIP && key.addr.v4()) out[{*key.addr.v4(), key.port, key.proto}] = st.cluster();
  return out;
}

uint8_t scope_bit(Scope s) { return static_cast<uint8_t>(1u << static_cast<uint8_t>(s)); }

std::vector<FrontendKey> Dataplane::owned_by(const std::string& service) const {
  auto it = by_owner_.find(service);
  if (it == by_owner_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

void Dataplane::set_owner(const FrontendKey& key, const std::string& old_owner, const std::string& new_owner) {
  if (old_owner == new_owner) return;
  if (auto it = by_owner_.find(old_owner); it != by_owner_.end()) {
    it->second.erase(key);
    if (it->second.empty()) by_owner_.erase(it);
  }
  if (!new_owner.empty()) by_owner_[new_owner].insert(key);
}

uint32_t frontend_slot(uint32_t addr_be) { return kpx_filter_slot_addr_v4(addr_be); }

// A loadBalancerSourceRanges entry of the frontend with svc_id.
kpx_src_range_key_v4 range_key(uint32_t svc_id, const net::Ipv4Cidr& c) {
  kpx_src_range_key_v4 k{};
  k.prefixlen = 32u + c.prefix;
  k.svc_id = htonl(svc_id);
  k.addr = c.addr_be;
  return k;
}

bool has_range(const std::vector<net::Ipv4Cidr>& v, const net::Ipv4Cidr& c) {
  return std::binary_search(v.begin(), v.end(), c);
}

// The filter bits a frontend's backends get: every backend's, and for a
// north-south frontend with traffic policy Local the bit that makes
// kpx_from_pod look up its backends' replies to outside clients.
uint8_t backend_bits(const FrontendKey& key, uint32_t flags) {
  const bool direct = (flags & kLocalOnly) && key.scope != Scope::kClusterIP;
  return static_cast<uint8_t>(KPX_FILT_BACKEND | (direct ? KPX_FILT_DIRECT_REPLY : 0));
}

uint32_t backend_slot(const net::BackendAddr& b, net::Proto proto) {
  return kpx_filter_slot_backend_v4(b.addr_be, htons(b.port), static_cast<uint8_t>(proto));
}

// A NodePort's port (address 0 in the backend slot hash): kpx_from_uplink
// passes a frame to a node address whose port has no bit (and is no port
// of the SNAT range) before any conntrack lookup.
bool is_node_port(const FrontendKey& key) { return key.scope == Scope::kNodePort; }
uint32_t node_port_slot(const FrontendKey& key) {
  return kpx_filter_slot_backend_v4(0, htons(key.port), static_cast<uint8_t>(key.proto));
}

Result<Dataplane> Dataplane::recover(bpf::PinnedMaps& maps, uint32_t slot_capacity, uint32_t backend_capacity) {
  return read_back(maps, slot_capacity, backend_capacity, true);
}

Result<Dataplane> Dataplane::read_back(bpf::PinnedMaps& maps, uint32_t slot_capacity, uint32_t backend_capacity,
                                       bool take_over) {
  Dataplane dp(maps);
  dp.slot_capacity_ = std::min<uint32_t>(slot_capacity, KPX_MAX_SERVICE_SLOTS);
  dp.slots_ = SlotAllocator(dp.slot_capacity_);
  dp.backend_capacity_ = std::min<uint32_t>(backend_capacity, KPX_MAX_BACKENDS);
  std::set<uint32_t> svc_ids, backend_ids;
  std::map<uint32_t, std::optional<net::BackendAddr>> backend_by_id;  // read on demand
  auto backend = [&](uint32_t id) -> std::optional<net::BackendAddr> {
    auto [it, fresh] = backend_by_id.try_emplace(id);
    if (fresh) {
      auto v = maps.backends.lookup(id);
      if (v && v->addr != 0) it->second = backend_of(*v);
    }
    return it->second;
  };

  maps.services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
    if (k.scope >= KPX_SCOPE_MAX || (k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP)) return;
    const FrontendKey key{net::IpAddr::from_v4(k.addr), ntohs(k.port), static_cast<net::Proto>(k.proto),
                          static_cast<Scope>(k.scope)};
    const net::Proto proto = key.proto;
    FrontendState st;
    st.svc_id = v.svc_id;
    st.slot_base = v.slot_base;
    st.fe.flags = v.flags;
    st.fe.affinity_timeout_s = v.affinity_timeout_s;
    const uint32_t n = v.backend_count + v.local_count;
    const uint64_t end = static_cast<uint64_t>(v.slot_base) + n;
    if (end > slot_capacity || end > KPX_MAX_SERVICE_SLOTS || !dp.slots_.reserve(v.slot_base, n)) {
      // A range outside the map or overlapping another: rewritten whole by
      // the next apply (an empty set here never matches a desired one).
      st.slot_base = 0;
    } else {
      // The live range only: the cluster set, then the local set.
      std::vector<uint32_t> ids(n, 0);
      for (uint32_t s = 0; s < n; ++s) ids[s] = maps.service_slots.lookup(v.slot_base + s).value_or(0);
      bool whole = true;
      for (uint32_t s = 0; s < n; ++s) {
        const uint32_t id = ids[s];
        auto b = id == 0 || id >= dp.backend_capacity_ ? std::nullopt : backend(id);
        if (!b) {
          whole = false;  // read back short: never equal to a desired set, so rewritten
          continue;
        }
        st.backends.push_back(*b);
        (s < v.backend_count ? st.fe.cluster : st.fe.local).push_back(dataplane::backend(*b));
        if (s < v.backend_count) ++st.cluster_count;
        BackendRef& ref = dp.backends_[*b];
        ref.id = id;
        ++ref.refs;
        backend_ids.insert(id);
        dp.filter_.add(backend_slot(*b, proto), backend_bits(key, v.flags));
      }
      st.whole = whole;
    }
    dp.filter_.add(frontend_slot(k.addr), scope_bit(key.scope));
    if (is_node_port(key)) dp.filter_.add(node_port_slot(key), KPX_FILT_NODE_PORT);
    svc_ids.insert(v.svc_id);
    dp.services_[key] = std::move(st);
  });

  // Source ranges, to the frontends whose svc_id they name.
  {
    std::map<uint32_t, Frontend*> by_id;
    for (auto& [key, st] : dp.services_) by_id[st.svc_id] = &st.fe;
    maps.source_ranges.for_each([&](const kpx_src_range_key_v4& k, const uint32_t&) {
      auto it = by_id.find(ntohl(k.svc_id));
      if (it == by_id.end() || k.prefixlen < 32 || k.prefixlen > 64) return;  // a leftover
      it->second->source_ranges.push_back({k.addr, static_cast<uint8_t>(k.prefixlen - 32)});
    });
    for (auto& [id, fe] : by_id) std::sort(fe->source_ranges.begin(), fe->source_ranges.end());
  }
  KPX_TRY(dp.load_node_addresses());
  if (!take_over) return dp;  // an audit: what the maps hold, nothing written
  // Flows through frontends and backends that are gone keep their bits.
  FlowRefs refs = flow_refs(maps);
  for (uint32_t slot : refs.frontend_slots)
    if (!(dp.filter_.bits(slot) & KPX_FILT_FRONTEND)) dp.retain(true, slot, KPX_FILT_CLUSTER_IP);
  for (uint32_t slot : refs.backend_slots)
    if (!(dp.filter_.bits(slot) & KPX_FILT_BACKEND)) dp.retain(false, slot, KPX_FILT_BACKEND);
  // Every bit this state needs is (re)written; bits set by an earlier state
  // may stay until remove_leftovers() (a stale set bit costs a lookup, never
  // a wrong translation).
  KPX_TRY(dp.filter_.flush(maps.filter));

  dp.next_service_id_ = free_ids(svc_ids, &dp.free_service_ids_);
  dp.next_backend_id_ = free_ids(backend_ids, &dp.free_backend_ids_);
  return dp;
}

Status Dataplane::load_node_addresses() {
  hairpin_ = maps_->read_config().hairpin_addr_v4;
  node_addrs_.clear();
  std::vector<uint32_t> all;
  maps_->node_addrs.for_each([&](const uint32_t& a, const uint32_t& flags) {
    all.push_back(a);
    if (flags & KPX_NODE_ADDR_F_NODE) node_addrs_.push_back(a);
  });
  for (uint32_t a : all) filter_.add(frontend_slot(a), KPX_FILT_NODE_ADDR);
  return {};
}

Status Dataplane::set_node_addresses(const std::vector<uint32_t>& node_addrs_be, uint32_t hairpin_be,
                                     const std::optional<std::vector<uint32_t>>& nodeport_addrs_be) {
  std::map<uint32_t, uint32_t> want;
  for (uint32_t a : node_addrs_be)
    if (a) want[a] |= KPX_NODE_ADDR_F_NODE | (nodeport_addrs_be ? 0 : KPX_NODE_ADDR_F_NODEPORT);
  if (nodeport_addrs_be)
    for (uint32_t a : *nodeport_addrs_be)
      if (want.count(a)) want[a] |= KPX_NODE_ADDR_F_NODEPORT;
  if (hairpin_be) want[hairpin_be] |= KPX_NODE_ADDR_F_HAIRPIN;
  if (want.size() > KPX_MAX_NODE_ADDRS)
    return invalid_argument("more than " + std::to_string(KPX_MAX_NODE_ADDRS) + " node addresses");
  std::map<uint32_t, uint32_t> have;
  maps_->node_addrs.for_each([&](const uint32_t& a, const uint32_t& f) { have[a] = f; });
  // New addresses first (map, filter), then the config, then what went.
  for (const auto& [a, f] : want) {
    if (have.count(a) && have[a] == f) continue;
    KPX_TRY(maps_->node_addrs.update(a, f));
    if (!have.count(a)) filter_.add(frontend_slot(a), KPX_FILT_NODE_ADDR);
  }
  KPX_TRY(filter_.flush(maps_->filter));
  kpx_config c = maps_->read_config();
  c.hairpin_addr_v4 = hairpin_be;
  KPX_TRY(maps_->config.update(0, c));
  for (const auto& [a, f] : have) {
    if (want.count(a)) continue;
    maps_->node_addrs.erase(a);
    filter_.remove(frontend_slot(a), KPX_FILT_NODE_ADDR);
  }
  KPX_TRY(filter_.flush(maps_->filter));
  node_addrs_ = node_addrs_be;
  hairpin_ = hairpin_be;
  return {};
}

void Dataplane::retain(bool frontend, uint32_t slot, uint8_t bits) {
  auto& m = frontend ? retained_frontends_ : retained_backends_;
  ++m[{slot, bits}];
  filter_.add(slot, bits);
}

Status Dataplane::release_unreferenced(const FlowRefs& live) {
  auto release = [&](std::map<std::pair<uint32_t, uint8_t>, uint32_t>& m, const std::set<uint32_t>& used) {
    for (auto it = m.begin(); it != m.end();) {
      if (used.count(it->first.first)) {
        ++it;
        continue;
      }
      for (uint32_t i = 0; i < it->second; ++i) filter_.remove(it->first.first, it->first.second);
      it = m.erase(it);
    }
  };
  release(retained_frontends_, live.frontend_slots);
  release(retained_backends_, live.backend_slots);
  return filter_.flush(maps_->filter);
}

Result<Dataplane::AuditResult> Dataplane::audit() {
  auto held = read_back(*maps_, slot_capacity_, backend_capacity_, false);
  if (!held) return held.error();
  AuditResult r;
  for (auto& [key, want] : services_) {
    auto it = held->services_.find(key);
    const bool same = it != held->services_.end() && it->second.svc_id == want.svc_id &&
                      it->second.slot_base == want.slot_base &&
                      holds_entries(it->second, want.backends, want.cluster_count, want.fe);
    if (!same && want.whole) {
      want.whole = false;
      ++r.drifted;
    }
  }
  for (const auto& [key, st] : held->services_)
    if (!services_.count(key)) r.foreign += maps_->services.erase(service_key(key));
  return r;
}

void Dataplane::remove_leftovers() {
  // Source ranges no frontend holds.
  {
    std::map<uint32_t, const Frontend*> by_id;
    for (const auto& [key, st] : services_) by_id[st.svc_id] = &st.fe;
    std::vector<kpx_src_range_key_v4> stale;
    maps_->source_ranges.for_each([&](const kpx_src_range_key_v4& k, const uint32_t&) {
      auto it = by_id.find(ntohl(k.svc_id));
      const bool live = it != by_id.end() && k.prefixlen >= 32 && k.prefixlen <= 64 &&
                        has_range(it->second->source_ranges, {k.addr, static_cast<uint8_t>(k.prefixlen - 32)});
      if (!live) stale.push_back(k);
    });
    for (const auto& k : stale) maps_->source_ranges.erase(k);
  }
  // Full scans of the ARRAY maps (milliseconds per million slots): what an
  // interrupted change left outside every live range, and backends no live
  // slot names. Unreachable either way; zeroed so the maps show only what is
  // programmed.
  std::vector<uint8_t> live(KPX_MAX_SERVICE_SLOTS, 0);
  std::set<uint32_t> used;
  for (const auto& [svc, st] : services_) {
    for (uint32_t s = 0; s < st.backends.size(); ++s) live[st.slot_base + s] = 1;
    for (const auto& b : st.backends)
      if (auto it = backends_.find(b); it != backends_.end()) used.insert(it->second.id);
  }
  std::vector<uint32_t> slots, ids;
  maps_->service_slots.scan([&](const uint32_t& i, const uint32_t& id) {
    if (id != 0 && i < KPX_MAX_SERVICE_SLOTS && !live[i]) slots.push_back(i);
  });
  maps_->backends.scan([&](const uint32_t& id, const kpx_backend_value_v4& v) {
    if (v.addr != 0 && !used.count(id)) ids.push_back(id);
  });
  std::vector<uint32_t> zero_slots(slots.size(), 0);
  Status ignored;
  write_all(maps_->service_slots, slots, zero_slots, ignored);
  std::vector<kpx_backend_value_v4> zero_backends(ids.size(), kpx_backend_value_v4{});
  write_all(maps_->backends, ids, zero_backends, ignored);
  // And the filter: only the bits this state needs.
  if (filter_.load(maps_->filter).ok()) (void)filter_.flush(maps_->filter);
}

uint32_t Dataplane::allocate_service_id() {
  if (!free_service_ids_.empty()) {
    uint32_t id = free_service_ids_.back();
    free_service_ids_.pop_back();
    return id;
  }
  return next_service_id_++;
}

template <typename K, typename V>
std::vector<uint8_t> Dataplane::write_all(bpf::Map<K, V>& map, const std::vector<K>& keys,
                                          const std::vector<V>& values, Status& first_error) {
  const size_t n = keys.size();
  std::vector<uint8_t> ok(n, 0);
  size_t i = 0;
  if (n >= batch_min_) {
    uint32_t done = 0;
    Status st = map.update_batch(keys.data(), values.data(), static_cast<uint32_t>(n), &done);
    i = std::min<size_t>(done, n);
    std::fill(ok.begin(), ok.begin() + static_cast<ptrdiff_t>(i), 1);
    if (st.ok()) return ok;
    // The kernel stopped at element `done`: the rest one by one, so that one
    // element that does not fit costs only its own Service.
  }
  for (; i < n; ++i) {
    if (auto st = map.update(keys[i], values[i]); st.ok())
      ok[i] = 1;
    else if (first_error.ok())
      first_error = st;
  }
  return ok;
}

template <typename K, typename V>
void Dataplane::erase_all(bpf::Map<K, V>& map, const std::vector<K>& keys) {
  size_t i = 0;
  if (keys.size() >= batch_min_) {
    // A missing key stops a delete batch: skip it and go on from there.
    while (i < keys.size()) {
      uint32_t done = 0;
      if (map.erase_batch(keys.data() + i, static_cast<uint32_t>(keys.size() - i), &done).ok()) return;
      i += std::min<size_t>(done, keys.size() - i);
      if (i < keys.size()) map.erase(keys[i++]);
      if (keys.size() - i < batch_min_) break;
    }
  }
  for (; i < keys.size(); ++i) map.erase(keys[i]);
}

uint32_t Dataplane::acquire_backend(const net::BackendAddr& b, bool local, std::vector<uint32_t>& new_ids,
                                    std::vector<kpx_backend_value_v4>& new_values) {
  auto [it, fresh] = backends_.try_emplace(b);
  BackendRef& ref = it->second;
  if (!fresh && (ref.refs > 0 || ref.id != 0)) {
    ++ref.refs;
    return ref.id;
  }
  if (!free_backend_ids_.empty()) {
    ref.id = free_backend_ids_.back();
    free_backend_ids_.pop_back();
  } else if (next_backend_id_ < backend_capacity_) {
    ref.id = next_backend_id_++;
  } else {
    backends_.erase(it);  // no id left: nothing of it is kept
    return 0;
  }
  ref.refs = 1;
  new_ids.push_back(ref.id);
  new_values.push_back(backend_value(b, local));
  return ref.id;
}

void Dataplane::release_backend(const net::BackendAddr& b) {
  auto it = backends_.find(b);
  if (it == backends_.end() || it->second.refs == 0) return;
  if (--it->second.refs == 0) unreferenced_.push_back(b);
}

// Backends no Service uses any more: removed after every flip is done, so
// a packet that read an old slot still finds its backend.
void Dataplane::collect_backends() {
  std::vector<uint32_t> ids;
  for (const auto& b : unreferenced_) {
    auto it = backends_.find(b);
    if (it == backends_.end() || it->second.refs != 0) continue;
    ids.push_back(it->second.id);
    free_backend_ids_.push_back(it->second.id);
    backends_.erase(it);
  }
  unreferenced_.clear();
  std::vector<kpx_backend_value_v4> zero(ids.size(), kpx_backend_value_v4{});
  Status ignored;
  write_all(maps_->backends, ids, zero, ignored);
}

struct Dataplane::Write {
  FrontendKey key;
  net::ServiceAddr svc;                   // the IPv4 view of key (address, port, proto)
  std::vector<net::BackendAddr> backends; // slot order
  Frontend fe;
  const FrontendState* old = nullptr;  // nullptr: a new frontend
  FrontendState next;
  bool failed = false;
  bool has_range = false;   // its slot range was allocated
  bool bits_added = false;  // step 3 added its filter bits (undone only then)
  size_t acquired = 0;      // backends whose ids were taken (released on failure)
};

void Dataplane::write_services(std::vector<Write>& writes, ApplyStats& stats, Lost& lost, Status& first_error) {
  // Ids and slot ranges first (in memory): a new backend gets an id here
  // and is written below.
  std::vector<uint32_t> new_ids;
  std::vector<kpx_backend_value_v4> new_values;
  std::vector<std::vector<uint32_t>> ids(writes.size());
  for (size_t w = 0; w < writes.size(); ++w) {
    Write& wr = writes[w];
    wr.next.svc_id = wr.old ? wr.old->svc_id : allocate_service_id();
    auto base = slots_.allocate(static_cast<uint32_t>(wr.backends.size()));
    if (!base) {
      wr.failed = true;
      if (first_error.ok()) first_error = Status(invalid_argument("no free backend slots for " + format(wr.key)));
      continue;
    }
    wr.next.slot_base = *base;
    wr.has_range = true;
    ids[w].reserve(wr.backends.size());
    // The local set follows the cluster set in slot order.
    const auto local_begin = wr.backends.begin() + static_cast<std::ptrdiff_t>(wr.fe.cluster.size());
    for (const auto& b : wr.backends) {
      const bool local = std::find(local_begin, wr.backends.end(), b) != wr.backends.end();
      uint32_t id = acquire_backend(b, local, new_ids, new_values);
      if (id == 0) {
        wr.failed = true;
        if (first_error.ok()) first_error = Status(invalid_argument("no free backend ids for " + format(wr.key)));
        break;
      }
      ids[w].push_back(id);
      ++wr.acquired;
    }
  }

  // 1. New backends. A Service with a backend that could not be written
  //    fails as a whole.
  {
    auto ok = write_all(maps_->backends, new_ids, new_values, first_error);
    std::set<uint32_t> failed;
    for (size_t i = 0; i < new_ids.size(); ++i)
      if (!ok[i]) failed.insert(new_ids[i]);
    if (!failed.empty())
      for (size_t w = 0; w < writes.size(); ++w)
        for (uint32_t id : ids[w]) writes[w].failed |= failed.count(id) > 0;
  }

  // 2. The new slot ranges.
  {
    std::vector<uint32_t> keys, values, owner;
    for (size_t w = 0; w < writes.size(); ++w) {
      if (writes[w].failed) continue;
      for (uint32_t s = 0; s < ids[w].size(); ++s) {
        keys.push_back(writes[w].next.slot_base + s);
        values.push_back(ids[w][s]);
        owner.push_back(static_cast<uint32_t>(w));
      }
    }
    auto ok = write_all(maps_->service_slots, keys, values, first_error);
    for (size_t i = 0; i < keys.size(); ++i)
      if (!ok[i]) writes[owner[i]].failed = true;
  }

  // 3. Filter bits of the new frontends and backends, before packets can
  //    reach them.
  for (Write& wr : writes) {
    if (wr.failed) continue;
    if (!wr.old) {
      filter_.add(frontend_slot(wr.svc.addr_be), scope_bit(wr.key.scope));
      if (is_node_port(wr.key)) filter_.add(node_port_slot(wr.key), KPX_FILT_NODE_PORT);
    }
    for (const auto& b : wr.backends) filter_.add(backend_slot(b, wr.svc.proto), backend_bits(wr.key, wr.fe.flags));
    wr.bits_added = true;
  }
  if (auto st = filter_.flush(maps_->filter); !st.ok() && first_error.ok()) first_error = st;

  // 4. The Service entries: the flip.
  {
    std::vector<kpx_service_key_v4> keys;
    std::vector<kpx_service_value> values;
    std::vector<uint32_t> owner;
    for (size_t w = 0; w < writes.size(); ++w) {
      if (writes[w].failed) continue;
      kpx_service_key_v4 k = service_key(writes[w].key);
      kpx_service_value v{};
      v.svc_id = writes[w].next.svc_id;
      v.slot_base = writes[w].next.slot_base;
      v.backend_count = static_cast<uint32_t>(writes[w].fe.cluster.size());
      v.local_count = static_cast<uint32_t>(writes[w].fe.local.size());
      v.flags = writes[w].fe.flags;
      v.affinity_timeout_s = writes[w].fe.affinity_timeout_s;
      v.check = kpx_service_check(&k, &v);
      keys.push_back(k);
      values.push_back(v);
      owner.push_back(static_cast<uint32_t>(w));
    }
    auto ok = write_all(maps_->services, keys, values, first_error);
    for (size_t i = 0; i < keys.size(); ++i)
      if (!ok[i]) writes[owner[i]].failed = true;
  }

  // 5. Old ranges of the flipped Services are zeroed and freed; what failed
  //    is undone (nothing of it is visible: its Service entry still points
  //    at the old range). Backends a Service dropped keep their filter bits
  //    while flows use them.
  std::vector<uint32_t> stale_slots;
  for (size_t w = 0; w < writes.size(); ++w) {
    Write& wr = writes[w];
    if (wr.failed) {
      if (wr.has_range) {
        for (uint32_t s = 0; s < wr.backends.size(); ++s) stale_slots.push_back(wr.next.slot_base + s);
        slots_.release(wr.next.slot_base, static_cast<uint32_t>(wr.backends.size()));
      }
      for (size_t i = 0; i < wr.acquired; ++i) release_backend(wr.backends[i]);
      if (wr.bits_added)
        for (const auto& b : wr.backends)
          filter_.remove(backend_slot(b, wr.svc.proto), backend_bits(wr.key, wr.fe.flags));
      if (!wr.old) {
        if (wr.bits_added) {
          filter_.remove(frontend_slot(wr.svc.addr_be), scope_bit(wr.key.scope));
          if (is_node_port(wr.key)) filter_.remove(node_port_slot(wr.key), KPX_FILT_NODE_PORT);
        }
        free_service_ids_.push_back(wr.next.svc_id);
      }
      continue;
    }
    if (wr.old) {
      for (uint32_t s = 0; s < wr.old->backends.size(); ++s) stale_slots.push_back(wr.old->slot_base + s);
      slots_.release(wr.old->slot_base, static_cast<uint32_t>(wr.old->backends.size()));
      for (const auto& b : wr.old->backends) {
        release_backend(b);
        filter_.remove(backend_slot(b, wr.svc.proto), backend_bits(wr.key, wr.old->fe.flags));
        if (std::find(wr.backends.begin(), wr.backends.end(), b) == wr.backends.end())
          retain(false, backend_slot(b, wr.svc.proto), KPX_FILT_BACKEND);
      }
      if (wr.svc.proto == net::Proto::kUdp)
        add_lost(lost, wr.old->svc_id, wr.old->backends, wr.old->fe, wr.backends, &wr.fe);
    }
    ++(wr.old ? stats.updated : stats.added);
    wr.next.backends = std::move(wr.backends);
    wr.next.cluster_count = static_cast<uint32_t>(wr.fe.cluster.size());
    set_owner(wr.key, wr.old ? wr.old->fe.service : std::string(), wr.fe.service);
    wr.next.fe = std::move(wr.fe);
    services_[wr.key] = std::move(wr.next);
  }
  std::vector<uint32_t> zero(stale_slots.size(), 0);
  write_all(maps_->service_slots, stale_slots, zero, first_error);
  // The bits removed here are written by change(), with the removals'.
}

void Dataplane::erase_services(const std::vector<FrontendKey>& gone, Lost& lost) {
  // Service entries first: nothing reaches the slots after that. Their
  // filter bits stay while flows use them (release_unreferenced).
  std::vector<kpx_service_key_v4> keys;
  std::vector<uint32_t> slots;
  for (const auto& key : gone) {
    auto it = services_.find(key);
    if (it == services_.end()) continue;
    const FrontendState& st = it->second;
    const uint32_t addr = v4_of(key.addr);
    keys.push_back(service_key(key));
    for (uint32_t s = 0; s < st.backends.size(); ++s) slots.push_back(st.slot_base + s);
    slots_.release(st.slot_base, static_cast<uint32_t>(st.backends.size()));
    filter_.remove(frontend_slot(addr), scope_bit(key.scope));
    retain(true, frontend_slot(addr), scope_bit(key.scope));
    if (is_node_port(key)) {
      // Its flows' frames keep reaching conntrack (flow_refs names the
      // slot, as a backend's: the datapath takes either bit).
      filter_.remove(node_port_slot(key), KPX_FILT_NODE_PORT);
      retain(false, node_port_slot(key), KPX_FILT_BACKEND);
    }
    for (const auto& b : st.backends) {
      release_backend(b);
      filter_.remove(backend_slot(b, key.proto), backend_bits(key, st.fe.flags));
      retain(false, backend_slot(b, key.proto), KPX_FILT_BACKEND);
    }
    if (key.proto == net::Proto::kUdp) add_lost(lost, st.svc_id, st.backends, st.fe, {}, nullptr);
    free_service_ids_.push_back(st.svc_id);
    set_owner(key, st.fe.service, "");
    services_.erase(it);
  }
  erase_all(maps_->services, keys);
  std::vector<uint32_t> zero(slots.size(), 0);
  Status ignored;
  write_all(maps_->service_slots, slots, zero, ignored);
}

size_t Dataplane::flush_udp_flows(const Lost& lost) {
  if (lost.empty()) return 0;
  std::set<std::pair<uint32_t, net::BackendAddr>> gone(lost.begin(), lost.end());
  std::vector<kpx_ct_key_v4> doomed;
  maps_->conntrack.scan([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    if (k.proto != IPPROTO_UDP) return;
    net::BackendAddr be = k.dir == KPX_CT_FORWARD ? net::BackendAddr{v.nat_addr, ntohs(v.nat_port)}
                                                  : net::BackendAddr{k.saddr, ntohs(k.sport)};
    if (gone.count({v.svc_id, be})) doomed.push_back(k);
  });
  size_t flushed = maps_->conntrack.erase_many(doomed);
  if (flushed) (void)maps_->bump_ct_epoch();
  return flushed;
}

Result<ApplyStats> Dataplane::change(std::vector<std::pair<FrontendKey, Frontend>> set,
                                     const std::vector<FrontendKey>& gone) {
  // Refused before anything is written.
  for (auto& [key, fe] : set) {
    if (!is_v4(key.addr)) return invalid_argument(format(key) + ": only IPv4 frontends are supported yet");
    if (key.scope != Scope::kClusterIP && key.scope != Scope::kNodePort && key.scope != Scope::kExternalIP &&
        key.scope != Scope::kLoadBalancer)
      return invalid_argument("unknown scope for " + format(key));
    normalize(fe.cluster);
    normalize(fe.local);
    normalize(fe.draining);
    for (const auto* set_of : {&fe.cluster, &fe.local})
      for (const auto& b : *set_of)
        if (!is_v4(b.addr)) return invalid_argument(format(key) + ": backend " + b.addr.str() + " is not IPv4");
    if (fe.cluster.size() + fe.local.size() > KPX_MAX_BACKENDS_PER_SERVICE)
      return invalid_argument("too many backends for " + format(key));
  }
  ApplyStats stats;
  Lost lost;
  Status first_error;
  // Source ranges (kpx_lb_src_v4, by svc_id): a frontend's new ones before
  // the flips, the ones it lost after, so that an allowed client is never
  // refused on the way.
  struct Ranges {
    std::vector<net::Ipv4Cidr> before, want;
    uint32_t svc_id = 0;  // of the state before (0: a new frontend)
  };
  std::map<FrontendKey, Ranges> ranges;
  for (auto& [key, fe] : set) {
    std::sort(fe.source_ranges.begin(), fe.source_ranges.end());
    fe.source_ranges.erase(std::unique(fe.source_ranges.begin(), fe.source_ranges.end()), fe.source_ranges.end());
    auto it = services_.find(key);
    const auto* before = it == services_.end() ? nullptr : &it->second.fe.source_ranges;
    if (fe.source_ranges.empty() && (!before || before->empty())) continue;
    if (fe.source_ranges.size() > KPX_MAX_SOURCE_RANGES)
      return invalid_argument(format(key) + ": more than " + std::to_string(KPX_MAX_SOURCE_RANGES) + " source ranges");
    Ranges& r = ranges[key];
    r.want = fe.source_ranges;
    if (before) {
      r.before = *before;
      r.svc_id = it->second.svc_id;
      for (const auto& c : r.want)
        if (!has_range(r.before, c)) {
          if (auto st = maps_->source_ranges.update(range_key(r.svc_id, c), 1); !st.ok() && first_error.ok())
            first_error = st;
        }
    }
  }
  for (const auto& key : gone)
    if (auto it = services_.find(key); it != services_.end() && !it->second.fe.source_ranges.empty())
      ranges[key] = Ranges{it->second.fe.source_ranges, {}, it->second.svc_id};
  std::vector<Write> writes;
  for (auto& [key, fe] : set) {
    std::vector<net::BackendAddr> slots = slot_order(fe);
    auto it = services_.find(key);
    if (it != services_.end() && holds_entries(it->second, slots, fe.cluster.size(), fe)) {
      // The maps hold this already: the rest (owner, names, conditions,
      // draining endpoints) is memory only. A draining endpoint that went
      // (or stopped serving) loses its UDP flows.
      if (key.proto == net::Proto::kUdp) add_lost(lost, it->second.svc_id, it->second.backends, it->second.fe, slots, &fe);
      set_owner(key, it->second.fe.service, fe.service);
      it->second.fe = std::move(fe);
      ++stats.unchanged;
      continue;
    }
    Write w;
    w.key = key;
    w.svc = {v4_of(key.addr), key.port, key.proto};
    w.backends = std::move(slots);
    w.fe = std::move(fe);
    w.old = it == services_.end() ? nullptr : &it->second;
    writes.push_back(std::move(w));
  }
  write_services(writes, stats, lost, first_error);
  erase_services(gone, lost);
  stats.removed = gone.size();
  // What each frontend holds now (its old state where its write failed).
  for (const auto& [key, r] : ranges) {
    auto it = services_.find(key);
    const std::vector<net::Ipv4Cidr> none;
    const auto& live = it == services_.end() ? none : it->second.fe.source_ranges;
    const uint32_t id = it == services_.end() ? 0 : it->second.svc_id;
    for (const auto& c : live) {
      // Already there: the state before's, or written before the flips.
      const bool present = r.svc_id != 0 && id == r.svc_id && (has_range(r.before, c) || has_range(r.want, c));
      if (present) continue;
      if (auto st = maps_->source_ranges.update(range_key(id, c), 1); !st.ok() && first_error.ok()) first_error = st;
    }
    if (r.svc_id == 0) continue;
    for (const auto* set_of : {&r.before, &r.want})
      for (const auto& c : *set_of)
        if (id != r.svc_id || !has_range(live, c)) maps_->source_ranges.erase(range_key(r.svc_id, c));
  }
  collect_backends();
  // One flush for what the flips and the removals changed: a word left
  // dirty would be recomputed by the next change's flush (10 ms for one
  // change after a large diff at 50,000 Services).
  if (auto st = filter_.flush(maps_->filter); !st.ok() && first_error.ok()) first_error = st;
  stats.udp_flows_flushed = flush_udp_flows(lost);
  if (lost_udp_sink_ && !lost.empty()) {
    std::vector<kpx_sock_lost_key> keys;
    keys.reserve(lost.size());
    for (const auto& [svc_id, b] : lost) {
      kpx_sock_lost_key k{};
      k.svc_id = svc_id;
      k.addr = b.addr_be;
      k.port = htons(b.port);
      keys.push_back(k);
    }
    stats.udp_sockets_destroyed = lost_udp_sink_(keys);
  }
  if (!first_error.ok()) return first_error.error();
  return stats;
}

Result<ApplyStats> Dataplane::apply(FrontendTable desired) {
  std::vector<FrontendKey> gone;
  for (const auto& [key, st] : services_)
    if (!desired.count(key)) gone.push_back(key);
  std::vector<std::pair<FrontendKey, Frontend>> set;
  set.reserve(desired.size());
  while (!desired.empty()) {  // moved out node by node: never two copies of the table
    auto node = desired.extract(desired.begin());
    set.emplace_back(node.key(), std::move(node.mapped()));
  }
  return change(std::move(set), gone);
}

Result<ApplyStats> Dataplane::apply_delta(FrontendDelta delta) {
  std::vector<std::pair<FrontendKey, Frontend>> set;
  std::vector<FrontendKey> gone;
  for (auto& [key, want] : delta) {
    if (want)
      set.emplace_back(key, std::move(*want));
    else if (services_.count(key))
      gone.push_back(key);
  }
  return change(std::move(set), gone);
}

Status Dataplane::upsert(const FrontendKey& key, Frontend fe) {
  auto r = apply_delta({{key, std::move(fe)}});
  if (!r) return r.error();
  return {};
}

Result<bool> Dataplane::remove(const FrontendKey& key) {
  if (!services_.count(key)) return false;
  auto r = apply_delta({{key, std::nullopt}});
  if (!r) return r.error();
  return true;
}

}  // namespace kpx::dataplane
