// The agent's sync loop: reflector callbacks change the model; the loop
// batches changes, computes the desired state (pure) and applies it to the
// maps (diff), never before every watched resource has been listed once, so
// a restart or a slow API never empties the datapath.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <tuple>
#include <vector>

#include "agent/metrics.h"
#include "agent/proxy_health.h"
#include "dataplane/dataplane.h"
#include "proxy/compute.h"
#include "proxy/model.h"

namespace kpx::agent {

// kube-proxy's kubeproxy_sync_proxy_rules_no_local_endpoints_total, counted
// over the frontends programmed: Service ports whose traffic policy is Local
// (internal: the ClusterIP's; external: the NodePort, external and load
// balancer IPs') that have endpoints, none of them on this node. Counted
// per Service port (name and protocol), whatever its number of addresses.
class NoLocalEndpointsCounter {
 public:
  void add(const dataplane::FrontendKey& key, const dataplane::Frontend& fe);
  uint64_t internal() const { return internal_.size(); }
  uint64_t external() const { return external_.size(); }

 private:
  using PortKey = std::tuple<std::string, std::string, net::Proto>;  // service, port name, protocol
  std::set<PortKey> internal_, external_;
};

// kNode changes the model but is not needed before the first sync.
enum class Source { kServices = 0, kEndpointSlices = 1, kNode = 2 };

// What a change to the model is, for kube-proxy's metrics.
struct ChangeInfo {
  std::string service;  // the Service ("namespace/name") it is about; "" for many (a list)
  // An EndpointSlice's last-change-trigger-time: network programming
  // latency is measured from it (see ProgrammingStarts).
  std::optional<std::chrono::system_clock::time_point> trigger;
  bool removed = false;  // a deletion: the Service's pending trigger times go
  uint64_t events = 1;   // API objects it carries (a list: its items)
};

// What the reflectors' callbacks (agent/api_feed.h) change the model
// through: the sync loop, or a test's stand-in.
class ModelFeed {
 public:
  virtual ~ModelFeed() = default;
  // Change the model (from a reflector's thread).
  virtual void update(Source source, const std::function<void(proxy::Model&)>& change, ChangeInfo info) = 0;
  // Let fn use the model without changing what a sync reads of it (staging
  // a list: Model::stage_*, which interns strings in the model's pool);
  // nothing is queued.
  virtual void prepare(const std::function<void(proxy::Model&)>& fn) = 0;
  // A source finished its first complete list.
  virtual void mark_listed(Source source) = 0;
};

class SyncLoop : public ModelFeed {
 public:
  using Clock = std::chrono::system_clock;

  // More changed Services than this in one sync: compute everything.
  static constexpr size_t kMaxIncremental = 512;

  SyncLoop(dataplane::Dataplane& dp, Metrics& metrics, std::chrono::milliseconds min_sync_period,
           std::chrono::milliseconds health_timeout, proxy::ComputeConfig compute_config = {});

  void update(Source source, const std::function<void(proxy::Model&)>& change, ChangeInfo info = {}) override;
  void prepare(const std::function<void(proxy::Model&)>& fn) override;
  void mark_listed(Source source) override;

  // Told the health checks of every Service after each sync that wrote the
  // maps (as kube-proxy updates its service health server after its rules):
  // set before run().
  using HealthCheckSink = std::function<void(const proxy::HealthChecks&)>;
  void set_health_check_sink(HealthCheckSink sink) { health_check_sink_ = std::move(sink); }

  // kube-proxy's syncPeriod: at most this long after the last sync, run() makes a
  // full sync that first audits the maps (Dataplane::audit) and rewrites
  // whatever something else changed in them. 0: never (set before run()).
  void set_sync_period(std::chrono::milliseconds p) { sync_period_ = p; }
  // Mark the next sync a periodic one (run() does it every sync period).
  void audit_next_sync();
  // Periodic syncs made, and frontends they found changed by something
  // else (rewritten) or written by something else (removed).
  uint64_t audits() const;
  uint64_t audit_repairs() const;

  // Sync until stop is requested.
  void run(std::stop_token stop);
  // One sync now, if every source was listed (tests, and run()).
  Status sync_once();

  // kube-proxy's proxier health: changes queued once every source was
  // listed, cleared by each successful sync (see ProxyHealth).
  ProxyHealth& health() { return health_; }
  const ProxyHealth& health() const { return health_; }
  // Syncs that wrote the maps successfully, and how many of them computed
  // every Service (the others were incremental).
  uint64_t syncs() const;
  uint64_t full_syncs() const;

  // Between syncs, with the dataplane to itself: drop the filter bits of
  // removed frontends and backends no live flow uses (after a GC).
  Status release_unreferenced(const dataplane::FlowRefs& live);
  // Between syncs, with the dataplane to itself: anything else that writes
  // it (the node's addresses when they change).
  Status with_dataplane(const std::function<Status(dataplane::Dataplane&)>& fn);

 private:
  dataplane::Dataplane& dp_;
  Metrics& metrics_;
  const std::chrono::milliseconds min_sync_period_;
  std::chrono::milliseconds sync_period_{0};
  const proxy::ComputeConfig compute_config_;

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  proxy::Model model_;
  bool listed_[2] = {false, false};
  bool dirty_ = false;
  bool audit_due_ = false;  // under mu_
  uint64_t audits_ = 0, audit_repairs_ = 0;  // under mu_
  ProgrammingStarts starts_{Clock::now()};  // under mu_
  std::set<std::string> pending_services_;  // under mu_: Services changed since the last sync
  uint64_t pending_slice_changes_ = 0;      // under mu_
  ProxyHealth health_;
  uint64_t syncs_ = 0, full_syncs_ = 0;
  std::mutex sync_mu_;  // one sync at a time
  proxy::HealthChecks health_checks_;  // as of the last sync that wrote the maps; under sync_mu_
  HealthCheckSink health_check_sink_;

  // Incremental syncs find a changed Service's frontends in the dataplane
  // (Dataplane::owned_by): the frontends carry their owner.
  bool need_full_ = true;  // first sync, after a failure, while Services clash on an address
};

}  // namespace kpx::agent
