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

// "ns/name" -> {ns, name}.
std::pair<std::string_view, std::string_view> split_key(std::string_view key) {
  const auto slash = key.find('/');
  return {key.substr(0, slash), key.substr(slash + 1)};
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

std::optional<ServiceInfo> Model::compacted(const k8s::Service& s, std::optional<Rejection>& told) {
  const Findings f = check_service(s);
  if (!f.fatal.empty()) {
    told = outcome("Service", s.metadata, f, services_.count(key_of(s.metadata.namespace_, s.metadata.name)) > 0);
    return std::nullopt;
  }
  told = outcome("Service", s.metadata, f, false);
  return compact_service(s, strings_);
}

std::optional<SliceInfo> Model::compacted(const k8s::EndpointSlice& s, std::optional<Rejection>& told) {
  const Findings f = check_endpoint_slice(s);
  if (!f.fatal.empty()) {
    told = outcome("EndpointSlice", s.metadata, f,
                   slice_owner_.count(key_of(s.metadata.namespace_, s.metadata.name)) > 0);
    return std::nullopt;
  }
  told = outcome("EndpointSlice", s.metadata, f, false);
  return compact_slice(s, strings_);
}

std::optional<Rejection> Model::upsert_service(const k8s::Service& s) {
  std::string key = key_of(s.metadata.namespace_, s.metadata.name);
  changed_.insert(key);
  std::optional<Rejection> told;
  if (auto info = compacted(s, told))
    services_.insert_or_assign(std::move(key), std::move(*info));
  else
    services_.erase(key);
  return told;
}

std::optional<Rejection> Model::upsert_endpoint_slice(const k8s::EndpointSlice& s) {
  std::optional<Rejection> told;
  auto info = compacted(s, told);
  // Drop the previous version in any case: its Service may have changed.
  remove_endpoint_slice(s.metadata.namespace_, s.metadata.name);
  if (info) put_slice(key_of(s.metadata.namespace_, s.metadata.name), s.service_key(), std::move(*info));
  return told;
}

void Model::put_slice(const std::string& key, std::string owner, SliceInfo info) {
  changed_.insert(owner);
  auto group = slices_by_service_.try_emplace(std::move(owner)).first;
  group->second.insert_or_assign(std::string(split_key(key).second), std::move(info));
  slice_owner_.insert_or_assign(key, group);
}

std::optional<Rejection> Model::stage_service(const k8s::Service& s, ListedServices& list) {
  std::optional<Rejection> told;
  if (auto info = compacted(s, told))
    list.items.emplace_back(key_of(s.metadata.namespace_, s.metadata.name), std::move(*info));
  return told;
}

std::optional<Rejection> Model::stage_endpoint_slice(const k8s::EndpointSlice& s, ListedSlices& list) {
  std::optional<Rejection> told;
  if (auto info = compacted(s, told))
    list.items.push_back({key_of(s.metadata.namespace_, s.metadata.name), s.service_key(), std::move(*info)});
  return told;
}

namespace {

// Sorts items by key (the API lists in that order already), keeping the
// last of equal keys only.
template <typename Items, typename Key>
void sort_unique(Items& items, Key key) {
  auto less = [&](const auto& a, const auto& b) { return key(a) < key(b); };
  if (!std::is_sorted(items.begin(), items.end(), less)) std::stable_sort(items.begin(), items.end(), less);
  auto out = items.begin();
  for (auto it = items.begin(); it != items.end(); ++it) {
    if (std::next(it) != items.end() && key(*std::next(it)) == key(*it)) continue;
    if (out != it) *out = std::move(*it);
    ++out;
  }
  items.erase(out, items.end());
}

}  // namespace

void Model::replace_services(ListedServices list) {
  auto& items = list.items;
  sort_unique(items, [](const auto& i) -> const std::string& { return i.first; });
  // One walk of both, in key order.
  auto held = services_.begin();
  auto drop_until = [&](const std::string* key) {
    while (held != services_.end() && (!key || held->first < *key)) {
      changed_.insert(held->first);
      held = services_.erase(held);
    }
  };
  for (auto& [key, info] : items) {
    drop_until(&key);
    if (held != services_.end() && held->first == key) {
      if (!(held->second == info)) {
        held->second = std::move(info);
        changed_.insert(key);
      }
      ++held;
    } else {
      changed_.insert(key);
      services_.emplace_hint(held, std::move(key), std::move(info));
    }
  }
  drop_until(nullptr);
}

void Model::replace_endpoint_slices(ListedSlices list) {
  auto& items = list.items;
  sort_unique(items, [](const ListedSlice& i) -> const std::string& { return i.key; });
  // What the list lacks goes first.
  std::vector<std::string> gone;
  auto listed = items.begin();
  for (const auto& [key, owner] : slice_owner_) {
    while (listed != items.end() && listed->key < key) ++listed;
    if (listed == items.end() || listed->key != key) gone.push_back(key);
  }
  for (const auto& key : gone) {
    auto [ns, name] = split_key(key);
    remove_endpoint_slice(ns, name);
  }
  for (auto& item : items) {
    auto [ns, name] = split_key(item.key);
    auto held = slice_owner_.find(item.key);
    if (held != slice_owner_.end() && held->second->first == item.owner) {
      const auto& group = held->second->second;
      auto slice = group.find(std::string(name));
      if (slice != group.end() && slice->second == item.info) continue;
    }
    remove_endpoint_slice(ns, name);
    put_slice(item.key, std::move(item.owner), std::move(item.info));
  }
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
