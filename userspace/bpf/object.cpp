#include "bpf/object.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include <utility>

#include "bpf/pinned_maps.h"
#include "net/netns.h"
#include "kpx_lxc.skel.h"
#include "kpx_sock.skel.h"
#include "kpx_uplink.skel.h"

namespace kpx::bpf {

namespace {

// The conntrack map's size: libbpf reuses a pin only if its size matches,
// so a pinned conntrack map keeps the size it was made with.
uint32_t conntrack_size(const std::string& pin_dir, uint32_t ct_entries) {
  uint32_t entries = ct_entries ? ct_entries : KPX_DEFAULT_CT_ENTRIES;
  if (int fd = bpf_obj_get((pin_dir + "/kpx_ct_v4").c_str()); fd >= 0) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) entries = info.max_entries;
    close(fd);
  }
  return entries;
}

}  // namespace

Result<LxcObject> LxcObject::load(const std::string& pin_dir, bool load_programs, uint32_t ct_entries) {
  KPX_TRY(check_pin_dir(pin_dir));
  // Before libbpf reuses any pin: pins of another ABI are never touched.
  KPX_TRY(check_pinned_abi(pin_dir));
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  struct kpx_lxc* skel = kpx_lxc__open_opts(&opts);
  if (!skel) return errno_error("open kpx_lxc BPF object", errno);
  const uint32_t entries = conntrack_size(pin_dir, ct_entries);
  bpf_map__set_max_entries(skel->maps.kpx_ct_v4, entries);
  if (!load_programs) {
    bpf_program__set_autoload(skel->progs.kpx_from_pod, false);
    bpf_program__set_autoload(skel->progs.kpx_to_pod, false);
  }
  if (int rc = kpx_lxc__load(skel); rc != 0) {
    kpx_lxc__destroy(skel);
    return errno_error("load kpx_lxc BPF object (pin dir " + pin_dir + ")", rc);
  }
  // Stamp a new instance's ABI (an existing stamp was checked above).
  uint32_t zero = 0;
  kpx_abi_info info{};
  int abi_fd = bpf_map__fd(skel->maps.kpx_abi);
  if (bpf_map_lookup_elem(abi_fd, &zero, &info) == 0 && info.magic == 0) {
    info.magic = KPX_ABI_MAGIC;
    info.version = KPX_ABI_VERSION;
    info.ct_max_entries = entries;
    if (int rc = bpf_map_update_elem(abi_fd, &zero, &info, BPF_ANY); rc != 0) {
      kpx_lxc__destroy(skel);
      return errno_error("stamp " + pin_dir + "/kpx_abi", rc);
    }
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

Result<UplinkObject> UplinkObject::load(const std::string& pin_dir) {
  KPX_TRY(check_pin_dir(pin_dir));
  KPX_TRY(check_pinned_abi(pin_dir));
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  struct kpx_uplink* skel = kpx_uplink__open_opts(&opts);
  if (!skel) return errno_error("open kpx_uplink BPF object", errno);
  bpf_map__set_max_entries(skel->maps.kpx_ct_v4, conntrack_size(pin_dir, 0));
  if (int rc = kpx_uplink__load(skel); rc != 0) {
    kpx_uplink__destroy(skel);
    return errno_error("load kpx_uplink BPF object (pin dir " + pin_dir + ")", rc);
  }
  return UplinkObject(skel);
}

UplinkObject::UplinkObject(UplinkObject&& o) noexcept : skel_(std::exchange(o.skel_, nullptr)) {}

UplinkObject& UplinkObject::operator=(UplinkObject&& o) noexcept {
  if (this != &o) {
    if (skel_) kpx_uplink__destroy(skel_);
    skel_ = std::exchange(o.skel_, nullptr);
  }
  return *this;
}

UplinkObject::~UplinkObject() {
  if (skel_) kpx_uplink__destroy(skel_);
}

int UplinkObject::from_uplink_fd() const { return bpf_program__fd(skel_->progs.kpx_from_uplink); }

int LxcObject::from_pod_fd() const { return bpf_program__fd(skel_->progs.kpx_from_pod); }
int LxcObject::to_pod_fd() const { return bpf_program__fd(skel_->progs.kpx_to_pod); }

Result<SockObject> SockObject::load(const std::string& pin_dir) {
  KPX_TRY(check_pin_dir(pin_dir));
  KPX_TRY(check_pinned_abi(pin_dir));
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  auto open_skel = [&]() -> struct kpx_sock* {
    struct kpx_sock* skel = kpx_sock__open_opts(&opts);
    if (!skel) return nullptr;
    // The per-socket map of an earlier kpx with another layout (it is
    // kpx_sock's own, outside the ABI check): replaced, as libbpf would
    // refuse to reuse it. Sockets translated before then read their
    // backend's address in recvmsg/getpeername until they close.
    const std::string rev_pin = pin_dir + "/kpx_sock_rev";
    if (int fd = bpf_obj_get(rev_pin.c_str()); fd >= 0) {
      bpf_map_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
          info.value_size != bpf_map__value_size(skel->maps.kpx_sock_rev))
        (void)unlink(rev_pin.c_str());
      close(fd);
    }
    return skel;
  };
  struct kpx_sock* skel = open_skel();
  if (!skel) return errno_error("open kpx_sock BPF object", errno);
  int rc = kpx_sock__load(skel);
  if (rc == 0) return SockObject(skel, /*reaper=*/true);
  kpx_sock__destroy(skel);
  // Before Linux 6.5 (no bpf_sock_destroy) the hooks work without the UDP
  // socket reaper: load them alone.
  skel = open_skel();
  if (!skel) return errno_error("open kpx_sock BPF object", errno);
  bpf_program__set_autoload(skel->progs.kpx_sock_udp_reap, false);
  if (kpx_sock__load(skel) == 0) return SockObject(skel, /*reaper=*/false);
  kpx_sock__destroy(skel);
  return errno_error("load kpx_sock BPF object (pin dir " + pin_dir + ")", rc);
}

SockObject::SockObject(SockObject&& o) noexcept : skel_(std::exchange(o.skel_, nullptr)), reaper_(o.reaper_) {}

SockObject& SockObject::operator=(SockObject&& o) noexcept {
  if (this != &o) {
    if (skel_) kpx_sock__destroy(skel_);
    skel_ = std::exchange(o.skel_, nullptr);
    reaper_ = o.reaper_;
  }
  return *this;
}

SockObject::~SockObject() {
  if (skel_) kpx_sock__destroy(skel_);
}

namespace {

constexpr bpf_attach_type kSockHooks[] = {BPF_CGROUP_INET4_CONNECT,     BPF_CGROUP_UDP4_SENDMSG,
                                          BPF_CGROUP_UDP4_RECVMSG,      BPF_CGROUP_INET4_GETPEERNAME,
                                          BPF_CGROUP_INET6_CONNECT,     BPF_CGROUP_UDP6_SENDMSG,
                                          BPF_CGROUP_UDP6_RECVMSG,      BPF_CGROUP_INET6_GETPEERNAME};

Result<int> open_cgroup(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error("open cgroup " + path, errno);
  return fd;
}

uint32_t prog_id(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

Status SockObject::attach(const std::string& cgroup_path) {
  auto cg = open_cgroup(cgroup_path);
  if (!cg) return cg.error();
  const int progs[] = {bpf_program__fd(skel_->progs.kpx_sock_connect4),     bpf_program__fd(skel_->progs.kpx_sock_sendmsg4),
                       bpf_program__fd(skel_->progs.kpx_sock_recvmsg4),     bpf_program__fd(skel_->progs.kpx_sock_getpeername4),
                       bpf_program__fd(skel_->progs.kpx_sock_connect6),     bpf_program__fd(skel_->progs.kpx_sock_sendmsg6),
                       bpf_program__fd(skel_->progs.kpx_sock_recvmsg6),     bpf_program__fd(skel_->progs.kpx_sock_getpeername6)};
  std::vector<uint32_t> mine;
  for (size_t i = 0; i < std::size(kSockHooks); ++i) {
    if (bpf_prog_attach(progs[i], *cg, kSockHooks[i], BPF_F_ALLOW_MULTI) != 0) {
      const int e = errno;
      close(*cg);
      (void)detach_sock_hooks(cgroup_path, {});
      return errno_error("attach the socket hooks to " + cgroup_path, e);
    }
    mine.push_back(prog_id(progs[i]));
  }
  close(*cg);
  auto old = detach_sock_hooks(cgroup_path, mine);
  if (!old) return old.error();
  return {};
}

namespace {

// One run of the UDP socket iterator in the calling thread's network
// namespace (the one an iterator is made in is the one it walks).
Status run_udp_iterator(bpf_link* link) {
  int fd = bpf_iter_create(bpf_link__fd(link));
  if (fd < 0) return errno_error("create the UDP socket iterator", errno);
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
  }
  const int e = errno;
  close(fd);
  if (n < 0) return errno_error("run the UDP socket iterator", e);
  return {};
}

Status run_udp_iterator_in(bpf_link* link, const std::string& netns_path) {
  Status st;
  // On a thread of its own: whatever happens, the caller's stays where it is.
  std::thread t([&] {
    auto scope = net::NetnsScope::enter_path(netns_path);
    if (!scope) st = scope.error();
    else st = run_udp_iterator(link);
  });
  t.join();
  return st;
}

}  // namespace

Result<uint64_t> SockObject::destroy_udp_sockets(const std::vector<kpx_sock_lost_key>& lost,
                                                 const std::vector<std::string>& netns) {
  if (!reaper_)
    return failed_precondition("destroying UDP sockets needs bpf_sock_destroy (Linux 6.5); connected UDP sockets keep a "
                       "removed backend until closed");
  const uint64_t before = __atomic_load_n(&skel_->bss->kpx_sock_reaped, __ATOMIC_RELAXED);
  const int map = bpf_map__fd(skel_->maps.kpx_sock_lost);
  bpf_link* link = bpf_program__attach_iter(skel_->progs.kpx_sock_udp_reap, nullptr);
  if (!link) return errno_error("attach the UDP socket iterator", errno);
  Status first_error;
  const uint8_t one = 1;
  for (size_t at = 0; at < lost.size(); at += KPX_SOCK_LOST_MAX) {
    const size_t end = std::min(lost.size(), at + size_t{KPX_SOCK_LOST_MAX});
    for (size_t i = at; i < end; ++i)
      if (bpf_map_update_elem(map, &lost[i], &one, BPF_ANY) != 0 && first_error.ok())
        first_error = errno_error("fill kpx_sock_lost", errno);
    for (const auto& ns : netns) {
      // A namespace gone since it was listed has no sockets left to destroy.
      Status s = ns.empty() ? run_udp_iterator(link) : run_udp_iterator_in(link, ns);
      if (!s.ok() && first_error.ok() && (ns.empty() || access(ns.c_str(), F_OK) == 0)) first_error = s;
    }
    for (size_t i = at; i < end; ++i) (void)bpf_map_delete_elem(map, &lost[i]);
  }
  bpf_link__destroy(link);
  if (!first_error.ok()) return first_error.error();
  return __atomic_load_n(&skel_->bss->kpx_sock_reaped, __ATOMIC_RELAXED) - before;
}

Result<int> detach_sock_hooks(const std::string& cgroup_path, const std::vector<uint32_t>& keep) {
  auto cg = open_cgroup(cgroup_path);
  if (!cg) return cg.error();
  int detached = 0;
  for (bpf_attach_type type : kSockHooks) {
    uint32_t ids[64], count = 64, flags = 0;
    if (bpf_prog_query(*cg, type, 0, &flags, ids, &count) != 0) continue;
    for (uint32_t i = 0; i < count; ++i) {
      if (std::find(keep.begin(), keep.end(), ids[i]) != keep.end()) continue;
      int fd = bpf_prog_get_fd_by_id(ids[i]);
      if (fd < 0) continue;
      bpf_prog_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && std::strncmp(info.name, "kpx_sock_", 9) == 0 &&
          bpf_prog_detach2(fd, *cg, type) == 0)
        ++detached;
      close(fd);
    }
  }
  close(*cg);
  return detached;
}

}  // namespace kpx::bpf
