// The lab's load-balancer controller, as MetalLB would run in a cluster:
// every Service of type LoadBalancer gets an IP from the lab's pool
// (kLoadBalancerPool), written to status.loadBalancer.ingress (ipMode VIP);
// the gateway routes the pool to the nodes (network.cpp), so the external
// client reaches the IP for real. An IP is free again once its Service is
// gone or no longer a LoadBalancer. Run in-process beside the store.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "apiserver/store.h"
#include "status/status.h"

namespace kpx::lab {

class LoadBalancerController {
 public:
  static Result<std::unique_ptr<LoadBalancerController>> start(apiserver::Store& store);
  ~LoadBalancerController();
  LoadBalancerController(const LoadBalancerController&) = delete;
  LoadBalancerController& operator=(const LoadBalancerController&) = delete;
  void stop();

 private:
  explicit LoadBalancerController(apiserver::Store& store) : store_(store) {}
  void run();
  apiserver::Store& store_;
  std::atomic<bool> stopping_ = false;
  std::thread thread_;
};

}  // namespace kpx::lab
