// The lab's cgroup v2 tree: kpx-lab-L/{daemon,internet,node-nodeN/{agent,exec,pods}}. Every
// process the lab starts lives in it, so `kpx lab down` can end them all
// (cgroup.kill) even when the daemon that started them has crashed, and
// never touches a process it did not start.
#pragma once

#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::lab {

// Where cgroup2 is mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified).
Result<std::string> cgroup2_root();
// mkdir -p of root/rel; returns the absolute path.
Result<std::string> make_cgroup(const std::string& rel);
// Kill every process under root/rel (recursively), wait for them to be
// gone (up to timeout_ms), then remove the directories bottom-up.
Status remove_cgroup(const std::string& rel, int timeout_ms = 5000);
// Directory names directly under the root that start with prefix.
std::vector<std::string> list_cgroups(const std::string& prefix);
// Pids directly in a cgroup.
std::vector<int> cgroup_pids(const std::string& abs_path);

}  // namespace kpx::lab
