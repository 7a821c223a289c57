// A Kubernetes API client on cpprestsdk: JSON requests and streaming watches
// against one API server, over HTTPS with the cluster's CA (or plain HTTP
// for an http:// server), authenticated by bearer token or client
// certificate. Thread-safe: reflectors of several resources share one.
// Environment proxies (https_proxy, ...) are not used.
//
// Calls return ApiResult (api_error.h) rather than Result, so that callers
// can react to the HTTP code, the Status reason and Retry-After;
// ApiError::to_error() gives the plain kpx::Error.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <string>

#include "k8s/api_error.h"
#include "k8s/config.h"
#include "status/status.h"

namespace kpx::k8s {

struct ClientOptions {
  // Longest wait for any one read or write of a request.
  std::chrono::seconds request_timeout{30};
  // Longest silence on a watch stream before it counts as dropped. Above the
  // longest timeoutSeconds a watch asks for: the server ends it first.
  std::chrono::seconds watch_idle_timeout{11 * 60};
  // A token file is re-read when its copy is older than this (and after a 401).
  std::chrono::seconds token_max_age{60};
  std::string user_agent = "kpx/0.1";
  // Client-side rate limit of every request (watches included), a token
  // bucket as client-go's: qps a second, bursts of `burst`. qps <= 0: none
  // (tests, the lab); the agent passes kube-proxy's 5 and 10.
  double qps = 0;
  int burst = 0;
};

// How a watch ended without an error.
enum class WatchEnd {
  kClosed,     // the server ended the stream cleanly (timeoutSeconds, or its own limit)
  kByHandler,  // on_event returned false
  kStopped,    // the stop token fired
};

// One decoded event line: {"type": ..., "object": {...}}. Return false to
// end the watch.
using WatchHandler = std::function<bool(const nlohmann::json& event)>;

class Client {
 public:
  // Loads the TLS material (errors name the file or field that is wrong).
  static Result<std::unique_ptr<Client>> create(const ClientConfig& config,
                                                const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // path_and_query is sent as given (already percent-encoded), e.g.
  // "/api/v1/services?limit=500". A non-2xx answer is an ApiError with the
  // Status body's reason and message. A stop request aborts the call.
  ApiResult<nlohmann::json> get(const std::string& path_and_query, std::stop_token stop = {});
  // Writes, for tests and the lab: method "POST", "PUT", "PATCH" (merge
  // patch) or "DELETE"; body may be null.
  ApiResult<nlohmann::json> send(const std::string& method, const std::string& path_and_query,
                                 const nlohmann::json& body, std::stop_token stop = {});
  // GET of a list whose items go to on_item one at a time as they are
  // decoded, each dropped from the answer: a 50,000-object list is never
  // held as one JSON tree. Returns the list without its items (kind,
  // metadata: resourceVersion, continue).
  using ItemSink = std::function<void(nlohmann::json&& item)>;
  ApiResult<nlohmann::json> list(const std::string& path_and_query, const ItemSink& on_item,
                                 std::stop_token stop = {});
  // GET /version: checks the server is there and speaks the API.
  ApiResult<nlohmann::json> version();

  // GET path_and_query (which should carry watch=1) and calls on_event for
  // every event line as it arrives, whatever the chunking. Blocks until the
  // stream ends, on_event returns false or stop fires. A refused watch is an
  // ApiError with its HTTP code; a stream that breaks (or ends in the middle
  // of an event) is an ApiError with code 0.
  ApiResult<WatchEnd> watch(const std::string& path_and_query, const WatchHandler& on_event,
                            std::stop_token stop);

  const std::string& server() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  // send() and list(): on_item null parses the whole answer.
  ApiResult<nlohmann::json> request(const std::string& method, const std::string& path_and_query,
                                    const nlohmann::json& body, const ItemSink* on_item,
                                    std::stop_token stop);
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes a query parameter value ("!a,b" -> "%21a%2Cb").
std::string query_escape(const std::string& value);

}  // namespace kpx::k8s
