#include "dataplane/filter.h"

#include <algorithm>
#include <vector>

namespace kpx::dataplane {

void Filter::add(uint32_t slot, uint8_t bits) {
  slot &= KPX_FILTER_SLOTS - 1;
  auto& c = counts_[slot];
  for (int b = 0; b < 8; ++b)
    if (bits & (1u << b)) ++c[b];
  dirty_.insert(slot / 8);
}

void Filter::remove(uint32_t slot, uint8_t bits) {
  slot &= KPX_FILTER_SLOTS - 1;
  auto it = counts_.find(slot);
  if (it == counts_.end()) return;
  bool any = false;
  for (int b = 0; b < 8; ++b) {
    if ((bits & (1u << b)) && it->second[b] > 0) --it->second[b];
    any |= it->second[b] > 0;
  }
  if (!any) counts_.erase(it);
  dirty_.insert(slot / 8);
}

uint8_t Filter::bits(uint32_t slot) const {
  auto it = counts_.find(slot & (KPX_FILTER_SLOTS - 1));
  if (it == counts_.end()) return 0;
  uint8_t out = 0;
  for (int b = 0; b < 8; ++b)
    if (it->second[b] > 0) out |= static_cast<uint8_t>(1u << b);
  return out;
}

uint64_t Filter::word(uint32_t w) const {
  uint64_t v = 0;
  for (uint32_t i = 0; i < 8; ++i) v |= static_cast<uint64_t>(bits(w * 8 + i)) << (8 * i);
  return v;
}

Status Filter::load(const bpf::Map<uint32_t, uint64_t>& map) {
  mirror_.assign(KPX_FILTER_WORDS, 0);
  map.scan([&](const uint32_t& w, const uint64_t& v) {
    if (w < KPX_FILTER_WORDS) mirror_[w] = v;
  });
  all_dirty_ = true;
  return {};
}

Status Filter::flush(bpf::Map<uint32_t, uint64_t>& map) {
  // Without load() the map's content is unknown: every dirty word is written.
  const bool known = !mirror_.empty();
  if (!known) mirror_.assign(KPX_FILTER_WORDS, 0);
  std::vector<uint32_t> keys;
  std::vector<uint64_t> values;
  auto consider = [&](uint32_t w) {
    uint64_t v = word(w);
    if (known && v == mirror_[w]) return;
    keys.push_back(w);
    values.push_back(v);
  };
  if (all_dirty_) {
    std::vector<uint64_t> want(KPX_FILTER_WORDS, 0);
    for (const auto& [slot, c] : counts_) want[slot / 8] = word(slot / 8);
    for (uint32_t w = 0; w < KPX_FILTER_WORDS; ++w)
      if (want[w] != mirror_[w]) {
        keys.push_back(w);
        values.push_back(want[w]);
      }
  } else {
    for (uint32_t w : dirty_) consider(w);
  }
  for (size_t i = 0; i < keys.size(); i += 65536) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(65536, keys.size() - i)), done = 0;
    if (auto st = map.update_batch(keys.data() + i, values.data() + i, n, &done); !st.ok()) {
      for (size_t j = i + done; j < i + n; ++j) KPX_TRY(map.update(keys[j], values[j]));
    }
  }
  for (size_t i = 0; i < keys.size(); ++i) mirror_[keys[i]] = values[i];
  dirty_.clear();
  all_dirty_ = false;
  return {};
}

}  // namespace kpx::dataplane

namespace kpx::dataplane {

SlotAllocator::SlotAllocator(uint32_t capacity) {
  if (capacity) put(0, capacity);
}

void SlotAllocator::put(uint32_t base, uint32_t len) {
  free_[base] = len;
  by_len_.insert({len, base});
}

void SlotAllocator::take(std::map<uint32_t, uint32_t>::iterator it) {
  by_len_.erase({it->second, it->first});
  free_.erase(it);
}

std::optional<uint32_t> SlotAllocator::allocate(uint32_t n) {
  if (n == 0) return 0u;
  auto fit = by_len_.lower_bound({n, 0});
  if (fit == by_len_.end()) return std::nullopt;
  const uint32_t len = fit->first, base = fit->second;
  take(free_.find(base));
  if (len > n) put(base + n, len - n);
  return base;
}

void SlotAllocator::release(uint32_t base, uint32_t n) {
  if (n == 0) return;
  // Any part already free (a double release): nothing changes.
  auto after = free_.lower_bound(base);
  if (after != free_.end() && after->first < base + n) return;
  auto prev = after == free_.begin() ? free_.end() : std::prev(after);
  if (prev != free_.end() && prev->first + prev->second > base) return;
  uint32_t len = n;
  if (after != free_.end() && after->first == base + n) {
    len += after->second;
    take(after);
  }
  if (prev != free_.end() && prev->first + prev->second == base) {
    base = prev->first;
    len += prev->second;
    take(prev);
  }
  put(base, len);
}

bool SlotAllocator::reserve(uint32_t base, uint32_t n) {
  if (n == 0) return true;
  auto it = free_.upper_bound(base);
  if (it == free_.begin()) return false;
  --it;
  uint32_t fbase = it->first, flen = it->second;
  if (base < fbase || base + n > fbase + flen) return false;
  take(it);
  if (base > fbase) put(fbase, base - fbase);
  if (base + n < fbase + flen) put(base + n, fbase + flen - (base + n));
  return true;
}

uint32_t SlotAllocator::free_slots() const {
  uint32_t n = 0;
  for (const auto& [b, l] : free_) n += l;
  return n;
}

}  // namespace kpx::dataplane
