// Dataplane's batched map writes (BPF_MAP_UPDATE_BATCH / DELETE_BATCH) on
// real pinned maps: they leave exactly what one-by-one writes leave, and
// when the kernel refuses part of a batch (a full map) only the Services
// that did not fit fail, each keeping its previous backend set whole: no
// Service entry ever points at a slot range that is not completely written,
// nothing of a failed Service is left behind, and the next apply converges.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bpf/pinned_maps.h"
#include "dataplane/dataplane.h"
#include "support/scoped.h"

namespace kpx::dataplane {
namespace {

using net::BackendAddr;
using net::Proto;
using net::ServiceAddr;

// Junk the tests put in the maps to fill them: never a kpx Service (proto
// 99 is not TCP/UDP) nor a backend id kpx allocates (they start at 1).
constexpr uint8_t kJunkProto = 99;

ServiceAddr svc(uint32_t i) { return {htonl(0x0a600000u + i), 80, i % 3 == 0 ? Proto::kUdp : Proto::kTcp}; }
BackendAddr be(uint32_t i) { return {htonl(0x0af40000u + i), 8080}; }

struct Instance {
  testing::ScopedPinDir pins;
  std::optional<bpf::PinnedMaps> maps;
  std::optional<Dataplane> dp;

  explicit Instance(size_t batch_min, uint32_t slot_capacity = KPX_MAX_SERVICE_SLOTS,
                    uint32_t backend_capacity = KPX_MAX_BACKENDS) {
    auto m = bpf::PinnedMaps::open_or_create(pins.path());
    EXPECT_TRUE(m.ok()) << m.error().message;
    maps.emplace(std::move(*m));
    auto d = Dataplane::recover(*maps, slot_capacity, backend_capacity);
    EXPECT_TRUE(d.ok());
    dp.emplace(std::move(*d));
    dp->set_batch_min(batch_min);
  }

  // Every kpx entry of the maps, as a comparable dump (the ARRAY maps:
  // their non-zero elements).
  std::map<std::string, std::string> dump() const {
    std::map<std::string, std::string> out;
    maps->services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
      if (k.proto == kJunkProto) return;
      out["svc " + std::to_string(k.addr) + ":" + std::to_string(k.port) + "/" + std::to_string(k.proto)] =
          std::to_string(v.svc_id) + " base " + std::to_string(v.slot_base) + " n " + std::to_string(v.backend_count);
    });
    maps->service_slots.scan([&](const uint32_t& slot, const uint32_t& id) {
      if (id) out["slot " + std::to_string(slot)] = std::to_string(id);
    });
    maps->backends.scan([&](const uint32_t& id, const kpx_backend_value_v4& v) {
      if (v.addr) out["be " + std::to_string(id)] = std::to_string(v.addr) + ":" + std::to_string(v.port);
    });
    return out;
  }

  uint8_t filter_bits(uint32_t slot) const {
    auto w = maps->filter.lookup(slot / 8);
    return w ? static_cast<uint8_t>(*w >> ((slot % 8) * 8)) : 0;
  }

  // The invariant a packet relies on, read from the maps alone: each
  // Service entry checks, its slot range is completely written (every slot,
  // every backend it names), the filter passes nothing of it by, and
  // nothing else is there (no slot outside a live range, no unreferenced
  // backend). Returns the backend set each Service shows.
  std::map<ServiceAddr, std::vector<BackendAddr>> check_consistent() const {
    std::map<ServiceAddr, std::vector<BackendAddr>> visible;
    std::set<uint32_t> live_slots, used_backends;
    maps->services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
      if (k.proto == kJunkProto) return;
      ServiceAddr s{k.addr, ntohs(k.port), static_cast<Proto>(k.proto)};
      EXPECT_EQ(v.check, kpx_service_check(&k, &v)) << net::format(s) << ": check word";
      EXPECT_TRUE(filter_bits(frontend_slot(k.addr)) & KPX_FILT_CLUSTER_IP) << net::format(s) << ": filter bit";
      for (uint32_t i = 0; i < v.backend_count; ++i) {
        auto id = maps->service_slots.lookup(v.slot_base + i);
        EXPECT_TRUE(id && *id) << net::format(s) << ": slot " << v.slot_base + i << " of its range empty";
        if (!id || !*id) continue;
        live_slots.insert(v.slot_base + i);
        auto b = maps->backends.lookup(*id);
        EXPECT_TRUE(b && b->addr) << net::format(s) << ": backend " << *id << " empty";
        if (!b || !b->addr) continue;
        used_backends.insert(*id);
        const BackendAddr ba{b->addr, ntohs(b->port)};
        EXPECT_TRUE(filter_bits(backend_slot(ba, s.proto)) & KPX_FILT_BACKEND) << net::format(ba) << ": filter bit";
        visible[s].push_back(ba);
      }
      visible.try_emplace(s);
    });
    for (auto& [s, bs] : visible) std::sort(bs.begin(), bs.end());  // slot order is by address bytes
    maps->service_slots.scan([&](const uint32_t& slot, const uint32_t& id) {
      if (id) {
        EXPECT_TRUE(live_slots.count(slot)) << "slot " << slot << " left over";
      }
    });
    maps->backends.scan([&](const uint32_t& id, const kpx_backend_value_v4& v) {
      if (v.addr) {
        EXPECT_TRUE(used_backends.count(id)) << "backend " << id << " left over";
      }
    });
    return visible;
  }

  // What Dataplane believes it programmed.
  std::map<ServiceAddr, std::vector<BackendAddr>> believed() const {
    std::map<ServiceAddr, std::vector<BackendAddr>> out;
    out = cluster_ips(dp->frontends());
    for (auto& [s, bs] : out) std::sort(bs.begin(), bs.end());
    return out;
  }
};

// n Services; Service i has backends i, i+1 (shared with its neighbour) and,
// for every 4th, a third one.
ServiceTable table(uint32_t n, uint32_t backend_base = 0) {
  ServiceTable t;
  for (uint32_t i = 0; i < n; ++i) {
    std::vector<BackendAddr> b{be(backend_base + i), be(backend_base + i + 1)};
    if (i % 4 == 0) b.push_back(be(backend_base + 50000 + i));
    std::sort(b.begin(), b.end());  // slot order, as Dataplane keeps it
    t[svc(i)] = b;
  }
  return t;
}

std::map<ServiceAddr, std::vector<BackendAddr>> as_map(const ServiceTable& t) { return {t.begin(), t.end()}; }

TEST(BatchWrites, LeaveExactlyWhatOneByOneWritesLeave) {
  Instance batched(1), single(SIZE_MAX);
  // Initial programming, a large diff (changes, removals, additions), a
  // small one, then everything removed.
  ServiceDelta diff;
  for (uint32_t i = 0; i < 300; i += 3) diff[svc(i)] = std::vector{be(90000 + i), be(i)};
  for (uint32_t i = 1; i < 300; i += 7) diff[svc(i)] = std::nullopt;
  for (uint32_t i = 300; i < 360; ++i) diff[svc(i)] = std::vector{be(i)};
  ServiceDelta small{{svc(2), std::vector{be(7)}}, {svc(5), std::nullopt}};

  for (Instance* inst : {&batched, &single}) {
    auto r = inst->dp->apply(frontends_of(table(300)));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->added, 300u);
  }
  EXPECT_EQ(batched.dump(), single.dump());
  EXPECT_EQ(batched.check_consistent(), as_map(table(300)));

  for (const ServiceDelta* d : {&diff, &small}) {
    ApplyStats stats[2];
    int k = 0;
    for (Instance* inst : {&batched, &single}) {
      auto r = inst->dp->apply_delta(frontends_of(*d));
      ASSERT_TRUE(r.ok()) << r.error().message;
      stats[k++] = *r;
    }
    EXPECT_EQ(stats[0].added, stats[1].added);
    EXPECT_EQ(stats[0].updated, stats[1].updated);
    EXPECT_EQ(stats[0].removed, stats[1].removed);
    EXPECT_EQ(batched.dump(), single.dump());
    EXPECT_EQ(batched.check_consistent(), batched.believed());
  }
  EXPECT_EQ(batched.believed().size(), 300u - 43u + 60u - 1u);

  // A restart reads back what the batches wrote.
  auto recovered = Dataplane::recover(*batched.maps);
  ASSERT_TRUE(recovered.ok());
  std::map<ServiceAddr, std::vector<BackendAddr>> back;
  back = cluster_ips(recovered->frontends());
  for (auto& [s, bs] : back) std::sort(bs.begin(), bs.end());
  EXPECT_EQ(back, batched.believed());

  for (Instance* inst : {&batched, &single}) ASSERT_TRUE(inst->dp->apply(FrontendTable{}).ok());
  EXPECT_TRUE(batched.dump().empty());
  EXPECT_TRUE(single.dump().empty());
}

// Fill `map` with junk until only `room` more entries fit.
template <typename K, typename V, typename MakeKey>
void fill_leaving(bpf::Map<K, V>& map, uint32_t max_entries, uint32_t room, MakeKey make_key) {
  const uint32_t have = static_cast<uint32_t>(map.keys().size());
  ASSERT_LE(have + room, max_entries);
  std::vector<K> keys;
  for (uint32_t i = 0; i < max_entries - have - room; ++i) keys.push_back(make_key(i));
  std::vector<V> values(keys.size());
  uint32_t done = 0;
  ASSERT_TRUE(map.update_batch(keys.data(), values.data(), static_cast<uint32_t>(keys.size()), &done).ok());
  ASSERT_EQ(done, keys.size());
  // The map is now full but for `room` entries.
  std::vector<K> probe;
  for (uint32_t i = 0; i <= room; ++i) probe.push_back(make_key(max_entries + i));
  std::vector<V> pv(probe.size());
  uint32_t fit = 0;
  EXPECT_FALSE(map.update_batch(probe.data(), pv.data(), static_cast<uint32_t>(probe.size()), &fit).ok());
  EXPECT_EQ(fit, room) << "a batch stops at the first element that does not fit";
  for (uint32_t i = 0; i < fit; ++i) map.erase(probe[i]);
}

kpx_service_key_v4 junk_service(uint32_t i) {
  kpx_service_key_v4 k{};
  k.addr = htonl(0xc0000000u + i);
  k.port = htons(1);
  k.proto = kJunkProto;
  return k;
}

TEST(BatchWrites, AFullServicesMapFailsOnlyTheNewServicesThatDoNotFit) {
  Instance inst(1);
  ASSERT_TRUE(inst.dp->apply(frontends_of(table(100))).ok());
  const auto before = inst.check_consistent();
  fill_leaving(inst.maps->services, KPX_MAX_SERVICES, 10, junk_service);

  // The 100 get new backends (an update needs no new entry) and 50 new
  // Services come: 10 of them fit.
  ServiceTable want = table(150, 1000);
  auto r = inst.dp->apply(frontends_of(want));
  ASSERT_FALSE(r.ok()) << "a Service that did not fit must be reported";
  const auto visible = inst.check_consistent();
  EXPECT_EQ(visible, inst.believed()) << "Dataplane must believe exactly what the maps hold";
  size_t new_ones = 0;
  for (uint32_t i = 0; i < 150; ++i) {
    auto it = visible.find(svc(i));
    if (i < 100) {
      ASSERT_NE(it, visible.end());
      EXPECT_EQ(it->second, want[svc(i)]) << "an update does not need room: it goes through";
    } else if (it != visible.end()) {
      EXPECT_EQ(it->second, want[svc(i)]);
      ++new_ones;
    }
  }
  EXPECT_EQ(new_ones, 10u);
  EXPECT_NE(visible, before);

  // Room again: the next apply converges, reusing what the failures freed.
  for (const auto& k : inst.maps->services.keys())
    if (k.proto == kJunkProto) inst.maps->services.erase(k);
  r = inst.dp->apply(frontends_of(want));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->added, 40u);
  EXPECT_EQ(inst.check_consistent(), as_map(want));
  uint32_t max_id = 0;
  for (const auto& [s, st] : inst.dp->frontends()) max_id = std::max(max_id, st.svc_id);
  EXPECT_EQ(max_id, 150u) << "the ids of failed Services were given back";
}

// Backend ids and slots are ARRAY indexes Dataplane hands out; when they
// run out, the Services that need more fail whole and the others go on.
TEST(BatchWrites, RunningOutOfBackendIdsKeepsTheOldBackendSetOfTheServicesItHits) {
  // table(40) uses 41 + 10 backends (ids 1..51); ids below 57: room for 5.
  Instance inst(1, KPX_MAX_SERVICE_SLOTS, 57);
  const ServiceTable first = table(40);
  ASSERT_TRUE(inst.dp->apply(frontends_of(first)).ok());

  // Every Service gets one new backend of its own: 5 fit.
  ServiceTable want = first;
  for (uint32_t i = 0; i < 40; ++i) {
    want[svc(i)].push_back(be(70000 + i));
    std::sort(want[svc(i)].begin(), want[svc(i)].end());
  }
  auto r = inst.dp->apply(frontends_of(want));
  ASSERT_FALSE(r.ok());
  const auto visible = inst.check_consistent();
  EXPECT_EQ(visible, inst.believed());
  size_t flipped = 0;
  for (uint32_t i = 0; i < 40; ++i) {
    const auto& got = visible.at(svc(i));
    // Whole sets only: the old or the new, never a mix.
    EXPECT_TRUE(got == first.at(svc(i)) || got == want.at(svc(i))) << net::format(svc(i));
    flipped += got == want.at(svc(i));
  }
  EXPECT_EQ(flipped, 5u);

  // Ids freed (Services go; their ids are free once the apply that removes
  // them is done): the next apply converges.
  ServiceTable fewer = want;
  for (uint32_t i = 15; i < 40; ++i) fewer.erase(svc(i));
  (void)inst.dp->apply(frontends_of(fewer));
  EXPECT_EQ(inst.check_consistent(), inst.believed());
  r = inst.dp->apply(frontends_of(fewer));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(inst.check_consistent(), as_map(fewer));
}

TEST(BatchWrites, RunningOutOfSlotsFailsOnlyTheServicesThatDoNotFit) {
  // 20 Services of 2 or 3 backends take 45 slots; 50 leave room for 5.
  Instance inst(1, 50);
  const ServiceTable first = table(20);
  ASSERT_TRUE(inst.dp->apply(frontends_of(first)).ok());
  // A change needs a whole new range beside the old one: only those that
  // fit in the 5 free slots flip, the others keep their old set whole.
  ServiceTable want = table(20, 500);
  auto r = inst.dp->apply(frontends_of(want));
  ASSERT_FALSE(r.ok());
  const auto visible = inst.check_consistent();
  EXPECT_EQ(visible, inst.believed());
  size_t flipped = 0;
  for (uint32_t i = 0; i < 20; ++i) {
    const auto& got = visible.at(svc(i));
    EXPECT_TRUE(got == first.at(svc(i)) || got == want.at(svc(i))) << net::format(svc(i));
    flipped += got == want.at(svc(i));
  }
  EXPECT_GE(flipped, 1u);
  EXPECT_LT(flipped, 20u);
  // Each round frees the old ranges of what flipped: repeated applies converge.
  for (int round = 0; round < 40 && inst.check_consistent() != as_map(want); ++round) (void)inst.dp->apply(frontends_of(want));
  EXPECT_EQ(inst.check_consistent(), as_map(want));
}

// The frontend contract as Dataplane writes it: scope in the key and the
// filter, flags, affinity timeout, the cluster set then the local set in
// the slot range; the owner kept with the frontend; an owner-only change
// writes nothing; IPv6 refused before anything is written.
TEST(Frontends, TheContractReachesTheMapsAndTheOwnerStaysWithTheFrontend) {
  Instance inst(1);
  auto key = [](const char* a, uint16_t port, Scope scope) {
    return FrontendKey{net::IpAddr::parse(a), port, Proto::kTcp, scope};
  };
  auto b = [](const char* a, const char* node) {
    Backend x;
    x.addr = net::IpAddr::parse(a);
    x.port = 8080;
    x.node = node;
    return x;
  };
  Frontend web;
  web.service = "default/web";
  web.port_name = "http";
  web.flags = kAffinity | kLocalOnly | kRejectEmpty;
  web.affinity_timeout_s = 600;
  web.cluster = {b("10.244.2.5", "node2"), b("10.244.1.5", "node1")};
  web.local = {b("10.244.1.5", "node1")};
  Frontend np = web;
  np.flags = kRejectEmpty;
  FrontendTable t{{key("10.96.0.10", 80, Scope::kClusterIP), web}, {key("192.168.1.10", 30080, Scope::kNodePort), np}};
  auto r = inst.dp->apply(t);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->added, 2u);

  for (const auto& [k, fe] : t) {
    const kpx_service_key_v4 mk = service_key(k);
    EXPECT_EQ(mk.scope, static_cast<uint8_t>(k.scope));
    auto v = inst.maps->services.lookup(mk);
    ASSERT_TRUE(v.has_value()) << format(k);
    EXPECT_EQ(v->check, kpx_service_check(&mk, &*v));
    EXPECT_EQ(v->flags, fe.flags);
    EXPECT_EQ(v->affinity_timeout_s, fe.affinity_timeout_s);
    EXPECT_EQ(v->backend_count, 2u);
    EXPECT_EQ(v->local_count, 1u);
    std::vector<uint32_t> slot_addrs;
    for (uint32_t i = 0; i < 3; ++i) {
      auto id = inst.maps->service_slots.lookup(v->slot_base + i);
      ASSERT_TRUE(id && *id);
      slot_addrs.push_back(inst.maps->backends.lookup(*id)->addr);
    }
    EXPECT_EQ(slot_addrs, (std::vector<uint32_t>{*net::parse_ipv4("10.244.1.5"), *net::parse_ipv4("10.244.2.5"),
                                                 *net::parse_ipv4("10.244.1.5")}))
        << "the cluster set (sorted), then the local set";
    EXPECT_TRUE(inst.filter_bits(frontend_slot(mk.addr)) & scope_bit(k.scope)) << format(k);
    EXPECT_EQ(inst.dp->frontends().at(k).fe.service, "default/web");
  }
  EXPECT_EQ(inst.dp->owned_by("default/web").size(), 2u);

  // The owner moves (a renamed Service taking over the address): memory only.
  const auto before = inst.dump();
  FrontendTable moved = t;
  for (auto& [k, fe] : moved) fe.service = "default/web2";
  r = inst.dp->apply(moved);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->unchanged, 2u);
  EXPECT_EQ(inst.dump(), before);
  EXPECT_TRUE(inst.dp->owned_by("default/web").empty());
  EXPECT_EQ(inst.dp->owned_by("default/web2").size(), 2u);

  // A restart reads every scope back, with flags and both sets.
  auto back = Dataplane::recover(*inst.maps);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->frontends().size(), 2u);
  const auto& st = back->frontends().at(key("192.168.1.10", 30080, Scope::kNodePort));
  EXPECT_EQ(st.fe.flags, np.flags);
  EXPECT_EQ(st.fe.cluster.size(), 2u);
  EXPECT_EQ(st.fe.local.size(), 1u);

  // IPv6: refused whole, nothing written.
  FrontendTable v6 = moved;
  v6[FrontendKey{net::IpAddr::parse("fd00::10"), 80, Proto::kTcp, Scope::kClusterIP}] = web;
  EXPECT_FALSE(inst.dp->apply(v6).ok());
  FrontendTable v6_backend = moved;
  v6_backend.begin()->second.cluster.push_back(b("fd00::5", "node1"));
  EXPECT_FALSE(inst.dp->apply(v6_backend).ok());
  EXPECT_EQ(inst.dump(), before);

  ASSERT_TRUE(inst.dp->apply(FrontendTable{}).ok());
  EXPECT_TRUE(inst.dump().empty());
  EXPECT_TRUE(inst.dp->owned_by("default/web2").empty());
}

TEST(BatchWrites, DeletesGoOnPastEntriesAlreadyGone) {
  Instance inst(1);
  ASSERT_TRUE(inst.dp->apply(frontends_of(table(30))).ok());
  // Someone removed a few entries by hand: a delete batch stops at a
  // missing key, and the rest must still go.
  auto v = inst.maps->services.lookup(service_key(svc(4)));
  ASSERT_TRUE(v.has_value());
  ASSERT_TRUE(inst.maps->service_slots.update(v->slot_base, 0).ok());
  ASSERT_TRUE(inst.maps->services.erase(service_key(svc(9))));
  auto r = inst.dp->apply(FrontendTable{});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->removed, 30u);
  EXPECT_TRUE(inst.maps->services.keys().empty());
  EXPECT_TRUE(inst.dump().empty()) << "no slot or backend left";
}

}  // namespace
}  // namespace kpx::dataplane
