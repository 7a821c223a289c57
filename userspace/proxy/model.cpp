#include "proxy/model.h"

#include <algorithm>

#include "proxy/validate.h"

namespace kpx::proxy {

std::string to_string(const Rejection& r) {
  std::string head = r.kind + " " + r.name;
  switch (r.outcome) {
    case Rejection::Outcome::kRejected:
      return head + " rejected: " + r.reason;
    case Rejection::Outcome::kRejectedRemoved:
      return head + " rejected: " + r.reason + "; its previous version is removed, it is no longer proxied";
    case Rejection::Outcome::kItemsDropped:
      return head + " kept without: " + r.reason;
  }
  return head + ": " + r.reason;
}

namespace {

std::string key_of(std::string_view ns, std::string_view name) {
  return std::string(ns) + "/" + std::string(name);
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "; ") + l;
  return out;
}

// What to tell of an object: rejected (and whether a previous version
// went with it), kept without some items, or nothing.
std::optional<Rejection> outcome(const char* kind, const k8s::ObjectMeta& m, const Findings& f,
                                 bool had_previous) {
  if (!f.fatal.empty()) {
    // Every problem, the droppable ones too: the object will be sent again.
    std::vector<std::string> all = f.fatal;
    all.insert(all.end(), f.dropped.begin(), f.dropped.end());
    return Rejection{kind, key_of(m.namespace_, m.name), joined(all),
                     had_previous ? Rejection::Outcome::kRejectedRemoved : Rejection::Outcome::kRejected};
  }
  if (!f.dropped.empty())
    return Rejection{kind, key_of(m.namespace_, m.name), joined(f.dropped),
                     Rejection::Outcome::kItemsDropped};
  return std::nullopt;
}

}  // namespace

std::optional<Rejection> Model::upsert_service(const k8s::Service& s) {
  std::string key = key_of(s.metadata.namespace_, s.metadata.name);
  changed_.insert(key);
  const Findings f = check_service(s);
  if (!f.fatal.empty()) {
    const bool had = services_.erase(key) > 0;
    return outcome("Service", s.metadata, f, had);
  }
  services_.insert_or_assign(std::move(key), compact_service(s, strings_));
  return outcome("Service", s.metadata, f, false);
}

std::optional<Rejection> Model::upsert_endpoint_slice(const k8s::EndpointSlice& s) {
  const Findings f = check_endpoint_slice(s);
  // Drop the previous version in any case: its Service may have changed.
  const bool had = slice_owner_.count(key_of(s.metadata.namespace_, s.metadata.name)) > 0;
  remove_endpoint_slice(s.metadata.namespace_, s.metadata.name);
  if (!f.fatal.empty()) return outcome("EndpointSlice", s.metadata, f, had);
  std::string owner = s.service_key();
  changed_.insert(owner);
  auto group = slices_by_service_.try_emplace(std::move(owner)).first;
  group->second.insert_or_assign(s.metadata.name, compact_slice(s, strings_));
  slice_owner_.insert_or_assign(key_of(s.metadata.namespace_, s.metadata.name), group);
  return outcome("EndpointSlice", s.metadata, f, false);
}

void Model::set_node(k8s::Node n) {
  const std::string before = node_ ? node_->zone() : "", after = n.zone();
  node_ = std::move(n);
  if (before == after) return;
  for (const auto& [service, slices] : slices_by_service_) {
    auto zone_hinted = [](const auto& named) {
      const SliceInfo& slice = named.second;
      return std::any_of(slice.endpoints.begin(), slice.endpoints.end(),
                         [](const EndpointInfo& e) { return e.hints && !e.hints->for_zones.empty(); });
    };
    if (std::any_of(slices.begin(), slices.end(), zone_hinted)) changed_.insert(service);
  }
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
