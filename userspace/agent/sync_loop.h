// The agent's sync loop: reflector callbacks change the model; the loop
// batches changes, computes the desired state (pure) and applies it to the
// maps (diff), never before every watched resource has been listed once, so
// a restart or a slow API never empties the datapath.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <vector>
#include <mutex>
#include <optional>
#include <stop_token>

#include "agent/metrics.h"
#include "dataplane/dataplane.h"
#include "proxy/compute.h"
#include "proxy/model.h"

namespace kpx::agent {

// kNode changes the model but is not needed before the first sync.
enum class Source { kServices = 0, kEndpointSlices = 1, kNode = 2 };

class SyncLoop {
 public:
  using Clock = std::chrono::system_clock;

  // More changed Services than this in one sync: compute everything.
  static constexpr size_t kMaxIncremental = 512;

  SyncLoop(dataplane::Dataplane& dp, Metrics& metrics, std::chrono::milliseconds min_sync_period,
           std::chrono::milliseconds health_timeout, proxy::ComputeConfig compute_config = {});

  // Change the model (from a reflector's thread). `trigger` is when the
  // change happened in the cluster, if known (an EndpointSlice's
  // last-change-trigger-time): network programming latency is measured from
  // it, else from now. See ProgrammingStarts.
  void update(Source source, const std::function<void(proxy::Model&)>& change,
              std::optional<Clock::time_point> trigger = std::nullopt);
  // A source finished its first complete list.
  void mark_listed(Source source);

  // Told the health checks of every Service after each sync that wrote the
  // maps (as kube-proxy updates its service health server after its rules):
  // set before run().
  using HealthCheckSink = std::function<void(const proxy::HealthChecks&)>;
  void set_health_check_sink(HealthCheckSink sink) { health_check_sink_ = std::move(sink); }

  // Sync until stop is requested.
  void run(std::stop_token stop);
  // One sync now, if every source was listed (tests, and run()).
  Status sync_once();

  struct Health {
    bool healthy = false;
    Clock::time_point last_updated{}, current_time{};
  };
  // kube-proxy's rule: healthy once synced, while no queued change has waited
  // longer than the health timeout.
  Health health() const;
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
  const std::chrono::milliseconds min_sync_period_, health_timeout_;
  const proxy::ComputeConfig compute_config_;

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  proxy::Model model_;
  bool listed_[2] = {false, false};
  bool dirty_ = false;
  Clock::time_point first_pending_{};       // when the oldest unsynced change was queued
  ProgrammingStarts starts_{Clock::now()};  // under mu_
  Clock::time_point last_updated_{};
  bool ever_synced_ = false;
  uint64_t syncs_ = 0, full_syncs_ = 0;
  std::mutex sync_mu_;  // one sync at a time
  proxy::HealthChecks health_checks_;  // as of the last sync that wrote the maps; under sync_mu_
  HealthCheckSink health_check_sink_;

  // Incremental syncs find a changed Service's frontends in the dataplane
  // (Dataplane::owned_by): the frontends carry their owner.
  bool need_full_ = true;  // first sync, after a failure, while Services clash on an address
};

}  // namespace kpx::agent
