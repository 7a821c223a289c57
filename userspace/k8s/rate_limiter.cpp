#include "k8s/rate_limiter.h"

#include <algorithm>
#include <condition_variable>

namespace kpx::k8s {

RateLimiter::RateLimiter(double qps, int burst)
    : qps_(qps), burst_(std::max(burst, 1)), tokens_(std::max(burst, 1)), last_(Clock::now()) {}

void RateLimiter::refill(Clock::time_point now) const {
  double elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min<double>(burst_, tokens_ + elapsed * qps_);
  last_ = now;
}

std::chrono::nanoseconds RateLimiter::delay() const {
  if (qps_ <= 0) return {};
  std::lock_guard lk(mu_);
  refill(Clock::now());
  if (tokens_ >= 1) return {};
  return std::chrono::nanoseconds(static_cast<int64_t>((1 - tokens_) / qps_ * 1e9));
}

bool RateLimiter::wait(std::stop_token stop) {
  if (qps_ <= 0) return !stop.stop_requested();
  Clock::time_point until;
  {
    std::lock_guard lk(mu_);
    auto now = Clock::now();
    refill(now);
    tokens_ -= 1;  // reserved now, so later callers queue behind this one
    if (tokens_ >= 0) return true;
    until = now + std::chrono::nanoseconds(static_cast<int64_t>(-tokens_ / qps_ * 1e9));
  }
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lk(mu);
  cv.wait_until(lk, stop, until, [] { return false; });
  if (!stop.stop_requested()) return true;
  std::lock_guard back(mu_);
  tokens_ += 1;
  return false;
}

}  // namespace kpx::k8s
