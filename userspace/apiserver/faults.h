// Fault injection for tests, driven over HTTP under /kpx/faults (never
// itself delayed or faulted):
//   GET    /kpx/faults                     state: delay, pending injections, open watches, versions
//   DELETE /kpx/faults                     clear the delay and pending injections
//   POST   /kpx/faults/drop-watches        every open watch writes half an event and closes
//   POST   /kpx/faults/delay?ms=N          delay every API answer by N ms (0: off)
//   POST   /kpx/faults/respond?code=C[&count=N][&pathPrefix=P][&retryAfter=S]
//                                          answer the next N (default 1) requests whose path
//                                          starts with P with a Status of code C (Retry-After
//                                          S seconds on 429/503)
//   POST   /kpx/faults/compact[?resourceVersion=RV][&expireWatches=true]
//                                          compact history up to RV (default: now); with
//                                          expireWatches every open watch gets ERROR 410
//   POST   /kpx/faults/expire-continue     every continue token issued so far gets 410 Expired
//   POST   /kpx/faults/compaction-window?events=N   keep the last N events from now on
//   GET    /kpx/faults/requests            the last 1000 API requests, oldest first, each
//                                          {"method","path","query":{...}} (what a client asked)
#pragma once

#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

#include "apiserver/continue_token.h"
#include "apiserver/http.h"
#include "apiserver/store.h"

namespace kpx::apiserver {

class Faults {
 public:
  Faults(Store& store, ContinueTokens& tokens) : store_(store), tokens_(tokens) {}

  // Before every API request: sleep for the delay, then the injected answer
  // if one is due for this path.
  std::optional<http::Response> before_request(const http::Request& req);
  // A request under /kpx/faults.
  http::Response handle(const http::Request& req);

  // The same, for in-process callers.
  void set_delay(std::chrono::milliseconds d);
  void inject(int code, int count, const std::string& path_prefix, int retry_after_s);
  void clear();

 private:
  struct Injection {
    int code;
    int remaining;
    std::string path_prefix;
    int retry_after_s;
  };
  Json state() const;
  void record(const http::Request& req);  // under mu_

  Store& store_;
  ContinueTokens& tokens_;
  mutable std::mutex mu_;
  std::chrono::milliseconds delay_{0};
  std::deque<Injection> injections_;
  std::deque<Json> requests_;  // the last kMaxRequests
};

}  // namespace kpx::apiserver
