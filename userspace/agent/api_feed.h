// How the API's objects reach the sync loop: the Service and EndpointSlice
// reflectors' callbacks decode each object and change the model, telling
// the loop what changed (for kube-proxy's change and latency metrics).
// A list (the first, or a relist after a watch's 410) is staged compactly
// page by page and replaces what the model held of its kind in one change
// once complete: the loop never sees a partial list, objects the list lacks
// are removed, unchanged ones are not marked changed.
#pragma once

#include "agent/metrics.h"
#include "agent/sync_loop.h"
#include "k8s/reflector.h"

namespace kpx::agent {

void feed_services(k8s::ReflectorHandlers& h, ModelFeed& sync, Metrics& metrics);
void feed_endpoint_slices(k8s::ReflectorHandlers& h, ModelFeed& sync, Metrics& metrics);

}  // namespace kpx::agent
