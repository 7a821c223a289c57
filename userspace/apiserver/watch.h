// Watches: GET ...?watch=1 answered with HTTP 200 and a chunked stream of
// {"type":...,"object":...} lines, held open until timeoutSeconds, a fault or
// the client leaves.
//
// resourceVersion: a revision streams the changes after it (410 up front
// when it has been compacted away; an ERROR event with a 410 Status when
// compaction overtakes the running watch). "" or "0", or
// sendInitialEvents=true: first a synthetic ADDED for every matching object,
// then the changes, as the real server does (with allowWatchBookmarks and
// sendInitialEvents, a BOOKMARK annotated k8s.io/initial-events-end marks the
// end of the initial events).
//
// Chunk boundaries are not aligned with events unless disabled: an event may
// be split over two chunks, or several share one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "apiserver/http.h"
#include "apiserver/resources.h"
#include "apiserver/store.h"

namespace kpx::apiserver {

struct WatchOptions {
  std::chrono::milliseconds bookmark_interval{60000};
  std::chrono::seconds max_timeout{1800};  // also the default timeoutSeconds
  bool split_chunks = true;
};

class WatchHandler {
 public:
  WatchHandler(Store& store, WatchOptions opts, uint64_t seed) : store_(store), opts_(opts), seed_(seed) {}

  // Serves one watch request; false when the connection must be closed.
  bool serve(const ResourcePath& path, const http::Request& req, http::Connection& conn);

 private:
  Store& store_;
  WatchOptions opts_;
  uint64_t seed_;
  std::atomic<uint64_t> watches_{0};  // makes each stream's chunk splitting differ, reproducibly
};

bool is_watch_request(const ResourcePath& path, const http::Request& req);

}  // namespace kpx::apiserver
