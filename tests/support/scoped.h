// Test fixtures that clean up after themselves, also when a test fails:
// unique names, a bpffs pin dir, network namespaces, shell helpers.
#pragma once

#include <string>
#include <vector>

namespace kpx::testing {

// A short unique name: prefix + pid + counter (fits an interface name when
// prefix is at most 4 characters).
std::string unique_name(const std::string& prefix);

// Run a shell command; returns its exit status (or -1). Output to stderr.
int sh(const std::string& cmd);
// Run a shell command and return its stdout (stderr is passed through).
std::string sh_out(const std::string& cmd, int* status = nullptr);

// /sys/fs/bpf/kpx-test-<unique>, unpinned and removed on destruction.
class ScopedPinDir {
 public:
  ScopedPinDir();
  ~ScopedPinDir();
  ScopedPinDir(const ScopedPinDir&) = delete;
  ScopedPinDir& operator=(const ScopedPinDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Network namespaces made with `ip netns add`, deleted on destruction
// (which also removes every interface inside them).
class ScopedNetns {
 public:
  ScopedNetns() = default;
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  // Create a namespace named prefix+unique and return its name.
  std::string add(const std::string& prefix);

 private:
  std::vector<std::string> names_;
};

// Processes started in the background, killed by pid on destruction.
class ScopedProcesses {
 public:
  ScopedProcesses() = default;
  ~ScopedProcesses();
  ScopedProcesses(const ScopedProcesses&) = delete;
  ScopedProcesses& operator=(const ScopedProcesses&) = delete;
  // Start argv (no shell); returns the pid, or -1.
  int spawn(const std::vector<std::string>& argv);

 private:
  std::vector<int> pids_;
};

}  // namespace kpx::testing
