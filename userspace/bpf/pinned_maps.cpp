#include "bpf/pinned_maps.h"

#include <bpf/bpf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "bpf/object.h"

namespace kpx::bpf {

namespace {

const char* const kAllMaps[] = {KPX_MAP_SERVICES_V4, KPX_MAP_SERVICE_BACKENDS, KPX_MAP_BACKENDS_V4,
                                KPX_MAP_REVNAT_V4,   KPX_MAP_CONNTRACK_V4,     KPX_MAP_COUNTERS,
                                KPX_MAP_CONFIG,      KPX_MAP_CT_CACHE_V4};

bool on_bpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

Result<UniqueFd> get_pinned(const std::string& dir, const char* name) {
  std::string path = dir + "/" + name;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    if (errno == ENOENT) return not_found("no kpx map " + path);
    return errno_error("open pinned map " + path, errno);
  }
  return UniqueFd(fd);
}

}  // namespace

Status check_pin_dir(const std::string& pin_dir) {
  namespace fs = std::filesystem;
  if (pin_dir.empty() || pin_dir[0] != '/')
    return invalid_argument("pin dir '" + pin_dir + "' must be an absolute path");
  fs::path p(pin_dir);
  std::string parent = p.parent_path().string();
  if (!on_bpffs(parent))
    return invalid_argument("pin dir '" + pin_dir + "': " + parent + " is not a bpffs mount");
  std::error_code ec;
  if (fs::exists(p, ec) && !fs::is_directory(p, ec))
    return invalid_argument("pin dir '" + pin_dir + "' exists and is not a directory");
  return {};
}

Result<PinnedMaps> PinnedMaps::open(const std::string& pin_dir) {
  KPX_TRY(check_pin_dir(pin_dir));
  PinnedMaps m;
  auto open_one = [&](const char* name) { return get_pinned(pin_dir, name); };
#define KPX_OPEN(field, name)          \
  do {                                 \
    auto fd = open_one(name);          \
    if (!fd) return fd.error();        \
    m.field = decltype(m.field)(std::move(*fd)); \
  } while (0)
  KPX_OPEN(services, KPX_MAP_SERVICES_V4);
  KPX_OPEN(service_backends, KPX_MAP_SERVICE_BACKENDS);
  KPX_OPEN(backends, KPX_MAP_BACKENDS_V4);
  KPX_OPEN(revnat, KPX_MAP_REVNAT_V4);
  KPX_OPEN(conntrack, KPX_MAP_CONNTRACK_V4);
  KPX_OPEN(config, KPX_MAP_CONFIG);
#undef KPX_OPEN
  auto c = open_one(KPX_MAP_COUNTERS);
  if (!c) return c.error();
  m.counters = std::move(*c);
  return m;
}

Result<PinnedMaps> PinnedMaps::open_or_create(const std::string& pin_dir) {
  auto m = open(pin_dir);
  if (m.ok() || m.error().kind != ErrorKind::kNotFound) return m;
  // Loading the object without its programs creates and pins the maps
  // (and reuses any already there, should only some be missing).
  auto obj = LxcObject::load(pin_dir, /*load_programs=*/false);
  if (!obj) return obj.error();
  return open(pin_dir);
}

kpx_config PinnedMaps::read_config() const { return config.lookup(0).value_or(kpx_config{}); }

Status PinnedMaps::bump_ct_epoch() {
  kpx_config c = read_config();
  ++c.ct_epoch;
  return config.update(0, c);
}

Status remove_pin_dir(const std::string& pin_dir) {
  KPX_TRY(check_pin_dir(pin_dir));
  if (!std::filesystem::exists(pin_dir)) return {};
  for (const char* name : kAllMaps) {
    std::string path = pin_dir + "/" + name;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unpin " + path, errno);
  }
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return errno_error("remove " + pin_dir + " (does it hold pins kpx did not make?)", errno);
  return {};
}

}  // namespace kpx::bpf
