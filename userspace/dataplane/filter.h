// The classification filter (kpx_filter, see kpx/abi.h): userspace keeps a
// reference count per slot and bit and writes only the words that changed.
// A bit is set while anything needs it (a frontend, a backend, a node
// address, or a flow conntrack still holds through a removed one).
#pragma once

#include <array>
#include <map>
#include <optional>
#include <cstdint>
#include <set>
#include <unordered_map>
#include <vector>

#include "bpf/map.h"
#include "kpx/abi.h"
#include "status/status.h"

namespace kpx::dataplane {

class Filter {
 public:
  void add(uint32_t slot, uint8_t bits);
  void remove(uint32_t slot, uint8_t bits);
  uint8_t bits(uint32_t slot) const;
  // Read what the map holds (recovery): flush then writes only the words
  // whose content differs.
  Status load(const bpf::Map<uint32_t, uint64_t>& map);
  // Write every word changed since the last flush (every differing word
  // after load()).
  Status flush(bpf::Map<uint32_t, uint64_t>& map);
  // Slots with at least one bit set.
  size_t used_slots() const { return counts_.size(); }

 private:
  uint64_t word(uint32_t w) const;
  std::unordered_map<uint32_t, std::array<uint32_t, 8>> counts_;
  std::set<uint32_t> dirty_;
  bool all_dirty_ = false;
  std::vector<uint64_t> mirror_;  // what the map holds (after load or flush)
};

}  // namespace kpx::dataplane

namespace kpx::dataplane {

// The filter slots live conntrack flows go through (their frontend address
// and their backend), so a removed frontend's or backend's bits stay while
// flows still need them (bpf/kpx_lxc.bpf.c passes traffic whose bits are
// clear without a conntrack lookup).
struct FlowRefs {
  std::set<uint32_t> frontend_slots;  // kpx_filter_slot_addr_v4(FORWARD daddr)
  std::set<uint32_t> backend_slots;   // kpx_filter_slot_backend_v4(backend, proto), and (0, NodePort, proto)
};

// Free-list allocator of kpx_svc_be slot ranges: best fit (the shortest
// free range that holds n, the lowest of those), coalescing; O(log ranges)
// per call, however fragmented the slots are.
class SlotAllocator {
 public:
  explicit SlotAllocator(uint32_t capacity = KPX_MAX_SERVICE_SLOTS);
  // The base of n free slots (n > 0), or nothing when no range is that long.
  std::optional<uint32_t> allocate(uint32_t n);
  void release(uint32_t base, uint32_t n);
  // Mark [base, base+n) used (recovery); false if any of it was not free.
  bool reserve(uint32_t base, uint32_t n);
  uint32_t free_slots() const;

 private:
  void put(uint32_t base, uint32_t len);
  void take(std::map<uint32_t, uint32_t>::iterator it);
  std::map<uint32_t, uint32_t> free_;            // base -> length
  std::set<std::pair<uint32_t, uint32_t>> by_len_;  // (length, base) of every free range
};

}  // namespace kpx::dataplane
