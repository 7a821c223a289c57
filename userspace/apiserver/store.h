// The in-memory object store, versioned like etcd: one revision counter for
// every kind, each change an event in a bounded history (the compaction
// window), lists readable at an older revision while it is still in the
// window (continued lists), and the waiting side of watches.
#pragma once

#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "apiserver/api_status.h"
#include "apiserver/resources.h"
#include "apiserver/selectors.h"

namespace kpx::apiserver {

// Stored objects are immutable and shared between the store, the history and
// watchers; a change stores a new object.
using ObjectPtr = std::shared_ptr<const Json>;

struct ObjectKey {
  std::string ns;  // "" for cluster-scoped types
  std::string name;
  auto operator<=>(const ObjectKey&) const = default;
};

enum class EventType { kAdded, kModified, kDeleted };
const char* event_type_name(EventType t);

struct Event {
  uint64_t rv;
  EventType type;
  const ResourceType* resource;
  ObjectKey key;
  ObjectPtr object;  // the new state; for kDeleted the last state, at the deletion's revision
  ObjectPtr prev;    // the state before; null for kAdded
  std::chrono::system_clock::time_point time{};  // when the change was made
};

struct ListPage {
  uint64_t rv = 0;  // the revision the page was read at
  std::vector<ObjectPtr> items;
  std::optional<ObjectKey> last;      // set when more items follow: the next page starts after it
  std::optional<uint64_t> remaining;  // items after this page (only without selectors)
};

struct DeletePreconditions {
  std::string uid;
  std::string resource_version;
};

// Turns the current object into its next state (or refuses). Runs under the
// store's lock: quick, and no calls back into the store.
using Mutation = std::function<ApiResult<Json>(const Json& current)>;

// What a type's registry does beside storing, run under the store's lock
// once the store's own checks (namespace, existence, preconditions) have
// passed: ClusterIP allocation, say. Quick, and no calls back into the store.
struct TypeHooks {
  // May change the object or refuse it (nothing is stored then).
  std::function<std::optional<ApiStatus>(Json& obj)> on_create;
  // Sees the current state and the next one (after the mutation), may change
  // the next one or refuse the update.
  std::function<std::optional<ApiStatus>(const Json& current, Json& next)> on_update;
  // The object has been removed (also by its namespace's deletion).
  std::function<void(const Json& last)> on_remove;
};

// Graceful deletion: sees the current object (the preconditions having
// held) and returns the state to keep it in (terminating), or nullopt to
// remove it now. Runs under the store's lock, like a Mutation.
using DeleteDecision = std::function<std::optional<Json>(const Json& current)>;

// Why Store::wait returned.
enum class WakeReason { kEvents, kTimeout, kStopped, kDropped, kExpired, kTooOld };

struct Wake {
  WakeReason reason;
  std::vector<Event> events;  // kEvents: every event of the type after the cursor, in order
};

class Store {
 public:
  explicit Store(size_t compaction_window);

  // Objects. obj carries metadata.name and (for namespaced types) metadata.namespace.
  ApiResult<ObjectPtr> create(const ResourceType& t, Json obj);
  ApiResult<ObjectPtr> get(const ResourceType& t, const ObjectKey& key) const;
  // uid, creationTimestamp, name and namespace are kept whatever mutate
  // returns; an unchanged object is not a change (no new revision, no event).
  ApiResult<ObjectPtr> update(const ResourceType& t, const ObjectKey& key, const Mutation& mutate);
  // Deleting a Namespace deletes everything in it first. With `decide`, the
  // object may be kept instead (a MODIFIED event when it changed); the answer
  // is then the kept object.
  ApiResult<ObjectPtr> remove(const ResourceType& t, const ObjectKey& key, const DeletePreconditions& pre,
                              const DeleteDecision& decide = nullptr);

  // Up to `limit` (0: all) objects of t in namespace ns ("" for all) matching
  // sel, in key order, after `after`; at revision at_rv (a continued list) or
  // now. 410 Expired when at_rv has been compacted away.
  ApiResult<ListPage> list(const ResourceType& t, const std::string& ns, const Selector& sel, size_t limit,
                           std::optional<uint64_t> at_rv, const std::optional<ObjectKey>& after) const;

  // Installs the hooks of type t (replacing earlier ones). Set them before
  // objects of the type are stored.
  void set_hooks(const ResourceType& t, TypeHooks hooks);

  uint64_t current_rv() const;
  // Watches and continued lists from a revision below this one get 410.
  uint64_t compacted_rv() const;
  size_t compaction_window() const;
  void set_compaction_window(size_t n);
  // Drop history up to `upto` (default: all of it), as an etcd compaction.
  void compact(std::optional<uint64_t> upto);

  // ---- watches ----
  struct WatchCursor {
    uint64_t rv;        // events after this revision are wanted
    uint64_t drop_gen;  // values of the generations when the watch began
    uint64_t expire_gen;
  };
  WatchCursor watch_cursor(uint64_t rv) const;
  // Blocks until there are events of t after cursor.rv, or `until`, or the
  // watch is to end (store stopped, watches dropped or expired by a fault,
  // cursor.rv compacted away). Moves cursor.rv past everything it looked at
  // (the events it returns included).
  Wake wait(const ResourceType& t, WatchCursor& cursor, std::chrono::steady_clock::time_point until) const;
  // The same for events of any of `types` (in-process controllers following
  // several kinds in one loop), in revision order.
  Wake wait_any(const std::vector<const ResourceType*>& types, WatchCursor& cursor,
                std::chrono::steady_clock::time_point until) const;
  // Open watches, counted by their handlers (RAII: WatchRegistration).
  void watch_opened();
  void watch_closed();
  int open_watches() const;
  // Faults and shutdown: every waiting watch wakes with kDropped / kExpired / kStopped.
  void drop_watches();
  void expire_watches();
  void stop();

 private:
  using Objects = std::map<ObjectKey, ObjectPtr>;
  Objects& objects_of(const ResourceType& t) { return objects_[&t]; }
  const TypeHooks* hooks_of(const ResourceType& t) const;
  const Objects* find_objects(const ResourceType& t) const;
  void record(Event e);  // under mu_
  ApiResult<ObjectPtr> remove_locked(const ResourceType& t, const ObjectKey& key,
                                     const DeletePreconditions& pre, const DeleteDecision& decide);
  // Stores obj as the next state of the object at `it` (a MODIFIED event),
  // unless it equals the current one.
  ObjectPtr replace_locked(const ResourceType& t, Objects::iterator it, Json obj);

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::map<const ResourceType*, Objects> objects_;
  std::map<const ResourceType*, TypeHooks> hooks_;
  std::deque<Event> history_;
  size_t window_;
  uint64_t current_rv_ = 0;
  uint64_t compacted_rv_ = 0;
  uint64_t drop_gen_ = 0;
  uint64_t expire_gen_ = 0;
  int open_watches_ = 0;
  bool stopped_ = false;
};

// Counts a watch as open for its lifetime.
class WatchRegistration {
 public:
  explicit WatchRegistration(Store& s) : s_(s) { s_.watch_opened(); }
  ~WatchRegistration() { s_.watch_closed(); }
  WatchRegistration(const WatchRegistration&) = delete;
  WatchRegistration& operator=(const WatchRegistration&) = delete;

 private:
  Store& s_;
};

// RFC 3339 UTC, seconds, as metav1.Time is serialized: "2024-05-01T12:00:00Z".
std::string rfc3339(std::chrono::system_clock::time_point t);
std::string rfc3339_now();

}  // namespace kpx::apiserver
