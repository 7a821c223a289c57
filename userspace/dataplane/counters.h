// The datapath's per-reason counters (summed over CPUs).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bpf/pinned_maps.h"

namespace kpx::dataplane {

// The name of each enum kpx_counter, as the CLI and metrics print it.
const char* counter_name(uint32_t reason);
// (name, packets) for every reason, in enum order.
Result<std::vector<std::pair<std::string, uint64_t>>> read_counters(const bpf::PinnedMaps& maps);

}  // namespace kpx::dataplane
