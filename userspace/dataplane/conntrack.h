// Reading the conntrack map (`kpx ct list`) and the agent's conntrack GC.
#pragma once

#include <string>
#include <vector>

#include "bpf/pinned_maps.h"
#include "dataplane/filter.h"

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
// Whether an entry is whole (its check word matches) and not reaped.
bool ct_valid(const kpx_ct_key_v4& k, const kpx_ct_value_v4& v);

// The datapath's timeout for a FORWARD entry (bpf/lib/conntrack.h
// ct_timeout_ns, with the config's overrides).
uint64_t ct_timeout_ns(const kpx_ct_value_v4& v, uint8_t proto, const kpx_config& cfg);

// The filter slots live flows use (see Dataplane::release_unreferenced).
FlowRefs flow_refs(const bpf::PinnedMaps& maps);

// What the GC decided to remove, each entry with the gen it had when read.
struct GcPlan {
  struct Item {
    kpx_ct_key_v4 key;
    uint32_t gen;
  };
  std::vector<Item> items;
  size_t expired = 0;        // FORWARD entries past their timeout (with their REPLY entries)
  size_t orphans = 0;        // REPLY entries whose flow is gone, moved or over
  size_t half_flows = 0;     // FORWARD entries without their REPLY entry, idle past the heal window
  FlowRefs live;             // the filter slots the flows that stay use
};
// Read the table (BPF_MAP_LOOKUP_BATCH) and decide.
GcPlan plan_conntrack_gc(const bpf::PinnedMaps& maps, uint64_t now_ns);
// Remove the plan's entries that still hold the gen the plan read (the
// reaper program, see bpf/kpx_gc.bpf.c): a flow the datapath re-created
// meanwhile stays. Returns how many were removed.
Result<size_t> reap_conntrack(const bpf::PinnedMaps& maps, const std::string& pin_dir, const GcPlan& plan);

struct GcStats {
  size_t expired = 0;
  size_t orphans = 0;
  size_t half_flows = 0;
  size_t reaped = 0;  // entries removed
  FlowRefs live;
};
// Plan and reap: delete what the datapath only expires lazily, so dead
// flows do not fill the LRU and push out live idle ones.
Result<GcStats> collect_conntrack(const bpf::PinnedMaps& maps, const std::string& pin_dir, uint64_t now_ns);

}  // namespace kpx::dataplane
