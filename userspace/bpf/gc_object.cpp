#include "bpf/gc_object.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "bpf/pinned_maps.h"
#include "kpx_gc.skel.h"

namespace kpx::bpf {

namespace {
// Mirrors bpf/kpx_gc.bpf.c: KPX_REAP_BATCH and struct kpx_reap_args.
constexpr uint32_t kReapBatch = 4096;
struct ReapArgs {
  uint32_t n;
  uint32_t reaped;
};
static_assert(sizeof(ReapItem) == 24);
}  // namespace

Result<GcObject> GcObject::load(const std::string& pin_dir) {
  KPX_TRY(check_pin_dir(pin_dir));
  KPX_TRY(check_pinned_abi(pin_dir));
  int fd = bpf_obj_get((pin_dir + "/kpx_ct_v4").c_str());
  if (fd < 0) return not_found("no kpx maps in " + pin_dir);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  close(fd);
  if (rc != 0) return errno_error("read info of " + pin_dir + "/kpx_ct_v4", rc);
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  struct kpx_gc* skel = kpx_gc__open_opts(&opts);
  if (!skel) return errno_error("open kpx_gc BPF object", errno);
  bpf_map__set_max_entries(skel->maps.kpx_ct_v4, info.max_entries);
  if (int lrc = kpx_gc__load(skel); lrc != 0) {
    kpx_gc__destroy(skel);
    return errno_error("load kpx_gc BPF object (pin dir " + pin_dir + ")", lrc);
  }
  return GcObject(skel);
}

GcObject::GcObject(GcObject&& o) noexcept : skel_(std::exchange(o.skel_, nullptr)) {}
GcObject& GcObject::operator=(GcObject&& o) noexcept {
  if (this != &o) {
    if (skel_) kpx_gc__destroy(skel_);
    skel_ = std::exchange(o.skel_, nullptr);
  }
  return *this;
}
GcObject::~GcObject() {
  if (skel_) kpx_gc__destroy(skel_);
}

Result<size_t> GcObject::reap(const std::vector<ReapItem>& items) {
  size_t reaped = 0;
  const int items_fd = bpf_map__fd(skel_->maps.kpx_reap_items);
  std::vector<uint32_t> keys(kReapBatch);
  for (uint32_t i = 0; i < kReapBatch; ++i) keys[i] = i;
  for (size_t i = 0; i < items.size(); i += kReapBatch) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(kReapBatch, items.size() - i));
    uint32_t count = n;
    LIBBPF_OPTS(bpf_map_batch_opts, bo);
    if (int rc = bpf_map_update_batch(items_fd, keys.data(), items.data() + i, &count, &bo); rc != 0)
      return errno_error("write the conntrack reaper's list", rc);
    ReapArgs args{n, 0};
    LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &args, .ctx_size_in = sizeof(args));
    if (int rc = bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.kpx_ct_reap), &o); rc != 0)
      return errno_error("run the conntrack reaper", rc);
    reaped += args.reaped;
  }
  return reaped;
}

}  // namespace kpx::bpf
