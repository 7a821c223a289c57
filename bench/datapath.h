// kpx-bench datapath: nanoseconds per packet of the pod-side tc programs
// under BPF_PROG_TEST_RUN, against an empty tc program (the floor), and of
// the uplink program on NodePort traffic, against the same empty program
// run one call per frame (the uplink cases' floor), with 1 to 50,000
// Services programmed.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <vector>

namespace kpx::bench {

struct DatapathOptions {
  bool json = false;
  std::vector<uint32_t> services = {1, 10000, 50000};
  int repeats = 7;                 // rounds; medians are over rounds
  uint32_t iterations = 1000000;   // BPF_PROG_TEST_RUN repeat count (made even)
  uint32_t new_flow_frames = 2000; // distinct SYN frames per round and Service count
  uint32_t mix_flows = 10000;      // established flows visited round-robin (the "mix" case)
  bool pod = true;                 // the pod-side cases (kpx_from_pod / kpx_to_pod)
  bool uplink = true;              // the uplink cases (kpx_from_uplink)
  uint32_t uplink_frames = 2000;   // frames per uplink case per round and Service count
};

// Runs the benchmark; returns the process exit code (0, 1 on a failure,
// 130 when interrupted). Progress goes to err, results to out.
int run_datapath(const DatapathOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
