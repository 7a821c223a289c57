// What kpx knows of the cluster: the Services and EndpointSlices as the API
// last served them (valid ones only, compactly: see proxy/compact.h), and
// this node. compute() reads it.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "k8s/objects.h"
#include "proxy/compact.h"

namespace kpx::proxy {

// An object kpx refused, or kept without some of its items, for the log.
struct Rejection {
  enum class Outcome : uint8_t {
    kRejected,         // nothing of this version is in the model
    kRejectedRemoved,  // nor the previous version, which the model held until now
    kItemsDropped,     // kept, without the items the reason names
  };
  std::string kind;  // "Service" | "EndpointSlice"
  std::string name;  // "namespace/name"
  std::string reason;
  Outcome outcome = Outcome::kRejected;
  bool rejected() const { return outcome != Outcome::kItemsDropped; }
};
// "Service default/web rejected: spec.clusterIP: 'x' is not an IP address",
// "...; its previous version is removed, it is no longer proxied",
// "Service default/web kept without: spec.externalIPs[1]: 'x' is not an IP address"
std::string to_string(const Rejection& r);

class Model {
 public:
  using Services = std::map<std::string, ServiceInfo>;  // by "ns/name"
  using Slices = std::map<std::string, SliceInfo>;      // by slice name (in the Service's namespace)

  Model() = default;
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

  // Adds or replaces the object with the same namespace/name (ADDED and
  // MODIFIED events, list items). Valid objects are kept compactly
  // (proxy/compact.h); invalid items of a list (proxy/validate.h) are left
  // out and the Rejection names them (kItemsDropped). An object invalid as
  // a whole is rejected, and its previous version is removed too, since it
  // no longer is what the API holds (kube-proxy would program what the
  // broken object says, which kpx cannot trust); the Rejection says so.
  std::optional<Rejection> upsert_service(const k8s::Service& s);
  std::optional<Rejection> upsert_endpoint_slice(const k8s::EndpointSlice& s);
  // DELETED events. Unknown names are ignored.
  void remove_service(std::string_view ns, std::string_view name);
  void remove_endpoint_slice(std::string_view ns, std::string_view name);

  // This node. A change of its zone label marks the Services whose slices
  // carry zone hints (the only ones the zone changes, proxy/topology.h);
  // other changes of the Node mark none.
  void set_node(k8s::Node n);
  const std::optional<k8s::Node>& node() const { return node_; }

  const Services& services() const { return services_; }
  // The slices whose kubernetes.io/service-name label names this Service
  // ("ns/name"), whether or not the Service itself is known yet.
  const Slices& slices_of(const std::string& service_key) const;
  size_t endpoint_slice_count() const { return slice_owner_.size(); }
  // "namespace/name" of every Service / EndpointSlice held.
  std::vector<std::string> service_keys() const;
  std::vector<std::string> endpoint_slice_keys() const;
  // The strings the objects' ids refer to.
  const StringPool& strings() const { return strings_; }

  // The Services ("namespace/name") whose object or slices changed since the
  // last call, whether they still exist or not; clears the set.
  std::set<std::string> take_changed_services() { return std::exchange(changed_, {}); }

 private:
  using SliceGroups = std::map<std::string, Slices>;  // by owning Service "ns/name"

  StringPool strings_;
  Services services_;
  SliceGroups slices_by_service_;
  // Slice "ns/name" -> its group: a slice's label may change between
  // versions, and DELETED is looked up by the slice's own name.
  std::map<std::string, SliceGroups::iterator> slice_owner_;
  std::optional<k8s::Node> node_;
  std::set<std::string> changed_;
};

}  // namespace kpx::proxy
