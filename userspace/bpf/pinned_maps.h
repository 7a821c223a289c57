// The maps of one kpx instance, pinned under its bpffs directory, opened
// from the one map list in kpx/abi.h (KPX_MAPS) and checked against it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bpf/map.h"
#include "kpx/abi.h"
#include "status/status.h"

namespace kpx::bpf {

// One entry of KPX_MAPS, as userspace sees it.
struct MapSpec {
  const char* name;
  uint32_t type;  // BPF_MAP_TYPE_*
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;  // kpx_ct_v4: the default; the pinned map's own size wins
};
const std::vector<MapSpec>& map_specs();

struct PinnedMaps {
  Map<uint32_t, kpx_abi_info> abi;
  Map<kpx_service_key_v4, kpx_service_value> services;  // kpx_svc_v4
  Map<uint32_t, uint32_t> service_slots;                // kpx_svc_be: slot -> backend id (ARRAY)
  Map<uint32_t, kpx_backend_value_v4> backends;         // kpx_be_v4: id -> backend (ARRAY)
  Map<kpx_ct_key_v4, kpx_ct_value_v4> conntrack;        // kpx_ct_v4
  Map<uint32_t, uint32_t> ct_versions;                  // kpx_ct_ver
  Map<uint32_t, kpx_ct_budget> ct_budget;               // kpx_ct_budget: ifindex -> bucket
  Map<uint32_t, uint64_t> filter;                       // kpx_filter: words of 8 slots
  Map<uint32_t, uint32_t> node_addrs;                   // kpx_node_addr_v4: __be32 -> flags
  Map<uint32_t, kpx_config> config;                     // kpx_config
  Map<kpx_src_range_key_v4, uint32_t> source_ranges;    // kpx_lb_src_v4 (LPM trie)
  Map<kpx_nomasq_key_v4, uint32_t> nomasq;              // kpx_nomasq_v4 (LPM trie)
  Map<kpx_affinity_key_v4, kpx_affinity_value> affinity;  // kpx_affinity_v4 (LRU): sessionAffinity ClientIP
  UniqueFd counters;  // per-CPU array: read through dataplane/counters
  UniqueFd ct_cache;  // per-CPU array: the datapath's only
  uint32_t ct_max_entries = 0;

  // Open the maps an instance pinned in dir; NotFound if there are none.
  // Pins of another ABI version (or of kpx before versioning) are refused
  // with FailedPrecondition naming `kpx agent --cleanup`; pins whose type,
  // key or value size differ from KPX_MAPS likewise.
  static Result<PinnedMaps> open(const std::string& pin_dir);
  // Open them, creating and pinning them first if the instance is new.
  // ct_entries sizes a new conntrack map (0: KPX_DEFAULT_CT_ENTRIES); an
  // existing one keeps its size.
  static Result<PinnedMaps> open_or_create(const std::string& pin_dir, uint32_t ct_entries = 0);

  kpx_config read_config() const;
  // Void every per-CPU conntrack cache slot: call after deleting conntrack
  // entries from userspace, so no cached copy keeps translating a deleted
  // flow. (The per-tuple versions in kpx_ct_ver are the datapath's: it bumps
  // them atomically; a userspace read-modify-write could lose its bump.)
  Status bump_ct_epoch();
};

// The ABI of the pins in dir: 0 when there are no kpx pins, 1 for kpx maps
// without kpx_abi, else kpx_abi's version. An error when kpx_abi is there
// but unreadable or of another magic.
Result<uint32_t> pinned_abi_version(const std::string& pin_dir);
// OK when dir holds no pins or pins of this ABI; else the refusal.
Status check_pinned_abi(const std::string& pin_dir);

// The conntrack size kube-proxy's flags give (conntrack.maxPerCore, .min):
// max(max_per_core * ncpu, min) connections, two entries each, at least
// KPX_MIN_CT_ENTRIES. max_per_core 0 leaves the default size.
uint32_t conntrack_entries(uint32_t max_per_core, uint32_t min, uint32_t ncpu);

// The default instance directory.
inline constexpr const char* kDefaultPinDir = "/sys/fs/bpf/kpx-default";

// Refuse a pin directory that is not a directory on a bpffs mount (or whose
// parent is not), so kpx never pins into, or removes from, anything else.
Status check_pin_dir(const std::string& pin_dir);
// Unpin every kpx map of the instance (of any ABI version kpx had) and
// remove its directory.
Status remove_pin_dir(const std::string& pin_dir);

}  // namespace kpx::bpf
