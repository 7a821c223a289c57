// The reflectors' callbacks into the model (agent/api_feed.h): a list or
// relist is staged page by page and replaces the model's objects of its
// kind in one change; nothing in between is ever seen, objects the relist
// lacks go, unchanged ones are not marked changed. Against a recording
// stand-in for the sync loop, and once behind a real reflector whose watch
// got 410 after a deletion it never saw.
#include "agent/api_feed.h"

#include <gtest/gtest.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "unit/reflector_fixture.h"

namespace kpx::agent {
namespace {

using nlohmann::json;
using Keys = std::set<std::string>;

// The sync loop's stand-in: a model, what every update left in it, and
// whether a prepare() ever changed what a sync reads.
class RecordingFeed : public ModelFeed {
 public:
  struct Update {
    Keys services, slices, changed;
    uint64_t events = 0;
  };

  void update(Source, const std::function<void(proxy::Model&)>& change, ChangeInfo info) override {
    std::lock_guard lk(mu_);
    change(model_);
    updates_.push_back({keys(model_.service_keys()), keys(model_.endpoint_slice_keys()),
                        model_.take_changed_services(), info.events});
  }
  void prepare(const std::function<void(proxy::Model&)>& fn) override {
    std::lock_guard lk(mu_);
    const Keys services = keys(model_.service_keys()), slices = keys(model_.endpoint_slice_keys());
    fn(model_);
    ++prepares_;
    if (services != keys(model_.service_keys()) || slices != keys(model_.endpoint_slice_keys()) ||
        !model_.take_changed_services().empty())
      prepare_changed_model_ = true;
  }
  void mark_listed(Source) override {
    std::lock_guard lk(mu_);
    ++listed_;
  }

  std::vector<Update> updates() {
    std::lock_guard lk(mu_);
    return updates_;
  }
  int prepares() {
    std::lock_guard lk(mu_);
    return prepares_;
  }
  bool prepare_changed_model() {
    std::lock_guard lk(mu_);
    return prepare_changed_model_;
  }
  int listed() {
    std::lock_guard lk(mu_);
    return listed_;
  }

 private:
  static Keys keys(const std::vector<std::string>& v) { return Keys(v.begin(), v.end()); }
  std::mutex mu_;
  proxy::Model model_;
  std::vector<Update> updates_;
  int prepares_ = 0, listed_ = 0;
  bool prepare_changed_model_ = false;
};

json slice_json(const std::string& svc, const std::string& ip, const std::string& suffix = "x") {
  return {{"metadata",
           {{"name", svc + "-" + suffix},
            {"namespace", "default"},
            {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", "IPv4"},
          {"endpoints", {{{"addresses", {ip}}, {"conditions", {{"ready", true}}}}}},
          {"ports", {{{"name", "p"}, {"port", 8080}, {"protocol", "TCP"}}}}};
}

class ApiFeedTest : public ::testing::Test {
 protected:
  void SetUp() override { feed_endpoint_slices(h_, feed_, metrics_); }
  void page(std::vector<json> items, bool first) { h_.on_list_page(std::move(items), first); }
  void replace() { h_.on_replace({}); }
  // a, b and c listed and replaced.
  void first_list() {
    page({slice_json("a", "10.0.0.1"), slice_json("b", "10.0.0.2")}, true);
    page({slice_json("c", "10.0.0.3")}, false);
    replace();
  }

  Metrics metrics_;
  RecordingFeed feed_;
  k8s::ReflectorHandlers h_;
};

TEST_F(ApiFeedTest, AListReachesTheModelInOneChangeWhenComplete) {
  page({slice_json("a", "10.0.0.1"), slice_json("b", "10.0.0.2")}, true);
  page({slice_json("c", "10.0.0.3")}, false);
  EXPECT_TRUE(feed_.updates().empty()) << "pages are staged, not applied one by one";
  EXPECT_EQ(feed_.listed(), 0);
  replace();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].slices, (Keys{"default/a-x", "default/b-x", "default/c-x"}));
  EXPECT_EQ(u[0].changed, (Keys{"default/a", "default/b", "default/c"}));
  EXPECT_EQ(u[0].events, 3u);
  EXPECT_EQ(feed_.listed(), 1);
  EXPECT_EQ(feed_.prepares(), 2) << "one staging a page";
  EXPECT_FALSE(feed_.prepare_changed_model());
}

TEST_F(ApiFeedTest, ARelistRemovesWhatWasDeletedDuringTheGapAndMarksOnlyWhatChanged) {
  first_list();
  // b was deleted and c changed while no watch ran; a is as it was.
  page({slice_json("a", "10.0.0.1")}, true);
  page({slice_json("c", "10.0.0.33")}, false);
  ASSERT_EQ(feed_.updates().size(), 1u) << "the old model stays whole until the relist is complete";
  replace();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[1].slices, (Keys{"default/a-x", "default/c-x"}));
  EXPECT_EQ(u[1].changed, (Keys{"default/b", "default/c"})) << "a did not change: no churn";
  EXPECT_FALSE(feed_.prepare_changed_model());
}

TEST_F(ApiFeedTest, AnUnchangedRelistChangesNothing) {
  first_list();
  first_list();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[1].slices, u[0].slices);
  EXPECT_TRUE(u[1].changed.empty());
}

TEST_F(ApiFeedTest, AListThatStartsOverForgetsWhatItStaged) {
  first_list();
  // A list restarted (its continue token expired): the first attempt's
  // pages are dropped, the second alone is the list.
  page({slice_json("a", "10.0.0.1"), slice_json("b", "10.0.0.2")}, true);
  page({slice_json("c", "10.0.0.3")}, true);
  replace();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[1].slices, Keys{"default/c-x"});
  EXPECT_EQ(u[1].events, 1u);
}

TEST_F(ApiFeedTest, AListThatNeverCompletesLeavesTheModelAsItWas) {
  first_list();
  page({slice_json("a", "10.0.0.9")}, true);  // then the list fails for good
  EXPECT_EQ(feed_.updates().size(), 1u);
  // The next attempt starts over.
  page({slice_json("a", "10.0.0.1"), slice_json("b", "10.0.0.2"), slice_json("c", "10.0.0.3")}, true);
  replace();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[1].slices, u[0].slices);
  EXPECT_TRUE(u[1].changed.empty());
}

TEST_F(ApiFeedTest, UndecodableAndInvalidListItemsAreCountedAndLeftOut) {
  first_list();
  json bad_type = slice_json("b", "10.0.0.2");
  bad_type["ports"][0]["port"] = "eighty";  // does not decode
  json bad_value = slice_json("c", "10.0.0.3");
  bad_value["addressType"] = "IPv7";  // decodes, is invalid
  page({slice_json("a", "10.0.0.1"), bad_type, bad_value}, true);
  replace();
  auto u = feed_.updates();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[1].slices, Keys{"default/a-x"}) << "their previous versions go";
  EXPECT_EQ(metrics_.rejected_objects.load(), 2u);
}

// Behind a real reflector: a slice deleted while the watch was down, then
// a 410 and a paged relist; every model the loop could have seen is one
// complete list, and the deleted slice is gone.
using ReflectorFeedTest = k8s::reflector_testing::ReflectorTest;

TEST_F(ReflectorFeedTest, ARelistAfter410RemovesTheSliceDeletedInTheGapAndNeverShowsAPartialList) {
  using namespace std::chrono_literals;
  const std::string slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
  for (int i = 0; i < 5; ++i)
    must("POST", slices, slice_json("s" + std::to_string(i), "10.0.0." + std::to_string(i + 1)));
  Metrics metrics;
  RecordingFeed feed;
  k8s::ReflectorHandlers h;
  feed_endpoint_slices(h, feed, metrics);
  options_.page_size = 2;
  reflector_ = std::make_unique<k8s::Reflector>(*client_, k8s::endpoint_slices_resource(), h, options_);
  thread_ = std::jthread([r = reflector_.get()](std::stop_token stop) { r->run(stop); });
  ASSERT_TRUE(k8s::reflector_testing::eventually([&] { return feed.listed() == 1 && open_watches() == 1; }));
  const Keys all = {"default/s0-x", "default/s1-x", "default/s2-x", "default/s3-x", "default/s4-x"};
  ASSERT_EQ(feed.updates().size(), 1u);
  EXPECT_EQ(feed.updates()[0].slices, all);

  // The watch goes down and stays down (every request of the reflector's
  // path fails) while s1-x is deleted and history is compacted past it.
  fault("respond?code=503&count=1000&pathPrefix=/apis/discovery.k8s.io/v1/endpointslices");
  fault("drop-watches");
  must("DELETE", slices + "/s1-x");
  fault("compact");
  must("DELETE", "/kpx/faults");  // the watch comes back: 410, relist
  ASSERT_TRUE(k8s::reflector_testing::eventually([&] { return reflector_->stats().lists == 2; }, 20s));
  ASSERT_TRUE(k8s::reflector_testing::eventually([&] { return feed.updates().size() >= 2; }));
  EXPECT_EQ(reflector_->stats().relists, 1u);
  const Keys after = {"default/s0-x", "default/s2-x", "default/s3-x", "default/s4-x"};
  auto u = feed.updates();
  for (size_t i = 0; i < u.size(); ++i)
    EXPECT_TRUE(u[i].slices == all || u[i].slices == after) << "update " << i << " shows a partial list";
  EXPECT_EQ(u.back().slices, after);
  EXPECT_EQ(u.back().changed, Keys{"default/s1"}) << "only the deleted slice's Service";
  // The first list (resourceVersion 0) came whole from the watch cache;
  // the relist, paged: two pages of two.
  EXPECT_EQ(reflector_->stats().list_pages, 1u + 2u);
  EXPECT_FALSE(feed.prepare_changed_model());
}

}  // namespace
}  // namespace kpx::agent
