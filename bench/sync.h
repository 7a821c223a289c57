// kpx-bench sync: how fast the control plane programs the datapath, at
// 1,000 / 10,000 / 50,000 Services with 2 endpoints each:
//   - compute + apply alone (in process, on real pinned maps),
//   - one EndpointSlice change to the map write, compute + apply (p50/p99),
//   - end to end: kpx apiserver -> kpx agent -> maps, from the agent's start
//     to every Service programmed, one change's latency from the API write
//     to the map write, and the agent's RSS; then a full relist (every watch
//     gets ERROR 410) and the agent's peak RSS during it, against the
//     manifest's memory limit;
//   - map writes batched (BPF_MAP_*_BATCH) against one syscall each.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <vector>

namespace kpx::bench {

struct SyncOptions {
  bool json = false;
  std::vector<uint32_t> services = {1000, 10000, 50000};
  uint32_t changes = 200;      // single-slice changes measured per size (in process)
  uint32_t e2e_changes = 200;  // measured end to end (200: a p99 that is not just the maximum)
  bool e2e = true;
  uint32_t batch_rounds = 5;  // interleaved rounds of map writes batched vs one by one; 0: skip
};

int run_sync(const SyncOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
