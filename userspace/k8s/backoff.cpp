#include "k8s/backoff.h"

#include <algorithm>

namespace kpx::k8s {

Backoff::Backoff(Duration initial, Duration max)
    : initial_(std::max(initial, Duration(1))), max_(std::max(max, initial_)), rng_(std::random_device{}()) {}

Backoff::Duration Backoff::next() {
  // initial * 2^attempts, without overflowing on long outages.
  Duration base = initial_;
  for (int i = 0; i < attempts_ && base < max_; ++i) base *= 2;
  base = std::min(base, max_);
  ++attempts_;
  std::uniform_int_distribution<int64_t> half(base.count() / 2, base.count());
  return Duration(half(rng_));
}

}  // namespace kpx::k8s
