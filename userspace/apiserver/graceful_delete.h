// Graceful deletion, as the real server's registry does it for Pods: a DELETE
// marks the Pod terminating (metadata.deletionTimestamp = now + grace,
// metadata.deletionGracePeriodSeconds = grace) and keeps it; the kubelet's
// DELETE with gracePeriodSeconds=0, once the containers are gone, removes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "apiserver/api_status.h"
#include "apiserver/http.h"
#include "apiserver/store.h"

namespace kpx::apiserver {

struct DeleteOptions {
  std::optional<int64_t> grace_period_seconds;
  DeletePreconditions preconditions;
};

// A DELETE's options: a DeleteOptions body, else the query
// (gracePeriodSeconds=N). 400 BadRequest when they cannot be read.
ApiResult<DeleteOptions> parse_delete_options(const http::Request& req);

// What a DELETE with grace period `grace` (unset: the Pod's
// spec.terminationGracePeriodSeconds) does to `pod` at time `now`: nullopt
// to remove it now; else the Pod to keep, terminating (unchanged when it
// already is and the grace asked for is not shorter than its own). A Pod not
// bound to a node, or already Succeeded or Failed, goes at once.
std::optional<Json> pod_graceful_delete(const Json& pod, std::optional<int64_t> grace,
                                        std::chrono::system_clock::time_point now);

// The inverse of rfc3339() (store.h), only its "YYYY-MM-DDTHH:MM:SSZ" form;
// nullopt when malformed.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& s);

}  // namespace kpx::apiserver
