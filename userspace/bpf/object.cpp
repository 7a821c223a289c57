#include "bpf/object.h"

#include <bpf/libbpf.h>

#include <utility>

#include "bpf/pinned_maps.h"
#include "kpx_lxc.skel.h"

namespace kpx::bpf {

Result<LxcObject> LxcObject::load(const std::string& pin_dir, bool load_programs) {
  KPX_TRY(check_pin_dir(pin_dir));
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  struct kpx_lxc* skel = kpx_lxc__open_opts(&opts);
  if (!skel) return errno_error("open kpx_lxc BPF object", errno);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) {
    kpx_lxc__destroy(skel);
    return errno_error("count possible CPUs", ncpu);
  }
  skel->rodata->kpx_nr_cpus = static_cast<uint32_t>(ncpu);
  if (!load_programs) {
    bpf_program__set_autoload(skel->progs.kpx_from_pod, false);
    bpf_program__set_autoload(skel->progs.kpx_to_pod, false);
  }
  if (int rc = kpx_lxc__load(skel); rc != 0) {
    kpx_lxc__destroy(skel);
    return errno_error("load kpx_lxc BPF object (pin dir " + pin_dir + ")", rc);
  }
  return LxcObject(skel);
}

LxcObject::LxcObject(LxcObject&& o) noexcept : skel_(std::exchange(o.skel_, nullptr)) {}

LxcObject& LxcObject::operator=(LxcObject&& o) noexcept {
  if (this != &o) {
    if (skel_) kpx_lxc__destroy(skel_);
    skel_ = std::exchange(o.skel_, nullptr);
  }
  return *this;
}

LxcObject::~LxcObject() {
  if (skel_) kpx_lxc__destroy(skel_);
}

int LxcObject::from_pod_fd() const { return bpf_program__fd(skel_->progs.kpx_from_pod); }
int LxcObject::to_pod_fd() const { return bpf_program__fd(skel_->progs.kpx_to_pod); }

}  // namespace kpx::bpf
