// What the EndpointSlice controller computes, as pure functions: a Pod's
// endpoint and ports for a Service (the real controller's podToEndpoint and
// getEndpointPorts), and the creates, updates and deletes that bring a
// Service's managed slices to the desired state with as few writes as
// possible. endpointslice_controller.h does the I/O.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "apiserver/api_status.h"
#include "apiserver/store.h"

namespace kpx::lab {

using apiserver::Json;
using apiserver::ObjectPtr;

inline constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";
inline constexpr const char* kManagedByLabel = "endpointslice.kubernetes.io/managed-by";
inline constexpr const char* kManagedByController = "endpointslice-controller.k8s.io";
inline constexpr const char* kHeadlessLabel = "service.kubernetes.io/headless";
inline constexpr const char* kTriggerTimeAnnotation = "endpoints.kubernetes.io/last-change-trigger-time";
inline constexpr size_t kMaxEndpointsPerSlice = 100;

// The Pod's Ready condition is True (for the API server's Json and the
// client's json alike).
template <typename J>
bool pod_ready(const J& pod) {
  const J& conds = apiserver::member(apiserver::member(pod, "status"), "conditions");
  if (!conds.is_array()) return false;
  for (const J& c : conds)
    if (apiserver::string_at(c, "type") == "Ready") return apiserver::string_at(c, "status") == "True";
  return false;
}

// The controller's Services: a selector with at least one label, and not ExternalName.
bool has_managed_slices(const Json& service);
// spec.selector's labels all on the Pod (same namespace assumed).
bool selects(const Json& service, const Json& pod);

// The Pod's endpoint: addresses [podIP], conditions (ready: Ready condition
// true and not terminating, or publishNotReadyAddresses; serving: Ready
// condition true; terminating: deletionTimestamp set), nodeName, zone (when
// not empty), hostname (when the Pod's subdomain is the Service), targetRef.
// nullopt when the Pod is not listed: no podIP, or finished for good
// (Succeeded, or Failed under restartPolicy Never/OnFailure).
std::optional<Json> pod_endpoint(const Json& service, const Json& pod, const std::string& zone);

// The Service's ports as served by the Pod: [{name, protocol, port}], a named
// targetPort looked up in the Pod's containers' ports (by name and
// protocol); ports the Pod does not have are left out.
Json endpoint_ports(const Json& service, const Json& pod);

struct SliceChanges {
  std::vector<Json> create;                      // full objects with metadata.generateName, no name
  std::vector<std::pair<ObjectPtr, Json>> update;  // current object, next state
  std::vector<ObjectPtr> remove;
  bool empty() const { return create.empty() && update.empty() && remove.empty(); }
};

// The writes that make `slices` (the Service's managed slices) list `pods`
// (the Pods of its namespace): endpoints grouped by their port set, at most
// max_per_slice per slice, kept where they are when they can be, a Service
// without endpoints keeping one empty placeholder slice. Slices that change
// or are created get the trigger time annotation. Nothing when nothing
// changed.
SliceChanges plan_endpoint_slices(const Json& service, const std::vector<ObjectPtr>& pods,
                                  const std::vector<ObjectPtr>& slices,
                                  const std::function<std::string(const std::string& node)>& zone_of,
                                  size_t max_per_slice, const std::string& trigger_time);

// RFC 3339 with nanoseconds, trailing zeros dropped, as Go's RFC3339Nano.
std::string rfc3339_nano(std::chrono::system_clock::time_point t);

}  // namespace kpx::lab
