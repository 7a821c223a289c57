// The agent's Prometheus metrics, with kube-proxy's names where they mean
// the same, rendered in the text exposition format.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
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
  double sum() const;

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

// Where each change not yet in the maps starts, for
// kubeproxy_network_programming_duration_seconds, as kube-proxy measures
// it: from an EndpointSlice's last-change-trigger-time annotation (when the
// endpoints controller saw the Pod change) when the object has one, else
// from when the change reached the agent. One observation per change.
class ProgrammingStarts {
 public:
  using Clock = std::chrono::system_clock;
  // More pending changes than this (syncs failing for long under churn):
  // the newest are not measured.
  static constexpr size_t kMaxPending = 65536;

  // `since`: when the agent started. A trigger time before it dates a change
  // this agent could not have programmed sooner (kube-proxy ignores those
  // too): not measured.
  explicit ProgrammingStarts(Clock::time_point since) : since_(since) {}

  void add(Clock::time_point arrival, std::optional<Clock::time_point> trigger);
  // The pending starts, for the sync that is about to write them; a failed
  // sync puts them back.
  std::vector<Clock::time_point> take();
  void put_back(std::vector<Clock::time_point> starts);
  size_t pending() const { return starts_.size(); }

  // One observation per start: now - start (0 for a start in the future,
  // e.g. a skewed clock).
  static void observe(Histogram& h, Clock::time_point now, const std::vector<Clock::time_point>& starts);

 private:
  Clock::time_point since_;
  std::vector<Clock::time_point> starts_;
};

}  // namespace kpx::agent
