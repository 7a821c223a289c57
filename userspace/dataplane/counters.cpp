#include "dataplane/counters.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

namespace kpx::dataplane {

const char* counter_name(uint32_t reason) {
  switch (static_cast<kpx_counter>(reason)) {
    case KPX_CTR_PASS: return "pass";
    case KPX_CTR_PASS_NON_IPV4: return "pass_non_ipv4";
    case KPX_CTR_DNAT_NEW: return "dnat_new";
    case KPX_CTR_DNAT_ESTABLISHED: return "dnat_established";
    case KPX_CTR_REVNAT: return "revnat";
    case KPX_CTR_HAIRPIN: return "hairpin";
    case KPX_CTR_DROP_NO_BACKEND: return "drop_no_backend";
    case KPX_CTR_DROP_FRAGMENT: return "drop_fragment";
    case KPX_CTR_DROP_NO_HAIRPIN_ADDR: return "drop_no_hairpin_addr";
    case KPX_CTR_DROP_CT_FULL: return "drop_ct_full";
    case KPX_CTR_DROP_REWRITE: return "drop_rewrite";
    case KPX_CTR_PASS_MALFORMED: return "pass_malformed";
    case KPX_CTR_DROP_CT_CLASH: return "drop_ct_clash";
    case KPX_CTR_DROP_SPOOF: return "drop_spoof";
    case KPX_CTR_DROP_CT_BUDGET: return "drop_ct_budget";
    case KPX_CTR_CT_HEALED: return "ct_healed";
    case KPX_CTR_CT_PORT_REMAP: return "ct_port_remap";
    case KPX_CTR_CT_ADOPTED: return "ct_adopted";
    case KPX_CTR_DROP_NO_NODE_ADDR: return "drop_no_node_addr";
    case KPX_CTR_DROP_FIB: return "drop_fib";
    case KPX_CTR_CT_BOUND: return "ct_bound";
    case KPX_CTR_DROP_SOURCE_RANGE: return "drop_source_range";
    case KPX_CTR_SNAT_EGRESS_NEW: return "snat_egress_new";
    case KPX_CTR_SNAT_SERVICE_NEW: return "snat_service_new";
    case KPX_CTR_SOCK_LB: return "sock_lb";
    case KPX_CTR_SOCK_UDP_DESTROYED: return "sock_udp_destroyed";
    case KPX_CTR_REJECT: return "reject_no_endpoints";
    case KPX_CTR_DROP_NO_LOCAL: return "drop_no_local_endpoints";
    case KPX_CTR_ICMP_XLATE: return "icmp_error_translated";
    case KPX_CTR_FRAG_NEEDED: return "icmp_frag_needed_sent";
    case KPX_CTR_MAX: break;
  }
  return "unknown";
}

Result<std::vector<std::pair<std::string, uint64_t>>> read_counters(const bpf::PinnedMaps& maps) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return errno_error("count possible CPUs", ncpu);
  std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
  std::vector<std::pair<std::string, uint64_t>> out;
  for (uint32_t r = 0; r < KPX_CTR_MAX; ++r) {
    if (int rc = bpf_map_lookup_elem(maps.counters.get(), &r, per_cpu.data()); rc != 0)
      return errno_error("read counters", rc);
    uint64_t sum = 0;
    for (uint64_t v : per_cpu) sum += v;
    out.emplace_back(counter_name(r), sum);
  }
  return out;
}

}  // namespace kpx::dataplane
