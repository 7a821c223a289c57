// tc clsact attachment of kpx's pod-side programs through libbpf's
// bpf_tc_* API (netlink filters; Debian 12's libbpf predates tcx links).
#pragma once

#include <string>

#include "status/status.h"

namespace kpx::bpf {

// kpx's filters use this handle and priority on both hooks, so that attach
// replaces an older kpx program atomically and detach removes only kpx's.
inline constexpr uint32_t kTcHandle = 0x6b7078;  // "kpx"
inline constexpr uint32_t kTcPriority = 1;

// Attach from_pod at ingress and to_pod at egress of ifindex (creating the
// clsact qdisc if needed, replacing kpx's previous filters). to_pod_fd -1:
// ingress only (an uplink).
Status tc_attach(int ifindex, int from_pod_fd, int to_pod_fd);
// Remove kpx's filters from ifindex; other filters and the qdisc stay.
Status tc_detach(int ifindex);
// The id of the program kpx attached at ingress, or 0.
uint32_t tc_attached_prog_id(int ifindex, bool ingress);

}  // namespace kpx::bpf
