// `kpx lab ...`: the commands a user runs against a lab. Each finds the lab
// by name (plan.h) and its API server through state.json (state.h).
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "lab/plan.h"
#include "status/status.h"

namespace kpx::k8s {
class Client;
}

namespace kpx::lab {

// Builds the namespaces, starts the daemon, waits for every pod to be
// ready and every agent healthy.
Status lab_up(const LabSpec& spec, int api_port, std::ostream& out);
// Stops the daemon, ends every process in the lab's cgroup, removes its
// namespaces, pin dirs, cgroups and state. Works on what a crash left.
Status lab_down(const std::string& name, std::ostream& out);
Status lab_down_all(std::ostream& out);
Status lab_status(const std::string& name, std::ostream& out);
Status lab_apply(const std::string& name, const std::string& file, std::ostream& out);
// Runs argv inside a pod ([NS/]POD), a node (nodeN), `client`, `internet`
// or `gateway`. In a pod: the Service environment variables of its
// namespace and a resolv.conf pointing at the cluster DNS, as the kubelet
// gives containers. Replaces the process; returns only on error.
Status lab_exec(const std::string& name, const std::string& target, const std::vector<std::string>& argv);

// A client of a running lab's API server (127.0.0.1:PORT from its state).
Result<std::unique_ptr<k8s::Client>> connect_lab(const std::string& name);

// Path of the running kpx executable (to start daemons, agents, servers).
std::string self_executable();

// GET http://127.0.0.1:port/path from inside a network namespace; the HTTP
// status code, or 0 when nothing answers.
int http_get_in_netns(const std::string& netns, int port, const std::string& path, std::string* body = nullptr);

}  // namespace kpx::lab
