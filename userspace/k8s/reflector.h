// List-then-watch of one resource type, as client-go's reflector does it:
//   - a paged list (limit, continue; an expired continue token restarts the
//     whole list, unpaged if it expires again), whose items replace
//     everything the handler knows;
//   - a watch from the list's resourceVersion with bookmarks; every object
//     and BOOKMARK moves the remembered version;
//   - a watch that ends or drops resumes from the remembered version,
//     without a relist; 410 Gone (up front or as an ERROR event) relists,
//     then watches from the new list's version;
//   - errors back off (jittered, exponential), Retry-After is honoured,
//     401/403 are logged as configuration faults and retried slowly.
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
  size_t page_size = 500;  // 0: one unpaged list
  // Each watch asks for a timeoutSeconds drawn from [min, max] (client-go:
  // 5 to 10 minutes), so that the watches of many clients do not end together.
  std::chrono::seconds min_watch_timeout{300};
  std::chrono::seconds max_watch_timeout{600};
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{30000};
  // Floor of the delay after 401/403 (a configuration fault, not a blip).
  std::chrono::milliseconds auth_error_delay{10000};
  // A Retry-After longer than this is capped.
  std::chrono::seconds max_retry_after{300};
};

struct ReflectorStats {
  uint64_t lists = 0;          // complete lists (each one called on_replace)
  uint64_t list_pages = 0;     // list requests answered
  uint64_t list_restarts = 0;  // lists restarted because a continue token expired
  uint64_t relists = 0;        // lists caused by 410 Gone on a watch
  uint64_t watches = 0;        // watch requests sent
  uint64_t events = 0;         // ADDED, MODIFIED and DELETED handled
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
    bool healthy = false;  // it delivered something or ran a while: errors start over
    ApiError error;        // kFailed
  };

  // All pages of page_size items (0: one unpaged request).
  ApiResult<Listing> list(std::stop_token stop, size_t page_size);
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

  std::atomic<bool> synced_{false};
  mutable std::mutex mu_;
  std::string resource_version_;  // under mu_
  struct Counters {
    std::atomic<uint64_t> lists{0}, list_pages{0}, list_restarts{0}, relists{0}, watches{0}, events{0},
        bookmarks{0}, errors{0};
  } counters_;
};

}  // namespace kpx::k8s
