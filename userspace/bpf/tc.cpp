#include "bpf/tc.h"

#include <bpf/libbpf.h>

#include <cerrno>

#include "bpf/log.h"

namespace kpx::bpf {

namespace {

bpf_tc_hook hook_for(int ifindex, bool ingress) {
  bpf_tc_hook h{};
  h.sz = sizeof(h);
  h.ifindex = ifindex;
  h.attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  return h;
}

bpf_tc_opts kpx_opts(int prog_fd) {
  bpf_tc_opts o{};
  o.sz = sizeof(o);
  o.handle = kTcHandle;
  o.priority = kTcPriority;
  o.prog_fd = prog_fd;
  return o;
}

}  // namespace

Status tc_attach(int ifindex, int from_pod_fd, int to_pod_fd) {
  for (bool ingress : {true, false}) {
    if (!ingress && to_pod_fd < 0) continue;  // ingress only
    bpf_tc_hook h = hook_for(ifindex, ingress);
    bpf_tc_opts o = kpx_opts(ingress ? from_pod_fd : to_pod_fd);
    o.flags = BPF_TC_F_REPLACE;
    int rc;
    {
      QuietLibbpf quiet;  // fails when the qdisc is missing: handled below
      rc = bpf_tc_attach(&h, &o);
    }
    if (rc != 0 && ingress) {
      // No clsact qdisc yet: create it once, then attach. (Creating it
      // unconditionally makes the kernel complain when it exists.)
      bpf_tc_hook qdisc = h;
      qdisc.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      if (int qrc = bpf_tc_hook_create(&qdisc); qrc != 0 && qrc != -EEXIST)
        return errno_error("create clsact qdisc on ifindex " + std::to_string(ifindex), qrc);
      o = kpx_opts(from_pod_fd);
      o.flags = BPF_TC_F_REPLACE;
      rc = bpf_tc_attach(&h, &o);
    }
    if (rc != 0)
      return errno_error(std::string("attach tc ") + (ingress ? "ingress" : "egress") + " on ifindex " +
                             std::to_string(ifindex),
                         rc);
  }
  return {};
}

Status tc_detach(int ifindex) {
  for (bool ingress : {true, false}) {
    bpf_tc_hook h = hook_for(ifindex, ingress);
    bpf_tc_opts o = kpx_opts(0);
    QuietLibbpf quiet;  // "not attached" is fine
    int rc = bpf_tc_detach(&h, &o);
    if (rc != 0 && rc != -ENOENT && rc != -EINVAL)
      return errno_error(std::string("detach tc ") + (ingress ? "ingress" : "egress") + " on ifindex " +
                             std::to_string(ifindex),
                         rc);
  }
  return {};
}

uint32_t tc_attached_prog_id(int ifindex, bool ingress) {
  bpf_tc_hook h = hook_for(ifindex, ingress);
  bpf_tc_opts o = kpx_opts(0);
  QuietLibbpf quiet;
  if (bpf_tc_query(&h, &o) != 0) return 0;
  return o.prog_id;
}

}  // namespace kpx::bpf
