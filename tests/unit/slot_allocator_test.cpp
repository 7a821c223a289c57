// The kpx_svc_be slot allocator against a brute-force model: random
// allocations and releases never overlap, never leave the capacity, find
// room whenever a long enough free run exists, and coalesce back to one
// range when everything is released.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "dataplane/filter.h"

namespace kpx::dataplane {
namespace {

TEST(SlotAllocator, MatchesABruteForceModelThroughRandomChurn) {
  constexpr uint32_t kCap = 512;
  SlotAllocator a(kCap);
  std::vector<int> owner(kCap, -1);  // slot -> allocation index
  std::vector<std::pair<uint32_t, uint32_t>> live;
  std::mt19937 rng(7);
  auto longest_free_run = [&] {
    uint32_t best = 0, run = 0;
    for (uint32_t s = 0; s < kCap; ++s) {
      run = owner[s] < 0 ? run + 1 : 0;
      best = std::max(best, run);
    }
    return best;
  };
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint32_t n = 1 + rng() % 9;
      auto base = a.allocate(n);
      if (!base) {
        EXPECT_LT(longest_free_run(), n) << "room existed for " << n;
        continue;
      }
      ASSERT_LE(*base + n, kCap);
      for (uint32_t s = *base; s < *base + n; ++s) {
        ASSERT_EQ(owner[s], -1) << "slot " << s << " handed out twice";
        owner[s] = step;
      }
      live.push_back({*base, n});
    } else {
      const size_t i = rng() % live.size();
      auto [base, n] = live[i];
      a.release(base, n);
      a.release(base, n);  // a double release changes nothing
      for (uint32_t s = base; s < base + n; ++s) owner[s] = -1;
      live.erase(live.begin() + static_cast<long>(i));
    }
    uint32_t used = 0;
    for (int o : owner) used += o >= 0;
    ASSERT_EQ(a.free_slots(), kCap - used);
  }
  for (auto [base, n] : live) a.release(base, n);
  EXPECT_EQ(a.free_slots(), kCap);
  EXPECT_EQ(a.allocate(kCap), 0u) << "released ranges coalesce into one";
}

TEST(SlotAllocator, BestFitKeepsLongRunsForLongSets) {
  SlotAllocator a(100);
  auto x = a.allocate(10), y = a.allocate(2), z = a.allocate(10);
  ASSERT_TRUE(x && y && z);
  a.release(*y, 2);  // a 2-slot hole between x and z, and 78 free after z
  EXPECT_EQ(a.allocate(2), *y) << "the shortest range that fits";
  EXPECT_TRUE(a.reserve(50, 5));
  EXPECT_FALSE(a.reserve(52, 1)) << "already used";
  EXPECT_EQ(a.free_slots(), 100u - 10 - 2 - 10 - 5);
}

}  // namespace
}  // namespace kpx::dataplane
