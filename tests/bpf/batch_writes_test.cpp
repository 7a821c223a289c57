// Dataplane's batched map writes (BPF_MAP_UPDATE_BATCH / DELETE_BATCH) on
// real pinned maps: they leave exactly what one-by-one writes leave, and
// when the kernel refuses part of a batch (a full map) only the Services
// that did not fit fail, each keeping its previous backend set whole: no
// Service entry ever points at a generation that is not completely written,
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
constexpr uint32_t kJunkBackendIdBase = 100000000;

ServiceAddr svc(uint32_t i) { return {htonl(0x0a600000u + i), 80, i % 3 == 0 ? Proto::kUdp : Proto::kTcp}; }
BackendAddr be(uint32_t i) { return {htonl(0x0af40000u + i), 8080}; }

struct Instance {
  testing::ScopedPinDir pins;
  std::optional<bpf::PinnedMaps> maps;
  std::optional<Dataplane> dp;

  explicit Instance(size_t batch_min) {
    auto m = bpf::PinnedMaps::open_or_create(pins.path());
    EXPECT_TRUE(m.ok()) << m.error().message;
    maps.emplace(std::move(*m));
    auto d = Dataplane::recover(*maps);
    EXPECT_TRUE(d.ok());
    dp.emplace(std::move(*d));
    dp->set_batch_min(batch_min);
  }

  // Every kpx entry of the maps, as a comparable dump.
  std::map<std::string, std::string> dump() const {
    std::map<std::string, std::string> out;
    maps->services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
      if (k.proto == kJunkProto) return;
      out["svc " + std::to_string(k.addr) + ":" + std::to_string(k.port) + "/" + std::to_string(k.proto)] =
          std::to_string(v.svc_id) + " gen " + std::to_string(v.generation) + " n " + std::to_string(v.backend_count);
    });
    maps->service_backends.for_each([&](const kpx_backend_slot_key& k, const uint32_t& id) {
      out["slot " + std::to_string(k.svc_id) + "/" + std::to_string(k.generation) + "/" + std::to_string(k.slot)] =
          std::to_string(id);
    });
    maps->backends.for_each([&](const uint32_t& id, const kpx_backend_value_v4& v) {
      if (id >= kJunkBackendIdBase) return;
      out["be " + std::to_string(id)] = std::to_string(v.addr) + ":" + std::to_string(v.port);
    });
    maps->revnat.for_each([&](const uint32_t& id, const kpx_revnat_value_v4& v) {
      out["revnat " + std::to_string(id)] = std::to_string(v.addr) + ":" + std::to_string(v.port);
    });
    return out;
  }

  // The invariant a packet relies on, read from the maps alone: each
  // Service entry's generation is completely written (every slot, every
  // backend it names), and nothing else is there (no other generation's
  // slots, no unreferenced backend, no revnat without its Service).
  // Returns the backend set each Service shows.
  std::map<ServiceAddr, std::vector<BackendAddr>> check_consistent() const {
    std::map<ServiceAddr, std::vector<BackendAddr>> visible;
    std::set<std::vector<uint32_t>> live_slots;
    std::set<uint32_t> used_backends, svc_ids;
    maps->services.for_each([&](const kpx_service_key_v4& k, const kpx_service_value& v) {
      if (k.proto == kJunkProto) return;
      ServiceAddr s{k.addr, ntohs(k.port), static_cast<Proto>(k.proto)};
      svc_ids.insert(v.svc_id);
      auto rv = maps->revnat.lookup(v.svc_id);
      EXPECT_TRUE(rv && rv->addr == k.addr && rv->port == k.port) << "revnat of " << net::format(s);
      for (uint32_t i = 0; i < v.backend_count; ++i) {
        auto id = maps->service_backends.lookup({v.svc_id, v.generation, i});
        EXPECT_TRUE(id.has_value()) << net::format(s) << ": slot " << i << " of its live generation missing";
        if (!id) continue;
        live_slots.insert({v.svc_id, v.generation, i});
        auto b = maps->backends.lookup(*id);
        EXPECT_TRUE(b.has_value()) << net::format(s) << ": backend " << *id << " missing";
        if (!b) continue;
        used_backends.insert(*id);
        visible[s].push_back({b->addr, ntohs(b->port)});
      }
      visible.try_emplace(s);
    });
    for (const auto& k : maps->service_backends.keys())
      EXPECT_TRUE(live_slots.count({k.svc_id, k.generation, k.slot}))
          << "slot " << k.svc_id << "/" << k.generation << "/" << k.slot << " left over";
    for (uint32_t id : maps->backends.keys())
      EXPECT_TRUE(id >= kJunkBackendIdBase || used_backends.count(id)) << "backend " << id << " left over";
    for (uint32_t id : maps->revnat.keys()) EXPECT_TRUE(svc_ids.count(id)) << "revnat " << id << " left over";
    return visible;
  }

  // What Dataplane believes it programmed.
  std::map<ServiceAddr, std::vector<BackendAddr>> believed() const {
    std::map<ServiceAddr, std::vector<BackendAddr>> out;
    for (const auto& [s, st] : dp->services()) out[s] = st.backends;
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
    auto r = inst->dp->apply(table(300));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->added, 300u);
  }
  EXPECT_EQ(batched.dump(), single.dump());
  EXPECT_EQ(batched.check_consistent(), as_map(table(300)));

  for (const ServiceDelta* d : {&diff, &small}) {
    ApplyStats stats[2];
    int k = 0;
    for (Instance* inst : {&batched, &single}) {
      auto r = inst->dp->apply_delta(*d);
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
  for (const auto& [s, st] : recovered->services()) back[s] = st.backends;
  EXPECT_EQ(back, batched.believed());

  for (Instance* inst : {&batched, &single}) ASSERT_TRUE(inst->dp->apply({}).ok());
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
  ASSERT_TRUE(inst.dp->apply(table(100)).ok());
  const auto before = inst.check_consistent();
  fill_leaving(inst.maps->services, KPX_MAX_SERVICES, 10, junk_service);

  // The 100 get new backends (an update needs no new entry) and 50 new
  // Services come: 10 of them fit.
  ServiceTable want = table(150, 1000);
  auto r = inst.dp->apply(want);
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
  r = inst.dp->apply(want);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->added, 40u);
  EXPECT_EQ(inst.check_consistent(), as_map(want));
  uint32_t max_id = 0;
  for (const auto& [s, st] : inst.dp->services()) max_id = std::max(max_id, st.svc_id);
  EXPECT_EQ(max_id, 150u) << "the ids of failed Services were given back";
}

TEST(BatchWrites, AFullBackendsMapKeepsTheOldBackendSetOfTheServicesItHits) {
  Instance inst(1);
  const ServiceTable first = table(40);
  ASSERT_TRUE(inst.dp->apply(first).ok());
  // 41 + 10 backends in use; room for 5 more.
  fill_leaving(inst.maps->backends, KPX_MAX_BACKENDS, 5,
               [](uint32_t i) { return kJunkBackendIdBase + i; });

  // Every Service gets one new backend of its own: 5 fit.
  ServiceTable want = first;
  for (uint32_t i = 0; i < 40; ++i) want[svc(i)].push_back(be(70000 + i));
  auto r = inst.dp->apply(want);
  ASSERT_FALSE(r.ok());
  const auto visible = inst.check_consistent();
  EXPECT_EQ(visible, inst.believed());
  size_t flipped = 0;
  for (uint32_t i = 0; i < 40; ++i) {
    auto got = visible.at(svc(i));
    std::sort(got.begin(), got.end());
    auto old_set = first.at(svc(i)), new_set = want.at(svc(i));
    std::sort(old_set.begin(), old_set.end());
    std::sort(new_set.begin(), new_set.end());
    // Whole sets only: the old or the new, never a mix.
    EXPECT_TRUE(got == old_set || got == new_set) << net::format(svc(i));
    flipped += got == new_set;
  }
  EXPECT_EQ(flipped, 5u);

  for (uint32_t id : inst.maps->backends.keys())
    if (id >= kJunkBackendIdBase) inst.maps->backends.erase(id);
  r = inst.dp->apply(want);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->updated, 35u);
  EXPECT_EQ(inst.check_consistent(), as_map(want));
}

TEST(BatchWrites, DeletesGoOnPastEntriesAlreadyGone) {
  Instance inst(1);
  ASSERT_TRUE(inst.dp->apply(table(30)).ok());
  // Someone removed a few entries by hand: a delete batch stops at a
  // missing key, and the rest must still go.
  auto v = inst.maps->services.lookup(service_key(svc(4)));
  ASSERT_TRUE(v.has_value());
  ASSERT_TRUE(inst.maps->service_backends.erase({v->svc_id, v->generation, 0}));
  ASSERT_TRUE(inst.maps->services.erase(service_key(svc(9))));
  ASSERT_TRUE(inst.maps->revnat.erase(v->svc_id));
  auto r = inst.dp->apply({});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->removed, 30u);
  EXPECT_TRUE(inst.maps->services.keys().empty());
  EXPECT_TRUE(inst.maps->service_backends.keys().empty());
  EXPECT_TRUE(inst.maps->backends.keys().empty());
  EXPECT_TRUE(inst.maps->revnat.keys().empty());
}

}  // namespace
}  // namespace kpx::dataplane
