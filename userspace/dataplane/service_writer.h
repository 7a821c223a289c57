// One Service at a time, straight on the pinned maps: what the CLI needs.
// Each call recovers the dataplane's state from the maps and goes through
// Dataplane, so the CLI and the agent write in the same order.
#pragma once

#include <vector>

#include "bpf/pinned_maps.h"
#include "dataplane/dataplane.h"
#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::dataplane {

struct ServiceEntry {
  net::ServiceAddr svc;
  uint32_t svc_id = 0;
  uint32_t slot_base = 0;
  std::vector<net::BackendAddr> backends;  // slot order
};

class ServiceWriter {
 public:
  explicit ServiceWriter(bpf::PinnedMaps& maps) : maps_(maps) {}

  // Make svc's backends exactly `backends` (duplicates collapse; an empty
  // list keeps the Service, whose packets are then dropped and counted).
  // See Dataplane::apply for the write order and what happens to flows.
  Status set(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends);
  // Remove svc; false if it was not there.
  Result<bool> remove(const net::ServiceAddr& svc);
  // Reads only.
  std::vector<ServiceEntry> list() const;

 private:
  bpf::PinnedMaps& maps_;
};

}  // namespace kpx::dataplane
