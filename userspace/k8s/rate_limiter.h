// Client-side rate limit of API requests, as client-go's
// flowcontrol.NewTokenBucketRateLimiter(qps, burst): a bucket of `burst`
// tokens, full at start, refilled at `qps` a second; every request takes
// one, waiting its turn (reservations are first come, first served). A
// process of many reflectors cannot flood the API server after a restart.
#pragma once

#include <chrono>
#include <mutex>
#include <stop_token>

namespace kpx::k8s {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // qps <= 0: no limit (client-go: a negative QPS turns the limiter off).
  RateLimiter(double qps, int burst);

  // Takes a token, waiting until it is there; false when stop came first
  // (the token is then given back).
  bool wait(std::stop_token stop = {});
  // The wait the next request would have, without taking anything.
  std::chrono::nanoseconds delay() const;
  double qps() const { return qps_; }
  int burst() const { return burst_; }

 private:
  void refill(Clock::time_point now) const;  // under mu_

  const double qps_;
  const int burst_;
  mutable std::mutex mu_;
  mutable double tokens_;  // may go below 0: reserved by waiting requests
  mutable Clock::time_point last_;
};

}  // namespace kpx::k8s
