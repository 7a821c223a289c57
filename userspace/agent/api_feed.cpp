#include "agent/api_feed.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "log/log.h"

namespace kpx::agent {

namespace {

// How the agent feeds one kind of object (Service, EndpointSlice) from its
// reflector into the model.
template <typename Obj>
struct Kind {
  const char* name;
  Source source;
  Result<Obj> (*decode)(const nlohmann::json&);
  std::optional<proxy::Rejection> (proxy::Model::*upsert)(const Obj&);
  void (proxy::Model::*remove)(std::string_view, std::string_view);
  std::vector<std::string> (proxy::Model::*keys)() const;
  // The Service the object is about ("namespace/name").
  std::string (*service_key)(const Obj&);
  // When the object's last change happened in the cluster, if it says.
  std::optional<SyncLoop::Clock::time_point> (*trigger_time)(const Obj&) = nullptr;
};

template <typename Obj>
void upsert_logged(const Kind<Obj>& kind, proxy::Model& m, Obj obj, Metrics& metrics) {
  if (auto r = (m.*kind.upsert)(std::move(obj))) {
    // An object kept without some items is not a rejected one.
    if (r->rejected()) metrics.rejected_objects++;
    log::warning(proxy::to_string(*r));
  }
}

template <typename Obj>
std::optional<Obj> decode_logged(const Kind<Obj>& kind, const nlohmann::json& j, Metrics& metrics) {
  auto o = kind.decode(j);
  if (o) return std::move(*o);
  metrics.rejected_objects++;
  log::warning(std::string(kind.name) + " rejected: " + o.error().message);
  return std::nullopt;
}

// List pages are decoded as they arrive (the JSON of a 50,000-object list
// is never held at once); the complete list then replaces what the model
// held of that kind, in one change.
template <typename Obj>
void wire(k8s::ReflectorHandlers& h, const Kind<Obj>& kind, SyncLoop& sync, Metrics& metrics) {
  auto staged = std::make_shared<std::vector<Obj>>();
  h.on_list_page = [kind, staged, &metrics](std::vector<nlohmann::json> page, bool first) {
    if (first) staged->clear();
    for (const auto& item : page)
      if (auto o = decode_logged(kind, item, metrics)) staged->push_back(std::move(*o));
  };
  h.on_replace = [kind, staged, &sync, &metrics](std::vector<nlohmann::json>) {
    // kube-proxy's informers hand a list over object by object: as many
    // changes. Their trigger times are not measured (kpx cannot tell which
    // items changed since the last list).
    ChangeInfo info;
    info.events = staged->size();
    sync.update(
        kind.source,
        [&](proxy::Model& m) {
          std::set<std::string> listed;
          for (const auto& o : *staged) listed.insert(o.metadata.key());
          for (const auto& key : (m.*kind.keys)()) {
            if (listed.count(key)) continue;
            auto slash = key.find('/');
            (m.*kind.remove)(key.substr(0, slash), key.substr(slash + 1));
          }
          for (auto& o : *staged) upsert_logged(kind, m, std::move(o), metrics);
        },
        info);
    std::vector<Obj>().swap(*staged);  // "= {}" would keep the capacity: 50,000 objects' worth
    sync.mark_listed(kind.source);
  };
  h.on_event = [kind, &sync, &metrics](k8s::EventType type, const nlohmann::json& j) {
    auto o = decode_logged(kind, j, metrics);
    if (!o) return;
    ChangeInfo info;
    info.service = kind.service_key(*o);
    info.removed = type == k8s::EventType::kDeleted;
    // A deleted object's trigger time is that of its last update, not of
    // the deletion (kube-proxy ignores it too).
    if (kind.trigger_time && !info.removed) info.trigger = kind.trigger_time(*o);
    sync.update(
        kind.source,
        [&](proxy::Model& m) {
          if (info.removed)
            (m.*kind.remove)(o->metadata.namespace_, o->metadata.name);
          else
            upsert_logged(kind, m, std::move(*o), metrics);
        },
        info);
  };
}

const Kind<k8s::Service> kServices{"Service",
                                   Source::kServices,
                                   k8s::decode_service,
                                   &proxy::Model::upsert_service,
                                   &proxy::Model::remove_service,
                                   &proxy::Model::service_keys,
                                   [](const k8s::Service& s) { return s.metadata.key(); }};
const Kind<k8s::EndpointSlice> kEndpointSlices{"EndpointSlice",
                                               Source::kEndpointSlices,
                                               k8s::decode_endpoint_slice,
                                               &proxy::Model::upsert_endpoint_slice,
                                               &proxy::Model::remove_endpoint_slice,
                                               &proxy::Model::endpoint_slice_keys,
                                               [](const k8s::EndpointSlice& s) { return s.service_key(); },
                                               [](const k8s::EndpointSlice& s) { return s.trigger_time(); }};

}  // namespace

void feed_services(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics) {
  wire(h, kServices, sync, metrics);
}

void feed_endpoint_slices(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics) {
  wire(h, kEndpointSlices, sync, metrics);
}

}  // namespace kpx::agent
