// The agent's sync loop on real pinned maps: incremental syncs leave the
// maps exactly as a full compute would, clashes fall back to full syncs,
// and nothing is written before every source was listed.
#include "agent/sync_loop.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "support/scoped.h"

namespace kpx::agent {
namespace {

using json = nlohmann::json;

k8s::Service service(const std::string& name, const std::string& ip, int port, const std::string& proto = "TCP") {
  json j = {{"metadata", {{"name", name}, {"namespace", "default"}}},
            {"spec", {{"clusterIP", ip}, {"ports", {{{"name", "p"}, {"port", port}, {"protocol", proto}}}}}}};
  return *k8s::decode_service(j);
}

k8s::EndpointSlice slice(const std::string& name, const std::string& svc, const std::vector<std::string>& addrs,
                         const std::string& proto = "TCP") {
  json eps = json::array();
  for (const auto& a : addrs) eps.push_back({{"addresses", {a}}});
  json j = {{"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
            {"addressType", "IPv4"},
            {"endpoints", eps},
            {"ports", {{{"name", "p"}, {"port", 8080}, {"protocol", proto}}}}};
  return *k8s::decode_endpoint_slice(j);
}

class SyncLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = bpf::PinnedMaps::open_or_create(pins.path());
    ASSERT_TRUE(m.ok()) << m.error().message;
    maps = std::make_unique<bpf::PinnedMaps>(std::move(*m));
    auto d = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(d.ok());
    dp = std::make_unique<dataplane::Dataplane>(std::move(*d));
    loop = std::make_unique<SyncLoop>(*dp, metrics, std::chrono::milliseconds(0), std::chrono::seconds(60));
  }
  // What a full compute of `mirror` says the maps must hold.
  dataplane::ServiceTable expected() {
    dataplane::ServiceTable t;
    for (auto& [key, fe] : proxy::compute(mirror, {}).frontends) {
      auto& bs = t[{*key.addr.v4(), key.port, key.proto}];
      for (const auto& b : fe.cluster) bs.push_back({*b.addr.v4(), b.port});
    }
    return t;
  }
  dataplane::ServiceTable held() {
    // Read back from the maps themselves, not from Dataplane's memory.
    auto d = dataplane::Dataplane::recover(*maps);
    dataplane::ServiceTable t;
    t = dataplane::cluster_ips(d->frontends());
    return t;
  }
  void change(Source src, const std::function<void(proxy::Model&)>& f) {
    loop->update(src, f);
    f(mirror);
  }

  testing::ScopedPinDir pins;
  std::unique_ptr<bpf::PinnedMaps> maps;
  std::unique_ptr<dataplane::Dataplane> dp;
  Metrics metrics;
  std::unique_ptr<SyncLoop> loop;
  proxy::Model mirror;
};

TEST_F(SyncLoopTest, NothingIsWrittenBeforeEverySourceWasListed) {
  change(Source::kServices, [](proxy::Model& m) { m.upsert_service(service("a", "10.96.0.1", 80)); });
  loop->mark_listed(Source::kServices);
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_TRUE(held().empty()) << "Services without their EndpointSlices listed would be programmed empty";
  EXPECT_EQ(loop->syncs(), 0u);
  loop->mark_listed(Source::kEndpointSlices);
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(held(), expected());
  EXPECT_EQ(loop->syncs(), 1u);
}

TEST_F(SyncLoopTest, IncrementalSyncsMatchAFullComputeThroughRandomChanges) {
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  std::mt19937 rng(42);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  // Phases: no clashes (incremental syncs), then Services clashing on an
  // address now and then (full syncs decide), then clashes resolved.
  auto run_steps = [&](int steps, bool clashes) {
    for (int step = 0; step < steps; ++step) {
      int i = pick(30);
      std::string name = "s" + std::to_string(i);
      std::string ip = "10.96.0." + std::to_string(i + 1);
      // Values are drawn once, outside the lambdas: they run on both models.
      switch (pick(clashes ? 6 : 5)) {
        case 0: {
          auto svc = service(name, ip, 80 + pick(2), pick(4) == 0 ? "UDP" : "TCP");
          change(Source::kServices, [&](proxy::Model& m) { m.upsert_service(svc); });
          break;
        }
        case 1:
          change(Source::kServices, [&](proxy::Model& m) { m.remove_service("default", name); });
          break;
        case 2:
        case 3: {
          std::vector<std::string> addrs;
          for (int k = pick(4); k > 0; --k) addrs.push_back("10.244.0." + std::to_string(pick(50) + 1));
          // Sometimes the slice moves to another Service (its label changes).
          std::string owner = pick(5) == 0 ? "s" + std::to_string(pick(30)) : name;
          auto s = slice(name + "-x", owner, addrs, pick(4) == 0 ? "UDP" : "TCP");
          change(Source::kEndpointSlices, [&](proxy::Model& m) { m.upsert_endpoint_slice(s); });
          break;
        }
        case 4:
          change(Source::kEndpointSlices, [&](proxy::Model& m) { m.remove_endpoint_slice("default", name + "-x"); });
          break;
        case 5: {
          auto svc = service(name, "10.96.0." + std::to_string(pick(3) + 1), 80);
          change(Source::kServices, [&](proxy::Model& m) { m.upsert_service(svc); });
          break;
        }
      }
      if (pick(3) == 0) continue;  // batch a few changes into one sync sometimes
      ASSERT_TRUE(loop->sync_once().ok());
      ASSERT_EQ(held(), expected()) << "after step " << step << (clashes ? " (with clashes)" : "");
    }
  };
  run_steps(300, false);
  EXPECT_LE(loop->full_syncs(), 1u) << "without clashes only the first sync computes everything";
  EXPECT_GE(loop->syncs(), 150u);
  run_steps(100, true);
  // Resolve: every Service back on its own address.
  for (int i = 0; i < 30; ++i) {
    auto svc = service("s" + std::to_string(i), "10.96.0." + std::to_string(i + 1), 80);
    change(Source::kServices, [&](proxy::Model& m) { m.upsert_service(svc); });
  }
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(held(), expected());
  const uint64_t full_before = loop->full_syncs();
  run_steps(100, false);
  EXPECT_LE(loop->full_syncs(), full_before + 1) << "back to incremental syncs once clashes are gone";
}

TEST_F(SyncLoopTest, ASliceChangeRewritesOnlyItsService) {
  for (int i = 0; i < 50; ++i)
    change(Source::kServices, [&](proxy::Model& m) {
      m.upsert_service(service("s" + std::to_string(i), "10.96.1." + std::to_string(i + 1), 80));
      m.upsert_endpoint_slice(slice("s" + std::to_string(i) + "-x", "s" + std::to_string(i), {"10.244.1.1"}));
    });
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  ASSERT_TRUE(loop->sync_once().ok());
  auto range = [&](int i) {
    const net::ServiceAddr s{*net::parse_ipv4("10.96.1." + std::to_string(i + 1)), 80, net::Proto::kTcp};
    return dp->frontends().at(dataplane::cluster_ip_key(s)).slot_base;
  };
  std::vector<uint32_t> before;
  for (int i = 0; i < 50; ++i) before.push_back(range(i));
  change(Source::kEndpointSlices, [&](proxy::Model& m) { m.upsert_endpoint_slice(slice("s7-x", "s7", {"10.244.1.2"})); });
  ASSERT_TRUE(loop->sync_once().ok());
  // A rewritten Service gets a new slot range; the others keep theirs.
  for (int i = 0; i < 50; ++i) EXPECT_EQ(range(i) != before[static_cast<size_t>(i)], i == 7) << i;
  EXPECT_EQ(held(), expected());
}

// Topology follows the Node: a change of its zone label rewrites the
// Services whose endpoints are zone-hinted, in an incremental sync, and
// leaves the others' slot ranges alone.
TEST_F(SyncLoopTest, ANodeZoneChangeRewritesItsZoneHintedServices) {
  auto hinted_slice = [](const std::string& name, const std::string& svc) {
    auto s = slice(name, svc, {"10.244.1.1", "10.244.2.1"});
    s.endpoints[0].hints = k8s::EndpointHints{{"zone-a"}, {}};
    s.endpoints[1].hints = k8s::EndpointHints{{"zone-b"}, {}};
    return s;
  };
  auto node = [](const std::string& zone) {
    k8s::Node n;
    n.metadata.name = "node1";
    n.metadata.labels.emplace(std::string(k8s::kLabelTopologyZone), zone);
    return n;
  };
  change(Source::kServices, [&](proxy::Model& m) {
    m.upsert_service(service("zoned", "10.96.2.1", 80));
    m.upsert_endpoint_slice(hinted_slice("zoned-x", "zoned"));
    m.upsert_service(service("plain", "10.96.2.2", 80));
    m.upsert_endpoint_slice(slice("plain-x", "plain", {"10.244.1.1", "10.244.2.1"}));
  });
  change(Source::kNode, [&](proxy::Model& m) { m.set_node(node("zone-a")); });
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  ASSERT_TRUE(loop->sync_once().ok());
  const net::ServiceAddr zoned{*net::parse_ipv4("10.96.2.1"), 80, net::Proto::kTcp};
  const net::ServiceAddr plain{*net::parse_ipv4("10.96.2.2"), 80, net::Proto::kTcp};
  EXPECT_EQ(held().at(zoned), (std::vector<net::BackendAddr>{*net::parse_backend("10.244.1.1:8080")}));
  EXPECT_EQ(held().at(plain).size(), 2u);
  const uint32_t plain_slots = dp->frontends().at(dataplane::cluster_ip_key(plain)).slot_base;
  const uint64_t full = loop->full_syncs();

  change(Source::kNode, [&](proxy::Model& m) { m.set_node(node("zone-b")); });
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(held().at(zoned), (std::vector<net::BackendAddr>{*net::parse_backend("10.244.2.1:8080")}));
  EXPECT_EQ(held(), expected());
  EXPECT_EQ(loop->full_syncs(), full) << "incremental";
  EXPECT_EQ(dp->frontends().at(dataplane::cluster_ip_key(plain)).slot_base, plain_slots);
}

// kube-proxy updates its health check server after every sync: so does
// the loop, incremental syncs keeping the Services they did not touch.
TEST_F(SyncLoopTest, HealthChecksFollowServiceAndEndpointChangesAtEachSync) {
  loop = std::make_unique<SyncLoop>(*dp, metrics, std::chrono::milliseconds(0), std::chrono::seconds(60),
                                    proxy::ComputeConfig{"node1"});
  std::vector<proxy::HealthChecks> told;
  loop->set_health_check_sink([&](const proxy::HealthChecks& hc) { told.push_back(hc); });
  json lb = {{"metadata", {{"name", "lb"}, {"namespace", "default"}}},
             {"spec",
              {{"type", "LoadBalancer"},
               {"clusterIP", "10.96.0.50"},
               {"externalTrafficPolicy", "Local"},
               {"healthCheckNodePort", 30500},
               {"ports", {{{"name", "p"}, {"port", 80}, {"nodePort", 30080}, {"protocol", "TCP"}}}}}}};
  auto lb_slice = [](const std::vector<std::pair<std::string, std::string>>& eps) {
    json e = json::array();
    for (const auto& [ip, node] : eps) e.push_back({{"addresses", {ip}}, {"nodeName", node}});
    json j = {{"metadata", {{"name", "lb-x"}, {"namespace", "default"}, {"labels", {{"kubernetes.io/service-name", "lb"}}}}},
              {"addressType", "IPv4"},
              {"endpoints", e},
              {"ports", {{{"name", "p"}, {"port", 8080}, {"protocol", "TCP"}}}}};
    return *k8s::decode_endpoint_slice(j);
  };
  loop->update(Source::kServices, [&](proxy::Model& m) {
    m.upsert_service(*k8s::decode_service(lb));
    m.upsert_service(service("a", "10.96.0.1", 80));
    m.upsert_endpoint_slice(lb_slice({{"10.244.1.5", "node1"}}));
  });
  loop->mark_listed(Source::kServices);
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_TRUE(told.empty()) << "not before every source was listed";
  loop->mark_listed(Source::kEndpointSlices);
  ASSERT_TRUE(loop->sync_once().ok());
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told.back(), (proxy::HealthChecks{{"default/lb", {30500, 1}}}));

  loop->update(Source::kEndpointSlices, [&](proxy::Model& m) {
    m.upsert_endpoint_slice(lb_slice({{"10.244.1.5", "node1"}, {"10.244.1.6", "node1"}, {"10.244.2.5", "node2"}}));
  });
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(told.back(), (proxy::HealthChecks{{"default/lb", {30500, 2}}}));
  // Another Service's change: the health check of lb stays as it was.
  loop->update(Source::kServices, [&](proxy::Model& m) { m.upsert_service(service("a", "10.96.0.1", 81)); });
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(told.back(), (proxy::HealthChecks{{"default/lb", {30500, 2}}}));
  loop->update(Source::kEndpointSlices, [&](proxy::Model& m) { m.remove_endpoint_slice("default", "lb-x"); });
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(told.back(), (proxy::HealthChecks{{"default/lb", {30500, 0}}}));
  loop->update(Source::kServices, [&](proxy::Model& m) { m.remove_service("default", "lb"); });
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_TRUE(told.back().empty());
  EXPECT_EQ(told.size(), 5u);
  EXPECT_EQ(loop->full_syncs(), 1u) << "incremental syncs";
}

}  // namespace
}  // namespace kpx::agent

namespace kpx::agent {
namespace {

kpx_service_key_v4 cluster_key(const char* ip, int port) {
  return dataplane::service_key(dataplane::cluster_ip_key({*net::parse_ipv4(ip), static_cast<uint16_t>(port),
                                                           net::Proto::kTcp}));
}

// kube-proxy's syncPeriod: a periodic sync reads the maps back and rewrites
// what something else changed in them (a Service entry deleted, a slot
// pointed elsewhere) and removes entries kpx did not write; an ordinary
// sync trusts its memory and does not. Nothing else is rewritten.
TEST_F(SyncLoopTest, APeriodicSyncRepairsWhatSomethingElseChangedInTheMaps) {
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  change(Source::kServices, [](proxy::Model& m) {
    m.upsert_service(service("a", "10.96.0.1", 80));
    m.upsert_service(service("b", "10.96.0.2", 80));
    m.upsert_service(service("c", "10.96.0.3", 80));
  });
  change(Source::kEndpointSlices, [](proxy::Model& m) {
    m.upsert_endpoint_slice(slice("a-x", "a", {"10.244.1.1", "10.244.1.2"}));
    m.upsert_endpoint_slice(slice("b-x", "b", {"10.244.1.3"}));
    m.upsert_endpoint_slice(slice("c-x", "c", {"10.244.1.4"}));
  });
  ASSERT_TRUE(loop->sync_once().ok());
  ASSERT_EQ(held(), expected());
  auto filter_words = [&] {
    std::map<uint32_t, uint64_t> words;
    maps->filter.for_each([&](const uint32_t& i, const uint64_t& w) {
      if (w) words[i] = w;
    });
    return words;
  };
  const auto filter_before = filter_words();

  // Something else: a's entry deleted, b's only slot emptied, and an entry
  // for an address no Service has.
  ASSERT_TRUE(maps->services.erase(cluster_key("10.96.0.1", 80)));
  auto b = maps->services.lookup(cluster_key("10.96.0.2", 80));
  ASSERT_TRUE(b.has_value());
  ASSERT_TRUE(maps->service_slots.update(b->slot_base, 0).ok());
  ASSERT_TRUE(maps->services.update(cluster_key("10.96.0.99", 80), *b).ok());
  const auto c_before = maps->services.lookup(cluster_key("10.96.0.3", 80));
  ASSERT_NE(held(), expected());

  loop->audit_next_sync();
  loop->update(Source::kServices, [](proxy::Model&) {});  // an ordinary sync first: it changes nothing
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(held(), expected());
  EXPECT_EQ(loop->audits(), 1u);
  EXPECT_EQ(loop->audit_repairs(), 3u) << "a and b rewritten, the foreign entry removed";
  EXPECT_FALSE(maps->services.lookup(cluster_key("10.96.0.99", 80)).has_value());
  auto c_after = maps->services.lookup(cluster_key("10.96.0.3", 80));
  ASSERT_TRUE(c_before && c_after);
  EXPECT_EQ(c_after->slot_base, c_before->slot_base) << "an untouched frontend is not rewritten";
  // Every bit set before is set again (a stale extra bit costs a lookup,
  // never a translation; a missing one would hide a frontend).
  const auto filter_after = filter_words();
  for (const auto& [i, w] : filter_before) {
    auto it = filter_after.find(i);
    EXPECT_EQ((it == filter_after.end() ? 0 : it->second) & w, w) << "filter word " << i;
  }

  loop->audit_next_sync();
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_EQ(loop->audits(), 2u);
  EXPECT_EQ(loop->audit_repairs(), 3u) << "nothing more to repair";
}

TEST_F(SyncLoopTest, WithoutAPeriodicSyncADeletedEntryStaysDeleted) {
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  change(Source::kServices, [](proxy::Model& m) { m.upsert_service(service("a", "10.96.0.1", 80)); });
  change(Source::kEndpointSlices, [](proxy::Model& m) { m.upsert_endpoint_slice(slice("a-x", "a", {"10.244.1.1"})); });
  ASSERT_TRUE(loop->sync_once().ok());
  ASSERT_TRUE(maps->services.erase(cluster_key("10.96.0.1", 80)));
  loop->update(Source::kServices, [](proxy::Model&) {});
  ASSERT_TRUE(loop->sync_once().ok());
  EXPECT_TRUE(held().empty()) << "an ordinary (incremental) sync writes only what changed";
  EXPECT_EQ(loop->audits(), 0u);
}

// run() makes the periodic sync by itself, sync_period after the last one.
TEST_F(SyncLoopTest, RunAuditsTheMapsEverySyncPeriod) {
  loop->set_sync_period(std::chrono::milliseconds(200));
  loop->mark_listed(Source::kServices);
  loop->mark_listed(Source::kEndpointSlices);
  change(Source::kServices, [](proxy::Model& m) { m.upsert_service(service("a", "10.96.0.1", 80)); });
  change(Source::kEndpointSlices, [](proxy::Model& m) { m.upsert_endpoint_slice(slice("a-x", "a", {"10.244.1.1"})); });
  std::jthread runner([this](std::stop_token st) { loop->run(st); });
  auto wait_for = [&](const std::function<bool()>& cond) {
    for (int i = 0; i < 200 && !cond(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    return cond();
  };
  ASSERT_TRUE(wait_for([&] { return held() == expected(); }));
  ASSERT_TRUE(maps->services.erase(cluster_key("10.96.0.1", 80)));
  EXPECT_TRUE(wait_for([&] { return held() == expected(); })) << "rewritten within a few sync periods";
  EXPECT_GE(loop->audits(), 1u);
  EXPECT_GE(loop->audit_repairs(), 1u);
  runner.request_stop();
}

}  // namespace
}  // namespace kpx::agent
