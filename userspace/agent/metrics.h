// The agent's Prometheus metrics: kube-proxy's (pkg/proxy/metrics) with its
// names, help texts, label sets and buckets, and kpx's own (kpx_*), in the
// text exposition format.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
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
  // Prometheus text lines for `name` (without HELP/TYPE); `labels` go
  // before "le", e.g. ip_family="IPv4".
  std::string render(const std::string& name, const std::string& labels = "") const;
  uint64_t count() const;
  double sum() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> buckets_;  // per bound, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

// Counters by HTTP status code, as kube-proxy's CounterVec{code}: a code
// appears once it was answered.
class CodeCounter {
 public:
  void inc(int code);
  std::map<int, uint64_t> values() const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> by_code_;
};

// kube-proxy's buckets.
std::vector<double> sync_duration_buckets();        // 1 ms doubling, 15 bounds
std::vector<double> network_programming_buckets();  // 0, 0.25, 0.5, 1..59, 60..115 by 5, 120..300 by 30

struct Metrics {
  Metrics();
  // kubeproxy_sync_proxy_rules_duration_seconds (every sync: compute and
  // map writes) and its split into full and partial (incremental) syncs.
  Histogram sync_duration, sync_full_duration, sync_partial_duration;
  // kubeproxy_network_programming_duration_seconds: from an EndpointSlice's
  // last-change-trigger-time to the sync that programmed it.
  Histogram network_programming;
  std::atomic<double> last_sync_timestamp{0};    // kubeproxy_sync_proxy_rules_last_timestamp_seconds
  std::atomic<double> last_queued_timestamp{0};  // kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds
  std::atomic<uint64_t> service_changes{0};      // kubeproxy_sync_proxy_rules_service_changes_total
  std::atomic<uint64_t> endpoint_changes{0};     // kubeproxy_sync_proxy_rules_endpoint_changes_total
  std::atomic<uint64_t> service_changes_pending{0};   // ..._service_changes_pending (Services)
  std::atomic<uint64_t> endpoint_changes_pending{0};  // ..._endpoint_changes_pending (slice changes)
  // kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}:
  // Service ports with a Local policy and endpoints, none of them here.
  std::atomic<uint64_t> no_local_endpoints_internal{0}, no_local_endpoints_external{0};
  CodeCounter healthz_answers, livez_answers;    // kubeproxy_proxy_healthz_total, _livez_total
  std::atomic<uint64_t> sync_errors{0};          // kpx_sync_errors_total
  std::atomic<uint64_t> rejected_objects{0};     // kpx_rejected_objects_total
  std::atomic<uint64_t> services_programmed{0};  // kpx_services (gauge)
  std::atomic<uint64_t> attached_interfaces{0};  // kpx_attached_interfaces (gauge)
  std::atomic<uint64_t> conntrack_gc_deleted{0};  // kpx_conntrack_gc_deleted_total

  // Everything above plus the datapath counters (name, value) given.
  std::string render(const std::vector<std::pair<std::string, uint64_t>>& datapath) const;
};

double unix_seconds(std::chrono::system_clock::time_point t);

// The trigger times not yet programmed, for
// kubeproxy_network_programming_duration_seconds, as kube-proxy's
// EndpointsChangeTracker keeps them: per Service, from the
// last-change-trigger-time annotation of each EndpointSlice change that has
// one (a change without it is not measured); a slice's deletion drops its
// Service's pending times (its annotation dates the last update, not the
// deletion). One observation per time, by the sync that programs it.
class ProgrammingStarts {
 public:
  using Clock = std::chrono::system_clock;
  using Pending = std::map<std::string, std::vector<Clock::time_point>>;  // by Service "namespace/name"
  // More pending times than this (syncs failing for long under churn):
  // the newest are not measured.
  static constexpr size_t kMaxPending = 65536;

  // `since`: when the agent started. A trigger time before it dates a change
  // this agent could not have programmed sooner (kube-proxy ignores those
  // too): not measured.
  explicit ProgrammingStarts(Clock::time_point since) : since_(since) {}

  void add(const std::string& service, Clock::time_point trigger);
  void forget(const std::string& service);
  // The pending times, for the sync that is about to write them; a failed
  // sync puts them back (they are measured when programmed).
  Pending take();
  void put_back(Pending starts);
  size_t pending() const { return count_; }

  // One observation per time: now - time (0 for a time in the future, e.g.
  // a skewed clock).
  static void observe(Histogram& h, Clock::time_point now, const Pending& starts);

 private:
  Clock::time_point since_;
  Pending starts_;
  size_t count_ = 0;
};

}  // namespace kpx::agent
