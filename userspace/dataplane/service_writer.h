// Programs Services into the pinned maps, one Service at a time, with the
// generation flip for backend sets. Used by the CLI; the agent's diffing
// apply builds on the same write order.
#pragma once

#include <vector>

#include "bpf/pinned_maps.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::dataplane {

struct ServiceEntry {
  net::ServiceAddr svc;
  uint32_t svc_id = 0;
  uint32_t generation = 0;
  std::vector<net::BackendAddr> backends;  // slot order
};

class ServiceWriter {
 public:
  explicit ServiceWriter(bpf::PinnedMaps& maps) : maps_(maps) {}

  // Make svc's backends exactly `backends` (duplicates collapse; an empty
  // list keeps the Service, whose packets are then dropped and counted).
  // Order: new backends, the new generation's slots, the services entry
  // (the flip), then the old slots go, so a packet sees either the old set
  // or the new one, never a partial or empty one. UDP flows pinned to a
  // backend that left are flushed (kube-proxy does the same); TCP flows
  // keep their backend. On a failed write, what this call added is removed
  // again and the Service stays as it was.
  Status set(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends);
  // Remove svc; false if it was not there.
  Result<bool> remove(const net::ServiceAddr& svc);
  std::vector<ServiceEntry> list() const;

 private:
  uint32_t allocate_service_id() const;
  std::vector<net::BackendAddr> read_slots(uint32_t svc_id, uint32_t generation, uint32_t count) const;
  void delete_slots(uint32_t svc_id, uint32_t generation, uint32_t count);
  void flush_udp_flows(uint32_t svc_id, const std::vector<net::BackendAddr>& gone);
  void collect_unused_backends();

  bpf::PinnedMaps& maps_;
};

kpx_service_key_v4 service_key(const net::ServiceAddr& svc);

}  // namespace kpx::dataplane
