#include "agent/api_feed.h"

#include <memory>
#include <string>
#include <vector>

#include "log/log.h"

namespace kpx::agent {

namespace {

// How the agent feeds one kind of object (Service, EndpointSlice) from its
// reflector into the model.
template <typename Obj, typename Listed>
struct Kind {
  const char* name;
  Source source;
  Result<Obj> (*decode)(const nlohmann::json&);
  std::optional<proxy::Rejection> (proxy::Model::*upsert)(const Obj&);
  void (proxy::Model::*remove)(std::string_view, std::string_view);
  std::optional<proxy::Rejection> (proxy::Model::*stage)(const Obj&, Listed&);
  void (proxy::Model::*replace)(Listed);
  // The Service the object is about ("namespace/name").
  std::string (*service_key)(const Obj&);
  // When the object's last change happened in the cluster, if it says.
  std::optional<SyncLoop::Clock::time_point> (*trigger_time)(const Obj&) = nullptr;
};

void tell(const std::optional<proxy::Rejection>& r, Metrics& metrics) {
  if (!r) return;
  // An object kept without some items is not a rejected one.
  if (r->rejected()) metrics.rejected_objects++;
  log::warning(proxy::to_string(*r));
}

template <typename Obj, typename Listed>
std::optional<Obj> decode_logged(const Kind<Obj, Listed>& kind, const nlohmann::json& j, Metrics& metrics) {
  auto o = kind.decode(j);
  if (o) return std::move(*o);
  metrics.rejected_objects++;
  log::warning(std::string(kind.name) + " rejected: " + o.error().message);
  return std::nullopt;
}

// A list being taken in.
template <typename Listed>
struct Staged {
  Listed list;
  uint64_t objects = 0;  // decoded, rejected ones too
};

// List pages are decoded as they arrive and staged compactly (neither the
// JSON nor the decoded objects of a 50,000-object list are ever held at
// once, and the model it replaces stays as it was until the list is
// complete); the complete list then replaces what the model held of that
// kind, in one change.
template <typename Obj, typename Listed>
void wire(k8s::ReflectorHandlers& h, const Kind<Obj, Listed>& kind, ModelFeed& sync, Metrics& metrics) {
  auto staged = std::make_shared<Staged<Listed>>();
  h.on_list_page = [kind, staged, &sync, &metrics](std::vector<nlohmann::json> page, bool first) {
    if (first) *staged = {};
    // Decoded without the model's lock; staged under it (the model's
    // string pool), which changes nothing a sync reads.
    std::vector<Obj> decoded;
    decoded.reserve(page.size());
    for (const auto& item : page)
      if (auto o = decode_logged(kind, item, metrics)) decoded.push_back(std::move(*o));
    std::vector<nlohmann::json>().swap(page);
    staged->objects += decoded.size();
    sync.prepare([&](proxy::Model& m) {
      for (const auto& o : decoded) tell((m.*kind.stage)(o, staged->list), metrics);
    });
  };
  h.on_replace = [kind, staged, &sync](std::vector<nlohmann::json>) {
    // kube-proxy's informers hand a list over object by object: as many
    // changes. Their trigger times are not measured (kpx cannot tell which
    // items changed since the last list).
    ChangeInfo info;
    info.events = staged->objects;
    sync.update(kind.source, [&](proxy::Model& m) { (m.*kind.replace)(std::move(staged->list)); }, info);
    *staged = {};
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
            tell((m.*kind.upsert)(std::move(*o)), metrics);
        },
        info);
  };
}

const Kind<k8s::Service, proxy::Model::ListedServices> kServices{
    "Service",
    Source::kServices,
    k8s::decode_service,
    &proxy::Model::upsert_service,
    &proxy::Model::remove_service,
    &proxy::Model::stage_service,
    &proxy::Model::replace_services,
    [](const k8s::Service& s) { return s.metadata.key(); }};
const Kind<k8s::EndpointSlice, proxy::Model::ListedSlices> kEndpointSlices{
    "EndpointSlice",
    Source::kEndpointSlices,
    k8s::decode_endpoint_slice,
    &proxy::Model::upsert_endpoint_slice,
    &proxy::Model::remove_endpoint_slice,
    &proxy::Model::stage_endpoint_slice,
    &proxy::Model::replace_endpoint_slices,
    [](const k8s::EndpointSlice& s) { return s.service_key(); },
    [](const k8s::EndpointSlice& s) { return s.trigger_time(); }};

}  // namespace

void feed_services(k8s::ReflectorHandlers& h, ModelFeed& sync, Metrics& metrics) {
  wire(h, kServices, sync, metrics);
}

void feed_endpoint_slices(k8s::ReflectorHandlers& h, ModelFeed& sync, Metrics& metrics) {
  wire(h, kEndpointSlices, sync, metrics);
}

}  // namespace kpx::agent
