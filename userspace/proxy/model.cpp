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

}  // namespace

std::optional<Rejection> Model::upsert_service(const k8s::Service& s) {
  std::string key = key_of(s.metadata.namespace_, s.metadata.name);
  changed_.insert(key);
  if (auto r = rejection("Service", s.metadata, service_problems(s))) {
    services_.erase(key);
    return r;
  }
  services_.insert_or_assign(std::move(key), compact_service(s, strings_));
  return std::nullopt;
}

std::optional<Rejection> Model::upsert_endpoint_slice(const k8s::EndpointSlice& s) {
  auto r = rejection("EndpointSlice", s.metadata, endpoint_slice_problems(s));
  // Drop the previous version in any case: its Service may have changed.
  remove_endpoint_slice(s.metadata.namespace_, s.metadata.name);
  if (r) return r;
  std::string owner = s.service_key();
  changed_.insert(owner);
  auto group = slices_by_service_.try_emplace(std::move(owner)).first;
  group->second.insert_or_assign(s.metadata.name, compact_slice(s, strings_));
  slice_owner_.insert_or_assign(key_of(s.metadata.namespace_, s.metadata.name), group);
  return std::nullopt;
}

void Model::remove_service(std::string_view ns, std::string_view name) {
  std::string key = key_of(ns, name);
  if (services_.erase(key)) changed_.insert(std::move(key));
}

void Model::remove_endpoint_slice(std::string_view ns, std::string_view name) {
  auto owner = slice_owner_.find(key_of(ns, name));
  if (owner == slice_owner_.end()) return;
  auto group = owner->second;
  changed_.insert(group->first);
  group->second.erase(std::string(name));
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
