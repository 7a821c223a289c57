#include "proxy/topology.h"

namespace kpx::proxy {

const char* to_string(TopologyMode m) {
  switch (m) {
    case TopologyMode::kNone:
      return "";
    case TopologyMode::kPreferSameZone:
      return "PreferSameZone";
    case TopologyMode::kPreferSameNode:
      return "PreferSameNode";
  }
  return "?";
}

TopologyMode topology_mode(const std::vector<EndpointFacts>& endpoints) {
  bool any_ready = false;
  bool all_node_hinted = true, for_this_node = false;
  bool all_zone_hinted = true, for_this_zone = false;
  // Endpoints that are not ready carry no hints that matter: the
  // controller hints the ready ones only.
  for (const EndpointFacts& e : endpoints) {
    if (!e.ready) continue;
    any_ready = true;
    all_node_hinted &= e.node_hint != Hint::kNone;
    for_this_node |= e.node_hint == Hint::kThis;
    all_zone_hinted &= e.zone_hint != Hint::kNone;
    for_this_zone |= e.zone_hint == Hint::kThis;
  }
  if (!any_ready) return TopologyMode::kNone;
  // Hints for nothing here would leave this node without a backend: then
  // the next coarser level (or none) applies.
  if (all_node_hinted && for_this_node) return TopologyMode::kPreferSameNode;
  if (all_zone_hinted && for_this_zone) return TopologyMode::kPreferSameZone;
  return TopologyMode::kNone;
}

namespace {

bool available(const EndpointFacts& e, TopologyMode mode) {
  switch (mode) {
    case TopologyMode::kNone:
      return true;
    case TopologyMode::kPreferSameNode:
      return e.node_hint == Hint::kThis;
    case TopologyMode::kPreferSameZone:
      return e.zone_hint == Hint::kThis;
  }
  return false;
}

bool serving_terminating(const EndpointFacts& e) { return e.serving && e.terminating; }

}  // namespace

Categorized categorize(const std::vector<EndpointFacts>& endpoints) {
  Categorized out;
  out.mode = topology_mode(endpoints);
  const auto n = static_cast<uint32_t>(endpoints.size());
  for (uint32_t i = 0; i < n; ++i)
    if (endpoints[i].ready && available(endpoints[i], out.mode)) out.cluster.push_back(i);
  // A mode is chosen only when some ready endpoint is available under it, so
  // an empty cluster set here means no endpoint is ready anywhere.
  if (out.cluster.empty())
    for (uint32_t i = 0; i < n; ++i)
      if (serving_terminating(endpoints[i])) out.cluster.push_back(i);

  // The local set falls back on its own: ready endpoints on other nodes do
  // not stop it from using this node's draining ones.
  bool local_ready = false;
  for (const EndpointFacts& e : endpoints) local_ready |= e.local && e.ready;
  for (uint32_t i = 0; i < n; ++i) {
    const EndpointFacts& e = endpoints[i];
    if (e.local && (local_ready ? e.ready : serving_terminating(e))) out.local.push_back(i);
  }
  return out;
}

}  // namespace kpx::proxy
