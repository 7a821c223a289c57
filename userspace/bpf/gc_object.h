// The conntrack reaper program (bpf/kpx_gc.bpf.c), loaded against an
// instance's pinned maps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kpx/abi.h"
#include "status/status.h"

struct kpx_gc;

namespace kpx::bpf {

struct ReapItem {
  kpx_ct_key_v4 key;
  uint32_t gen;
};

class GcObject {
 public:
  // The maps must exist (the agent or the CLI made them).
  static Result<GcObject> load(const std::string& pin_dir);
  GcObject(GcObject&&) noexcept;
  GcObject& operator=(GcObject&&) noexcept;
  ~GcObject();

  // Remove each entry that still holds its gen; returns how many were removed.
  Result<size_t> reap(const std::vector<ReapItem>& items);

 private:
  explicit GcObject(struct kpx_gc* s) : skel_(s) {}
  struct kpx_gc* skel_ = nullptr;
};

}  // namespace kpx::bpf
