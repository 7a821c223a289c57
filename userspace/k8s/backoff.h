// Jittered exponential backoff as client-go's reflector uses it
// (wait.NewExponentialBackoffManager(800ms, 30s, 2min, 2.0, 1.0)): each
// delay is the base plus up to one base of jitter, [d, 2d]; the base doubles
// up to the cap; it starts over only once `reset_after` has passed since the
// previous delay was taken, so a watch that runs one second and fails again
// does not go back to the shortest delay.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>

namespace kpx::k8s {

class Backoff {
 public:
  using Duration = std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  // now: the clock (tests pass their own).
  Backoff(Duration initial, Duration max, Duration reset_after = std::chrono::minutes(2), Now now = {});

  // The delay before the next attempt.
  Duration next();
  // Start over at `initial` now (an explicit success signal).
  void reset() { attempts_ = 0; }
  int attempts() const { return attempts_; }

 private:
  Duration initial_;
  Duration max_;
  Duration reset_after_;
  Now now_;
  bool taken_ = false;
  Clock::time_point last_{};
  int attempts_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace kpx::k8s
