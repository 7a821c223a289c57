#include "lab_up.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lab/proc.h"

namespace kpx::bench {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Runs one kpx command; returns its wall time in ms, or -1 (output on err).
double timed(const std::vector<std::string>& argv, std::ostream& err) {
  auto t = Clock::now();
  auto r = lab::run(argv);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  if (!r || r->status != 0) {
    err << "kpx-bench lab: `" << argv[1] << " " << argv[2] << "` failed: " << (r ? r->out : r.error().message)
        << "\n";
    return -1;
  }
  return ms;
}

}  // namespace

int run_lab(const LabBenchOptions& opts, std::ostream& out, std::ostream& err) {
  const std::string kpx = KPX_BINARY;  // the lab's daemon and agents are kpx
  const std::string name = "kb" + std::to_string(getpid());
  std::vector<double> up, down;
  if (!opts.json) out << "kpx-bench lab: kpx lab up / down with the defaults (2 nodes x 3 pods), " << opts.rounds
                      << " rounds\nround  up ms     down ms\n";
  for (uint32_t i = 0; i < opts.rounds; ++i) {
    double u = timed({kpx, "lab", "up", "--name", name}, err);
    double d = timed({kpx, "lab", "down", "--name", name}, err);  // also after a failed up
    if (u < 0 || d < 0) return 1;
    up.push_back(u);
    down.push_back(d);
    if (!opts.json)
      out << std::left << std::setw(7) << i + 1 << std::setw(10) << std::fixed << std::setprecision(0) << u << d
          << "\n";
  }
  double up_ms = median(up), down_ms = median(down);
  bool met = up_ms <= 5000;
  if (opts.json) {
    out << nlohmann::json{{"rounds", opts.rounds}, {"up_ms_median", up_ms}, {"down_ms_median", down_ms},
                          {"up_target_ms", 5000}, {"up_target_met", met}}
               .dump(2)
        << "\n";
  } else {
    out << "median up " << std::setprecision(0) << up_ms << " ms, down " << down_ms << " ms\n"
        << "target: kpx lab up with defaults <= 5000 ms: " << up_ms << " ms, " << (met ? "MET" : "NOT MET") << "\n";
  }
  return 0;
}

}  // namespace kpx::bench
