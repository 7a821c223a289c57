#include "agent/sync_loop.h"

#include <malloc.h>

#include <algorithm>
#include <set>
#include <utility>

#include "log/log.h"

namespace kpx::agent {

SyncLoop::SyncLoop(dataplane::Dataplane& dp, Metrics& metrics, std::chrono::milliseconds min_sync_period,
                   std::chrono::milliseconds health_timeout, proxy::ComputeConfig compute_config)
    : dp_(dp),
      metrics_(metrics),
      min_sync_period_(min_sync_period),
      compute_config_(std::move(compute_config)),
      health_(health_timeout) {}

void NoLocalEndpointsCounter::add(const dataplane::FrontendKey& key, const dataplane::Frontend& fe) {
  // Without endpoints anywhere the Service is rejected, not counted here.
  if (!(fe.flags & dataplane::kLocalOnly) || fe.cluster.empty() || !fe.local.empty()) return;
  auto& set = key.scope == dataplane::Scope::kClusterIP ? internal_ : external_;
  set.emplace(fe.service, fe.port_name, key.proto);
}

void SyncLoop::update(Source source, const std::function<void(proxy::Model&)>& change, ChangeInfo info) {
  bool queued = false;
  {
    std::lock_guard lk(mu_);
    change(model_);
    dirty_ = true;
    if (source == Source::kEndpointSlices && !info.service.empty()) {
      if (info.removed)
        starts_.forget(info.service);
      else if (info.trigger)
        starts_.add(info.service, *info.trigger);
    }
    if (source == Source::kServices) pending_services_.insert(info.service.empty() ? "*" : info.service);
    if (source == Source::kEndpointSlices) pending_slice_changes_ += info.events;
    metrics_.service_changes_pending = pending_services_.size();
    metrics_.endpoint_changes_pending = pending_slice_changes_;
    // Before every source is listed, the first sync is ahead anyway (kube-
    // proxy queues nothing until its informers synced).
    queued = listed_[0] && listed_[1];
  }
  if (source == Source::kServices) metrics_.service_changes += info.events;
  if (source == Source::kEndpointSlices) metrics_.endpoint_changes += info.events;
  if (queued) {
    health_.queued_update();
    metrics_.last_queued_timestamp = unix_seconds(Clock::now());
  }
  cv_.notify_all();
}

void SyncLoop::prepare(const std::function<void(proxy::Model&)>& fn) {
  std::lock_guard lk(mu_);
  fn(model_);
}

void SyncLoop::mark_listed(Source source) {
  if (source == Source::kNode) return;
  {
    std::lock_guard lk(mu_);
    listed_[static_cast<int>(source)] = true;
    dirty_ = true;
  }
  cv_.notify_all();
}

Status SyncLoop::sync_once() {
  std::lock_guard sync_lk(sync_mu_);
  ProgrammingStarts::Pending starts;
  const auto start = std::chrono::steady_clock::now();
  bool full;
  bool audit = false;
  proxy::DesiredState desired;
  std::set<std::string> changed;
  {
    std::lock_guard lk(mu_);
    if (!listed_[0] || !listed_[1]) return {};
    changed = model_.take_changed_services();
    audit = std::exchange(audit_due_, false);
    full = need_full_ || audit || changed.size() > kMaxIncremental;
    if (!full) {
      desired = proxy::compute_services(model_, changed, compute_config_);
      // A frontend another (unchanged) Service holds: let compute() decide.
      for (const auto& [key, fe] : desired.frontends) {
        auto o = dp_.frontends().find(key);
        if (o != dp_.frontends().end() && !changed.count(o->second.fe.service)) full = true;
      }
      for (const auto& skip : desired.skipped) full |= skip.address_clash;
    }
    if (full) desired = proxy::compute(model_, compute_config_);
    starts = starts_.take();
    dirty_ = false;
    pending_services_.clear();
    pending_slice_changes_ = 0;
    metrics_.service_changes_pending = 0;
    metrics_.endpoint_changes_pending = 0;
  }

  Result<dataplane::ApplyStats> stats = dataplane::ApplyStats{};
  if (audit) {
    // Before the full apply: what it finds changed it rewrites.
    auto found = dp_.audit();
    if (!found) {
      log::warning("periodic sync: cannot read the maps back: " + found.error().message);
    } else {
      if (found->drifted || found->foreign)
        log::warning("periodic sync: " + std::to_string(found->drifted) +
                     " frontends were changed in the maps by something else (rewritten), " +
                     std::to_string(found->foreign) + " entries kpx did not write were removed");
      std::lock_guard lk(mu_);
      ++audits_;
      audit_repairs_ += found->drifted + found->foreign;
    }
  }
  if (full) {
    stats = dp_.apply(std::move(desired.frontends));
  } else {
    // The changed Services' frontends as programmed (the dataplane keeps
    // each with its owner) go, unless compute() gives them again.
    dataplane::FrontendDelta delta;
    for (const auto& key : changed)
      for (const auto& fk : dp_.owned_by(key)) delta.emplace(fk, std::nullopt);
    for (auto& [fk, fe] : desired.frontends) delta[fk] = std::move(fe);
    stats = dp_.apply_delta(std::move(delta));
  }
  const auto end = std::chrono::steady_clock::now();
  // Failed syncs too, as kube-proxy times every attempt.
  const double took = std::chrono::duration<double>(end - start).count();
  metrics_.sync_duration.observe(took);
  (full ? metrics_.sync_full_duration : metrics_.sync_partial_duration).observe(took);
  if (!stats) {
    metrics_.sync_errors++;
    need_full_ = true;
    std::lock_guard lk(mu_);
    dirty_ = true;  // retried by run()
    starts_.put_back(std::move(starts));
    return stats.error();
  }

  // An incremental sync computed the changed Services' health checks only.
  if (full) {
    health_checks_ = std::move(desired.health_checks);
  } else {
    for (const auto& key : changed) health_checks_.erase(key);
    health_checks_.merge(desired.health_checks);
  }
  if (health_check_sink_) health_check_sink_(health_checks_);

  if (full) {
    need_full_ = false;
    // A full sync follows a (re)list, whose JSON pages are freed by now:
    // give that memory back to the system rather than keep it as heap.
    malloc_trim(0);
    for (const auto& skip : desired.skipped) need_full_ |= skip.address_clash;
  }

  const auto now = Clock::now();
  ProgrammingStarts::observe(metrics_.network_programming, now, starts);
  NoLocalEndpointsCounter no_local;
  for (const auto& [key, state] : dp_.frontends()) no_local.add(key, state.fe);
  metrics_.no_local_endpoints_internal = no_local.internal();
  metrics_.no_local_endpoints_external = no_local.external();
  health_.updated();
  metrics_.last_sync_timestamp = unix_seconds(now);
  metrics_.services_programmed = dp_.frontends().size();
  std::lock_guard lk(mu_);
  ++syncs_;
  full_syncs_ += full;
  // A change that came during this sync still waits for the next one.
  if (dirty_ && listed_[0] && listed_[1]) health_.queued_update();
  return {};
}

void SyncLoop::run(std::stop_token stop) {
  // As kube-proxy's sync loop starts: healthy while starting, and a sync
  // is as good as queued.
  health_.updated();
  metrics_.last_queued_timestamp = unix_seconds(Clock::now());
  auto last_sync = std::chrono::steady_clock::time_point{};
  std::chrono::seconds retry_delay{1};
  while (!stop.stop_requested()) {
    {
      std::unique_lock lk(mu_);
      auto ready = [&] { return dirty_ && listed_[0] && listed_[1]; };
      if (sync_period_.count() > 0 && last_sync != std::chrono::steady_clock::time_point{}) {
        // kube-proxy's syncPeriod: a full sync at least this often.
        if (!cv_.wait_until(lk, stop, last_sync + sync_period_, ready) && !stop.stop_requested()) {
          audit_due_ = true;
          dirty_ = true;
        }
      } else {
        cv_.wait(lk, stop, ready);
      }
      if (stop.stop_requested()) return;
    }
    // Batch: at most one sync per min_sync_period.
    auto wait_until = last_sync + min_sync_period_;
    if (std::chrono::steady_clock::now() < wait_until) {
      std::unique_lock lk(mu_);
      cv_.wait_until(lk, stop, wait_until, [] { return false; });
      if (stop.stop_requested()) return;
    }
    last_sync = std::chrono::steady_clock::now();
    if (auto st = sync_once(); !st) {
      // The other Services were written; retry the full sync with backoff
      // (1 s doubling to 30 s), not in a tight loop of full recomputes.
      log::warning("sync failed, retrying in " + std::to_string(retry_delay.count()) +
                   " s; the maps keep what was written: " + st.error().message);
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, stop, retry_delay, [] { return false; });
      retry_delay = std::min(retry_delay * 2, std::chrono::seconds(30));
    } else {
      retry_delay = std::chrono::seconds(1);
    }
  }
}

void SyncLoop::audit_next_sync() {
  {
    std::lock_guard lk(mu_);
    audit_due_ = true;
    dirty_ = true;
  }
  cv_.notify_all();
}

uint64_t SyncLoop::audits() const {
  std::lock_guard lk(mu_);
  return audits_;
}

uint64_t SyncLoop::audit_repairs() const {
  std::lock_guard lk(mu_);
  return audit_repairs_;
}

uint64_t SyncLoop::syncs() const {
  std::lock_guard lk(mu_);
  return syncs_;
}

uint64_t SyncLoop::full_syncs() const {
  std::lock_guard lk(mu_);
  return full_syncs_;
}

Status SyncLoop::release_unreferenced(const dataplane::FlowRefs& live) {
  std::lock_guard sync_lk(sync_mu_);
  return dp_.release_unreferenced(live);
}

Status SyncLoop::with_dataplane(const std::function<Status(dataplane::Dataplane&)>& fn) {
  std::lock_guard sync_lk(sync_mu_);
  return fn(dp_);
}

}  // namespace kpx::agent
