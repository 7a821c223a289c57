// A small cluster of network namespaces for the e2e tests: nodes with a
// cbr0 bridge (10.244.N.0/24) joined by a veth "wire" (10.0.0.N), pods as
// namespaces on cbr0, one kpx instance (pin dir) per node attached to every
// pod veth's host end, an echo server in each pod. Everything is removed on
// destruction, also when a test fails.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lab/echo.h"
#include "support/scoped.h"

namespace kpx::e2e {

using ProbeResult = lab::ProbeAnswer;

struct Pod {
  std::string name, ns, ip, host_veth;
  int node;
};

class Cluster {
 public:
  explicit Cluster(int nodes);
  ~Cluster();
  bool ok() const { return ok_; }

  const Pod& add_pod(int node, const std::string& name, bool echo = true);
  const Pod& pod(const std::string& name) const { return pods_.at(name); }
  std::string node_ns(int node) const { return nodes_.at(static_cast<size_t>(node - 1)); }
  std::string pin_dir(int node) const { return pins_.at(static_cast<size_t>(node - 1))->path(); }

  // `kpx --pin-dir <node's> args...` in the root namespace; returns exit code.
  int kpx(int node, const std::string& args, std::string* out = nullptr) const;
  // Run the same kpx command on every node (as one agent per node would).
  bool kpx_all(const std::string& args) const;
  // `kpx lab probe` from a pod.
  std::vector<ProbeResult> probe(const std::string& pod, const std::string& target, int count,
                                 int timeout_ms = 1000) const;
  int exec(const std::string& pod, const std::string& cmd) const;

 private:
  bool ok_ = true;
  int next_host_ip_[8] = {};
  std::vector<std::string> nodes_;
  std::vector<std::unique_ptr<testing::ScopedPinDir>> pins_;
  testing::ScopedNetns netns_;
  std::map<std::string, Pod> pods_;
  testing::ScopedProcesses procs_;  // destroyed first: servers stop before their namespaces go
};


}  // namespace kpx::e2e
