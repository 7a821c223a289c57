#include "k8s/backoff.h"

#include <algorithm>

namespace kpx::k8s {

Backoff::Backoff(Duration initial, Duration max, Duration reset_after, Now now)
    : initial_(std::max(initial, Duration(1))),
      max_(std::max(max, initial_)),
      reset_after_(reset_after),
      now_(now ? std::move(now) : Now([] { return Clock::now(); })),
      rng_(std::random_device{}()) {}

Backoff::Duration Backoff::next() {
  const auto now = now_();
  // client-go's rule: only a quiet spell longer than reset_after starts over.
  if (taken_ && now - last_ > reset_after_) attempts_ = 0;
  taken_ = true;
  last_ = now;
  // initial * 2^attempts, without overflowing on long outages.
  Duration base = initial_;
  for (int i = 0; i < attempts_ && base < max_; ++i) base *= 2;
  base = std::min(base, max_);
  ++attempts_;
  std::uniform_int_distribution<int64_t> jitter(0, base.count());
  return base + Duration(jitter(rng_));
}

}  // namespace kpx::k8s
