#include "apiserver/watch.h"

#include <algorithm>
#include <random>

#include "apiserver/handlers.h"
#include "apiserver/media.h"
#include "apiserver/table.h"

namespace kpx::apiserver {

namespace {

using Clock = std::chrono::steady_clock;

// How often a waiting watch looks whether its client has gone.
constexpr auto kPeerCheck = std::chrono::milliseconds(250);

bool truthy(const std::string& v) { return v == "1" || v == "true" || v == "True"; }

std::string event_line(const char* type, const std::string& object_text) {
  return std::string("{\"type\":\"") + type + "\",\"object\":" + object_text + "}\n";
}

Json bookmark_object(const ResourceType& t, uint64_t rv, bool initial_events_end) {
  Json meta = {{"resourceVersion", std::to_string(rv)}};
  if (initial_events_end) meta["annotations"] = {{"k8s.io/initial-events-end", "true"}};
  return {{"kind", t.kind}, {"apiVersion", t.api_version()}, {"metadata", meta}};
}

// Writes event lines as chunks. Splitting on: each batch is cut at 0-3
// random places, so one event may span two chunks and one chunk may hold
// several events.
class StreamWriter {
 public:
  StreamWriter(http::Connection& conn, bool split, uint64_t seed) : conn_(conn), split_(split), rng_(seed) {}

  bool write(const std::string& batch) {
    if (batch.empty()) return true;
    if (!split_ || batch.size() < 2) return conn_.send_chunk(batch);
    std::vector<size_t> cuts;
    size_t n = rng_() % 4;  // 0: the whole batch in one chunk
    for (size_t i = 0; i < n; ++i) cuts.push_back(1 + rng_() % (batch.size() - 1));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    size_t at = 0;
    for (size_t c : cuts) {
      if (!conn_.send_chunk(std::string_view(batch).substr(at, c - at))) return false;
      at = c;
    }
    return conn_.send_chunk(std::string_view(batch).substr(at));
  }

  // A chunk announcing the whole line but carrying only its first half: the
  // stream then stops in the middle of a chunk and of an event.
  void write_torn(const std::string& line) {
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", line.size());
    conn_.send_raw(std::string(size) + line.substr(0, line.size() / 2));
  }

 private:
  http::Connection& conn_;
  bool split_;
  std::mt19937_64 rng_;
};

// Which event a watcher with this filter sees for a change, if any: an object
// that starts matching is ADDED, one that stops matching is DELETED.
const char* visible_type(const Event& e, const Selector& sel) {
  bool now = sel.matches(*e.object);
  bool before = e.prev && sel.matches(*e.prev);
  switch (e.type) {
    case EventType::kAdded:
      return now ? "ADDED" : nullptr;
    case EventType::kDeleted:
      return now ? "DELETED" : nullptr;
    case EventType::kModified:
      if (before && now) return "MODIFIED";
      if (now) return "ADDED";
      if (before) return "DELETED";
      return nullptr;
  }
  return nullptr;
}

}  // namespace

bool is_watch_request(const ResourcePath& path, const http::Request& req) {
  return req.method == "GET" && (path.watch_prefix || truthy(req.query_value("watch")));
}

bool WatchHandler::serve(const ResourcePath& path, const http::Request& req, http::Connection& conn) {
  const ResourceType& t = *path.type;
  if (!path.subresource.empty() || (t.namespaced && path.ns.empty() && !path.name.empty()))
    return conn.send(status_response(method_not_allowed_status()), true);
  auto sel = parse_selector(t, req);
  if (!sel) return conn.send(status_response(sel.error()), true);
  Representation rep = negotiate(req.header("accept"), true);
  if (rep == Representation::kNone) return conn.send(status_response(not_acceptable_status()), true);
  std::string include_object = req.query_value("includeObject");
  auto render = [&](const Json& obj) {
    return rep == Representation::kTable ? to_text(table_for(t, {obj}, "", "", include_object))
                                         : to_text(obj);
  };

  std::string rv_text = req.query_value("resourceVersion");
  bool initial_events = rv_text.empty() || rv_text == "0" || truthy(req.query_value("sendInitialEvents"));
  bool bookmarks = truthy(req.query_value("allowWatchBookmarks"));
  uint64_t from = 0;
  if (!initial_events) {
    if (rv_text.find_first_not_of("0123456789") != std::string::npos || rv_text.size() > 19)
      return conn.send(status_response(bad_request_status("invalid resource version: " + rv_text)), true);
    from = std::stoull(rv_text);
    uint64_t compacted = store_.compacted_rv();
    if (from < compacted)
      return conn.send(status_response(expired_status("too old resource version: " + rv_text + " (" +
                                                      std::to_string(compacted) + ")")),
                       true);
  }
  auto timeout = opts_.max_timeout;
  std::string timeout_text = req.query_value("timeoutSeconds");
  if (!timeout_text.empty() && timeout_text.size() < 10 &&
      timeout_text.find_first_not_of("0123456789") == std::string::npos && std::stol(timeout_text) > 0)
    timeout = std::min(opts_.max_timeout, std::chrono::seconds(std::stol(timeout_text)));

  WatchRegistration registered(store_);
  Store::WatchCursor cursor = store_.watch_cursor(from);
  StreamWriter out(conn, opts_.split_chunks, seed_ + watches_++);
  auto wanted = [&](const ObjectKey& k) {
    return (path.ns.empty() || k.ns == path.ns) && (path.name.empty() || k.name == path.name);
  };

  std::string first_batch;
  if (initial_events) {
    auto page = store_.list(t, path.ns, *sel, 0, std::nullopt, std::nullopt);
    if (!page) return conn.send(status_response(page.error()), true);
    cursor.rv = page->rv;
    for (const auto& o : page->items) {
      auto meta = o->find("metadata");
      if (path.name.empty() || (meta != o->end() && string_at(*meta, "name") == path.name))
        first_batch += event_line("ADDED", render(*o));
    }
    if (bookmarks && truthy(req.query_value("sendInitialEvents")))
      first_batch += event_line("BOOKMARK", to_text(bookmark_object(t, cursor.rv, true)));
  }
  if (!conn.send_stream_head(200, "application/json") || !out.write(first_batch)) return false;

  const auto deadline = Clock::now() + timeout;
  auto next_bookmark = Clock::now() + opts_.bookmark_interval;
  for (;;) {
    auto until = std::min(deadline, Clock::now() + kPeerCheck);
    if (bookmarks) until = std::min(until, next_bookmark);
    Wake w = store_.wait(t, cursor, until);
    switch (w.reason) {
      case WakeReason::kStopped:
        return false;
      case WakeReason::kDropped:
        // A fault: the connection breaks in the middle of an event.
        out.write_torn(event_line("MODIFIED", to_text(bookmark_object(t, cursor.rv, false))));
        return false;
      case WakeReason::kExpired:
      case WakeReason::kTooOld: {
        ApiStatus s = expired_status("too old resource version: " + std::to_string(cursor.rv) + " (" +
                                     std::to_string(store_.compacted_rv()) + ")");
        return out.write(event_line("ERROR", to_text(status_json(s)))) && conn.send_stream_end();
      }
      case WakeReason::kEvents: {
        std::string batch;
        for (const auto& e : w.events) {
          if (!wanted(e.key)) continue;
          if (const char* type = visible_type(e, *sel)) batch += event_line(type, render(*e.object));
        }
        if (!out.write(batch)) return false;
        break;
      }
      case WakeReason::kTimeout:
        break;
    }
    auto now = Clock::now();
    if (now >= deadline) return conn.send_stream_end();
    if (bookmarks && now >= next_bookmark) {
      if (!out.write(event_line("BOOKMARK", to_text(bookmark_object(t, cursor.rv, false))))) return false;
      next_bookmark = now + opts_.bookmark_interval;
    }
    if (conn.peer_closed()) return false;
  }
}

}  // namespace kpx::apiserver
