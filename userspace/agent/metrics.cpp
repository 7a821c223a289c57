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

// kpx is IPv4-only: kube-proxy's per-family series carry this.
constexpr const char* kFamily = "ip_family=\"IPv4\"";

// Families by name: the Go client writes them sorted, so does kpx.
class Families {
 public:
  // kube-proxy's metrics are ALPHA, which its registry writes into the help.
  void add(const std::string& name, const char* type, const std::string& help, const std::string& samples,
           bool alpha = true) {
    out_[name] = "# HELP " + name + " " + (alpha ? "[ALPHA] " : "") + help + "\n# TYPE " + name + " " + type +
                 "\n" + samples;
  }
  std::string text() const {
    std::string s;
    for (const auto& [name, f] : out_) s += f;
    return s;
  }

 private:
  std::map<std::string, std::string> out_;
};

std::vector<double> linear(double start, double width, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

}  // namespace

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::vector<double> sync_duration_buckets() {
  std::vector<double> b;
  for (int i = 0; i < 15; ++i) b.push_back(0.001 * (1 << i));
  return b;
}

std::vector<double> network_programming_buckets() {
  // component-base's MergeBuckets starts from a 0 bound.
  std::vector<double> b = {0};
  for (const auto& part : {linear(0.25, 0.25, 2), linear(1, 1, 59), linear(60, 5, 12), linear(120, 30, 7)})
    b.insert(b.end(), part.begin(), part.end());
  return b;
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

uint64_t Histogram::count() const {
  std::lock_guard lk(mu_);
  return count_;
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  std::lock_guard lk(mu_);
  std::ostringstream o;
  const std::string pre = labels.empty() ? "" : labels + ",";
  const std::string own = labels.empty() ? "" : "{" + labels + "}";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += buckets_[i];
    o << name << "_bucket{" << pre << "le=\"" << bounds_[i] << "\"} " << cum << "\n";  // shortest form: 0.004
  }
  o << name << "_bucket{" << pre << "le=\"+Inf\"} " << count_ << "\n";
  o << name << "_sum" << own << " " << num(sum_) << "\n" << name << "_count" << own << " " << count_ << "\n";
  return o.str();
}

void CodeCounter::inc(int code) {
  std::lock_guard lk(mu_);
  ++by_code_[code];
}

std::map<int, uint64_t> CodeCounter::values() const {
  std::lock_guard lk(mu_);
  return by_code_;
}

void ProgrammingStarts::add(const std::string& service, Clock::time_point trigger) {
  if (trigger < since_ || count_ >= kMaxPending) return;
  starts_[service].push_back(trigger);
  ++count_;
}

void ProgrammingStarts::forget(const std::string& service) {
  auto it = starts_.find(service);
  if (it == starts_.end()) return;
  count_ -= it->second.size();
  starts_.erase(it);
}

ProgrammingStarts::Pending ProgrammingStarts::take() {
  count_ = 0;
  return std::exchange(starts_, {});
}

void ProgrammingStarts::put_back(Pending starts) {
  // Those that came meanwhile are newer: they go after the returned ones.
  for (auto& [service, times] : starts_) {
    auto& into = starts[service];
    into.insert(into.end(), times.begin(), times.end());
  }
  starts_.clear();
  count_ = 0;
  for (auto& [service, times] : starts) {
    if (count_ >= kMaxPending) break;
    if (count_ + times.size() > kMaxPending) times.resize(kMaxPending - count_);
    count_ += times.size();
    starts_.emplace(service, std::move(times));
  }
}

void ProgrammingStarts::observe(Histogram& h, Clock::time_point now, const Pending& starts) {
  for (const auto& [service, times] : starts)
    for (auto start : times) h.observe(std::max(0.0, std::chrono::duration<double>(now - start).count()));
}

Metrics::Metrics()
    : sync_duration(sync_duration_buckets()),
      sync_full_duration(sync_duration_buckets()),
      sync_partial_duration(sync_duration_buckets()),
      network_programming(network_programming_buckets()) {}

std::string Metrics::render(const std::vector<std::pair<std::string, uint64_t>>& datapath) const {
  Families f;
  auto histogram = [&](const std::string& name, const std::string& help, const Histogram& h) {
    f.add(name, "histogram", help, h.render(name, kFamily));
  };
  auto one = [&](const std::string& name, const char* type, const std::string& help, const std::string& value,
                 bool per_family, bool alpha = true) {
    f.add(name, type, help, name + (per_family ? std::string("{") + kFamily + "}" : "") + " " + value + "\n",
          alpha);
  };
  auto codes = [&](const std::string& name, const std::string& help, const CodeCounter& c) {
    std::string samples;
    for (const auto& [code, n] : c.values())
      samples += name + "{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
    if (!samples.empty()) f.add(name, "counter", help, samples);
  };

  histogram("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
            sync_duration);
  histogram("kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs", sync_full_duration);
  histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs", sync_partial_duration);
  histogram("kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds", network_programming);
  one("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge",
      "The last time proxy rules were successfully synced", num(last_sync_timestamp.load()), true);
  one("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "gauge",
      "The last time a sync of proxy rules was queued", num(last_queued_timestamp.load()), true);
  one("kubeproxy_sync_proxy_rules_service_changes_total", "counter", "Cumulative proxy rules Service changes",
      std::to_string(service_changes.load()), false);
  one("kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter",
      "Cumulative proxy rules Endpoint changes", std::to_string(endpoint_changes.load()), false);
  one("kubeproxy_sync_proxy_rules_service_changes_pending", "gauge", "Pending proxy rules Service changes",
      std::to_string(service_changes_pending.load()), false);
  one("kubeproxy_sync_proxy_rules_endpoint_changes_pending", "gauge", "Pending proxy rules Endpoint changes",
      std::to_string(endpoint_changes_pending.load()), false);
  {
    const std::string name = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";
    std::string samples;
    for (const auto& [policy, v] : {std::pair{"external", no_local_endpoints_external.load()},
                                    std::pair{"internal", no_local_endpoints_internal.load()}})
      samples += name + "{" + kFamily + ",traffic_policy=\"" + policy + "\"} " + std::to_string(v) + "\n";
    f.add(name, "gauge", "Number of services with a Local traffic policy and no endpoints", samples);
  }
  codes("kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status", healthz_answers);
  codes("kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", livez_answers);

  one("kpx_sync_errors_total", "counter", "Syncs whose map writes failed (the previous state stays)",
      std::to_string(sync_errors.load()), false, false);
  one("kpx_rejected_objects_total", "counter", "API objects refused for invalid values",
      std::to_string(rejected_objects.load()), false, false);
  one("kpx_services", "gauge", "Service addresses (IP, port, protocol) in the datapath",
      std::to_string(services_programmed.load()), false, false);
  one("kpx_attached_interfaces", "gauge", "Pod interfaces kpx's programs are attached to",
      std::to_string(attached_interfaces.load()), false, false);
  one("kpx_conntrack_gc_deleted_total", "counter", "Conntrack entries of dead flows deleted by the agent",
      std::to_string(conntrack_gc_deleted.load()), false, false);
  std::string packets;
  for (const auto& [reason, v] : datapath)
    packets += "kpx_datapath_packets_total{reason=\"" + reason + "\"} " + std::to_string(v) + "\n";
  f.add("kpx_datapath_packets_total", "counter", "Packets by what the datapath did with them", packets,
        false);
  return f.text();
}

}  // namespace kpx::agent
