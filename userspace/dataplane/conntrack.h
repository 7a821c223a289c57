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

// A flow's two entries name each other (bpf/lib/conntrack.h
// ct_reply_key_of_forward / ct_forward_key_of_reply).
kpx_ct_key_v4 reply_key_of(const kpx_ct_key_v4& forward, const kpx_ct_value_v4& fv);
kpx_ct_key_v4 forward_key_of(const kpx_ct_key_v4& reply, const kpx_ct_value_v4& rv);

// The datapath's timeout for a FORWARD entry (bpf/lib/conntrack.h
// ct_timeout_ns, with the config's overrides).
uint64_t ct_timeout_ns(const kpx_ct_value_v4& v, uint8_t proto, const kpx_config& cfg);

struct GcStats {
  size_t expired = 0;  // FORWARD entries past their timeout (and their REPLY entries)
  size_t orphans = 0;  // REPLY entries whose flow is gone or moved
};
// Delete what the datapath only expires lazily: FORWARD entries idle longer
// than their timeout (plus a margin for the datapath's once-a-second stamp),
// their REPLY entries, and REPLY entries without a live FORWARD entry. So
// dead flows do not fill the LRU and push out live idle ones. Bumps the
// cache epoch when it deleted anything.
GcStats collect_conntrack(bpf::PinnedMaps& maps, uint64_t now_ns);

}  // namespace kpx::dataplane
