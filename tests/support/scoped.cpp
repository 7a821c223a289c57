#include "support/scoped.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "bpf/pinned_maps.h"

namespace kpx::testing {

std::string unique_name(const std::string& prefix) {
  static std::atomic<unsigned> counter{0};
  return prefix + std::to_string(getpid() % 100000) + "x" + std::to_string(counter++);
}

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  if (rc == -1) return -1;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string sh_out(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    if (status) *status = -1;
    return out;
  }
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int rc = pclose(p);
  if (status) *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

ScopedPinDir::ScopedPinDir() : path_("/sys/fs/bpf/kpx-test-" + unique_name("")) {}

ScopedPinDir::~ScopedPinDir() {
  if (auto st = bpf::remove_pin_dir(path_); !st) {
    std::cerr << "cleanup " << path_ << ": " << st.error().message << "\n";
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

ScopedNetns::~ScopedNetns() {
  for (auto it = names_.rbegin(); it != names_.rend(); ++it) sh("ip netns del " + *it + " 2>/dev/null");
}

std::string ScopedNetns::add(const std::string& prefix) {
  std::string name = unique_name("kpx-" + prefix);
  if (sh("ip netns add " + name) != 0) return "";
  names_.push_back(name);
  sh("ip -n " + name + " link set lo up");
  return name;
}

ScopedProcesses::~ScopedProcesses() {
  for (int pid : pids_) {
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) goto reaped;
      usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  reaped:;
  }
}

int ScopedProcesses::spawn(const std::vector<std::string>& argv) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  pids_.push_back(pid);
  return pid;
}

}  // namespace kpx::testing
