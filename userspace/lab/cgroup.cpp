#include "lab/cgroup.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace kpx::lab {

namespace {

std::vector<std::string> subdirs(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = opendir(path.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d))
    if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      out.push_back(e->d_name);
  closedir(d);
  return out;
}

bool populated(const std::string& path) {
  std::ifstream f(path + "/cgroup.events");
  std::string k, v;
  while (f >> k >> v)
    if (k == "populated") return v == "1";
  return false;
}

void rmdir_tree(const std::string& path) {
  for (const auto& d : subdirs(path)) rmdir_tree(path + "/" + d);
  rmdir(path.c_str());
}

}  // namespace

Result<std::string> cgroup2_root() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream l(line);
    std::string dev, dir, type;
    l >> dev >> dir >> type;
    if (type == "cgroup2") return dir;
  }
  return not_found("no cgroup v2 hierarchy is mounted");
}

Result<std::string> make_cgroup(const std::string& rel) {
  auto root = cgroup2_root();
  if (!root) return root.error();
  std::string path = *root;
  std::istringstream parts(rel);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    path += "/" + part;
    if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
      return system_error("mkdir " + path + ": " + std::strerror(errno));
  }
  return path;
}

Status remove_cgroup(const std::string& rel, int timeout_ms) {
  auto root = cgroup2_root();
  if (!root) return root.error();
  std::string path = *root + "/" + rel;
  if (access(path.c_str(), F_OK) != 0) return {};
  {
    std::ofstream kill_file(path + "/cgroup.kill");
    kill_file << "1";
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (populated(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (populated(path)) return system_error("processes in " + path + " did not end");
  rmdir_tree(path);
  if (access(path.c_str(), F_OK) == 0) return system_error("could not remove " + path);
  return {};
}

std::vector<std::string> list_cgroups(const std::string& prefix) {
  std::vector<std::string> out;
  auto root = cgroup2_root();
  if (!root) return out;
  for (const auto& d : subdirs(*root))
    if (d.rfind(prefix, 0) == 0) out.push_back(d);
  return out;
}

std::vector<int> cgroup_pids(const std::string& abs_path) {
  std::vector<int> out;
  std::ifstream f(abs_path + "/cgroup.procs");
  int pid;
  while (f >> pid) out.push_back(pid);
  return out;
}

}  // namespace kpx::lab
