#include "agent/metrics.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace kpx::agent {

namespace {

std::string num(double v) {
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}

void header(std::ostringstream& o, const char* name, const char* type, const char* help) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

}  // namespace

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), buckets_(bounds_.size(), 0) {}

void Histogram::observe(double seconds) {
  std::lock_guard lk(mu_);
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (seconds <= bounds_[i]) {
      ++buckets_[i];
      break;
    }
  ++count_;
  sum_ += seconds;
}

double Histogram::sum() const {
  std::lock_guard lk(mu_);
  return sum_;
}

void ProgrammingStarts::add(Clock::time_point arrival, std::optional<Clock::time_point> trigger) {
  if (trigger && *trigger < since_) return;
  if (starts_.size() >= kMaxPending) return;
  starts_.push_back(trigger ? *trigger : arrival);
}

std::vector<ProgrammingStarts::Clock::time_point> ProgrammingStarts::take() { return std::exchange(starts_, {}); }

void ProgrammingStarts::put_back(std::vector<Clock::time_point> starts) {
  starts.insert(starts.end(), starts_.begin(), starts_.end());
  if (starts.size() > kMaxPending) starts.resize(kMaxPending);
  starts_ = std::move(starts);
}

void ProgrammingStarts::observe(Histogram& h, Clock::time_point now, const std::vector<Clock::time_point>& starts) {
  for (auto start : starts) h.observe(std::max(0.0, std::chrono::duration<double>(now - start).count()));
}

uint64_t Histogram::count() const {
  std::lock_guard lk(mu_);
  return count_;
}

std::string Histogram::render(const std::string& name) const {
  std::lock_guard lk(mu_);
  std::ostringstream o;
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += buckets_[i];
    o << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cum << "\n";  // shortest form: 0.004
  }
  o << name << "_bucket{le=\"+Inf\"} " << count_ << "\n";
  o << name << "_sum " << num(sum_) << "\n" << name << "_count " << count_ << "\n";
  return o.str();
}

// kube-proxy's buckets: exponential from 1 ms (sync) and 1 ms .. ~1000 s (programming).
Metrics::Metrics()
    : sync_duration({0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
                     8.192, 16.384}),
      network_programming({0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1, 2, 4, 8,
                           16, 32, 64, 128, 256, 512, 1024}) {}

std::string Metrics::render(const std::vector<std::pair<std::string, uint64_t>>& datapath) const {
  std::ostringstream o;
  header(o, "kubeproxy_sync_proxy_rules_duration_seconds", "histogram",
         "SyncProxyRules latency in seconds (kpx: compute and map writes)");
  o << sync_duration.render("kubeproxy_sync_proxy_rules_duration_seconds");
  header(o, "kubeproxy_network_programming_duration_seconds", "histogram",
         "In Cluster Network Programming Latency in seconds");
  o << network_programming.render("kubeproxy_network_programming_duration_seconds");
  header(o, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge",
         "The last time proxy rules were successfully synced");
  o << "kubeproxy_sync_proxy_rules_last_timestamp_seconds " << num(last_sync_timestamp.load()) << "\n";
  header(o, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "gauge",
         "The last time a sync of proxy rules was queued");
  o << "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds " << num(last_queued_timestamp.load()) << "\n";
  header(o, "kubeproxy_sync_proxy_rules_service_changes_total", "counter", "Cumulative proxy rules Service changes");
  o << "kubeproxy_sync_proxy_rules_service_changes_total " << service_changes.load() << "\n";
  header(o, "kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter",
         "Cumulative proxy rules Endpoint changes");
  o << "kubeproxy_sync_proxy_rules_endpoint_changes_total " << endpoint_changes.load() << "\n";
  header(o, "kpx_sync_errors_total", "counter", "Syncs whose map writes failed (the previous state stays)");
  o << "kpx_sync_errors_total " << sync_errors.load() << "\n";
  header(o, "kpx_rejected_objects_total", "counter", "API objects refused for invalid values");
  o << "kpx_rejected_objects_total " << rejected_objects.load() << "\n";
  header(o, "kpx_services", "gauge", "Service addresses (IP, port, protocol) in the datapath");
  o << "kpx_services " << services_programmed.load() << "\n";
  header(o, "kpx_attached_interfaces", "gauge", "Pod interfaces kpx's programs are attached to");
  o << "kpx_attached_interfaces " << attached_interfaces.load() << "\n";
  header(o, "kpx_conntrack_gc_deleted_total", "counter", "Conntrack entries of dead flows deleted by the agent");
  o << "kpx_conntrack_gc_deleted_total " << conntrack_gc_deleted.load() << "\n";
  header(o, "kpx_datapath_packets_total", "counter", "Packets by what the datapath did with them");
  for (const auto& [reason, v] : datapath) o << "kpx_datapath_packets_total{reason=\"" << reason << "\"} " << v << "\n";
  return o.str();
}

}  // namespace kpx::agent
