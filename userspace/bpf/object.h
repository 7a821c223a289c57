// The loaded datapath objects: programs and maps, with maps pinned under
// (and reused from) the instance's directory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kpx/abi.h"
#include "status/status.h"

struct kpx_lxc;
struct kpx_uplink;
struct kpx_sock;

namespace kpx::bpf {

class LxcObject {
 public:
  // Load the object with its maps pinned by name in pin_dir: maps already
  // pinned there are reused (their contents survive), missing ones are
  // created and pinned (kpx_ct_v4 with ct_entries entries, 0: the default;
  // a pinned one keeps its size) and kpx_abi is stamped. Pins of another
  // ABI version are refused before anything is loaded. With load_programs
  // false only the maps are made.
  static Result<LxcObject> load(const std::string& pin_dir, bool load_programs = true, uint32_t ct_entries = 0);

  LxcObject(LxcObject&&) noexcept;
  LxcObject& operator=(LxcObject&&) noexcept;
  ~LxcObject();

  int from_pod_fd() const;
  int to_pod_fd() const;
  struct kpx_lxc* skeleton() { return skel_; }

 private:
  explicit LxcObject(struct kpx_lxc* s) : skel_(s) {}
  struct kpx_lxc* skel_ = nullptr;
};

// The uplink datapath object (bpf/kpx_uplink.bpf.c): kpx_from_uplink, for
// the ingress of the node's uplink, on the same pinned maps as LxcObject
// (load an LxcObject on pin_dir first: it creates and stamps them).
class UplinkObject {
 public:
  static Result<UplinkObject> load(const std::string& pin_dir);

  UplinkObject(UplinkObject&&) noexcept;
  UplinkObject& operator=(UplinkObject&&) noexcept;
  ~UplinkObject();

  int from_uplink_fd() const;

 private:
  explicit UplinkObject(struct kpx_uplink* s) : skel_(s) {}
  struct kpx_uplink* skel_ = nullptr;
};

// Socket-level load balancing (bpf/kpx_sock.bpf.c): the cgroup v2 socket
// hooks, on the same pinned maps (load an LxcObject on pin_dir first).
class SockObject {
 public:
  static Result<SockObject> load(const std::string& pin_dir);

  SockObject(SockObject&&) noexcept;
  SockObject& operator=(SockObject&&) noexcept;
  ~SockObject();

  // Attach every hook to the cgroup v2 directory (BPF_F_ALLOW_MULTI, so
  // they stay after the process, as the tc programs do), then detach kpx
  // socket hooks attached there before (a restarted agent's): no moment
  // without them.
  Status attach(const std::string& cgroup_path);

  // Whether destroy_udp_sockets can work (the kernel has bpf_sock_destroy).
  bool can_destroy_udp_sockets() const { return reaper_; }

  // Destroy the connected UDP sockets that these hooks sent to a backend
  // its Service lost ({svc_id, backend}: lost), in each network namespace
  // of netns: "" for the calling thread's, else a path such as
  // /proc/PID/ns/net or /var/run/netns/NAME, entered on a thread of its
  // own. The socket iterator with bpf_sock_destroy (Linux 6.5). The number
  // destroyed.
  Result<uint64_t> destroy_udp_sockets(const std::vector<kpx_sock_lost_key>& lost,
                                       const std::vector<std::string>& netns);

 private:
  SockObject(struct kpx_sock* s, bool reaper) : skel_(s), reaper_(reaper) {}
  struct kpx_sock* skel_ = nullptr;
  bool reaper_ = false;  // the UDP socket iterator loaded (Linux 6.5)
};

// Detach every kpx socket hook (programs named kpx_sock_*) from the cgroup;
// the number detached. keep: program ids to leave.
Result<int> detach_sock_hooks(const std::string& cgroup_path, const std::vector<uint32_t>& keep = {});

}  // namespace kpx::bpf
