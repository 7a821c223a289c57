#include "lab/state.h"

#include <dirent.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lab/proc.h"

namespace kpx::lab {

Status write_state(const LabState& s) {
  nlohmann::json j = {{"name", s.name},         {"nodes", s.nodes},         {"podsPerNode", s.pods_per_node},
                      {"apiPort", s.api_port},  {"daemonPid", s.daemon_pid}};
  std::string dir = plan_lab(s.name, 0).state_dir();
  std::string tmp = dir + "/state.json.tmp", path = dir + "/state.json";
  {
    std::ofstream f(tmp);
    f << j.dump(2) << "\n";
    if (!f) return system_error("write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return system_error("rename " + tmp);
  return {};
}

Result<LabState> read_state(const std::string& name) {
  std::string path = plan_lab(name, 0).state_dir() + "/state.json";
  std::ifstream f(path);
  if (!f) return not_found("no lab named '" + name + "' is running (no " + path + ")");
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return system_error(path + " is not valid JSON");
  LabState s;
  s.name = j.value("name", name);
  s.nodes = j.value("nodes", 0);
  s.pods_per_node = j.value("podsPerNode", 0);
  s.api_port = j.value("apiPort", 0);
  s.daemon_pid = j.value("daemonPid", 0);
  return s;
}

bool is_lab_daemon(int pid, const std::string& name) {
  if (pid <= 0 || !running(pid)) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line, want = "/" + plan_lab(name, 0).cgroup_name() + "/daemon";
  while (std::getline(f, line))
    // cgroup v2's line: "0::/kpx-lab-NAME/daemon" (exact, so lab "a" is not "ab").
    if (line.rfind("0::", 0) == 0) return line.substr(3) == want;
  return false;
}

std::vector<std::string> labs_with_state() {
  std::vector<std::string> out;
  DIR* d = opendir(kStateRoot);
  if (!d) return out;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.' && validate_name(e->d_name)) out.push_back(e->d_name);
  closedir(d);
  return out;
}

}  // namespace kpx::lab
