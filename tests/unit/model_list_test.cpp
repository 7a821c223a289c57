// A complete list (first list or relist) staged and put in place of what
// the model held: what the list lacks goes, unchanged objects are not
// marked changed, staging alone changes nothing a sync reads.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "unit/compute_fixtures.h"

namespace kpx::proxy {
namespace {

using namespace fixtures;

k8s::Service web(const std::string& name, const std::string& ip, int32_t port_number = 80) {
  return service(name, ip, {port("p", port_number)});
}

k8s::EndpointSlice slice_of(const std::string& svc, const std::string& ip, const std::string& suffix = "x") {
  return slice(svc + "-" + suffix, svc, {endpoint(ip, true)}, {slice_port("p", 8080)});
}

// Stages every object, then replaces.
void relist_services(Model& m, const std::vector<k8s::Service>& list) {
  Model::ListedServices staged;
  for (const auto& s : list) m.stage_service(s, staged);
  m.replace_services(std::move(staged));
}

void relist_slices(Model& m, const std::vector<k8s::EndpointSlice>& list) {
  Model::ListedSlices staged;
  for (const auto& s : list) m.stage_endpoint_slice(s, staged);
  m.replace_endpoint_slices(std::move(staged));
}

// Three Services and their slices, the changes taken.
Model three() {
  Model m;
  relist_services(m, {web("a", "10.96.0.1"), web("b", "10.96.0.2"), web("c", "10.96.0.3")});
  relist_slices(m, {slice_of("a", "10.0.0.1"), slice_of("b", "10.0.0.2"), slice_of("c", "10.0.0.3")});
  m.take_changed_services();
  return m;
}

using Keys = std::vector<std::string>;

TEST(ModelList, AFirstListFillsAnEmptyModelAndMarksEverything) {
  Model m;
  relist_services(m, {web("b", "10.96.0.2"), web("a", "10.96.0.1")});  // any order
  relist_slices(m, {slice_of("a", "10.0.0.1")});
  EXPECT_EQ(m.service_keys(), (Keys{"default/a", "default/b"}));
  EXPECT_EQ(m.endpoint_slice_keys(), (Keys{"default/a-x"}));
  EXPECT_EQ(m.take_changed_services(), (std::set<std::string>{"default/a", "default/b"}));
  EXPECT_EQ(m.slices_of("default/a").size(), 1u);
}

TEST(ModelList, ObjectsTheRelistLacksAreRemoved) {
  Model m = three();
  // b and its slice were deleted while no watch ran.
  relist_services(m, {web("a", "10.96.0.1"), web("c", "10.96.0.3")});
  relist_slices(m, {slice_of("a", "10.0.0.1"), slice_of("c", "10.0.0.3")});
  EXPECT_EQ(m.service_keys(), (Keys{"default/a", "default/c"}));
  EXPECT_EQ(m.endpoint_slice_keys(), (Keys{"default/a-x", "default/c-x"}));
  EXPECT_TRUE(m.slices_of("default/b").empty());
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/b"});
}

TEST(ModelList, AnEmptyRelistRemovesEverything) {
  Model m = three();
  relist_services(m, {});
  relist_slices(m, {});
  EXPECT_TRUE(m.service_keys().empty());
  EXPECT_EQ(m.endpoint_slice_count(), 0u);
  EXPECT_EQ(m.take_changed_services(), (std::set<std::string>{"default/a", "default/b", "default/c"}));
}

TEST(ModelList, AnUnchangedRelistMarksNothing) {
  Model m = three();
  relist_services(m, {web("a", "10.96.0.1"), web("b", "10.96.0.2"), web("c", "10.96.0.3")});
  relist_slices(m, {slice_of("a", "10.0.0.1"), slice_of("b", "10.0.0.2"), slice_of("c", "10.0.0.3")});
  EXPECT_TRUE(m.take_changed_services().empty()) << "an unchanged relist must not make the sync loop recompute";
  EXPECT_EQ(m.service_keys().size(), 3u);
  EXPECT_EQ(m.endpoint_slice_count(), 3u);
}

TEST(ModelList, OnlyTheObjectsThatDifferAreMarked) {
  Model m = three();
  relist_services(m, {web("a", "10.96.0.1"), web("b", "10.96.0.2", 81), web("c", "10.96.0.3")});
  relist_slices(m, {slice_of("a", "10.0.0.1"), slice_of("b", "10.0.0.2"), slice_of("c", "10.0.0.33")});
  EXPECT_EQ(m.take_changed_services(), (std::set<std::string>{"default/b", "default/c"}));
  EXPECT_EQ(m.services().at("default/b").ports.at(0).port, 81);
  EXPECT_EQ(m.slices_of("default/c").at("c-x").endpoints.at(0).address, net::IpAddr::parse("10.0.0.33"));
}

TEST(ModelList, OutOfLineFieldsAreComparedByValue) {
  Model m;
  k8s::Service lb = web("lb", "10.96.0.9");
  lb.external_ips = {"192.0.2.1"};
  k8s::EndpointSlice hinted = slice_of("lb", "10.0.0.9");
  hinted.endpoints[0].hints = k8s::EndpointHints{{"zone-a"}, {}};
  relist_services(m, {lb});
  relist_slices(m, {hinted});
  m.take_changed_services();
  // Equal external IPs and hints (held out of line): nothing changed.
  relist_services(m, {lb});
  relist_slices(m, {hinted});
  EXPECT_TRUE(m.take_changed_services().empty());
  // Other ones: changed.
  lb.external_ips = {"192.0.2.2"};
  relist_services(m, {lb});
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/lb"});
  hinted.endpoints[0].hints = k8s::EndpointHints{{"zone-b"}, {}};
  relist_slices(m, {hinted});
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/lb"});
  // Hints gone (absent and empty differ): changed.
  hinted.endpoints[0].hints.reset();
  relist_slices(m, {hinted});
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/lb"});
}

TEST(ModelList, ASliceThatMovedToAnotherServiceMarksBoth) {
  Model m = three();
  k8s::EndpointSlice moved = slice_of("a", "10.0.0.1");
  moved.metadata.labels[std::string(k8s::kLabelServiceName)] = "c";
  relist_slices(m, {moved, slice_of("b", "10.0.0.2"), slice_of("c", "10.0.0.3")});
  EXPECT_EQ(m.take_changed_services(), (std::set<std::string>{"default/a", "default/c"}));
  EXPECT_TRUE(m.slices_of("default/a").empty());
  EXPECT_EQ(m.slices_of("default/c").size(), 2u);
  EXPECT_EQ(m.endpoint_slice_count(), 3u);
}

TEST(ModelList, AnObjectRejectedInTheRelistLosesItsHeldVersion) {
  Model m = three();
  Model::ListedServices staged;
  EXPECT_FALSE(m.stage_service(web("a", "10.96.0.1"), staged));
  auto told = m.stage_service(web("b", "not-an-ip"), staged);
  ASSERT_TRUE(told);
  EXPECT_EQ(told->outcome, Rejection::Outcome::kRejectedRemoved);
  EXPECT_FALSE(m.stage_service(web("c", "10.96.0.3"), staged));
  m.replace_services(std::move(staged));
  EXPECT_EQ(m.service_keys(), (Keys{"default/a", "default/c"}));
  EXPECT_EQ(m.take_changed_services(), std::set<std::string>{"default/b"});
}

TEST(ModelList, StagingChangesNothingASyncReads) {
  Model m = three();
  Model::ListedServices services;
  Model::ListedSlices slices;
  m.stage_service(web("d", "10.96.0.4"), services);
  m.stage_endpoint_slice(slice_of("d", "10.0.0.4"), slices);
  EXPECT_EQ(m.service_keys().size(), 3u);
  EXPECT_EQ(m.endpoint_slice_count(), 3u);
  EXPECT_TRUE(m.take_changed_services().empty());
  EXPECT_EQ(services.items.size(), 1u);
  EXPECT_EQ(slices.items.size(), 1u);
}

TEST(ModelList, OfTwoListedWithOneNameTheLaterWins) {
  Model m;
  relist_services(m, {web("a", "10.96.0.1"), web("a", "10.96.0.7")});
  relist_slices(m, {slice_of("a", "10.0.0.1"), slice_of("a", "10.0.0.7")});
  ASSERT_EQ(m.services().size(), 1u);
  EXPECT_EQ(m.services().at("default/a").cluster_ips.at(0), net::IpAddr::parse("10.96.0.7"));
  EXPECT_EQ(m.slices_of("default/a").at("a-x").endpoints.at(0).address, net::IpAddr::parse("10.0.0.7"));
}

TEST(ModelList, AReplacedModelComputesAsOneBuiltByUpserts) {
  Model listed = three();
  relist_services(listed, {web("a", "10.96.0.1"), web("c", "10.96.0.3", 90)});
  relist_slices(listed, {slice_of("a", "10.0.0.11"), slice_of("c", "10.0.0.3"), slice_of("c", "10.0.0.4", "y")});
  Model upserted;
  add(upserted, web("a", "10.96.0.1"));
  add(upserted, web("c", "10.96.0.3", 90));
  add(upserted, slice_of("a", "10.0.0.11"));
  add(upserted, slice_of("c", "10.0.0.3"));
  add(upserted, slice_of("c", "10.0.0.4", "y"));
  auto a = compute(listed, {}), b = compute(upserted, {});
  EXPECT_EQ(a.frontends.size(), 2u);
  ASSERT_EQ(a.frontends.size(), b.frontends.size());
  for (const auto& [key, fe] : b.frontends) {
    ASSERT_TRUE(a.frontends.count(key));
    EXPECT_EQ(addrs(a.frontends.at(key).cluster), addrs(fe.cluster));
  }
}

}  // namespace
}  // namespace kpx::proxy
