// The agent's Prometheus metrics, with kube-proxy's names where they mean
// the same, rendered in the text exposition format.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace kpx::agent {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // Prometheus text lines for `name` (without HELP/TYPE).
  std::string render(const std::string& name) const;
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> buckets_;  // per bound, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct Metrics {
  Metrics();
  // kubeproxy_sync_proxy_rules_duration_seconds: compute + apply.
  Histogram sync_duration;
  // kubeproxy_network_programming_duration_seconds: from the change (an
  // EndpointSlice's last-change-trigger-time annotation, else when the agent
  // received it) to the maps written.
  Histogram network_programming;
  std::atomic<double> last_sync_timestamp{0};    // kubeproxy_sync_proxy_rules_last_timestamp_seconds
  std::atomic<double> last_queued_timestamp{0};  // kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds
  std::atomic<uint64_t> service_changes{0};      // kubeproxy_sync_proxy_rules_service_changes_total
  std::atomic<uint64_t> endpoint_changes{0};     // kubeproxy_sync_proxy_rules_endpoint_changes_total
  std::atomic<uint64_t> sync_errors{0};          // kpx_sync_errors_total
  std::atomic<uint64_t> rejected_objects{0};     // kpx_rejected_objects_total
  std::atomic<uint64_t> services_programmed{0};  // kpx_services (gauge)
  std::atomic<uint64_t> attached_interfaces{0};  // kpx_attached_interfaces (gauge)
  std::atomic<uint64_t> conntrack_gc_deleted{0};  // kpx_conntrack_gc_deleted_total

  // Everything above plus the datapath counters (name, value) given.
  std::string render(const std::vector<std::pair<std::string, uint64_t>>& datapath) const;
};

double unix_seconds(std::chrono::system_clock::time_point t);

}  // namespace kpx::agent
