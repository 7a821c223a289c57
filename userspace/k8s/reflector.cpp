#include "k8s/reflector.h"

#include <condition_variable>
#include <random>

#include "k8s/objects.h"
#include "log/log.h"

namespace kpx::k8s {

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// A watch that ends sooner than this with nothing delivered counts as a
// failure (client-go's "very short watch"): no hot loop against a server
// that closes at once.
constexpr auto kShortWatch = std::chrono::seconds(1);

// Sleeps for d unless stop comes first; false when stopped.
bool sleep_for(std::stop_token stop, milliseconds d) {
  if (d.count() <= 0) return !stop.stop_requested();
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lk(mu);
  cv.wait_for(lk, stop, d, [] { return false; });
  return !stop.stop_requested();
}

std::string string_at(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string resource_version_of(const json& obj) {
  auto meta = obj.find("metadata");
  return meta == obj.end() ? "" : string_at(*meta, "resourceVersion");
}

std::string object_name(const json& obj) {
  auto meta = obj.find("metadata");
  if (meta == obj.end()) return "?";
  std::string ns = string_at(*meta, "namespace"), name = string_at(*meta, "name");
  return ns.empty() ? name : ns + "/" + name;
}

std::string millis(milliseconds d) { return std::to_string(d.count()) + "ms"; }

}  // namespace

const char* to_string(EventType t) {
  switch (t) {
    case EventType::kAdded:
      return "ADDED";
    case EventType::kModified:
      return "MODIFIED";
    case EventType::kDeleted:
      return "DELETED";
  }
  return "?";
}

ResourceSpec services_resource() {
  return {"/api/v1/services", "!" + std::string(kLabelServiceProxyName), "", "services"};
}

ResourceSpec endpoint_slices_resource() {
  return {"/apis/discovery.k8s.io/v1/endpointslices",
          "!" + std::string(kLabelHeadless) + ",!" + std::string(kLabelServiceProxyName), "",
          "endpointslices"};
}

ResourceSpec node_resource(const std::string& node_name) {
  return {"/api/v1/nodes", "", "metadata.name=" + node_name, "node " + node_name};
}

Reflector::Reflector(Client& client, ResourceSpec spec, ReflectorHandlers handlers, ReflectorOptions options)
    : client_(client),
      spec_(std::move(spec)),
      handlers_(std::move(handlers)),
      options_(options),
      backoff_(options.initial_backoff, options.max_backoff, options.backoff_reset) {
  if (spec_.name.empty()) spec_.name = spec_.list_path;
}

std::string Reflector::last_resource_version() const {
  std::lock_guard lk(mu_);
  return resource_version_;
}

void Reflector::set_resource_version(std::string rv) {
  std::lock_guard lk(mu_);
  resource_version_ = std::move(rv);
}

std::string Reflector::relist_resource_version() const {
  if (rv_unavailable_) return "";
  std::string rv = last_resource_version();
  return rv.empty() ? "0" : rv;
}

ReflectorStats Reflector::stats() const {
  ReflectorStats s;
  s.lists = counters_.lists;
  s.list_pages = counters_.list_pages;
  s.list_restarts = counters_.list_restarts;
  s.relists = counters_.relists;
  s.consistent_lists = counters_.consistent_lists;
  s.watches = counters_.watches;
  s.events = counters_.events;
  s.bookmarks = counters_.bookmarks;
  s.errors = counters_.errors;
  return s;
}

std::string Reflector::path(const std::vector<std::pair<std::string, std::string>>& params) const {
  std::string p = spec_.list_path;
  char sep = '?';
  auto add = [&](const std::string& key, const std::string& value) {
    p += sep + key + "=" + query_escape(value);
    sep = '&';
  };
  if (!spec_.label_selector.empty()) add("labelSelector", spec_.label_selector);
  if (!spec_.field_selector.empty()) add("fieldSelector", spec_.field_selector);
  for (const auto& [k, v] : params) add(k, v);
  return p;
}

void Reflector::run(std::stop_token stop) {
  bool need_list = true;
  int expired_in_a_row = 0;  // lists restarted for an expired continue token
  backoff_.reset();
  while (!stop.stop_requested()) {
    if (need_list) {
      const std::string rv = relist_resource_version();
      // Every list is paged. client-go lists a given version unpaged (so
      // that the watch cache serves it, where a limit sends it to etcd at
      // exactly that version); kpx does not: one unpaged answer of a large
      // cluster (50,000 slices) held beside the model it replaces takes the
      // agent past its manifest's memory limit (kpx-bench sync, relist
      // case). A version etcd has compacted comes back 410 and is read
      // again consistently ("", paged) below. "0" is paged too: the cache
      // ignores the limit there, an API server without one honours it.
      size_t page_size = options_.page_size;
      // Paging that keeps expiring (pages slower than the compaction
      // window) falls back to one unpaged list.
      auto listed = list(stop, rv, expired_in_a_row < 2 ? page_size : 0);
      if (!listed) {
        if (stop.stop_requested()) break;
        ++counters_.errors;
        const ApiError& e = listed.error();
        milliseconds delay;
        if (failed_on_continue_ && e.is_gone() && expired_in_a_row++ == 0) {
          // The continue token expired between pages: start again at once.
          ++counters_.list_restarts;
          log::info(spec_.name + ": list expired while paging (" + e.to_string() + "); listing again");
          delay = milliseconds(0);
        } else if (!failed_on_continue_ && !rv.empty() &&
                   (e.is_gone() || e.is_resource_version_too_large())) {
          // client-go: the version asked for is unavailable (compacted, or
          // not reached by this server): a consistent read at once.
          rv_unavailable_ = true;
          ++counters_.consistent_lists;
          log::info(spec_.name + ": list at resourceVersion " + rv + " refused (" + e.to_string() +
                    "); listing the latest");
          delay = milliseconds(0);
        } else {
          if (e.is_gone()) ++counters_.list_restarts;
          delay = retry_delay("list", e);
        }
        sleep_for(stop, delay);
        continue;
      }
      expired_in_a_row = 0;
      rv_unavailable_ = false;
      log::debug(1, spec_.name + ": listed " + std::to_string(listed->items.size()) + " at resourceVersion " +
                        listed->resource_version + " (asked for \"" + rv + "\")");
      // Counters first: whoever sees a handler's effect sees them counted.
      ++counters_.lists;
      set_resource_version(std::move(listed->resource_version));
      if (handlers_.on_replace) handlers_.on_replace(std::move(listed->items));
      synced_ = true;
      need_list = false;
    }

    WatchOutcome w = watch(stop);
    switch (w.result) {
      case WatchResult::kStopped:
        return;
      case WatchResult::kGone:
        ++counters_.relists;
        need_list = true;
        log::info(spec_.name + ": resourceVersion " + last_resource_version() +
                  " is too old (410); listing again");
        // client-go restarts list-and-watch through its backoff manager.
        sleep_for(stop, backoff_.next());
        break;
      case WatchResult::kClosed:
        break;  // the server's timeout: watch again from the same version
      case WatchResult::kFailed:
        ++counters_.errors;
        sleep_for(stop, retry_delay("watch", w.error));
        break;
    }
  }
}

ApiResult<Reflector::Listing> Reflector::list(std::stop_token stop, const std::string& rv, size_t page_size) {
  Listing out;
  std::string cont;
  failed_on_continue_ = false;
  // Unpaged answers are handed over in batches of this many items.
  const size_t batch_size = options_.page_size > 0 ? options_.page_size : 500;
  bool first = true;
  std::vector<json> batch;
  auto flush = [&] {
    handlers_.on_list_page(std::move(batch), first);
    first = false;
    batch = {};
  };
  Client::ItemSink sink = [&](json&& item) {
    if (!handlers_.on_list_page) {
      out.items.push_back(std::move(item));
      return;
    }
    batch.push_back(std::move(item));
    if (batch.size() >= batch_size) flush();
  };
  do {
    std::vector<std::pair<std::string, std::string>> params;
    // A continued page carries no resourceVersion: the token holds it.
    if (cont.empty() && !rv.empty()) params.emplace_back("resourceVersion", rv);
    if (page_size > 0) params.emplace_back("limit", std::to_string(page_size));
    if (!cont.empty()) params.emplace_back("continue", cont);
    const std::string p = path(params);
    auto page = client_.list(p, sink, stop);
    if (!page) {
      failed_on_continue_ = !cont.empty();
      return page.error();
    }
    ++counters_.list_pages;
    json& j = *page;
    auto items = j.find("items");
    if (!j.is_object() || (items != j.end() && !items->is_array() && !items->is_null())) {
      ApiError e;
      e.request = "GET " + p;
      e.message = "the answer is not a list";
      return e;
    }
    // Every page is handed over, the first even when empty: "first" starts
    // the handler's list over.
    if (handlers_.on_list_page && (first || !batch.empty())) flush();
    auto meta = j.find("metadata");
    out.resource_version = meta == j.end() ? "" : string_at(*meta, "resourceVersion");
    cont = meta == j.end() ? "" : string_at(*meta, "continue");
    if (out.resource_version.empty()) {
      ApiError e;
      e.request = "GET " + p;
      e.message = "the list has no metadata.resourceVersion";
      return e;
    }
  } while (!cont.empty());
  return out;
}

Reflector::WatchOutcome Reflector::watch(std::stop_token stop) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  auto lo = options_.min_watch_timeout.count(), hi = std::max(options_.max_watch_timeout.count(), lo);
  int64_t timeout = std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  const std::string from = last_resource_version();
  const std::string p = path({{"watch", "1"},
                              {"resourceVersion", from},
                              {"allowWatchBookmarks", "true"},
                              {"timeoutSeconds", std::to_string(timeout)}});
  ++counters_.watches;
  log::debug(2, spec_.name + ": watching from resourceVersion " + from);

  WatchOutcome out{WatchResult::kClosed};
  bool gone = false;
  bool error_event = false;
  size_t delivered = 0;
  auto started = Clock::now();
  auto handle = [&](const json& event) -> bool {
    std::string type = string_at(event, "type");
    auto obj_it = event.find("object");
    const json& obj = obj_it != event.end() ? *obj_it : event;  // never used when missing
    if (obj_it == event.end() || !obj.is_object()) {
      log::warning(spec_.name + ": watch event without an object ignored");
      return true;
    }
    EventType t;
    if (type == "ADDED") {
      t = EventType::kAdded;
    } else if (type == "MODIFIED") {
      t = EventType::kModified;
    } else if (type == "DELETED") {
      t = EventType::kDeleted;
    } else if (type == "BOOKMARK") {
      // Only the version moves: nothing changed.
      ++counters_.bookmarks;
      ++delivered;
      if (auto rv = resource_version_of(obj); !rv.empty()) set_resource_version(std::move(rv));
      return true;
    } else if (type == "ERROR") {
      // A Status: 410 means the version was compacted away.
      int code = obj.contains("code") && obj["code"].is_number_integer() ? obj["code"].get<int>() : 0;
      if (code == 410) {
        gone = true;
      } else {
        error_event = true;
        out.error.code = code;
        out.error.reason = string_at(obj, "reason");
        out.error.message = "ERROR event: " + string_at(obj, "message");
        out.error.request = "GET " + p;
      }
      return false;
    } else {
      log::warning(spec_.name + ": watch event of unknown type \"" + type + "\" ignored");
      return true;
    }
    log::debug(3, spec_.name + ": " + type + " " + object_name(obj));
    ++counters_.events;
    ++delivered;
    if (handlers_.on_event) handlers_.on_event(t, obj);
    if (auto rv = resource_version_of(obj); !rv.empty()) set_resource_version(std::move(rv));
    return true;
  };

  auto r = client_.watch(p, handle, stop);
  out.healthy = delivered > 0 || Clock::now() - started >= kShortWatch;
  if (stop.stop_requested()) {
    out.result = WatchResult::kStopped;
  } else if (gone || (!r && r.error().is_gone())) {
    out.result = WatchResult::kGone;
  } else if (error_event) {
    out.result = WatchResult::kFailed;
  } else if (!r) {
    out.result = WatchResult::kFailed;
    out.error = r.error();
  } else if (*r == WatchEnd::kClosed && !out.healthy) {
    out.result = WatchResult::kFailed;
    out.error.request = "GET " + p;
    out.error.message = "the watch ended at once without an event";
  } else {
    out.result = WatchResult::kClosed;
  }
  return out;
}

milliseconds Reflector::retry_delay(const std::string& what, const ApiError& e) {
  milliseconds delay = backoff_.next();
  if (e.retry_after.count() > 0) {
    // The server said when: not sooner.
    delay = std::max<milliseconds>(delay, std::min(e.retry_after, options_.max_retry_after));
  }
  if (e.is_auth()) {
    delay = std::max(delay, options_.auth_error_delay);
    log::error(spec_.name + ": " + what + " refused: " + e.to_string() +
               (e.code == 401
                    ? " (kpx is not authenticated: check the token or client certificate)"
                    : " (kpx is not authorized: RBAC must allow list and watch on " + spec_.name + ")") +
               "; keeping the last state, retrying in " + millis(delay));
  } else {
    log::warning(spec_.name + ": " + what + " failed: " + e.to_string() + "; retrying in " + millis(delay));
  }
  return delay;
}

}  // namespace kpx::k8s
