// The dataplane's view of the pinned maps: what kpx has programmed, kept in
// memory, recovered from the maps on start, and changed by diffing against
// a desired state so that only what changed is written.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "bpf/pinned_maps.h"
#include "dataplane/filter.h"
#include "dataplane/frontend.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::dataplane {


struct ApplyStats {
  size_t added = 0, updated = 0, removed = 0, unchanged = 0;
  size_t udp_flows_flushed = 0;
  size_t udp_sockets_destroyed = 0;  // by the lost-UDP sink (socket-level load balancing)
};

// A programmed frontend.
struct FrontendState {
  uint32_t svc_id = 0;
  uint32_t slot_base = 0;                  // kpx_svc_be slots slot_base..+backends.size()-1
  std::vector<net::BackendAddr> backends;  // slot order: the cluster set, then the local set
  uint32_t cluster_count = 0;
  bool whole = true;  // false: read back with a slot or backend missing (the next apply rewrites it)
  Frontend fe;  // as given (after a restart, until the first sync: as read back, without owner)
  // The cluster set's addresses (what new flows are sent to).
  std::vector<net::BackendAddr> cluster() const {
    return {backends.begin(), backends.begin() + std::min<size_t>(cluster_count, backends.size())};
  }
};

class Dataplane {
 public:
  // Read what the maps hold (after a restart: what the previous run wrote).
  // Reads only.
  // slot_capacity and backend_capacity bound the slots and backend ids it
  // hands out (default: the maps' sizes; tests make them small to reach
  // "full" without filling a million entries).
  // Frontends of every scope are read back; the owner is not in the maps
  // (the first apply gives it).
  static Result<Dataplane> recover(bpf::PinnedMaps& maps, uint32_t slot_capacity = KPX_MAX_SERVICE_SLOTS,
                                   uint32_t backend_capacity = KPX_MAX_BACKENDS);
  // Remove leftovers of an interrupted change or an earlier state: slots
  // outside every Service's range, backends no slot uses (both zeroed:
  // they are ARRAY maps) and filter bits nothing needs. Nothing a packet
  // can reach is changed. Scans whole maps: the agent calls it once at start.
  void remove_leftovers();

  // kube-proxy's syncPeriod: read the maps back (as recover() does) and
  // compare them with what this Dataplane wrote. A frontend whose entry,
  // slots or backends differ (changed or removed by something else) is
  // marked not whole, so the next apply() rewrites it; a Service entry
  // nothing here wrote is removed (kube-proxy flushes rules in its chains
  // it did not make). Source ranges and filter bits are not compared.
  // Returns how many frontends differed and how many entries were removed.
  struct AuditResult {
    size_t drifted = 0, foreign = 0;
  };
  Result<AuditResult> audit();

  // The addresses the node owns (its interfaces' addresses) and the hairpin
  // source address (0: none): written to kpx_node_addr_v4, the filter and
  // config.hairpin_addr_v4. A pod sending from one of them is dropped.
  // NodePorts are served on `nodeport_addrs_be` (nullopt: on every node
  // address; kube-proxy's --nodeport-addresses).
  Status set_node_addresses(const std::vector<uint32_t>& node_addrs_be, uint32_t hairpin_be,
                            const std::optional<std::vector<uint32_t>>& nodeport_addrs_be = std::nullopt);

  // Flows still going through removed frontends and backends keep their
  // filter bits (their packets must reach conntrack): drop the bits of those
  // no flow in `live` uses any more. The agent calls it after each GC.
  Status release_unreferenced(const FlowRefs& live);
  const Filter& filter() const { return filter_; }

  // Make the maps hold exactly `desired`, writing only the differences.
  // The order, for all changed Services together (each step one batch):
  // new backends, the new slot ranges, the filter bits, the Service entries
  // (the flips), then the old ranges are zeroed and freed; removed Services'
  // entries, then their slots; unused backends go last. A Service whose
  // writes fail (a full map) keeps its previous set whole; the first error
  // is returned once the others are written. UDP flows to backends a
  // frontend lost are flushed (kube-proxy does the same): a backend in
  // neither of its sets nor among its draining endpoints (which still
  // serve, Frontend::draining), or every backend of a frontend that goes;
  // TCP flows keep their backend. Draining endpoints are memory only:
  // after a restart the first apply does not know those of the run before,
  // and one that went meanwhile keeps its UDP flows until they time out.
  // Invalid input (too many backends) is refused before anything is written.
  // Frontends whose map entries would not change (only the owner or port
  // name differs) are counted unchanged and only updated in memory. An IPv6
  // frontend or backend is refused before anything is written (IPv6 comes
  // with its own maps).
  // Taken by value: the agent moves its computed table in (no second copy
  // of every frontend at the peak of a full sync).
  Result<ApplyStats> apply(FrontendTable desired);
  // The same for the frontends in `delta` only; the others are untouched.
  Result<ApplyStats> apply_delta(FrontendDelta delta);

  // Map writes of one kind (backends, slots, Service entries) go
  // in one BPF_MAP_*_BATCH syscall when there are at least batch_min of
  // them, else one syscall each (kpx-bench sync measures both ways; see the
  // README). 1: always batched; SIZE_MAX: never.
  static constexpr size_t kDefaultBatchMin = 2;
  void set_batch_min(size_t n) { batch_min_ = std::max<size_t>(n, 1); }

  // One frontend at a time (the CLI): the same write order.
  Status upsert(const FrontendKey& key, Frontend fe);
  Result<bool> remove(const FrontendKey& key);

  // Called after every change whose frontends lost UDP backends (a backend
  // gone from its Service, or the frontend gone), with {svc_id, backend}
  // as the datapath names them; returns the sockets it destroyed (socket-
  // level load balancing's UDP sockets connected to them: their conntrack
  // flows are flushed here, sockets translated at connect() have none).
  using LostUdpSink = std::function<size_t(const std::vector<kpx_sock_lost_key>&)>;
  void set_lost_udp_sink(LostUdpSink sink) { lost_udp_sink_ = std::move(sink); }

  const std::map<FrontendKey, FrontendState>& frontends() const { return services_; }
  // The frontends a Service ("namespace/name") owns, from the frontends
  // themselves (kept with them, not a second source of truth).
  std::vector<FrontendKey> owned_by(const std::string& service) const;

 private:
  explicit Dataplane(bpf::PinnedMaps& maps) : maps_(&maps) {}
  // What the maps hold. take_over (recover): also the filter bits of live
  // flows, and the filter map rewritten for that state; else (audit) only
  // read, the conntrack map not scanned.
  static Result<Dataplane> read_back(bpf::PinnedMaps& maps, uint32_t slot_capacity, uint32_t backend_capacity,
                                     bool take_over);
  using Lost = std::vector<std::pair<uint32_t, net::BackendAddr>>;
  struct Write;
  // Sets the addresses (those already holding exactly their backends are
  // counted unchanged), then removes `gone`; every map kind is written for
  // all of them at once (batched), in the order of the flip: new backends,
  // new slot ranges, filter bits, the Service entries, then old ranges.
  // A Service whose writes fail keeps what it had; the others go on; the
  // first error is returned after unused backends and lost UDP flows went.
  Result<ApplyStats> change(std::vector<std::pair<FrontendKey, Frontend>> set, const std::vector<FrontendKey>& gone);
  void write_services(std::vector<Write>& writes, ApplyStats& stats, Lost& lost, Status& first_error);
  void erase_services(const std::vector<FrontendKey>& gone, Lost& lost);
  void set_owner(const FrontendKey& key, const std::string& old_owner, const std::string& new_owner);
  // The backend's id, allocating one (queued in new_ids) if it is new; 0
  // when every id is taken (the Service's write then fails whole).
  uint32_t acquire_backend(const net::BackendAddr& b, bool local, std::vector<uint32_t>& new_ids,
                           std::vector<kpx_backend_value_v4>& new_values);
  void release_backend(const net::BackendAddr& b);
  // Writes the elements (batched or not, see set_batch_min); ok[i] says whether
  // element i is in the map; the first error goes to first_error.
  template <typename K, typename V>
  std::vector<uint8_t> write_all(bpf::Map<K, V>& map, const std::vector<K>& keys, const std::vector<V>& values,
                                 Status& first_error);
  // Deletes the keys; missing ones are skipped.
  template <typename K, typename V>
  void erase_all(bpf::Map<K, V>& map, const std::vector<K>& keys);
  void collect_backends();
  size_t flush_udp_flows(const Lost& lost);
  uint32_t allocate_service_id();

  struct BackendRef {
    uint32_t id = 0;
    uint32_t refs = 0;
  };

  bpf::PinnedMaps* maps_;
  LostUdpSink lost_udp_sink_;
  std::map<FrontendKey, FrontendState> services_;
  std::map<std::string, std::set<FrontendKey>> by_owner_;  // derived from services_[k].fe.service
  std::map<net::BackendAddr, BackendRef> backends_;
  std::vector<uint32_t> free_service_ids_;
  uint32_t next_service_id_ = 1;
  std::vector<uint32_t> free_backend_ids_;
  uint32_t next_backend_id_ = 1;
  uint32_t backend_capacity_ = KPX_MAX_BACKENDS;
  uint32_t slot_capacity_ = KPX_MAX_SERVICE_SLOTS;
  std::vector<net::BackendAddr> unreferenced_;
  size_t batch_min_ = kDefaultBatchMin;
  SlotAllocator slots_;
  Filter filter_;
  // Filter bits of removed frontends / backends kept for live flows:
  // (slot, bits) -> references.
  std::map<std::pair<uint32_t, uint8_t>, uint32_t> retained_frontends_, retained_backends_;
  std::vector<uint32_t> node_addrs_;
  uint32_t hairpin_ = 0;
  void retain(bool frontend, uint32_t slot, uint8_t bits);
  Status load_node_addresses();
};

// The ClusterIP frontends' addresses and cluster sets (tests, bench).
ServiceTable cluster_ips(const std::map<FrontendKey, FrontendState>& frontends);

kpx_service_key_v4 service_key(const FrontendKey& key);  // an IPv4 key
kpx_service_key_v4 service_key(const net::ServiceAddr& svc);  // a ClusterIP's
// The filter bit of a scope.
uint8_t scope_bit(Scope s);
// The filter slot of a frontend address and of a backend of a protocol.
uint32_t frontend_slot(uint32_t addr_be);
uint32_t backend_slot(const net::BackendAddr& b, net::Proto proto);

}  // namespace kpx::dataplane
