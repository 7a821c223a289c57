#include "lab/endpointslice_controller.h"

#include <chrono>
#include <map>

#include "apiserver/resources.h"
#include "apiserver/strategy.h"
#include "lab/endpointslices.h"

namespace kpx::lab {

namespace {

using apiserver::ObjectKey;
using apiserver::ResourceType;
using apiserver::Store;
using Clock = std::chrono::system_clock;

const ResourceType& type(const char* group, const char* name) {
  return *apiserver::find_resource(group, "v1", name);
}

std::string meta(const Json& obj, const char* key) {
  auto m = obj.find("metadata");
  return m == obj.end() ? "" : apiserver::string_at(*m, key);
}

std::vector<ObjectPtr> list_all(const Store& store, const ResourceType& t, const std::string& ns,
                                const std::string& label_selector = "") {
  auto labels = apiserver::LabelSelector::parse(label_selector);
  if (!labels) return {};
  auto page = store.list(t, ns, apiserver::Selector{*labels, {}}, 0, std::nullopt, std::nullopt);
  return page ? page->items : std::vector<ObjectPtr>{};
}

}  // namespace

// The controller's thread: a dirty set of Services, filled from store events,
// each synced by reading its Pods and slices and writing the plan.
struct EndpointSliceController::Loop {
  EndpointSliceController& c;
  Store& store;
  const ResourceType& services = type("", "services");
  const ResourceType& pods = type("", "pods");
  const ResourceType& slices = type("discovery.k8s.io", "endpointslices");
  const ResourceType& nodes = type("", "nodes");
  // Service → the earliest change not yet written (time_point{}: none known).
  std::map<ObjectKey, Clock::time_point> dirty;

  void mark(const ObjectKey& svc, Clock::time_point when) {
    auto [it, fresh] = dirty.emplace(svc, when);
    if (!fresh && when != Clock::time_point{} && (it->second == Clock::time_point{} || when < it->second))
      it->second = when;
  }

  void mark_all() {
    auto now = Clock::now();
    for (const ObjectPtr& s : list_all(store, services, ""))
      mark(ObjectKey{meta(*s, "namespace"), meta(*s, "name")}, now);
    // Slices of Services that are gone.
    for (const ObjectPtr& s : list_all(store, slices, "", std::string(kManagedByLabel) + "=" + kManagedByController))
      mark(ObjectKey{meta(*s, "namespace"), apiserver::string_at((*s)["metadata"]["labels"], kServiceNameLabel)}, now);
  }

  void on_event(const apiserver::Event& e) {
    if (e.resource == &services) {
      mark(e.key, e.time);
    } else if (e.resource == &pods) {
      for (const ObjectPtr& s : list_all(store, services, e.key.ns)) {
        bool before = e.prev && selects(*s, *e.prev), after = e.object && selects(*s, *e.object);
        if (before || after) mark(ObjectKey{e.key.ns, meta(*s, "name")}, e.time);
      }
    } else if (e.resource == &slices) {
      // Someone else's change to a managed slice (or our own, which syncs to nothing).
      const Json& obj = *e.object;
      auto m = obj.find("metadata");
      if (m == obj.end() || !(*m)["labels"].is_object()) return;
      const Json& labels = (*m)["labels"];
      if (apiserver::string_at(labels, kManagedByLabel) != kManagedByController) return;
      std::string svc = apiserver::string_at(labels, kServiceNameLabel);
      if (!svc.empty()) mark(ObjectKey{e.key.ns, svc}, Clock::time_point{});
    }
  }

  // False when a write failed (a conflict, say): the Service stays dirty.
  bool sync(const ObjectKey& key, Clock::time_point trigger) {
    std::string selector = std::string(kServiceNameLabel) + "=" + key.name + "," + kManagedByLabel + "=" +
                           kManagedByController;
    auto svc = store.get(services, key);
    std::vector<ObjectPtr> current = list_all(store, slices, key.ns, selector);
    SliceChanges changes;
    if (!svc) {
      changes.remove = current;  // the Service is gone: so are its slices
    } else if (!has_managed_slices(**svc)) {
      return true;  // no selector: slices are the user's business
    } else {
      std::map<std::string, std::string> zones;
      for (const ObjectPtr& n : list_all(store, nodes, "")) {
        auto labels = (*n)["metadata"].find("labels");
        if (labels != (*n)["metadata"].end() && labels->is_object())
          zones[meta(*n, "name")] = apiserver::string_at(*labels, "topology.kubernetes.io/zone");
      }
      auto zone_of = [&](const std::string& node) {
        auto z = zones.find(node);
        return z == zones.end() ? std::string() : z->second;
      };
      changes = plan_endpoint_slices(**svc, list_all(store, pods, key.ns), current, zone_of,
                                     c.opts_.max_endpoints_per_slice,
                                     rfc3339_nano(trigger == Clock::time_point{} ? Clock::now() : trigger));
    }
    return apply(key, changes);
  }

  bool apply(const ObjectKey& key, SliceChanges& changes) {
    bool ok = true;
    for (Json& s : changes.create) {
      for (int attempt = 0; attempt < 5; ++attempt) {
        s["metadata"]["name"] = apiserver::generate_name(meta(s, "generateName"));
        auto created = store.create(slices, s);
        if (created) {
          ++c.writes_;
          break;
        }
        if (created.error().reason != "AlreadyExists") {
          ok = false;
          break;
        }
      }
    }
    for (auto& [cur, next] : changes.update) {
      std::string rv = meta(*cur, "resourceVersion");
      auto updated = store.update(slices, ObjectKey{key.ns, meta(*cur, "name")},
                                  [&](const Json& now) -> apiserver::ApiResult<Json> {
                                    if (meta(now, "resourceVersion") != rv)
                                      return apiserver::conflict_status("endpointslices.discovery.k8s.io",
                                                                        "discovery.k8s.io", meta(now, "name"),
                                                                        "changed since it was read");
                                    return next;
                                  });
      if (updated) {
        ++c.writes_;
      } else {
        ok = false;
      }
    }
    for (const ObjectPtr& s : changes.remove) {
      auto gone = store.remove(slices, ObjectKey{key.ns, meta(*s, "name")}, {meta(*s, "uid"), ""});
      if (gone) {
        ++c.writes_;
      } else if (gone.error().code != 404) {
        ok = false;
      }
    }
    return ok;
  }

  void run() {
    using namespace std::chrono_literals;
    Store::WatchCursor cursor = store.watch_cursor(store.current_rv());
    mark_all();
    while (!c.stopping_) {
      std::map<ObjectKey, Clock::time_point> retry;
      for (const auto& [key, when] : dirty)
        if (!sync(key, when)) retry.emplace(key, when);
      dirty = std::move(retry);
      // Short waits: stop() is noticed within one, and failed syncs retry.
      auto wake = store.wait_any({&services, &pods, &slices}, cursor, std::chrono::steady_clock::now() + 100ms);
      switch (wake.reason) {
        case apiserver::WakeReason::kEvents:
          for (const auto& e : wake.events) on_event(e);
          break;
        case apiserver::WakeReason::kTimeout:
          break;
        case apiserver::WakeReason::kDropped:  // a fault for HTTP watches; the history is intact
          cursor = store.watch_cursor(cursor.rv);
          break;
        case apiserver::WakeReason::kExpired:
        case apiserver::WakeReason::kTooOld:  // events lost: look at everything again
          cursor = store.watch_cursor(store.current_rv());
          mark_all();
          break;
        case apiserver::WakeReason::kStopped:
          return;
      }
    }
  }
};

EndpointSliceController::EndpointSliceController(Store& store, EndpointSliceControllerOptions o)
    : store_(store), opts_(o) {}

Result<std::unique_ptr<EndpointSliceController>> EndpointSliceController::start(Store& store,
                                                                               EndpointSliceControllerOptions o) {
  if (o.max_endpoints_per_slice < 1 || o.max_endpoints_per_slice > 1000)
    return invalid_argument("max_endpoints_per_slice must be between 1 and 1000, not " +
                            std::to_string(o.max_endpoints_per_slice));
  std::unique_ptr<EndpointSliceController> c(new EndpointSliceController(store, o));
  EndpointSliceController* raw = c.get();
  c->thread_ = std::thread([raw] { Loop{*raw, raw->store_}.run(); });
  return c;
}

EndpointSliceController::~EndpointSliceController() { stop(); }

void EndpointSliceController::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

}  // namespace kpx::lab
