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

Result<uint32_t> Dataplane::acquire_backend(const net::BackendAddr& b) {
  BackendRef& ref = backends_[b];
  if (ref.refs++ > 0 || ref.id != 0) return ref.id;
  uint32_t id;
  if (!free_backend_ids_.empty()) {
    id = free_backend_ids_.back();
    free_backend_ids_.pop_back();
  } else {
    id = next_backend_id_++;
  }
  if (auto st = maps_->backends.update(id, backend_value(b)); !st) {
    backends_.erase(b);
    free_backend_ids_.push_back(id);
    return st.error();
  }
  ref.id = id;
  return id;
}

void Dataplane::release_backend(const net::BackendAddr& b) {
  auto it = backends_.find(b);
  if (it == backends_.end() || it->second.refs == 0) return;
  if (--it->second.refs == 0) unreferenced_.push_back(b);
}

// Backends no Service uses any more: removed after every flip is done, so
// a packet that read an old slot still finds its backend.
void Dataplane::collect_backends() {
  for (const auto& b : unreferenced_) {
    auto it = backends_.find(b);
    if (it == backends_.end() || it->second.refs != 0) continue;
    maps_->backends.erase(it->second.id);
    free_backend_ids_.push_back(it->second.id);
    backends_.erase(it);
  }
  unreferenced_.clear();
}

Status Dataplane::write_service(const net::ServiceAddr& svc, const std::vector<net::BackendAddr>& backends,
                                Lost* lost) {
  auto existing = services_.find(svc);
  const bool is_new = existing == services_.end();
  ServiceState next;
  next.svc_id = is_new ? allocate_service_id() : existing->second.svc_id;
  next.generation = is_new ? 1 : existing->second.generation + 1;
  next.backends = backends;

  std::vector<uint32_t> ids;
  ids.reserve(backends.size());
  auto undo = [&](const Error& e) -> Status {
    for (uint32_t s = 0; s < ids.size(); ++s) maps_->service_backends.erase({next.svc_id, next.generation, s});
    for (size_t i = 0; i < ids.size(); ++i) release_backend(backends[i]);
    collect_backends();
    if (is_new) {
      maps_->revnat.erase(next.svc_id);
      free_service_ids_.push_back(next.svc_id);
    }
    return e;
  };
  for (uint32_t s = 0; s < backends.size(); ++s) {
    auto id = acquire_backend(backends[s]);
    if (!id) return undo(id.error());
    ids.push_back(*id);
    if (auto st = maps_->service_backends.update({next.svc_id, next.generation, s}, *id); !st)
      return undo(st.error());
  }
  if (is_new) {
    kpx_revnat_value_v4 rv{};
    rv.addr = svc.addr_be;
    rv.port = htons(svc.port);
    if (auto st = maps_->revnat.update(next.svc_id, rv); !st) return undo(st.error());
  }
  kpx_service_value v{};
  v.svc_id = next.svc_id;
  v.backend_count = static_cast<uint32_t>(backends.size());
  v.generation = next.generation;
  if (auto st = maps_->services.update(service_key(svc), v); !st) return undo(st.error());

  if (!is_new) {
    const ServiceState& old = existing->second;
    for (uint32_t s = 0; s < old.backends.size(); ++s) maps_->service_backends.erase({old.svc_id, old.generation, s});
    for (const auto& b : old.backends) {
      release_backend(b);
      if (svc.proto == net::Proto::kUdp && !std::binary_search(backends.begin(), backends.end(), b))
        lost->push_back({old.svc_id, b});
    }
  }
  services_[svc] = std::move(next);
  return {};
}

void Dataplane::erase_service(const net::ServiceAddr& svc, Lost* lost) {
  auto it = services_.find(svc);
  if (it == services_.end()) return;
  const ServiceState& st = it->second;
  maps_->services.erase(service_key(svc));
  for (uint32_t s = 0; s < st.backends.size(); ++s) maps_->service_backends.erase({st.svc_id, st.generation, s});
  maps_->revnat.erase(st.svc_id);
  for (const auto& b : st.backends) {
    release_backend(b);
    if (svc.proto == net::Proto::kUdp) lost->push_back({st.svc_id, b});
  }
  free_service_ids_.push_back(st.svc_id);
  services_.erase(it);
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

void Dataplane::set_one(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends, ApplyStats& stats,
                        Lost& lost, Status& first_error) {
  normalize(backends);
  auto it = services_.find(svc);
  if (it != services_.end() && it->second.backends == backends) {
    ++stats.unchanged;
    return;
  }
  const bool is_new = it == services_.end();
  if (auto st = write_service(svc, backends, &lost); !st) {
    if (first_error.ok()) first_error = st;
    return;  // the Service keeps what it had; the others go on
  }
  ++(is_new ? stats.added : stats.updated);
}

Result<ApplyStats> Dataplane::finish(ApplyStats stats, const Lost& lost, const Status& first_error) {
  collect_backends();
  stats.udp_flows_flushed = flush_udp_flows(lost);
  if (!first_error.ok()) return first_error.error();
  return stats;
}

Result<ApplyStats> Dataplane::apply(const ServiceTable& desired) {
  for (const auto& [svc, backends] : desired)
    if (backends.size() > KPX_MAX_BACKENDS_PER_SERVICE)
      return invalid_argument("too many backends for " + net::format(svc));
  ApplyStats stats;
  Lost lost;
  Status first_error;
  for (const auto& [svc, want] : desired) set_one(svc, want, stats, lost, first_error);
  std::vector<net::ServiceAddr> stale;
  for (const auto& [svc, st] : services_)
    if (!desired.count(svc)) stale.push_back(svc);
  for (const auto& svc : stale) {
    erase_service(svc, &lost);
    ++stats.removed;
  }
  return finish(stats, lost, first_error);
}

Result<ApplyStats> Dataplane::apply_delta(const ServiceDelta& delta) {
  for (const auto& [svc, backends] : delta)
    if (backends && backends->size() > KPX_MAX_BACKENDS_PER_SERVICE)
      return invalid_argument("too many backends for " + net::format(svc));
  ApplyStats stats;
  Lost lost;
  Status first_error;
  for (const auto& [svc, want] : delta) {
    if (want) {
      set_one(svc, *want, stats, lost, first_error);
    } else if (services_.count(svc)) {
      erase_service(svc, &lost);
      ++stats.removed;
    }
  }
  return finish(stats, lost, first_error);
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
