// kpx-bench lab: how long `kpx lab up` (defaults: 2 nodes x 3 pods, plus
// the DNS pod, every agent healthy) and `kpx lab down` take, as the user
// runs them.
#pragma once

#include <cstdint>
#include <ostream>

namespace kpx::bench {

struct LabBenchOptions {
  bool json = false;
  uint32_t rounds = 5;
};

int run_lab(const LabBenchOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
