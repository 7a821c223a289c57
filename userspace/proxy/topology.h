// Which of a Service port's endpoints new connections may go to, as
// kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go) decides it:
// pure, so that its rules are table-tested on their own.
//
//   - The cluster set: the ready endpoints the topology hints give this node;
//     when no endpoint is ready anywhere, the serving terminating ones (all
//     of them: the fallback ignores topology).
//   - The local set: the ready endpoints on this node; when none is, the
//     serving terminating ones on this node. Topology never applies to it.
//
// Hints are used (latest kube-proxy: whatever the Service's
// trafficDistribution or topology annotations say, since the EndpointSlice
// controller writes hints only when those ask for them):
//   - by node, when every ready endpoint has a node hint and one names this
//     node (PreferSameNode);
//   - else by zone, when every ready endpoint has a zone hint and one names
//     this node's zone (PreferSameZone / PreferClose, the older
//     topology-mode Auto);
//   - else not at all.
#pragma once

#include <cstdint>
#include <vector>

namespace kpx::proxy {

// What one endpoint's hints of one kind say about this node.
enum class Hint : uint8_t {
  kNone,   // no hint of that kind
  kOther,  // hints, none for this node (or its zone)
  kThis,   // hinted for this node (or its zone)
};

struct EndpointFacts {
  bool ready = false, serving = false, terminating = false;
  bool local = false;  // on this node
  Hint node_hint = Hint::kNone, zone_hint = Hint::kNone;
};

enum class TopologyMode : uint8_t { kNone, kPreferSameZone, kPreferSameNode };
const char* to_string(TopologyMode m);  // "", "PreferSameZone", "PreferSameNode"

// kube-proxy's topologyModeFromHints over the ready endpoints.
TopologyMode topology_mode(const std::vector<EndpointFacts>& endpoints);

struct Categorized {
  TopologyMode mode = TopologyMode::kNone;
  // Indexes into the endpoints given, in their order.
  std::vector<uint32_t> cluster, local;
};
Categorized categorize(const std::vector<EndpointFacts>& endpoints);

}  // namespace kpx::proxy
