// NodePort allocation for Services, as kube-apiserver's allocator does it
// with --service-node-port-range (default 30000-32767): Services of type
// NodePort and LoadBalancer get a free port for every port that asks for
// none, a requested one must be free and in the range, a LoadBalancer with
// externalTrafficPolicy Local gets a healthCheckNodePort from the same range;
// the ports are held until the Service stops needing them or is deleted.
// Also the checks of the real server's validation that concern these fields
// (nodePort on a ClusterIP Service, duplicates, healthCheckNodePort rules).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "apiserver/api_status.h"
#include "status/status.h"

namespace kpx::apiserver {

class NodePortAllocator {
 public:
  // "30000-32767", "30000+2767" or "30080": ports within 1-65535.
  static Result<std::unique_ptr<NodePortAllocator>> create(const std::string& range);

  // A Service on its way into the store: fills in nodePort (and
  // healthCheckNodePort) where needed, claims the requested ones. 422 Invalid
  // for a taken or out-of-range nodePort or a refused field, 500 when the
  // range is full or a requested healthCheckNodePort cannot be had (as the
  // real server answers). Nothing is held when it refuses.
  std::optional<ApiStatus> on_create(Json& svc);
  // An update: a next state that leaves out a nodePort (by port name) or
  // the healthCheckNodePort keeps the current one; new values are claimed,
  // values no longer used are released. A change of type to ClusterIP or
  // ExternalName drops the unchanged nodePorts (and releases them), as the
  // real server does. Nothing changes when it refuses.
  std::optional<ApiStatus> on_update(const Json& current, Json& next);
  // Undoes a successful on_update(current, next) whose request failed
  // afterwards; `next` as on_update left it.
  void revert_update(const Json& current, const Json& next);
  // The Service is gone: its ports are free again.
  void on_remove(const Json& svc);

  std::string range() const;  // "30000-32767"
  size_t allocated() const;
  bool is_allocated(int port) const;

 private:
  NodePortAllocator(int base, int size);
  bool in_range(int port) const { return port >= base_ && port - base_ < size_; }
  // Why `port` cannot be claimed now ("" when it can); `claimed` are this request's claims so far.
  std::string refusal(int port, const std::set<int>& claimed) const;
  // A free port not in `claimed`: the upper part of the range first.
  std::optional<int> pick_free(const std::set<int>& claimed);
  // The requested healthCheckNodePort, or a free one written into spec.
  std::optional<ApiStatus> claim_health_check(Json& spec, std::set<int>& claimed);

  int base_;   // first port
  int size_;   // ports in the range
  int split_;  // offsets below: preferred for static requests (dynamic ones come from above first)
  std::set<int> used_;
  std::mt19937 rng_{std::random_device{}()};
  mutable std::mutex mu_;
};

}  // namespace kpx::apiserver
