// Reads and writes of objects: GET (one object or a paged, filtered list),
// POST, PUT (object or /status), PATCH (merge and JSON patch), DELETE.
// Watches are served by watch.h.
#pragma once

#include "apiserver/continue_token.h"
#include "apiserver/http.h"
#include "apiserver/resources.h"
#include "apiserver/store.h"

namespace kpx::apiserver {

class ObjectHandlers {
 public:
  ObjectHandlers(Store& store, const ContinueTokens& tokens, bool watch_cache = true)
      : store_(store), tokens_(tokens), watch_cache_(watch_cache) {}

  http::Response handle(const ResourcePath& path, const http::Request& req);

 private:
  http::Response get(const ResourcePath& path, const http::Request& req);
  http::Response list(const ResourcePath& path, const http::Request& req);
  http::Response create(const ResourcePath& path, const http::Request& req);
  http::Response replace(const ResourcePath& path, const http::Request& req);
  http::Response patch(const ResourcePath& path, const http::Request& req);
  http::Response remove(const ResourcePath& path, const http::Request& req);

  Store& store_;
  const ContinueTokens& tokens_;
  const bool watch_cache_;
};

// A list's selectors from labelSelector= and fieldSelector=.
ApiResult<Selector> parse_selector(const ResourceType& t, const http::Request& req);

}  // namespace kpx::apiserver
