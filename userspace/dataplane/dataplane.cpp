#include "dataplane/dataplane.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>


namespace kpx::dataplane {

namespace {

net::BackendAddr backend_of(const kpx_backend_value_v4& v) { return {v.addr, ntohs(v.port)}; }

kpx_backend_value_v4 backend_value(const net::BackendAddr& b) {
  kpx_backend_value_v4 v{};
  v.addr = b.addr_be;
  v.port = htons(b.port);
  return v;
}

void normalize(std::vector<net::BackendAddr>& b) {
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
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

}  // namespace

kpx_service_key_v4 service_key(const net::ServiceAddr& svc) {
  kpx_service_key_v4 k{};
  k.addr = svc.addr_be;
  k.port = htons(svc.port);
  k.proto = static_cast<uint8_t>(svc.proto);
  k.scope = KPX_SCOPE_INTERNAL;
  return k;
}

Result<Dataplane> Dataplane::recover(bpf::PinnedMaps& maps) {
  Dataplane dp(maps);
  std::set<uint32_t> svc_ids, backend_ids;
  std::set<std::pair<uint32_t, uint32_t>> live_generations;
  std::map<uint32_t, net::BackendAddr> backend_by_id;
  maps.backends.for_each([&](const uint32_t& id, const kpx_backend_value_v4& v) {
    backend_by_id[id] = backend_of(v);
  });

  maps.services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
    net::ServiceAddr svc{k.addr, ntohs(k.port), static_cast<net::Proto>(k.proto)};
    ServiceState st;
    st.svc_id = v.svc_id;
    st.generation = v.generation;
    for (uint32_t s = 0; s < v.backend_count; ++s) {
      auto id = maps.service_backends.lookup({v.svc_id, v.generation, s});
      if (!id) continue;
      auto it = backend_by_id.find(*id);
      if (it == backend_by_id.end()) continue;
      st.backends.push_back(it->second);
      BackendRef& ref = dp.backends_[it->second];
      ref.id = *id;
      ++ref.refs;
    }
    svc_ids.insert(v.svc_id);
    live_generations.insert({v.svc_id, v.generation});
    dp.services_[svc] = std::move(st);
  });

  // Leftovers of an interrupted change: nothing a packet reaches. Their
  // ids stay taken until remove_leftovers() deletes them.
  for (const auto& k : maps.service_backends.keys())
    if (!live_generations.count({k.svc_id, k.generation})) dp.leftover_slots_.push_back(k);
  for (const auto& [id, addr] : backend_by_id) {
    auto it = dp.backends_.find(addr);
    if (it == dp.backends_.end() || it->second.id != id) dp.leftover_backends_.push_back(id);
    backend_ids.insert(id);
  }
  for (uint32_t id : maps.revnat.keys()) {
    if (!svc_ids.count(id)) dp.leftover_revnat_.push_back(id);
    svc_ids.insert(id);
  }

  dp.next_service_id_ = free_ids(svc_ids, &dp.free_service_ids_);
  dp.next_backend_id_ = free_ids(backend_ids, &dp.free_backend_ids_);
  return dp;
}

void Dataplane::remove_leftovers() {
  for (const auto& k : leftover_slots_) maps_->service_backends.erase(k);
  for (uint32_t id : leftover_backends_) {
    maps_->backends.erase(id);
    free_backend_ids_.push_back(id);
  }
  for (uint32_t id : leftover_revnat_) {
    maps_->revnat.erase(id);
    free_service_ids_.push_back(id);
  }
  leftover_slots_.clear();
  leftover_backends_.clear();
  leftover_revnat_.clear();
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

uint32_t Dataplane::acquire_backend(const net::BackendAddr& b, std::vector<uint32_t>& new_ids,
                                    std::vector<kpx_backend_value_v4>& new_values) {
  BackendRef& ref = backends_[b];
  if (ref.refs++ > 0 || ref.id != 0) return ref.id;
  if (!free_backend_ids_.empty()) {
    ref.id = free_backend_ids_.back();
    free_backend_ids_.pop_back();
  } else {
    ref.id = next_backend_id_++;
  }
  new_ids.push_back(ref.id);
  new_values.push_back(backend_value(b));
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
  erase_all(maps_->backends, ids);
}

struct Dataplane::Write {
  net::ServiceAddr svc;
  std::vector<net::BackendAddr> backends;
  const ServiceState* old = nullptr;  // nullptr: a new Service
  ServiceState next;
  bool failed = false;
};

void Dataplane::write_services(std::vector<Write>& writes, ApplyStats& stats, Lost& lost, Status& first_error) {
  // Ids first (in memory): a new backend gets one here and is written below.
  std::vector<uint32_t> new_ids;
  std::vector<kpx_backend_value_v4> new_values;
  std::vector<std::vector<uint32_t>> ids(writes.size());
  for (size_t w = 0; w < writes.size(); ++w) {
    Write& wr = writes[w];
    wr.next.svc_id = wr.old ? wr.old->svc_id : allocate_service_id();
    wr.next.generation = wr.old ? wr.old->generation + 1 : 1;
    ids[w].reserve(wr.backends.size());
    for (const auto& b : wr.backends) ids[w].push_back(acquire_backend(b, new_ids, new_values));
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

  // 2. The new generation's slots.
  {
    std::vector<kpx_backend_slot_key> keys;
    std::vector<uint32_t> values, owner;
    for (size_t w = 0; w < writes.size(); ++w) {
      if (writes[w].failed) continue;
      for (uint32_t s = 0; s < ids[w].size(); ++s) {
        keys.push_back({writes[w].next.svc_id, writes[w].next.generation, s});
        values.push_back(ids[w][s]);
        owner.push_back(static_cast<uint32_t>(w));
      }
    }
    auto ok = write_all(maps_->service_backends, keys, values, first_error);
    for (size_t i = 0; i < keys.size(); ++i)
      if (!ok[i]) writes[owner[i]].failed = true;
  }

  // 3. Reverse NAT of new Services, 4. the Service entries: the flip.
  auto write_entries = [&](auto& map, auto key_of, auto value_of, bool new_only) {
    using Key = typename std::decay_t<decltype(map)>::key_type;
    using Value = typename std::decay_t<decltype(map)>::value_type;
    std::vector<Key> keys;
    std::vector<Value> values;
    std::vector<uint32_t> owner;
    for (size_t w = 0; w < writes.size(); ++w) {
      if (writes[w].failed || (new_only && writes[w].old)) continue;
      keys.push_back(key_of(writes[w]));
      values.push_back(value_of(writes[w]));
      owner.push_back(static_cast<uint32_t>(w));
    }
    auto ok = write_all(map, keys, values, first_error);
    for (size_t i = 0; i < keys.size(); ++i)
      if (!ok[i]) writes[owner[i]].failed = true;
  };
  write_entries(
      maps_->revnat, [](const Write& w) { return w.next.svc_id; },
      [](const Write& w) {
        kpx_revnat_value_v4 rv{};
        rv.addr = w.svc.addr_be;
        rv.port = htons(w.svc.port);
        return rv;
      },
      true);
  write_entries(
      maps_->services, [](const Write& w) { return service_key(w.svc); },
      [](const Write& w) {
        kpx_service_value v{};
        v.svc_id = w.next.svc_id;
        v.backend_count = static_cast<uint32_t>(w.backends.size());
        v.generation = w.next.generation;
        return v;
      },
      false);

  // 5. Old slots of the flipped Services; what failed is undone (nothing of
  //    it is visible: its Service entry still points at the old generation).
  std::vector<kpx_backend_slot_key> stale_slots;
  std::vector<uint32_t> stale_revnat;
  for (size_t w = 0; w < writes.size(); ++w) {
    Write& wr = writes[w];
    if (wr.failed) {
      for (uint32_t s = 0; s < wr.backends.size(); ++s)
        stale_slots.push_back({wr.next.svc_id, wr.next.generation, s});
      for (const auto& b : wr.backends) release_backend(b);
      if (!wr.old) {
        stale_revnat.push_back(wr.next.svc_id);
        free_service_ids_.push_back(wr.next.svc_id);
      }
      continue;
    }
    if (wr.old) {
      for (uint32_t s = 0; s < wr.old->backends.size(); ++s)
        stale_slots.push_back({wr.old->svc_id, wr.old->generation, s});
      for (const auto& b : wr.old->backends) {
        release_backend(b);
        if (wr.svc.proto == net::Proto::kUdp && !std::binary_search(wr.backends.begin(), wr.backends.end(), b))
          lost.push_back({wr.old->svc_id, b});
      }
    }
    ++(wr.old ? stats.updated : stats.added);
    wr.next.backends = std::move(wr.backends);
    services_[wr.svc] = std::move(wr.next);
  }
  erase_all(maps_->service_backends, stale_slots);
  erase_all(maps_->revnat, stale_revnat);
}

void Dataplane::erase_services(const std::vector<net::ServiceAddr>& gone, Lost& lost) {
  // Service entries first: nothing reaches the slots after that.
  std::vector<kpx_service_key_v4> keys;
  std::vector<kpx_backend_slot_key> slots;
  std::vector<uint32_t> revnat;
  for (const auto& svc : gone) {
    auto it = services_.find(svc);
    if (it == services_.end()) continue;
    const ServiceState& st = it->second;
    keys.push_back(service_key(svc));
    for (uint32_t s = 0; s < st.backends.size(); ++s) slots.push_back({st.svc_id, st.generation, s});
    revnat.push_back(st.svc_id);
    for (const auto& b : st.backends) {
      release_backend(b);
      if (svc.proto == net::Proto::kUdp) lost.push_back({st.svc_id, b});
    }
    free_service_ids_.push_back(st.svc_id);
    services_.erase(it);
  }
  erase_all(maps_->services, keys);
  erase_all(maps_->service_backends, slots);
  erase_all(maps_->revnat, revnat);
}

size_t Dataplane::flush_udp_flows(const Lost& lost) {
  if (lost.empty()) return 0;
  std::set<std::pair<uint32_t, net::BackendAddr>> gone(lost.begin(), lost.end());
  size_t flushed = 0;
  for (const auto& k : maps_->conntrack.keys()) {
    if (k.proto != IPPROTO_UDP) continue;
    auto v = maps_->conntrack.lookup(k);
    if (!v) continue;
    net::BackendAddr be = k.dir == KPX_CT_FORWARD ? net::BackendAddr{v->nat_addr, ntohs(v->nat_port)}
                                                  : net::BackendAddr{k.saddr, ntohs(k.sport)};
    if (gone.count({v->svc_id, be}) && maps_->conntrack.erase(k)) ++flushed;
  }
  if (flushed) (void)maps_->bump_ct_epoch();
  return flushed;
}

Result<ApplyStats> Dataplane::change(std::vector<std::pair<net::ServiceAddr, std::vector<net::BackendAddr>>> set,
                                     const std::vector<net::ServiceAddr>& gone) {
  for (const auto& [svc, backends] : set)
    if (backends.size() > KPX_MAX_BACKENDS_PER_SERVICE)
      return invalid_argument("too many backends for " + net::format(svc));
  ApplyStats stats;
  Lost lost;
  Status first_error;
  std::vector<Write> writes;
  for (auto& [svc, backends] : set) {
    normalize(backends);
    auto it = services_.find(svc);
    if (it != services_.end() && it->second.backends == backends) {
      ++stats.unchanged;
      continue;
    }
    Write w;
    w.svc = svc;
    w.backends = std::move(backends);
    w.old = it == services_.end() ? nullptr : &it->second;
    writes.push_back(std::move(w));
  }
  write_services(writes, stats, lost, first_error);
  erase_services(gone, lost);
  stats.removed = gone.size();
  collect_backends();
  stats.udp_flows_flushed = flush_udp_flows(lost);
  if (!first_error.ok()) return first_error.error();
  return stats;
}

Result<ApplyStats> Dataplane::apply(const ServiceTable& desired) {
  std::vector<std::pair<net::ServiceAddr, std::vector<net::BackendAddr>>> set(desired.begin(), desired.end());
  std::vector<net::ServiceAddr> gone;
  for (const auto& [svc, st] : services_)
    if (!desired.count(svc)) gone.push_back(svc);
  return change(std::move(set), gone);
}

Result<ApplyStats> Dataplane::apply_delta(const ServiceDelta& delta) {
  std::vector<std::pair<net::ServiceAddr, std::vector<net::BackendAddr>>> set;
  std::vector<net::ServiceAddr> gone;
  for (const auto& [svc, want] : delta) {
    if (want)
      set.emplace_back(svc, *want);
    else if (services_.count(svc))
      gone.push_back(svc);
  }
  return change(std::move(set), gone);
}

Status Dataplane::upsert(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends) {
  auto r = apply_delta({{svc, std::move(backends)}});
  if (!r) return r.error();
  return {};
}

Result<bool> Dataplane::remove(const net::ServiceAddr& svc) {
  if (!services_.count(svc)) return false;
  auto r = apply_delta({{svc, std::nullopt}});
  if (!r) return r.error();
  return true;
}

}  // namespace kpx::dataplane
