// The maps of one kpx instance, pinned under its bpffs directory.
#pragma once

#include <string>
#include <vector>

#include "bpf/map.h"
#include "kpx/abi.h"
#include "status/status.h"

namespace kpx::bpf {

struct PinnedMaps {
  Map<kpx_service_key_v4, kpx_service_value> services;
  Map<kpx_backend_slot_key, uint32_t> service_backends;
  Map<uint32_t, kpx_backend_value_v4> backends;
  Map<uint32_t, kpx_revnat_value_v4> revnat;
  Map<kpx_ct_key_v4, kpx_ct_value_v4> conntrack;
  Map<uint32_t, kpx_config> config;
  UniqueFd counters;  // per-CPU array: read through dataplane/counters

  // Open the maps an instance pinned in dir; NotFound if there are none.
  static Result<PinnedMaps> open(const std::string& pin_dir);
  // Open them, creating and pinning them first if the instance is new.
  static Result<PinnedMaps> open_or_create(const std::string& pin_dir);

  kpx_config read_config() const;
  // Void every per-CPU conntrack cache slot: call after deleting conntrack
  // entries, so no cached copy keeps translating a deleted flow.
  Status bump_ct_epoch();
};

// The default instance directory.
inline constexpr const char* kDefaultPinDir = "/sys/fs/bpf/kpx-default";

// Refuse a pin directory that is not a directory on a bpffs mount (or whose
// parent is not), so kpx never pins into, or removes from, anything else.
Status check_pin_dir(const std::string& pin_dir);
// Unpin every kpx map of the instance and remove its directory.
Status remove_pin_dir(const std::string& pin_dir);

}  // namespace kpx::bpf
