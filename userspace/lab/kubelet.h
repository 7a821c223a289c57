// The lab's kubelet and scheduler, in the lab daemon: it follows Pods in
// the API server's store, puts unscheduled ones on the least loaded node,
// gives each pod a network namespace on its node's cbr0 (the CNI's job),
// runs its containers, and reports status (podIP, Ready) back. Deletion is
// graceful as in Kubernetes: a pod with a deletionTimestamp runs its
// preStop sleep, gets SIGTERM, then SIGKILL after its grace period, and is
// removed from the store once its containers are gone.
//
// Images the lab can run: kpx/echo (the echo server, on the container's
// first port, 8080 if none) and kpx/dns (the cluster DNS, served by the
// daemon itself through `dns_container`).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "lab/plan.h"
#include "status/status.h"

namespace kpx::apiserver {
class Store;
}

namespace kpx::lab {

// A container run inside the daemon; destroying the handle stops it.
using InProcessContainer = std::shared_ptr<void>;

struct KubeletOptions {
  LabPlan plan;
  std::string kpx_binary;   // for kpx/echo containers
  std::string log_dir;      // pods' output: <log_dir>/pod-<ns>-<name>.log
  // Starts a kpx/dns container in the pod's network namespace.
  std::function<Result<InProcessContainer>(const std::string& netns)> dns_container;
};

class Kubelet {
 public:
  static Result<std::unique_ptr<Kubelet>> start(apiserver::Store& store, KubeletOptions options);
  ~Kubelet();
  Kubelet(const Kubelet&) = delete;
  Kubelet& operator=(const Kubelet&) = delete;
  // Stops every container and removes every pod namespace. Idempotent.
  void stop();

 private:
  struct Impl;
  explicit Kubelet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kpx::lab
