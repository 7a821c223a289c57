// The dataplane's view of the pinned maps: what kpx has programmed, kept in
// memory, recovered from the maps on start, and changed by diffing against
// a desired state so that only what changed is written.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "bpf/pinned_maps.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::dataplane {

// Service address -> its backends (sorted, deduplicated; empty: traffic to
// the Service is dropped and counted).
using ServiceTable = std::map<net::ServiceAddr, std::vector<net::BackendAddr>>;
// Some addresses only: set to these backends, or removed (nullopt).
using ServiceDelta = std::map<net::ServiceAddr, std::optional<std::vector<net::BackendAddr>>>;

struct ApplyStats {
  size_t added = 0, updated = 0, removed = 0, unchanged = 0;
  size_t udp_flows_flushed = 0;
};

struct ServiceState {
  uint32_t svc_id = 0;
  uint32_t generation = 0;
  std::vector<net::BackendAddr> backends;  // slot order (sorted)
};

class Dataplane {
 public:
  // Read what the maps hold (after a restart: what the previous run wrote).
  // Reads only.
  static Result<Dataplane> recover(bpf::PinnedMaps& maps);
  // Remove leftovers of an interrupted change that recover() found: slots
  // of a generation no Service points at, backends no slot uses, revnat
  // entries without a Service. Nothing a packet can reach is changed.
  void remove_leftovers();

  // Make the maps hold exactly `desired`, writing only the differences.
  // Per Service the order is: new backends, the new generation's slots, the
  // Service entry (the flip), then the old slots; unused backends go last.
  // UDP flows to backends a Service lost are flushed (kube-proxy does the
  // same); TCP flows keep their backend. Invalid input (too many backends)
  // is refused before anything is written.
  Result<ApplyStats> apply(const ServiceTable& desired);
  // The same for the addresses in `delta` only; the others are untouched.
  Result<ApplyStats> apply_delta(const ServiceDelta& delta);

  // One Service at a time (the CLI): the same write order.
  Status upsert(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends);
  Result<bool> remove(const net::ServiceAddr& svc);

  const std::map<net::ServiceAddr, ServiceState>& services() const { return services_; }

 private:
  explicit Dataplane(bpf::PinnedMaps& maps) : maps_(&maps) {}
  using Lost = std::vector<std::pair<uint32_t, net::BackendAddr>>;
  // Set one address (unless it already holds exactly `backends`), counting
  // into stats; the first error is kept and the others go on.
  void set_one(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends, ApplyStats& stats, Lost& lost,
               Status& first_error);
  // Unused backends go, lost UDP flows are flushed; the first error if any.
  Result<ApplyStats> finish(ApplyStats stats, const Lost& lost, const Status& first_error);
  Status write_service(const net::ServiceAddr& svc, const std::vector<net::BackendAddr>& backends, Lost* lost);
  void erase_service(const net::ServiceAddr& svc, Lost* lost);
  Result<uint32_t> acquire_backend(const net::BackendAddr& b);
  void release_backend(const net::BackendAddr& b);
  void collect_backends();
  size_t flush_udp_flows(const Lost& lost);
  uint32_t allocate_service_id();

  struct BackendRef {
    uint32_t id = 0;
    uint32_t refs = 0;
  };

  bpf::PinnedMaps* maps_;
  std::map<net::ServiceAddr, ServiceState> services_;
  std::map<net::BackendAddr, BackendRef> backends_;
  std::vector<uint32_t> free_service_ids_;
  uint32_t next_service_id_ = 1;
  std::vector<uint32_t> free_backend_ids_;
  uint32_t next_backend_id_ = 1;
  std::vector<net::BackendAddr> unreferenced_;
  std::vector<kpx_backend_slot_key> leftover_slots_;
  std::vector<uint32_t> leftover_backends_, leftover_revnat_;
};

kpx_service_key_v4 service_key(const net::ServiceAddr& svc);

}  // namespace kpx::dataplane
