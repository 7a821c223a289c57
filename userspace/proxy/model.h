// What kpx knows of the cluster: the Services and EndpointSlices as the API
// last served them (valid ones only, compactly: see proxy/compact.h), and
// this node. compute() reads it.
#pragma once

#include <deque>
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

  // A complete list of one kind (the first list, a relist after a watch's
  // 410), taken in page by page as it arrives (stage_*: validated and
  // compacted as upsert_* would, the Rejection likewise, but held in the
  // list, not the model), then put in place of everything the model holds
  // of that kind in one change (replace_*): whatever the list lacks is
  // removed (deleted while no watch ran, or rejected now), and only objects
  // whose compact form differs from the one held count as changed, so a
  // relist of an unchanged cluster changes nothing. A staged list holds
  // objects as compactly as the model does (the strings go to this model's
  // pool: staging changes nothing else), never as decoded objects.
  struct ListedServices {
    std::deque<std::pair<std::string, ServiceInfo>> items;  // by "ns/name"; a deque: no 2x regrowth
  };
  struct ListedSlice {
    std::string key;    // the slice's "ns/name"
    std::string owner;  // its Service's "ns/name"
    SliceInfo info;
  };
  struct ListedSlices {
    std::deque<ListedSlice> items;
  };
  std::optional<Rejection> stage_service(const k8s::Service& s, ListedServices& list);
  std::optional<Rejection> stage_endpoint_slice(const k8s::EndpointSlice& s, ListedSlices& list);
  // The list's items in any order; of two with one name the later wins.
  void replace_services(ListedServices list);
  void replace_endpoint_slices(ListedSlices list);

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

  // Validated and compacted, or nullopt when s is rejected as a whole;
  // what to tell of it goes to `told`.
  std::optional<ServiceInfo> compacted(const k8s::Service& s, std::optional<Rejection>& told);
  std::optional<SliceInfo> compacted(const k8s::EndpointSlice& s, std::optional<Rejection>& told);
  // Puts the slice "ns/name" in its owner's group, in place of any earlier
  // version (which may have had another owner).
  void put_slice(const std::string& key, std::string owner, SliceInfo info);

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
