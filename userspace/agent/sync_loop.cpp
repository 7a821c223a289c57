#include "agent/sync_loop.h"

#include <malloc.h>

#include <algorithm>
#include <set>

#include "log/log.h"

namespace kpx::agent {

SyncLoop::SyncLoop(dataplane::Dataplane& dp, Metrics& metrics, std::chrono::milliseconds min_sync_period,
                   std::chrono::milliseconds health_timeout, proxy::ComputeConfig compute_config)
    : dp_(dp),
      metrics_(metrics),
      min_sync_period_(min_sync_period),
      health_timeout_(health_timeout),
      compute_config_(std::move(compute_config)) {}

void SyncLoop::update(Source source, const std::function<void(proxy::Model&)>& change,
                      std::optional<Clock::time_point> trigger) {
  const auto now = Clock::now();
  {
    std::lock_guard lk(mu_);
    change(model_);
    if (!dirty_) first_pending_ = now;
    dirty_ = true;
    starts_.add(now, trigger);
  }
  if (source == Source::kServices) metrics_.service_changes++;
  if (source == Source::kEndpointSlices) metrics_.endpoint_changes++;
  metrics_.last_queued_timestamp = unix_seconds(now);
  cv_.notify_all();
}

void SyncLoop::mark_listed(Source source) {
  if (source == Source::kNode) return;
  {
    std::lock_guard lk(mu_);
    listed_[static_cast<int>(source)] = true;
    dirty_ = true;
    if (first_pending_ == Clock::time_point{}) first_pending_ = Clock::now();
  }
  cv_.notify_all();
}

Status SyncLoop::sync_once() {
  std::lock_guard sync_lk(sync_mu_);
  std::vector<Clock::time_point> starts;
  const auto start = std::chrono::steady_clock::now();
  bool full;
  proxy::DesiredState desired;
  std::set<std::string> changed;
  {
    std::lock_guard lk(mu_);
    if (!listed_[0] || !listed_[1]) return {};
    changed = model_.take_changed_services();
    full = need_full_ || changed.size() > kMaxIncremental;
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
  }

  Result<dataplane::ApplyStats> stats = dataplane::ApplyStats{};
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
  metrics_.sync_duration.observe(std::chrono::duration<double>(end - start).count());
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
  metrics_.last_sync_timestamp = unix_seconds(now);
  metrics_.services_programmed = dp_.frontends().size();
  std::lock_guard lk(mu_);
  last_updated_ = now;
  ever_synced_ = true;
  ++syncs_;
  full_syncs_ += full;
  if (!dirty_) first_pending_ = {};
  return {};
}

void SyncLoop::run(std::stop_token stop) {
  auto last_sync = std::chrono::steady_clock::time_point{};
  std::chrono::seconds retry_delay{1};
  while (!stop.stop_requested()) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, stop, [&] { return dirty_ && listed_[0] && listed_[1]; });
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

SyncLoop::Health SyncLoop::health() const {
  std::lock_guard lk(mu_);
  Health h;
  h.current_time = Clock::now();
  h.last_updated = last_updated_;
  const bool pending_too_long = dirty_ && first_pending_ != Clock::time_point{} &&
                                h.current_time - first_pending_ > health_timeout_;
  h.healthy = ever_synced_ && !pending_too_long;
  return h;
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
