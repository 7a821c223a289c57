// How the API's objects reach the sync loop: the Service and EndpointSlice
// reflectors' callbacks decode each object and change the model, telling
// the loop what changed (for kube-proxy's change and latency metrics).
#pragma once

#include "agent/metrics.h"
#include "agent/sync_loop.h"
#include "k8s/reflector.h"

namespace kpx::agent {

void feed_services(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics);
void feed_endpoint_slices(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics);

}  // namespace kpx::agent
