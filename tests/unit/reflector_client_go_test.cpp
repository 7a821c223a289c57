// The reflector's client-go rules against the fake API server, read back
// from the server's request log (GET /kpx/faults/requests): which
// resourceVersion and limit each list asked for, the relist after a 410,
// the consistent read after a refused list, the backoff that does not start
// over after a short healthy watch, list items handed over in batches, and
// the client-side rate limit.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include "k8s/client.h"
#include "k8s/rate_limiter.h"
#include "k8s/reflector.h"
#include "unit/reflector_fixture.h"

namespace kpx::k8s {
namespace {

using namespace kpx::k8s::reflector_testing;

class ReflectorClientGoTest : public ReflectorTest {
 protected:
  // The list requests (not watches) on path, oldest first: their queries.
  std::vector<json> lists_of(const std::string& path) {
    std::vector<json> out;
    json all = must("GET", "/kpx/faults/requests");
    if (getenv("KPX_DEBUG_REQUESTS")) std::cerr << all.dump() << "\n";
    for (const auto& r : all["requests"])
      if (r.value("method", "") == "GET" && r.value("path", "") == path &&
          r["query"].value("watch", std::string()) != "1")
        out.push_back(r["query"]);
    return out;
  }
};

TEST_F(ReflectorClientGoTest, FakeServerServesVersionZeroWholeAndRefusesVersionsAhead) {
  for (int i = 0; i < 5; ++i) create_service("s" + std::to_string(i));
  // resourceVersion=0: the watch cache, which ignores limit.
  auto whole = client_->get("/api/v1/services?resourceVersion=0&limit=2");
  ASSERT_TRUE(whole.ok()) << whole.error().to_string();
  EXPECT_EQ((*whole)["items"].size(), 5u);
  EXPECT_FALSE((*whole)["metadata"].contains("continue"));
  // No resourceVersion: paged.
  auto paged = client_->get("/api/v1/services?limit=2");
  ASSERT_TRUE(paged.ok());
  EXPECT_EQ((*paged)["items"].size(), 2u);
  EXPECT_TRUE((*paged)["metadata"].contains("continue"));
  // A version the server has not reached: 504 Timeout, ResourceVersionTooLarge.
  auto ahead = client_->get("/api/v1/services?resourceVersion=99999999");
  ASSERT_FALSE(ahead.ok());
  EXPECT_EQ(ahead.error().code, 504);
  EXPECT_EQ(ahead.error().cause, "ResourceVersionTooLarge");
  EXPECT_TRUE(ahead.error().is_resource_version_too_large());
  // A compacted version with limit is read from etcd at exactly it: 410.
  std::string old_rv = (*paged)["metadata"]["resourceVersion"];
  create_service("later");
  fault("compact");
  auto exact = client_->get("/api/v1/services?resourceVersion=" + old_rv + "&limit=2");
  ASSERT_FALSE(exact.ok());
  EXPECT_EQ(exact.error().code, 410);
  // Without limit the cache serves it (at least that version).
  auto cached = client_->get("/api/v1/services?resourceVersion=" + old_rv);
  ASSERT_TRUE(cached.ok()) << cached.error().to_string();
  EXPECT_EQ((*cached)["items"].size(), 6u);
}

TEST_F(ReflectorClientGoTest, FirstListAsksForVersionZeroWithTheDefaultPageSize) {
  for (int i = 0; i < 7; ++i) create_service("s" + std::to_string(i));
  options_ = ReflectorOptions{};  // the defaults: client-go's pager size
  options_.initial_backoff = 100ms;
  start_synced();
  auto lists = lists_of("/api/v1/services");
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_EQ(lists[0].value("resourceVersion", "-"), "0");
  EXPECT_EQ(lists[0].value("limit", ""), "500");
  EXPECT_EQ(reflector_->stats().list_pages, 1u);
  EXPECT_EQ(recorder_.replaces()[0].size(), 7u);
}

// client-go asks for the last version unpaged (for the watch cache); kpx
// pages it, to bound its memory (reflector.cpp says why).
TEST_F(ReflectorClientGoTest, RelistAfterAWatch410AsksForTheLastVersionPaged) {
  create_service("a");
  options_.page_size = 3;
  start_synced();
  create_service("b");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "b"));
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  const std::string last = reflector_->last_resource_version();
  fault("compact?expireWatches=true");
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.replaces_locked() == 2; }));
  EXPECT_EQ(recorder_.replaces()[1], (std::set<std::string>{"a", "b"}));
  auto lists = lists_of("/api/v1/services");
  ASSERT_EQ(lists.size(), 2u);
  EXPECT_EQ(lists[1].value("resourceVersion", ""), last);
  EXPECT_EQ(lists[1].value("limit", ""), "3") << "paged, so a relist never holds a whole large list";
  EXPECT_EQ(reflector_->stats().consistent_lists, 0u);
}

TEST_F(ReflectorClientGoTest, ListRefusedWith410IsRetriedAtOnceAsAConsistentPagedRead) {
  for (int i = 0; i < 4; ++i) create_service("s" + std::to_string(i));
  options_.page_size = 3;
  start_synced();
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  // The watch gets ERROR 410; the relist at the last version is refused with 410.
  fault("respond?code=410&count=1&pathPrefix=/api/v1/services");
  fault("compact?expireWatches=true");
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.replaces_locked() == 2; }));
  auto lists = lists_of("/api/v1/services");
  ASSERT_EQ(lists.size(), 4u);  // version 0; the refused one; "" page 1, page 2
  EXPECT_TRUE(lists[1].contains("resourceVersion") && lists[1]["resourceVersion"] != "0");
  EXPECT_FALSE(lists[2].contains("resourceVersion"));
  EXPECT_EQ(lists[2].value("limit", ""), "3");
  EXPECT_TRUE(lists[3].contains("continue"));
  EXPECT_EQ(reflector_->stats().consistent_lists, 1u);
  EXPECT_EQ(recorder_.replaces()[1].size(), 4u);
  // The next relist asks for the last version again.
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  fault("compact?expireWatches=true");
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.replaces_locked() == 3; }));
  lists = lists_of("/api/v1/services");
  ASSERT_EQ(lists.size(), 6u);  // and pages it (two pages)
  EXPECT_TRUE(lists[4].contains("resourceVersion") && lists[4]["resourceVersion"] != "0");
  EXPECT_EQ(lists[4].value("limit", ""), "3");
  EXPECT_TRUE(lists[5].contains("continue"));
}

TEST_F(ReflectorClientGoTest, BackoffDoesNotStartOverAfterAOneSecondWatch) {
  options_.initial_backoff = 100ms;
  options_.max_backoff = 10s;
  start_synced();
  // Each watch runs just over a second, then breaks: client-go's backoff
  // manager keeps growing (it starts over only after 2 minutes).
  std::vector<std::chrono::milliseconds> gaps;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
    std::this_thread::sleep_for(1100ms);
    auto t = Clock::now();
    fault("drop-watches");
    ASSERT_TRUE(eventually([&] { return open_watches() == 0; }, 2s));
    ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
    gaps.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t));
  }
  // 100-200, 200-400, 400-800, 800-1600 ms (a reset each time would keep them all under 200).
  EXPECT_GE(gaps[3], 800ms) << gaps[0].count() << " " << gaps[1].count() << " " << gaps[2].count();
  EXPECT_GE(gaps[2], 400ms);
  EXPECT_EQ(reflector_->stats().lists, 1u);
}

TEST_F(ReflectorClientGoTest, AnUnpagedListReachesThePageHandlerInBatches) {
  for (int i = 0; i < 7; ++i) create_service("s" + std::to_string(i));
  options_.page_size = 3;  // the server ignores it at resourceVersion=0: one answer of 7
  std::mutex mu;
  std::vector<std::pair<size_t, bool>> pages;
  bool replaced = false;
  ReflectorHandlers h;
  h.on_list_page = [&](std::vector<json> page, bool first) {
    std::lock_guard lk(mu);
    pages.emplace_back(page.size(), first);
  };
  h.on_replace = [&](std::vector<json> items) {
    std::lock_guard lk(mu);
    EXPECT_TRUE(items.empty());
    replaced = true;
  };
  Reflector r(*client_, services_resource(), h, options_);
  std::jthread t([&](std::stop_token st) { r.run(st); });
  ASSERT_TRUE(eventually([&] { return r.synced(); }));
  t.request_stop();
  t.join();
  EXPECT_EQ(r.stats().list_pages, 1u);
  std::lock_guard lk(mu);
  EXPECT_TRUE(replaced);
  EXPECT_EQ(pages, (std::vector<std::pair<size_t, bool>>{{3, true}, {3, false}, {1, false}}));
}

TEST(RateLimiter, BurstThenQps) {
  RateLimiter rl(20, 3);
  auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(rl.wait());
  EXPECT_LT(Clock::now() - t0, 30ms) << "the bucket starts full";
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(rl.wait());
  EXPECT_GE(Clock::now() - t0, 190ms);  // 4 more at 20 a second
  EXPECT_LT(Clock::now() - t0, 600ms);
  EXPECT_TRUE(RateLimiter(0, 0).wait()) << "qps 0: no limit";
}

TEST(RateLimiter, StopEndsTheWaitAndGivesTheTokenBack) {
  RateLimiter rl(1, 1);
  ASSERT_TRUE(rl.wait());
  std::stop_source stop;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  auto t0 = Clock::now();
  EXPECT_FALSE(rl.wait(stop.get_token()));
  EXPECT_LT(Clock::now() - t0, 500ms);
  EXPECT_LE(rl.delay(), 1s);
  EXPECT_GT(rl.delay(), 500ms) << "one token owed, not two";
}

TEST_F(ReflectorClientGoTest, ClientRateLimitSpacesRequestsAsKubeProxysDefaults) {
  ClientConfig config;
  config.server = server_.url();
  ClientOptions o;
  o.qps = 5;  // kube-proxy's clientConnection defaults
  o.burst = 10;
  auto limited = Client::create(config, o);
  ASSERT_TRUE(limited.ok());
  auto t0 = Clock::now();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*limited)->version().ok());
  EXPECT_LT(Clock::now() - t0, 1s) << "a burst of 10";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*limited)->get("/api/v1/services").ok());
  EXPECT_GE(Clock::now() - t0, 550ms) << "then 5 a second";
}

}  // namespace
}  // namespace kpx::k8s
