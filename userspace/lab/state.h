// What a running lab records about itself in /run/kpx-lab/<name>/state.json:
// enough for every other `kpx lab` command to find its API server and
// daemon. Written by the daemon once the lab is up (atomically).
#pragma once

#include <string>
#include <vector>

#include "lab/plan.h"
#include "status/status.h"

namespace kpx::lab {

struct LabState {
  std::string name;
  int nodes = 0;
  int pods_per_node = 0;
  int api_port = 0;    // the API server at 127.0.0.1 in the root namespace
  int daemon_pid = 0;
};

Status write_state(const LabState& s);
// not_found when the lab has no state (never started, or removed).
Result<LabState> read_state(const std::string& name);
// Names of labs that have a state directory.
std::vector<std::string> labs_with_state();

// Whether pid is the running daemon of lab `name`: a live process in the
// lab's daemon cgroup (kpx-lab-<name>/daemon), which only `kpx lab up`
// puts processes in. Checked before signalling a recorded pid.
bool is_lab_daemon(int pid, const std::string& name);

}  // namespace kpx::lab
