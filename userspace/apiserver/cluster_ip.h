// ClusterIP allocation for Services, as kube-apiserver's allocator does it
// with --service-cluster-ip-range: a Service that needs an IP and asks for
// none gets a free one, a requested one must be free and in the range, the
// IP is held until the Service is deleted and may not change in between.
// IPv4 single-stack only.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "apiserver/api_status.h"
#include "status/status.h"

namespace kpx::apiserver {

class ServiceIpAllocator {
 public:
  // "10.96.0.0/16": an IPv4 network with at least 4 addresses (prefix <= 30).
  static Result<std::unique_ptr<ServiceIpAllocator>> create(const std::string& cidr);

  // A Service on its way into the store: allocates (or claims the requested)
  // ClusterIP and fills in clusterIP, clusterIPs, ipFamilies and
  // ipFamilyPolicy. ExternalName Services get nothing; "None" stays headless.
  // 422 Invalid for a bad, out-of-range or taken IP; 500 when the range is full.
  std::optional<ApiStatus> on_create(Json& svc);
  // An update: a next state without clusterIP keeps the current one; a
  // different one is 422 (`may not change once set`). A change of type to or
  // from ExternalName allocates or releases.
  std::optional<ApiStatus> on_update(const Json& current, Json& next);
  // The Service is gone: its IP is free again.
  void on_remove(const Json& svc);

  std::string range() const { return cidr_; }
  size_t allocated() const;

 private:
  ServiceIpAllocator(std::string cidr, uint32_t base, uint32_t size);
  std::optional<ApiStatus> claim(Json& svc);  // under mu_
  void on_remove_locked(const Json& svc);
  // Offsets within the range: 1 .. size_-2 are usable (network and broadcast excluded).
  std::optional<uint32_t> pick_free();

  std::string cidr_;
  uint32_t base_;   // network address, host order
  uint32_t size_;   // addresses in the range
  uint32_t split_;  // offsets below: preferred for static requests (dynamic ones come from above first)
  std::set<uint32_t> used_;  // offsets
  std::mt19937 rng_{std::random_device{}()};
  mutable std::mutex mu_;
};

}  // namespace kpx::apiserver
