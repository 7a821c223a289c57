// List-then-watch of one resource type, with client-go's reflector rules:
//   - the first list asks for resourceVersion=0 (any version, served from
//     the API server's watch cache, which ignores limit); a relist after a
//     watch's 410 asks for the last version seen, unpaged (the watch cache
//     serves "at least this version" only without limit); a list refused
//     with 410 or "too large resource version" is retried at once with
//     resourceVersion="" (a consistent read, paged), and so is every list
//     until one succeeds. Paging stays on when a resourceVersion=0 list came
//     back paged (no watch cache). An expired continue token restarts the
//     whole list (unpaged if it expires again: kpx's own, client-go's pager
//     goes unpaged at once).
//   - list items are decoded one by one from the answer (Client::list) and
//     handed over in batches, so a 50,000-object answer is never one tree;
//     the complete list replaces everything the handler knows;
//   - a watch from the list's resourceVersion with bookmarks; every object
//     and BOOKMARK moves the remembered version;
//   - a watch that ends or drops resumes from the remembered version,
//     without a relist; 410 Gone (up front or as an ERROR event) relists;
//   - errors and relists back off (client-go's backoff manager: 800 ms
//     doubling to 30 s, jitter up to one delay, starting over only after 2
//     minutes without a delay), Retry-After is honoured, 401/403 are logged
//     as configuration faults and retried slowly.
// An error never reaches the handlers: the last good state stays.
// resourceVersion is opaque: it is only passed back.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <string>
#include <vector>

#include "k8s/backoff.h"
#include "k8s/client.h"

namespace kpx::k8s {

enum class EventType { kAdded, kModified, kDeleted };
const char* to_string(EventType t);

struct ResourceSpec {
  std::string list_path;       // "/api/v1/services" (all namespaces)
  std::string label_selector;  // unescaped: "!service.kubernetes.io/service-proxy-name"
  std::string field_selector;  // unescaped: "metadata.name=node-1"
  std::string name;            // for logs: "services"
};

// What kpx watches, with kube-proxy's selectors.
ResourceSpec services_resource();
ResourceSpec endpoint_slices_resource();
ResourceSpec node_resource(const std::string& node_name);

// Called on the thread that runs the reflector, one call at a time.
struct ReflectorHandlers {
  // After every complete list: these are all the objects (list items carry
  // no kind). Replaces whatever the handler knew.
  std::function<void(std::vector<nlohmann::json> items)> on_replace;
  // ADDED, MODIFIED, DELETED (with the object's last state).
  std::function<void(EventType type, const nlohmann::json& object)> on_event;
  // Optional, for large lists: when set, each list page's items go here as
  // the page arrives (first is true for the first page of every list
  // attempt, so a list that restarts starts over), and on_replace is then
  // called with no items once the list is complete. The caller can decode
  // and drop each page instead of holding the whole list as JSON.
  std::function<void(std::vector<nlohmann::json> page, bool first)> on_list_page;
};

struct ReflectorOptions {
  // client-go's pager default. 0: never paged. Pages (or, unpaged, batches
  // of this many decoded items) go to on_list_page.
  size_t page_size = 500;
  // Each watch asks for a timeoutSeconds drawn from [min, max] (client-go:
  // 5 to 10 minutes), so that the watches of many clients do not end together.
  std::chrono::seconds min_watch_timeout{300};
  std::chrono::seconds max_watch_timeout{600};
  std::chrono::milliseconds initial_backoff{800};
  std::chrono::milliseconds max_backoff{30000};
  // The backoff starts over after this long without a delay taken.
  std::chrono::milliseconds backoff_reset{120000};
  // Floor of the delay after 401/403 (a configuration fault, not a blip).
  std::chrono::milliseconds auth_error_delay{10000};
  // A Retry-After longer than this is capped.
  std::chrono::seconds max_retry_after{300};
};

struct ReflectorStats {
  uint64_t lists = 0;             // complete lists (each one called on_replace)
  uint64_t list_pages = 0;        // list requests answered
  uint64_t list_restarts = 0;     // lists restarted because a continue token expired
  uint64_t relists = 0;           // lists caused by 410 Gone on a watch
  uint64_t consistent_lists = 0;  // lists retried with resourceVersion="" (the version was unavailable)
  uint64_t watches = 0;           // watch requests sent
  uint64_t events = 0;            // ADDED, MODIFIED and DELETED handled
  uint64_t bookmarks = 0;
  uint64_t errors = 0;  // failed requests, ERROR events, broken streams
};

class Reflector {
 public:
  // client must outlive the reflector.
  Reflector(Client& client, ResourceSpec spec, ReflectorHandlers handlers, ReflectorOptions options = {});
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  // Lists and watches until stop is requested (run it in a std::jthread).
  void run(std::stop_token stop);

  // True once the first list has been handed to on_replace.
  bool synced() const { return synced_; }
  // The version the next watch would start from ("" before the first list).
  std::string last_resource_version() const;
  ReflectorStats stats() const;
  const ResourceSpec& spec() const { return spec_; }

 private:
  struct Listing {
    std::vector<nlohmann::json> items;
    std::string resource_version;
  };
  enum class WatchResult { kStopped, kGone, kClosed, kFailed };
  struct WatchOutcome {
    WatchResult result;
    bool healthy = false;  // it delivered something or ran a while (else a clean end is a failure)
    ApiError error;        // kFailed
  };

  // All pages of page_size items (0: one unpaged request) at rv.
  ApiResult<Listing> list(std::stop_token stop, const std::string& rv, size_t page_size);
  // client-go's relistResourceVersion(): "" when the last version is
  // unavailable, "0" before any, else the last one seen.
  std::string relist_resource_version() const;
  WatchOutcome watch(std::stop_token stop);
  // The delay after a failed request; logs it.
  std::chrono::milliseconds retry_delay(const std::string& what, const ApiError& e);
  std::string path(const std::vector<std::pair<std::string, std::string>>& params) const;
  void set_resource_version(std::string rv);

  Client& client_;
  ResourceSpec spec_;
  ReflectorHandlers handlers_;
  ReflectorOptions options_;
  Backoff backoff_;  // used by run() only

  // run()'s thread only.
  bool rv_unavailable_ = false;      // a list at the last version got 410 / too large
  bool failed_on_continue_ = false;  // the last failed list failed on a continued page

  std::atomic<bool> synced_{false};
  mutable std::mutex mu_;
  std::string resource_version_;  // under mu_
  struct Counters {
    std::atomic<uint64_t> lists{0}, list_pages{0}, list_restarts{0}, relists{0}, consistent_lists{0},
        watches{0}, events{0}, bookmarks{0}, errors{0};
  } counters_;
};

}  // namespace kpx::k8s
