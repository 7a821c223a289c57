#include "dataplane/service_writer.h"

#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>

namespace kpx::dataplane {

kpx_service_key_v4 service_key(const net::ServiceAddr& svc) {
  kpx_service_key_v4 k{};
  k.addr = svc.addr_be;
  k.port = htons(svc.port);
  k.proto = static_cast<uint8_t>(svc.proto);
  k.scope = KPX_SCOPE_INTERNAL;
  return k;
}

namespace {

net::BackendAddr backend_of(const kpx_backend_value_v4& v) { return {v.addr, ntohs(v.port)}; }

template <typename Map>
uint32_t first_free_id(const Map& m) {
  std::set<uint32_t> used;
  for (uint32_t k : m.keys()) used.insert(k);
  uint32_t id = 1;
  for (uint32_t u : used) {
    if (u > id) break;
    if (u == id) ++id;
  }
  return id;
}

}  // namespace

uint32_t ServiceWriter::allocate_service_id() const { return first_free_id(maps_.revnat); }

std::vector<net::BackendAddr> ServiceWriter::read_slots(uint32_t svc_id, uint32_t generation,
                                                        uint32_t count) const {
  std::vector<net::BackendAddr> out;
  for (uint32_t s = 0; s < count; ++s) {
    auto id = maps_.service_backends.lookup({svc_id, generation, s});
    if (!id) continue;
    if (auto be = maps_.backends.lookup(*id)) out.push_back(backend_of(*be));
  }
  return out;
}

void ServiceWriter::delete_slots(uint32_t svc_id, uint32_t generation, uint32_t count) {
  for (uint32_t s = 0; s < count; ++s) maps_.service_backends.erase({svc_id, generation, s});
}

Status ServiceWriter::set(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends) {
  std::sort(backends.begin(), backends.end());
  backends.erase(std::unique(backends.begin(), backends.end()), backends.end());
  if (backends.size() > KPX_MAX_BACKENDS_PER_SERVICE)
    return invalid_argument("too many backends for " + net::format(svc));

  const kpx_service_key_v4 key = service_key(svc);
  const auto existing = maps_.services.lookup(key);
  const uint32_t svc_id = existing ? existing->svc_id : allocate_service_id();
  const uint32_t old_gen = existing ? existing->generation : 0;
  const uint32_t old_count = existing ? existing->backend_count : 0;
  const uint32_t new_gen = old_gen + 1;
  const std::vector<net::BackendAddr> old_backends =
      existing ? read_slots(svc_id, old_gen, old_count) : std::vector<net::BackendAddr>{};

  // Backend ids: reuse the id an address already has.
  std::map<net::BackendAddr, uint32_t> ids;
  maps_.backends.for_each(
      [&](const uint32_t& id, const kpx_backend_value_v4& v) { ids.emplace(backend_of(v), id); });
  std::vector<uint32_t> added_backends;
  uint32_t written_slots = 0;
  auto undo = [&](const Error& e) -> Status {
    delete_slots(svc_id, new_gen, written_slots);
    for (uint32_t id : added_backends) maps_.backends.erase(id);
    if (!existing) maps_.revnat.erase(svc_id);
    return e;
  };

  std::vector<uint32_t> slot_ids;
  uint32_t next_id = first_free_id(maps_.backends);
  for (const auto& b : backends) {
    auto it = ids.find(b);
    if (it == ids.end()) {
      while (maps_.backends.lookup(next_id)) ++next_id;
      kpx_backend_value_v4 v{};
      v.addr = b.addr_be;
      v.port = htons(b.port);
      if (auto st = maps_.backends.update(next_id, v, BPF_NOEXIST); !st) return undo(st.error());
      added_backends.push_back(next_id);
      it = ids.emplace(b, next_id++).first;
    }
    slot_ids.push_back(it->second);
  }
  for (uint32_t s = 0; s < slot_ids.size(); ++s) {
    if (auto st = maps_.service_backends.update({svc_id, new_gen, s}, slot_ids[s]); !st)
      return undo(st.error());
    written_slots = s + 1;
  }
  if (!existing) {
    kpx_revnat_value_v4 rv{};
    rv.addr = svc.addr_be;
    rv.port = htons(svc.port);
    if (auto st = maps_.revnat.update(svc_id, rv); !st) return undo(st.error());
  }

  kpx_service_value v = existing.value_or(kpx_service_value{});
  v.svc_id = svc_id;
  v.backend_count = static_cast<uint32_t>(slot_ids.size());
  v.generation = new_gen;
  if (auto st = maps_.services.update(key, v); !st) return undo(st.error());

  delete_slots(svc_id, old_gen, old_count);
  std::vector<net::BackendAddr> gone;
  std::set_difference(old_backends.begin(), old_backends.end(), backends.begin(), backends.end(),
                      std::back_inserter(gone));
  if (svc.proto == net::Proto::kUdp && !gone.empty()) flush_udp_flows(svc_id, gone);
  collect_unused_backends();
  return {};
}

Result<bool> ServiceWriter::remove(const net::ServiceAddr& svc) {
  const kpx_service_key_v4 key = service_key(svc);
  const auto existing = maps_.services.lookup(key);
  if (!existing) return false;
  const auto old = read_slots(existing->svc_id, existing->generation, existing->backend_count);
  maps_.services.erase(key);
  delete_slots(existing->svc_id, existing->generation, existing->backend_count);
  maps_.revnat.erase(existing->svc_id);
  if (svc.proto == net::Proto::kUdp) flush_udp_flows(existing->svc_id, old);
  collect_unused_backends();
  return true;
}

void ServiceWriter::flush_udp_flows(uint32_t svc_id, const std::vector<net::BackendAddr>& gone) {
  std::set<net::BackendAddr> g(gone.begin(), gone.end());
  bool flushed = false;
  for (const auto& k : maps_.conntrack.keys()) {
    if (k.proto != IPPROTO_UDP) continue;
    auto v = maps_.conntrack.lookup(k);
    if (!v || v->svc_id != svc_id) continue;
    net::BackendAddr be = k.dir == KPX_CT_FORWARD ? net::BackendAddr{v->nat_addr, ntohs(v->nat_port)}
                                                  : net::BackendAddr{k.saddr, ntohs(k.sport)};
    if (g.count(be) && maps_.conntrack.erase(k)) flushed = true;
  }
  if (flushed) (void)maps_.bump_ct_epoch();
}

void ServiceWriter::collect_unused_backends() {
  std::set<uint32_t> used;
  maps_.service_backends.for_each(
      [&](const kpx_backend_slot_key&, const uint32_t& id) { used.insert(id); });
  for (uint32_t id : maps_.backends.keys())
    if (!used.count(id)) maps_.backends.erase(id);
}

std::vector<ServiceEntry> ServiceWriter::list() const {
  std::vector<ServiceEntry> out;
  maps_.services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
    ServiceEntry e;
    e.svc = {k.addr, ntohs(k.port), static_cast<net::Proto>(k.proto)};
    e.svc_id = v.svc_id;
    e.generation = v.generation;
    e.backends = read_slots(v.svc_id, v.generation, v.backend_count);
    out.push_back(std::move(e));
  });
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.svc < b.svc; });
  return out;
}

}  // namespace kpx::dataplane
