#include "bpf/pinned_maps.h"

#include <bpf/bpf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "bpf/object.h"

namespace kpx::bpf {

namespace {

// Pin names of kpx before ABI versioning (v1), removed by --cleanup too.
const char* const kV1Maps[] = {"kpx_svc_v4",   "kpx_svc_be",   "kpx_be_v4",  "kpx_revnat_v4",
                               "kpx_ct_v4",    "kpx_counters", "kpx_config", "kpx_ct_cache_v4"};

bool on_bpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

bool pinned(const std::string& dir, const char* name) {
  struct stat st {};
  return ::stat((dir + "/" + name).c_str(), &st) == 0;
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

std::string cleanup_hint(const std::string& dir) {
  return "stop the kpx agent of this instance and run `kpx agent --cleanup --pin-dir " + dir +
         "` (established Service connections are reset), then start this kpx";
}

// The pinned map must be what KPX_MAPS says it is, or kpx would misread it.
Status check_spec(const std::string& dir, const MapSpec& spec, int fd, uint32_t* max_entries) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (int rc = bpf_obj_get_info_by_fd(fd, &info, &len); rc != 0)
    return errno_error("read info of pinned map " + dir + "/" + spec.name, rc);
  if (info.type != spec.type || info.key_size != spec.key_size || info.value_size != spec.value_size)
    return failed_precondition("pinned map " + dir + "/" + spec.name + " has type " + std::to_string(info.type) +
                               ", key " + std::to_string(info.key_size) + " B, value " +
                               std::to_string(info.value_size) + " B; kpx map ABI v" +
                               std::to_string(KPX_ABI_VERSION) + " expects type " + std::to_string(spec.type) +
                               ", key " + std::to_string(spec.key_size) + " B, value " +
                               std::to_string(spec.value_size) + " B: " + cleanup_hint(dir));
  if (max_entries) *max_entries = info.max_entries;
  return {};
}

}  // namespace

const std::vector<MapSpec>& map_specs() {
  static const std::vector<MapSpec> specs = {
#define KPX_SPEC(name, type, key, value, max) \
  {#name, BPF_MAP_TYPE_##type, sizeof(key), sizeof(value), max},
      KPX_MAPS(KPX_SPEC)
#undef KPX_SPEC
  };
  return specs;
}

Result<uint32_t> pinned_abi_version(const std::string& pin_dir) {
  if (!pinned(pin_dir, "kpx_abi")) {
    for (const auto& s : map_specs())
      if (pinned(pin_dir, s.name)) return 1u;
    for (const char* n : kV1Maps)
      if (pinned(pin_dir, n)) return 1u;
    return 0u;
  }
  auto fd = get_pinned(pin_dir, "kpx_abi");
  if (!fd) return fd.error();
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (int rc = bpf_obj_get_info_by_fd(fd->get(), &info, &len); rc != 0)
    return errno_error("read info of " + pin_dir + "/kpx_abi", rc);
  // Read the fixed head only: a later ABI may grow kpx_abi_info.
  if (info.type != BPF_MAP_TYPE_ARRAY || info.key_size != 4 || info.value_size < 8 || info.value_size > 4096)
    return failed_precondition(pin_dir + "/kpx_abi is not a kpx ABI map: " + cleanup_hint(pin_dir));
  std::vector<uint8_t> buf(info.value_size);
  uint32_t zero = 0;
  if (int rc = bpf_map_lookup_elem(fd->get(), &zero, buf.data()); rc != 0)
    return errno_error("read " + pin_dir + "/kpx_abi", rc);
  uint32_t head[2];
  std::copy(buf.begin(), buf.begin() + 8, reinterpret_cast<uint8_t*>(head));
  if (head[0] != KPX_ABI_MAGIC)
    return failed_precondition(pin_dir + "/kpx_abi carries no kpx ABI magic: " + cleanup_hint(pin_dir));
  return head[1];
}

Status check_pinned_abi(const std::string& pin_dir) {
  auto v = pinned_abi_version(pin_dir);
  if (!v) return v.error();
  if (*v == 0 || *v == KPX_ABI_VERSION) return {};
  return failed_precondition("the maps pinned in " + pin_dir + " are kpx map ABI v" + std::to_string(*v) +
                             "; this kpx uses v" + std::to_string(KPX_ABI_VERSION) +
                             " and will not read them: " + cleanup_hint(pin_dir));
}

uint32_t conntrack_entries(uint32_t max_per_core, uint32_t min, uint32_t ncpu) {
  if (max_per_core == 0) return KPX_DEFAULT_CT_ENTRIES;
  uint64_t conns = std::max<uint64_t>(static_cast<uint64_t>(max_per_core) * std::max<uint32_t>(ncpu, 1), min);
  uint64_t entries = std::clamp<uint64_t>(conns * 2, KPX_MIN_CT_ENTRIES, 1u << 30);
  return static_cast<uint32_t>(entries);
}

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
  KPX_TRY(check_pinned_abi(pin_dir));
  PinnedMaps m;
  for (const auto& spec : map_specs()) {
    auto fd = get_pinned(pin_dir, spec.name);
    if (!fd) return fd.error();
    uint32_t max_entries = 0;
    KPX_TRY(check_spec(pin_dir, spec, fd->get(), &max_entries));
    const std::string n = spec.name;
    if (n == "kpx_abi") m.abi = decltype(m.abi)(std::move(*fd));
    else if (n == "kpx_svc_v4") m.services = decltype(m.services)(std::move(*fd));
    else if (n == "kpx_svc_be") m.service_slots = decltype(m.service_slots)(std::move(*fd));
    else if (n == "kpx_be_v4") m.backends = decltype(m.backends)(std::move(*fd));
    else if (n == "kpx_ct_v4") {
      m.conntrack = decltype(m.conntrack)(std::move(*fd));
      m.ct_max_entries = max_entries;
    } else if (n == "kpx_ct_ver") m.ct_versions = decltype(m.ct_versions)(std::move(*fd));
    else if (n == "kpx_ct_budget") m.ct_budget = decltype(m.ct_budget)(std::move(*fd));
    else if (n == "kpx_filter") m.filter = decltype(m.filter)(std::move(*fd));
    else if (n == "kpx_node_addr_v4") m.node_addrs = decltype(m.node_addrs)(std::move(*fd));
    else if (n == "kpx_config") m.config = decltype(m.config)(std::move(*fd));
    else if (n == "kpx_lb_src_v4") m.source_ranges = decltype(m.source_ranges)(std::move(*fd));
    else if (n == "kpx_nomasq_v4") m.nomasq = decltype(m.nomasq)(std::move(*fd));
    else if (n == "kpx_affinity_v4") m.affinity = decltype(m.affinity)(std::move(*fd));
    else if (n == "kpx_counters") m.counters = std::move(*fd);
    else if (n == "kpx_ct_cache_v4") m.ct_cache = std::move(*fd);
    else return invalid_argument("kpx map " + n + " has no place in PinnedMaps");  // a new KPX_MAPS entry
  }
  auto info = m.abi.lookup(0);
  if (!info || info->magic != KPX_ABI_MAGIC || info->version != KPX_ABI_VERSION)
    return failed_precondition("the maps in " + pin_dir + " were never stamped with their ABI: " +
                               cleanup_hint(pin_dir));
  return m;
}

Result<PinnedMaps> PinnedMaps::open_or_create(const std::string& pin_dir, uint32_t ct_entries) {
  auto m = open(pin_dir);
  if (m.ok() || m.error().kind != ErrorKind::kNotFound) return m;
  // Loading the object without its programs creates and pins the maps
  // (and reuses any already there, should only some be missing), then
  // stamps kpx_abi.
  auto obj = LxcObject::load(pin_dir, /*load_programs=*/false, ct_entries);
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
  auto unpin = [&](const char* name) -> Status {
    std::string path = pin_dir + "/" + name;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unpin " + path, errno);
    return {};
  };
  for (const auto& s : map_specs()) KPX_TRY(unpin(s.name));
  for (const char* n : kV1Maps) KPX_TRY(unpin(n));
  // Maps of one object, outside the shared list: kpx_sock's per-socket
  // state (kept pinned so that a restarted agent's hooks read it).
  for (const char* n : {"kpx_sock_rev"}) KPX_TRY(unpin(n));
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return errno_error("remove " + pin_dir + " (does it hold pins kpx did not make?)", errno);
  return {};
}

}  // namespace kpx::bpf
