// `kpx agent`: the daemon. Watches Services, EndpointSlices and its Node
// through the Kubernetes API, keeps the pinned maps equal to what the
// cluster says, attaches the datapath to the pod interfaces its flags name,
// and serves /healthz and /metrics.
#pragma once

#include <ostream>

#include "agent/options.h"
#include "status/status.h"

namespace kpx::agent {

// Runs until SIGTERM or SIGINT. The datapath stays in place (pinned) when it
// returns; with o.cleanup it removes it instead and returns at once.
Status run_agent(const Options& o);

}  // namespace kpx::agent
