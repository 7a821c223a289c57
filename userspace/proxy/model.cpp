#include "proxy/model.h"

#include "proxy/validate.h"

namespace kpx::proxy {

std::string to_string(const Rejection& r) { return r.kind + " " + r.name + " rejected: " + r.reason; }

namespace {

std::string key_of(std::string_view ns, std::string_view name) {
  return std::string(ns) + "/" + std::string(name);
}

std::optional<Rejection> rejection(const char* kind, const k8s::ObjectMeta& m,
                                   const std::vector<std::string>& problems) {
  if (problems.empty()) return std::nullopt;
  std::string reason;
  for (const auto& p : problems) reason += (reason.empty() ? "" : "; ") + p;
  return Rejection{kind, key_of(m.namespace_, m.name), std::move(reason)};
}

// The model holds tens of thousands of objects: keep of their metadata only
// what kpx reads (name, namespace, the labels kube-proxy's logic looks at);
// uid, resourceVersion and other labels are the API's business.
void compact(k8s::ObjectMeta& m) {
  std::string().swap(m.uid);  // swap: assignment would keep the capacity
  std::string().swap(m.resource_version);
  for (auto it = m.labels.begin(); it != m.labels.end();) {
    const std::string& k = it->first;
    bool used = k == k8s::kLabelServiceName || k == k8s::kLabelServiceProxyName || k == k8s::kLabelHeadless ||
                k == k8s::kLabelTopologyZone;
    it = used ? std::next(it) : m.labels.erase(it);
  }
}

void compact(k8s::EndpointSlice& s) {
  compact(s.metadata);
  s.endpoints.shrink_to_fit();
  for (auto& e : s.endpoints) e.addresses.shrink_to_fit();
}

}  // namespace

std::optional<Rejection> Model::upsert_service(k8s::Service s) {
  std::string key = key_of(s.metadata.namespace_, s.metadata.name);
  changed_.insert(key);
  if (auto r = rejection("Service", s.metadata, service_problems(s))) {
    services_.erase(key);
    return r;
  }
  compact(s.metadata);
  services_.insert_or_assign(std::move(key), std::move(s));
  return std::nullopt;
}

std::optional<Rejection> Model::upsert_endpoint_slice(k8s::EndpointSlice s) {
  auto r = rejection("EndpointSlice", s.metadata, endpoint_slice_problems(s));
  // Drop the previous version in any case: its Service may have changed.
  remove_endpoint_slice(s.metadata.namespace_, s.metadata.name);
  if (r) return r;
  std::string key = key_of(s.metadata.namespace_, s.metadata.name);
  std::string owner = s.service_key();
  changed_.insert(owner);
  compact(s);
  slice_owner_[key] = owner;
  slices_by_service_[owner].insert_or_assign(std::move(key), std::move(s));
  return std::nullopt;
}

void Model::remove_service(std::string_view ns, std::string_view name) {
  std::string key = key_of(ns, name);
  if (services_.erase(key)) changed_.insert(std::move(key));
}

void Model::remove_endpoint_slice(std::string_view ns, std::string_view name) {
  auto owner = slice_owner_.find(key_of(ns, name));
  if (owner == slice_owner_.end()) return;
  changed_.insert(owner->second);
  auto group = slices_by_service_.find(owner->second);
  group->second.erase(owner->first);
  if (group->second.empty()) slices_by_service_.erase(group);
  slice_owner_.erase(owner);
}

std::vector<std::string> Model::service_keys() const {
  std::vector<std::string> out;
  out.reserve(services_.size());
  for (const auto& [key, svc] : services_) out.push_back(key);
  return out;
}

std::vector<std::string> Model::endpoint_slice_keys() const {
  std::vector<std::string> out;
  out.reserve(slice_owner_.size());
  for (const auto& [key, owner] : slice_owner_) out.push_back(key);
  return out;
}

const Model::Slices& Model::slices_of(const std::string& service_key) const {
  static const Slices kNone;
  auto it = slices_by_service_.find(service_key);
  return it == slices_by_service_.end() ? kNone : it->second;
}

}  // namespace kpx::proxy
