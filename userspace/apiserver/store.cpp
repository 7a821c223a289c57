#include "apiserver/store.h"

#include <algorithm>
#include <ctime>
#include <random>

namespace kpx::apiserver {

namespace {

std::string new_uid() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lk(mu);
  uint64_t a = rng(), b = rng();
  // A version-4 UUID: 8-4-4-4-12 hex digits.
  a = (a & ~0xf000ULL) | 0x4000ULL;
  b = (b & ~(0xcULL << 60)) | (0x8ULL << 60);
  char buf[40];
  snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
           static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
           static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string rv_string(uint64_t rv) { return std::to_string(rv); }

Json& metadata_of(Json& obj) {
  if (!obj["metadata"].is_object()) obj["metadata"] = Json::object();
  return obj["metadata"];
}

std::string meta_string(const Json& obj, const char* field) {
  auto m = obj.find("metadata");
  return m == obj.end() ? "" : string_at(*m, field);
}

ObjectPtr with_rv(const Json& obj, uint64_t rv) {
  auto copy = std::make_shared<Json>(obj);
  metadata_of(*copy)["resourceVersion"] = rv_string(rv);
  return copy;
}

}  // namespace

std::string rfc3339(std::chrono::system_clock::time_point t) {
  char buf[32];
  time_t secs = std::chrono::system_clock::to_time_t(t);
  tm utc{};
  gmtime_r(&secs, &utc);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

std::string rfc3339_now() { return rfc3339(std::chrono::system_clock::now()); }

const char* event_type_name(EventType t) {
  switch (t) {
    case EventType::kAdded:
      return "ADDED";
    case EventType::kModified:
      return "MODIFIED";
    case EventType::kDeleted:
      return "DELETED";
  }
  return "";
}

Store::Store(size_t compaction_window) : window_(std::max<size_t>(1, compaction_window)) {}

const Store::Objects* Store::find_objects(const ResourceType& t) const {
  auto it = objects_.find(&t);
  return it == objects_.end() ? nullptr : &it->second;
}

const TypeHooks* Store::hooks_of(const ResourceType& t) const {
  auto it = hooks_.find(&t);
  return it == hooks_.end() ? nullptr : &it->second;
}

void Store::set_hooks(const ResourceType& t, TypeHooks hooks) {
  std::lock_guard lk(mu_);
  hooks_[&t] = std::move(hooks);
}

void Store::record(Event e) {
  e.time = std::chrono::system_clock::now();
  history_.push_back(std::move(e));
  while (history_.size() > window_) {
    compacted_rv_ = std::max(compacted_rv_, history_.front().rv);
    history_.pop_front();
  }
  changed_.notify_all();
}

ApiResult<ObjectPtr> Store::create(const ResourceType& t, Json obj) {
  ObjectKey key{t.namespaced ? meta_string(obj, "namespace") : "", meta_string(obj, "name")};
  std::lock_guard lk(mu_);
  if (t.namespaced) {
    const Objects* namespaces = find_objects(namespaces_type());
    if (!namespaces || !namespaces->count(ObjectKey{"", key.ns}))
      return not_found_status("namespaces", "", key.ns);
  }
  Objects& objects = objects_of(t);
  if (objects.count(key)) return already_exists_status(t.qualified(), t.group, key.name);
  if (const TypeHooks* h = hooks_of(t); h && h->on_create)
    if (auto refused = h->on_create(obj)) return *refused;
  uint64_t rv = ++current_rv_;
  Json& meta = metadata_of(obj);
  meta["uid"] = new_uid();
  meta["resourceVersion"] = rv_string(rv);
  meta["creationTimestamp"] = rfc3339_now();
  auto stored = std::make_shared<const Json>(std::move(obj));
  objects[key] = stored;
  record(Event{rv, EventType::kAdded, &t, key, stored, nullptr});
  return ObjectPtr(stored);
}

ApiResult<ObjectPtr> Store::get(const ResourceType& t, const ObjectKey& key) const {
  std::lock_guard lk(mu_);
  const Objects* objects = find_objects(t);
  auto it = objects ? objects->find(key) : Objects::const_iterator();
  if (!objects || it == objects->end()) return not_found_status(t.qualified(), t.group, key.name);
  return it->second;
}

ApiResult<ObjectPtr> Store::update(const ResourceType& t, const ObjectKey& key, const Mutation& mutate) {
  std::lock_guard lk(mu_);
  Objects& objects = objects_of(t);
  auto it = objects.find(key);
  if (it == objects.end()) return not_found_status(t.qualified(), t.group, key.name);
  const Json& cur = *it->second;
  ApiResult<Json> next = mutate(cur);
  if (!next) return next.error();
  Json& obj = *next;
  static const Json kNoMeta = Json::object();
  auto found = cur.find("metadata");
  const Json& cur_meta = found != cur.end() && found->is_object() ? *found : kNoMeta;
  Json& meta = metadata_of(obj);
  // Deletion is marked by DELETE only, never by an update.
  for (const char* f : {"uid", "creationTimestamp", "resourceVersion", "name", "namespace", "deletionTimestamp",
                        "deletionGracePeriodSeconds"}) {
    auto it = cur_meta.find(f);
    if (it != cur_meta.end()) {
      meta[f] = *it;
    } else {
      meta.erase(f);
    }
  }
  if (const TypeHooks* h = hooks_of(t); h && h->on_update)
    if (auto refused = h->on_update(cur, obj)) return *refused;
  return replace_locked(t, it, std::move(obj));
}

ObjectPtr Store::replace_locked(const ResourceType& t, Objects::iterator it, Json obj) {
  if (obj == *it->second) return it->second;
  uint64_t rv = ++current_rv_;
  metadata_of(obj)["resourceVersion"] = rv_string(rv);
  auto stored = std::make_shared<const Json>(std::move(obj));
  ObjectPtr prev = it->second;
  it->second = stored;
  record(Event{rv, EventType::kModified, &t, it->first, stored, prev});
  return stored;
}

ApiResult<ObjectPtr> Store::remove(const ResourceType& t, const ObjectKey& key, const DeletePreconditions& pre,
                                   const DeleteDecision& decide) {
  std::lock_guard lk(mu_);
  return remove_locked(t, key, pre, decide);
}

ApiResult<ObjectPtr> Store::remove_locked(const ResourceType& t, const ObjectKey& key,
                                          const DeletePreconditions& pre, const DeleteDecision& decide) {
  Objects& objects = objects_of(t);
  auto it = objects.find(key);
  if (it == objects.end()) return not_found_status(t.qualified(), t.group, key.name);
  const Json& cur = *it->second;
  if (!pre.uid.empty() && pre.uid != meta_string(cur, "uid"))
    return conflict_status(t.qualified(), t.group, key.name,
                           "Precondition failed: UID in precondition: " + pre.uid +
                               ", UID in object meta: " + meta_string(cur, "uid"));
  if (!pre.resource_version.empty() && pre.resource_version != meta_string(cur, "resourceVersion"))
    return conflict_status(t.qualified(), t.group, key.name,
                           "the ResourceVersion in the precondition (" + pre.resource_version +
                               ") does not match the ResourceVersion in record (" +
                               meta_string(cur, "resourceVersion") +
                               "). The object might have been modified");
  if (decide)
    if (auto keep = decide(cur)) return replace_locked(t, it, std::move(*keep));
  if (&t == &namespaces_type()) {
    // What the namespace controller would do, done at once: empty it first.
    for (auto& [type, objs] : objects_) {
      if (!type->namespaced) continue;
      std::vector<ObjectKey> inside;
      for (const auto& [k, _] : objs)
        if (k.ns == key.name) inside.push_back(k);
      for (const auto& k : inside) (void)remove_locked(*type, k, {}, nullptr);
    }
    it = objects.find(key);
  }
  uint64_t rv = ++current_rv_;
  ObjectPtr prev = it->second;
  ObjectPtr last = with_rv(*prev, rv);
  objects.erase(it);
  if (const TypeHooks* h = hooks_of(t); h && h->on_remove) h->on_remove(*prev);
  record(Event{rv, EventType::kDeleted, &t, key, last, prev});
  return last;
}

ApiResult<ListPage> Store::list(const ResourceType& t, const std::string& ns, const Selector& sel,
                                size_t limit, std::optional<uint64_t> at_rv,
                                const std::optional<ObjectKey>& after) const {
  std::lock_guard lk(mu_);
  uint64_t rv = at_rv.value_or(current_rv_);
  if (rv < compacted_rv_)
    return expired_status(
        "The provided continue parameter is too old to display a consistent list result. You can start a new "
        "list without the continue parameter.");
  if (rv > current_rv_) return bad_request_status("invalid continue token: resource version in the future");

  // The state at rv: the current objects with every later change undone.
  // Walking back, the earliest change after rv is seen last and wins.
  std::map<ObjectKey, ObjectPtr> undo;
  for (auto e = history_.rbegin(); e != history_.rend() && e->rv > rv; ++e)
    if (e->resource == &t) undo[e->key] = e->prev;

  static const Objects kEmpty;
  const Objects* found = find_objects(t);
  const Objects& objects = found ? *found : kEmpty;
  ObjectKey from = after.value_or(ObjectKey{ns, ""});
  auto a = after ? objects.upper_bound(from) : objects.lower_bound(from);
  auto b = after ? undo.upper_bound(from) : undo.lower_bound(from);
  // Merge the two sorted sequences, the undo map taking precedence.
  auto next = [&]() -> std::pair<const ObjectKey*, ObjectPtr> {
    for (;;) {
      bool a_ok = a != objects.end(), b_ok = b != undo.end();
      if (!a_ok && !b_ok) return {nullptr, nullptr};
      if (b_ok && (!a_ok || b->first <= a->first)) {
        if (a_ok && a->first == b->first) ++a;
        auto cur = b++;
        if (!cur->second) continue;  // did not exist at rv
        return {&cur->first, cur->second};
      }
      auto cur = a++;
      return {&cur->first, cur->second};
    }
  };

  ListPage page;
  page.rv = rv;
  bool counting = false;  // past the limit: only counting what is left
  uint64_t remaining = 0;
  for (auto [key, obj] = next(); key; std::tie(key, obj) = next()) {
    if (!ns.empty() && key->ns != ns) break;
    if (!sel.matches(*obj)) continue;
    if (!counting) {
      if (limit == 0 || page.items.size() < limit) {
        page.items.push_back(obj);
        continue;
      }
      page.last =
          ObjectKey{meta_string(*page.items.back(), "namespace"), meta_string(*page.items.back(), "name")};
      if (!t.namespaced) page.last->ns.clear();
      if (!sel.empty()) break;  // the real server only counts what is left without selectors
      counting = true;
    }
    ++remaining;
  }
  if (counting) page.remaining = remaining;
  return page;
}

uint64_t Store::current_rv() const {
  std::lock_guard lk(mu_);
  return current_rv_;
}

uint64_t Store::compacted_rv() const {
  std::lock_guard lk(mu_);
  return compacted_rv_;
}

size_t Store::compaction_window() const {
  std::lock_guard lk(mu_);
  return window_;
}

void Store::set_compaction_window(size_t n) {
  std::lock_guard lk(mu_);
  window_ = std::max<size_t>(1, n);
  while (history_.size() > window_) {
    compacted_rv_ = std::max(compacted_rv_, history_.front().rv);
    history_.pop_front();
  }
  changed_.notify_all();
}

void Store::compact(std::optional<uint64_t> upto) {
  std::lock_guard lk(mu_);
  uint64_t to = std::min(upto.value_or(current_rv_), current_rv_);
  while (!history_.empty() && history_.front().rv <= to) history_.pop_front();
  compacted_rv_ = std::max(compacted_rv_, to);
  changed_.notify_all();
}

Store::WatchCursor Store::watch_cursor(uint64_t rv) const {
  std::lock_guard lk(mu_);
  return WatchCursor{rv, drop_gen_, expire_gen_};
}

Wake Store::wait(const ResourceType& t, WatchCursor& cursor,
                 std::chrono::steady_clock::time_point until) const {
  return wait_any({&t}, cursor, until);
}

Wake Store::wait_any(const std::vector<const ResourceType*>& types, WatchCursor& cursor,
                     std::chrono::steady_clock::time_point until) const {
  std::unique_lock lk(mu_);
  for (;;) {
    if (stopped_) return Wake{WakeReason::kStopped, {}};
    if (drop_gen_ != cursor.drop_gen) return Wake{WakeReason::kDropped, {}};
    if (expire_gen_ != cursor.expire_gen) return Wake{WakeReason::kExpired, {}};
    if (cursor.rv < compacted_rv_) return Wake{WakeReason::kTooOld, {}};
    Wake w{WakeReason::kEvents, {}};
    auto first = std::upper_bound(history_.begin(), history_.end(), cursor.rv,
                                  [](uint64_t rv, const Event& e) { return rv < e.rv; });
    for (auto e = first; e != history_.end(); ++e)
      if (std::find(types.begin(), types.end(), e->resource) != types.end()) w.events.push_back(*e);
    // Everything up to now has been looked at: a watch that saw nothing of
    // its type still follows the revision, so compaction driven by other
    // types' changes does not overtake it.
    cursor.rv = std::max(cursor.rv, current_rv_);
    if (!w.events.empty()) return w;
    if (changed_.wait_until(lk, until) == std::cv_status::timeout) return Wake{WakeReason::kTimeout, {}};
  }
}

void Store::watch_opened() {
  std::lock_guard lk(mu_);
  ++open_watches_;
}

void Store::watch_closed() {
  std::lock_guard lk(mu_);
  --open_watches_;
}

int Store::open_watches() const {
  std::lock_guard lk(mu_);
  return open_watches_;
}

void Store::drop_watches() {
  std::lock_guard lk(mu_);
  ++drop_gen_;
  changed_.notify_all();
}

void Store::expire_watches() {
  std::lock_guard lk(mu_);
  ++expire_gen_;
  changed_.notify_all();
}

void Store::stop() {
  std::lock_guard lk(mu_);
  stopped_ = true;
  changed_.notify_all();
}

}  // namespace kpx::apiserver
