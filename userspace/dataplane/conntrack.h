// Reading the conntrack map for `kpx ct list`.
#pragma once

#include <string>
#include <vector>

#include "bpf/pinned_maps.h"

namespace kpx::dataplane {

struct CtEntry {
  kpx_ct_key_v4 key;
  kpx_ct_value_v4 value;
  uint64_t age_s;   // since created
  uint64_t idle_s;  // since last seen
};

std::vector<CtEntry> list_conntrack(const bpf::PinnedMaps& maps);
// "SYN", "ESTABLISHED", "FIN", ... joined by '|'; "-" when none.
std::string ct_flags_string(uint16_t flags);
// CLOCK_MONOTONIC_COARSE in ns: the clock the datapath stamps entries with.
uint64_t monotonic_coarse_ns();

}  // namespace kpx::dataplane
