// The lab daemon (`kpx lab daemon`, started by `kpx lab up`): the lab's
// control plane. It runs the API server (127.0.0.1:PORT in the root
// namespace, and 127.0.0.1:6443 inside every node namespace), the
// EndpointSlice controller, the kubelet and the cluster DNS, and starts one
// `kpx agent` per node inside that node's namespace. The agents know
// nothing of the lab: they see a Kubernetes API server.
#pragma once

#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::lab {

struct DaemonOptions {
  std::string name;
  int nodes = 2;
  int pods_per_node = 3;
  int api_port = 0;        // 0: any free port
  std::string kpx_binary;  // the agents' and echo servers' executable
  std::vector<std::string> agent_args;  // appended to every agent's flags
};

// Runs until SIGTERM/SIGINT; then stops the agents and every pod.
Status run_daemon(const DaemonOptions& o);

}  // namespace kpx::lab
