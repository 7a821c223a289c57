// The API client and reflectors against the real fake API server (`kpx
// apiserver`, a child process on 127.0.0.1), with its fault injection:
// paging, watch events across arbitrary chunking, bookmarks, dropped and
// timed-out watches, compaction (410), expired continue tokens, 429 with
// Retry-After, 401/403, selectors.
#include "k8s/reflector.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "k8s/backoff.h"
#include "k8s/client.h"
#include "k8s/line_splitter.h"
#include "log/log.h"
#include "unit/reflector_fixture.h"

namespace kpx::k8s {
namespace {

using namespace kpx::k8s::reflector_testing;

using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- pieces without a server ----------------------------------------------

TEST(LineSplitter, LinesSurviveAnyChunking) {
  LineSplitter s;
  s.append("{\"a\":1}\n{\"b\"");
  EXPECT_EQ(s.next(), "{\"a\":1}");
  EXPECT_EQ(s.next(), std::nullopt);
  EXPECT_GT(s.unfinished(), 0u);
  s.append(":2}\n\n{\"c\":3}\r\n{\"d\":");
  EXPECT_EQ(s.next(), "{\"b\":2}");
  EXPECT_EQ(s.next(), "{\"c\":3}");  // blank line skipped, "\r" dropped
  EXPECT_EQ(s.next(), std::nullopt);
  s.append("4}");
  EXPECT_EQ(s.next(), std::nullopt);
  s.append("\n");
  EXPECT_EQ(s.next(), "{\"d\":4}");
  EXPECT_EQ(s.unfinished(), 0u);
  // One byte at a time.
  std::string text = "{\"e\":5}\n{\"f\":6}\n";
  std::vector<std::string> got;
  for (char c : text) {
    s.append(std::string_view(&c, 1));
    while (auto line = s.next()) got.push_back(*line);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"{\"e\":5}", "{\"f\":6}"}));
}

TEST(Backoff, DoublesWithJitterOfUpToOneDelayUpToTheCap) {
  // client-go's manager: jitter 1.0 adds up to one base delay.
  Backoff b(100ms, 1000ms);
  std::vector<std::pair<int, int>> bounds = {{100, 200},  {200, 400},   {400, 800},
                                             {800, 1600}, {1000, 2000}, {1000, 2000}};
  for (auto [lo, hi] : bounds) {
    auto d = b.next().count();
    EXPECT_GE(d, lo);
    EXPECT_LE(d, hi);
  }
  b.reset();
  EXPECT_LE(b.next().count(), 200);
}

TEST(Backoff, StartsOverOnlyAfterTwoMinutesWithoutADelay) {
  // A watch that runs a second and fails again keeps backing off longer
  // (NewExponentialBackoffManager(800ms, 30s, 2min, 2.0, 1.0)).
  auto now = Clock::now();
  Backoff b(800ms, 30s, 2min, [&] { return now; });
  EXPECT_LE(b.next(), 1600ms);
  now += 1s;
  EXPECT_GE(b.next(), 1600ms);
  now += 119s;  // 2 minutes exactly since the last delay: not yet
  EXPECT_GE(b.next(), 3200ms);
  now += 121s;
  auto d = b.next();
  EXPECT_GE(d, 800ms);
  EXPECT_LE(d, 1600ms);
}

TEST(QueryEscape, EncodesSelectors) {
  EXPECT_EQ(query_escape("!service.kubernetes.io/service-proxy-name"),
            "%21service.kubernetes.io%2Fservice-proxy-name");
  EXPECT_EQ(query_escape("metadata.name=node-1,a!=b"), "metadata.name%3Dnode-1%2Ca%21%3Db");
}

TEST_F(ReflectorTest, ClientGetsVersionAndStatusErrors) {
  auto v = client_->version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  EXPECT_TRUE((*v)["gitVersion"].is_string());
  auto missing = client_->get("/api/v1/namespaces/default/services/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, 404);
  EXPECT_EQ(missing.error().reason, "NotFound");
  EXPECT_FALSE(missing.error().message.empty());
  EXPECT_EQ(missing.error().to_error().kind, ErrorKind::kNotFound);
}

TEST_F(ReflectorTest, StopInterruptsABlockedWatch) {
  auto list = client_->get("/api/v1/services");
  ASSERT_TRUE(list.ok());
  std::string rv = (*list)["metadata"]["resourceVersion"];
  std::optional<ApiResult<WatchEnd>> result;
  std::jthread watcher([&](std::stop_token stop) {
    result.emplace(client_->watch(
        "/api/v1/services?watch=1&resourceVersion=" + rv, [](const json&) { return true; }, stop));
  });
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  auto t0 = Clock::now();
  watcher.request_stop();
  watcher.join();
  EXPECT_LT(Clock::now() - t0, 2s);
  ASSERT_TRUE(result.has_value() && result->ok());
  EXPECT_EQ(**result, WatchEnd::kStopped);
  EXPECT_TRUE(eventually([&] { return open_watches() == 0; }));  // the connection was closed
}

TEST_F(ReflectorNoWatchCacheTest, PagedListThenAddedModifiedDeleted) {
  for (int i = 0; i < 7; ++i) create_service("s" + std::to_string(i));
  options_.page_size = 3;
  start_synced();
  auto stats = reflector_->stats();
  EXPECT_EQ(stats.list_pages, 3u);
  EXPECT_EQ(stats.lists, 1u);
  auto replaces = recorder_.replaces();
  ASSERT_EQ(replaces.size(), 1u);
  EXPECT_EQ(replaces[0], (std::set<std::string>{"s0", "s1", "s2", "s3", "s4", "s5", "s6"}));

  create_service("web");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "web"));
  must("PATCH", "/api/v1/namespaces/default/services/web", {{"metadata", {{"labels", {{"version", "2"}}}}}});
  ASSERT_TRUE(recorder_.wait_event(EventType::kModified, "web"));
  must("DELETE", "/api/v1/namespaces/default/services/web");
  ASSERT_TRUE(recorder_.wait_event(EventType::kDeleted, "web"));

  std::vector<EventType> types;
  json deleted;
  for (const auto& e : recorder_.events()) {
    ASSERT_EQ(e.name, "web");
    types.push_back(e.type);
    if (e.type == EventType::kDeleted) deleted = e.object;
  }
  EXPECT_EQ(types, (std::vector<EventType>{EventType::kAdded, EventType::kModified, EventType::kDeleted}));
  EXPECT_EQ(deleted["metadata"]["labels"]["version"], "2");  // the last state
  EXPECT_EQ(reflector_->stats().lists, 1u);
}

TEST_F(ReflectorTest, BurstsSplitAcrossChunksArriveOnceAndInOrder) {
  start_synced();
  std::vector<std::string> names;
  for (int i = 0; i < 60; ++i) {
    names.push_back("burst-" + std::to_string(i));
    create_service(names.back());
  }
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.has_locked(EventType::kAdded, names.back()); }));
  std::vector<std::string> got;
  for (const auto& e : recorder_.events()) got.push_back(e.name);
  EXPECT_EQ(got, names);
}

TEST_F(ReflectorTest, BookmarkMovesTheVersionAndNothingElse) {
  create_service("a");
  start_synced();
  // A change of another type: the Services watch only learns of it by bookmark.
  json ns = must("POST", "/api/v1/namespaces", {{"metadata", {{"name", "elsewhere"}}}});
  std::string rv = ns["metadata"]["resourceVersion"];
  ASSERT_NE(reflector_->last_resource_version(), rv);
  EXPECT_TRUE(eventually([&] { return reflector_->last_resource_version() == rv; }, 5s))
      << reflector_->last_resource_version() << " vs " << rv;
  EXPECT_GE(reflector_->stats().bookmarks, 1u);
  EXPECT_TRUE(recorder_.events().empty());
  EXPECT_EQ(recorder_.replaces().size(), 1u);
}

TEST_F(ReflectorTest, DroppedWatchResumesFromTheLastVersionWithoutRelisting) {
  create_service("a");
  start_synced();
  create_service("b");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "b"));
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  uint64_t watches_before = reflector_->stats().watches;

  // Every open watch writes half an event and the connection closes.
  EXPECT_EQ(fault("drop-watches").value("dropped", 0), 1);
  create_service("c");  // while the reflector is away
  create_service("d");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "d"));
  create_service("e");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "e"));

  auto stats = reflector_->stats();
  EXPECT_EQ(stats.lists, 1u);
  EXPECT_EQ(recorder_.replaces().size(), 1u);
  EXPECT_GT(stats.watches, watches_before);
  EXPECT_GE(stats.errors, 1u);  // the broken stream
  for (const char* n : {"b", "c", "d", "e"}) EXPECT_EQ(recorder_.count(EventType::kAdded, n), 1u) << n;
  for (const auto& e : recorder_.events())
    EXPECT_EQ(e.type, EventType::kAdded) << "half an event was delivered";
}

TEST_F(ReflectorTest, EndedWatchesResumeWithoutRelisting) {
  options_.min_watch_timeout = options_.max_watch_timeout = 1s;  // the server ends each watch after 1 s
  start_synced();
  std::vector<std::string> names;
  auto until = Clock::now() + 2500ms;
  for (int i = 0; Clock::now() < until; ++i) {
    names.push_back("t" + std::to_string(i));
    create_service(names.back());
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, names.back()));
  auto stats = reflector_->stats();
  EXPECT_GE(stats.watches, 3u);
  EXPECT_EQ(stats.lists, 1u);
  EXPECT_EQ(stats.errors, 0u);
  std::vector<std::string> got;
  for (const auto& e : recorder_.events()) got.push_back(e.name);
  EXPECT_EQ(got, names);
}

TEST_F(ReflectorTest, ExpiredWatchRelistsAndWatchesFromTheNewList) {
  create_service("a");
  create_service("b");
  start_synced();
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  // The running watch gets an ERROR event with a 410 Status.
  fault("compact?expireWatches=true");
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.replaces_locked() == 2; }));
  EXPECT_EQ(recorder_.replaces()[1], (std::set<std::string>{"a", "b"}));
  auto stats = reflector_->stats();
  EXPECT_EQ(stats.relists, 1u);
  EXPECT_EQ(stats.lists, 2u);
  create_service("c");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "c"));
}

TEST_F(ReflectorTest, CompactedVersionRelistsWithTheRightSetAfterRetryAfter) {
  create_service("a");
  create_service("b");
  start_synced();
  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  // The re-watch after the drop is refused with 503 and Retry-After: 1;
  // meanwhile objects change and history is compacted past the reflector's
  // version, so its next watch is refused up front with 410.
  fault("respond?code=503&count=1&pathPrefix=/api/v1/services&retryAfter=1");
  auto dropped_at = Clock::now();
  fault("drop-watches");
  must("DELETE", "/api/v1/namespaces/default/services/a");
  create_service("c");
  fault("compact");
  ASSERT_TRUE(recorder_.wait([&] { return recorder_.replaces_locked() == 2; }));
  EXPECT_GE(Clock::now() - dropped_at, 1s);  // Retry-After honoured
  EXPECT_EQ(recorder_.replaces()[1], (std::set<std::string>{"b", "c"}));
  // The changes came with the list, not as events.
  EXPECT_TRUE(recorder_.events().empty());
  auto stats = reflector_->stats();
  EXPECT_EQ(stats.relists, 1u);
  EXPECT_EQ(stats.lists, 2u);
  create_service("d");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "d"));
  EXPECT_EQ(recorder_.events().size(), 1u);
}

TEST_F(ReflectorNoWatchCacheTest, ExpiredContinueTokenRestartsTheWholeList) {
  for (int i = 0; i < 5; ++i) create_service("s" + std::to_string(i));
  options_.page_size = 2;
  // Every answer waits 400 ms: time to expire the token of page 1 while the
  // request for page 2 is on its way.
  fault("delay?ms=400");
  start();
  ASSERT_TRUE(eventually([&] { return reflector_->stats().list_pages >= 1; }));
  fault("expire-continue");
  ASSERT_TRUE(eventually([&] { return reflector_->synced(); }));
  must("DELETE", "/kpx/faults");
  auto stats = reflector_->stats();
  EXPECT_EQ(stats.list_restarts, 1u);
  EXPECT_EQ(stats.lists, 1u);
  EXPECT_EQ(stats.list_pages, 4u);  // page 1, then pages 1-3 again
  auto replaces = recorder_.replaces();
  ASSERT_EQ(replaces.size(), 1u);  // nothing handed over from the broken list
  EXPECT_EQ(replaces[0], (std::set<std::string>{"s0", "s1", "s2", "s3", "s4"}));
}

TEST_F(ReflectorNoWatchCacheTest, ContinueTokenExpiringAgainFallsBackToOneUnpagedList) {
  for (int i = 0; i < 5; ++i) create_service("s" + std::to_string(i));
  options_.page_size = 2;
  fault("delay?ms=400");
  start();
  for (uint64_t pages = 1; pages <= 2; ++pages) {
    // Page 1 of each attempt answered: its token expires before page 2.
    ASSERT_TRUE(eventually([&] { return reflector_->stats().list_pages >= pages; }));
    fault("expire-continue");
  }
  ASSERT_TRUE(eventually([&] { return reflector_->synced(); }));
  must("DELETE", "/kpx/faults");
  auto stats = reflector_->stats();
  EXPECT_EQ(stats.list_restarts, 2u);
  EXPECT_EQ(stats.list_pages, 3u);  // page 1 twice, then everything at once
  auto replaces = recorder_.replaces();
  ASSERT_EQ(replaces.size(), 1u);
  EXPECT_EQ(replaces[0], (std::set<std::string>{"s0", "s1", "s2", "s3", "s4"}));
}

TEST_F(ReflectorTest, TooManyRequestsWaitsForRetryAfter) {
  create_service("a");
  fault("respond?code=429&count=1&pathPrefix=/api/v1/services&retryAfter=1");
  auto t0 = Clock::now();
  start_synced();
  EXPECT_GE(Clock::now() - t0, 1s);
  EXPECT_EQ(reflector_->stats().errors, 1u);
  EXPECT_EQ(recorder_.replaces().size(), 1u);
}

TEST_F(ReflectorTest, AuthErrorsAreLoggedAndRetriedKeepingTheLastState) {
  LogCapture logs;
  fault("respond?code=403&count=1&pathPrefix=/api/v1/services");
  create_service("a");
  start_synced();
  EXPECT_TRUE(logs.contains(log::Level::kError, "403"));
  EXPECT_TRUE(logs.contains(log::Level::kError, "RBAC"));

  ASSERT_TRUE(eventually([&] { return open_watches() == 1; }));
  fault("respond?code=401&count=2&pathPrefix=/api/v1/services");
  fault("drop-watches");
  create_service("b");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "b"));
  EXPECT_TRUE(logs.contains(log::Level::kError, "401"));
  auto stats = reflector_->stats();
  EXPECT_GE(stats.errors, 4u);  // 403, broken stream, 401, 401
  EXPECT_EQ(stats.lists, 1u);
  EXPECT_EQ(recorder_.replaces().size(), 1u);  // never an empty replace on errors
}

TEST_F(ReflectorTest, LabelSelectorLeavesOutOtherProxiesServices) {
  const json theirs = {{"service.kubernetes.io/service-proxy-name", "other-proxy"}};
  create_service("mine");
  create_service("theirs", theirs);
  start_synced();
  EXPECT_EQ(recorder_.replaces()[0], (std::set<std::string>{"mine"}));
  create_service("theirs-too", theirs);
  create_service("after");
  ASSERT_TRUE(recorder_.wait_event(EventType::kAdded, "after"));
  for (const auto& e : recorder_.events()) EXPECT_EQ(e.name, "after");
}

TEST_F(ReflectorTest, EndpointSlicesWithoutHeadlessAndNodeByName) {
  auto slice = [&](const std::string& name, const json& labels) {
    json s = {{"metadata", {{"name", name}, {"labels", labels}}},
              {"addressType", "IPv4"},
              {"endpoints", {{{"addresses", {"10.0.0.1"}}}}},
              {"ports", {{{"name", ""}, {"port", 8080}, {"protocol", "TCP"}}}}};
    must("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", s);
  };
  slice("web-1", {{"kubernetes.io/service-name", "web"}});
  slice("db-1", {{"kubernetes.io/service-name", "db"}, {"service.kubernetes.io/headless", ""}});
  must("POST", "/api/v1/nodes", {{"metadata", {{"name", "node-1"}}}});
  must("POST", "/api/v1/nodes", {{"metadata", {{"name", "node-2"}}}});

  Recorder nodes;
  Reflector node_reflector(*client_, node_resource("node-2"), nodes.handlers(), options_);
  std::jthread node_thread([&](std::stop_token stop) { node_reflector.run(stop); });

  start_synced(endpoint_slices_resource());
  EXPECT_EQ(recorder_.replaces()[0], (std::set<std::string>{"web-1"}));
  ASSERT_TRUE(eventually([&] { return node_reflector.synced(); }));
  EXPECT_EQ(nodes.replaces()[0], (std::set<std::string>{"node-2"}));
  json zone = {{"metadata", {{"labels", {{"topology.kubernetes.io/zone", "z1"}}}}}};
  must("PATCH", "/api/v1/nodes/node-1", zone);
  must("PATCH", "/api/v1/nodes/node-2", zone);
  ASSERT_TRUE(nodes.wait_event(EventType::kModified, "node-2"));
  EXPECT_EQ(nodes.events().size(), 1u);
}

TEST_F(ReflectorTest, StopsPromptly) {
  start_synced();
  auto t0 = Clock::now();
  stop();
  EXPECT_LT(Clock::now() - t0, 2s);
}

}  // namespace
}  // namespace kpx::k8s
