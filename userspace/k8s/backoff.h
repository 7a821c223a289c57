// Jittered exponential backoff: initial, doubling up to max; each delay is
// drawn from [d/2, d] so that many clients do not retry in step.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace kpx::k8s {

class Backoff {
 public:
  using Duration = std::chrono::milliseconds;

  Backoff(Duration initial, Duration max);

  // The delay before the next attempt; each call doubles the base.
  Duration next();
  // After a success: the next delay starts from `initial` again.
  void reset() { attempts_ = 0; }
  int attempts() const { return attempts_; }

 private:
  Duration initial_;
  Duration max_;
  int attempts_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace kpx::k8s
