// The pinned-map ABI: one map list (KPX_MAPS) that the BPF object, the
// pinning code and these tests derive from; the version stamp; refusal of
// pins of another version (older kpx without a stamp, a newer stamp, a map
// of another layout) before anything is loaded or read; the conntrack size.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "bpf/object.h"
#include "bpf/pinned_maps.h"
#include "dataplane/service_writer.h"
#include "kpx_lxc.skel.h"
#include "support/scoped.h"

namespace kpx::bpf {
namespace {

std::set<std::string> pins_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// Pin a map of the given shape under dir/name (what another kpx left).
void pin_map(const std::string& dir, const char* name, bpf_map_type type, uint32_t key, uint32_t value,
             uint32_t max) {
  ::mkdir(dir.c_str(), 0700);
  int fd = bpf_map_create(type, name, key, value, max, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, (dir + "/" + name).c_str()), 0);
  close(fd);
}

TEST(MapAbi, TheObjectsMapsAreExactlyTheMapList) {
  testing::ScopedPinDir pins;
  auto obj = LxcObject::load(pins.path(), /*load_programs=*/false);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  std::set<std::string> pinned;
  for (const auto& spec : map_specs()) {
    struct bpf_map* m = bpf_object__find_map_by_name(obj->skeleton()->obj, spec.name);
    ASSERT_NE(m, nullptr) << spec.name << " is in KPX_MAPS but not in the BPF object";
    EXPECT_EQ(bpf_map__type(m), spec.type) << spec.name;
    EXPECT_EQ(bpf_map__key_size(m), spec.key_size) << spec.name;
    EXPECT_EQ(bpf_map__value_size(m), spec.value_size) << spec.name;
    if (std::string(spec.name) != "kpx_ct_v4") {
      EXPECT_EQ(bpf_map__max_entries(m), spec.max_entries) << spec.name;
    }
    pinned.insert(spec.name);
  }
  // Every pinned map of the object is in the list (the rest are the
  // object's private scratch, never pinned).
  struct bpf_map* m;
  bpf_object__for_each_map(m, obj->skeleton()->obj) {
    if (bpf_map__pin_path(m)) {
      EXPECT_TRUE(pinned.count(bpf_map__name(m))) << bpf_map__name(m) << " not in KPX_MAPS";
    }
  }
  EXPECT_EQ(pins_in(pins.path()), pinned);
  auto maps = PinnedMaps::open(pins.path());
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  auto info = maps->abi.lookup(0);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->magic, KPX_ABI_MAGIC);
  EXPECT_EQ(info->version, KPX_ABI_VERSION);
  EXPECT_EQ(info->ct_max_entries, static_cast<uint32_t>(KPX_DEFAULT_CT_ENTRIES));
  auto v = pinned_abi_version(pins.path());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, KPX_ABI_VERSION);
}

TEST(MapAbi, PinsOfTheSameVersionAreReusedWithTheirContent) {
  testing::ScopedPinDir pins;
  {
    auto maps = PinnedMaps::open_or_create(pins.path());
    ASSERT_TRUE(maps.ok()) << maps.error().message;
    dataplane::ServiceWriter w(*maps);
    ASSERT_TRUE(w.set({0x0a60000au, 80, net::Proto::kTcp}, {{0x0201f40au, 8080}}).ok());
  }
  auto obj = LxcObject::load(pins.path());
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  auto maps = PinnedMaps::open(pins.path());
  ASSERT_TRUE(maps.ok());
  dataplane::ServiceWriter w(*maps);
  ASSERT_EQ(w.list().size(), 1u);
  EXPECT_EQ(w.list()[0].backends.size(), 1u);
}

// kpx before versioning pinned kpx_svc_v4 and friends with other layouts and
// no kpx_abi: refused, and the pins are left exactly as they were.
TEST(MapAbi, PinsOfKpxBeforeVersioningAreRefusedNamingCleanup) {
  testing::ScopedPinDir pins;
  pin_map(pins.path(), "kpx_svc_v4", BPF_MAP_TYPE_HASH, 8, 24, 16);
  pin_map(pins.path(), "kpx_revnat_v4", BPF_MAP_TYPE_HASH, 4, 8, 16);
  pin_map(pins.path(), "kpx_ct_v4", BPF_MAP_TYPE_LRU_HASH, 16, 32, 1024);
  const auto before = pins_in(pins.path());
  auto v = pinned_abi_version(pins.path());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 1u);
  for (int attempt = 0; attempt < 3; ++attempt) {
    Error e{ErrorKind::kSystem, ""};
    if (attempt == 0) {
      auto o = LxcObject::load(pins.path());
      ASSERT_FALSE(o.ok());
      e = o.error();
    } else if (attempt == 1) {
      auto m = PinnedMaps::open(pins.path());
      ASSERT_FALSE(m.ok());
      e = m.error();
    } else {
      auto m = PinnedMaps::open_or_create(pins.path());
      ASSERT_FALSE(m.ok());
      e = m.error();
    }
    EXPECT_EQ(e.kind, ErrorKind::kFailedPrecondition);
    EXPECT_NE(e.message.find("ABI v1"), std::string::npos) << e.message;
    EXPECT_NE(e.message.find("--cleanup"), std::string::npos) << e.message;
  }
  EXPECT_EQ(pins_in(pins.path()), before) << "a refused instance must be left untouched";
  // --cleanup removes what the older kpx pinned.
  ASSERT_TRUE(remove_pin_dir(pins.path()).ok());
  EXPECT_FALSE(std::filesystem::exists(pins.path()));
}

// A newer kpx's stamp (or any other version) is refused the same way.
TEST(MapAbi, PinsStampedWithAnotherVersionAreRefused) {
  testing::ScopedPinDir pins;
  {
    auto obj = LxcObject::load(pins.path(), false);
    ASSERT_TRUE(obj.ok()) << obj.error().message;
  }
  auto maps = PinnedMaps::open(pins.path());
  ASSERT_TRUE(maps.ok());
  kpx_abi_info info = *maps->abi.lookup(0);
  info.version = KPX_ABI_VERSION + 1;
  ASSERT_TRUE(maps->abi.update(0, info).ok());
  auto o = LxcObject::load(pins.path());
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.error().kind, ErrorKind::kFailedPrecondition);
  EXPECT_NE(o.error().message.find("ABI v" + std::to_string(KPX_ABI_VERSION + 1)), std::string::npos)
      << o.error().message;
  EXPECT_NE(o.error().message.find("--cleanup"), std::string::npos);
  auto m = PinnedMaps::open(pins.path());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("--cleanup"), std::string::npos);
  // Not a kpx stamp at all.
  info.magic = 0x12345678;
  ASSERT_TRUE(maps->abi.update(0, info).ok());
  auto m2 = PinnedMaps::open(pins.path());
  ASSERT_FALSE(m2.ok());
  EXPECT_EQ(m2.error().kind, ErrorKind::kFailedPrecondition);
}

// A stamp of this version over a map of another layout (a hand-made or
// corrupted instance) is refused by the per-map check.
TEST(MapAbi, AMapOfAnotherLayoutIsRefused) {
  testing::ScopedPinDir pins;
  {
    auto obj = LxcObject::load(pins.path(), false);
    ASSERT_TRUE(obj.ok()) << obj.error().message;
  }
  ASSERT_EQ(::unlink((pins.path() + "/kpx_be_v4").c_str()), 0);
  pin_map(pins.path(), "kpx_be_v4", BPF_MAP_TYPE_HASH, 4, 8, 64);
  auto m = PinnedMaps::open(pins.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::kFailedPrecondition);
  EXPECT_NE(m.error().message.find("kpx_be_v4"), std::string::npos) << m.error().message;
  EXPECT_NE(m.error().message.find("--cleanup"), std::string::npos);
}

TEST(MapAbi, TheConntrackSizeFollowsKubeProxysFlagsAndIsKeptOnceMade) {
  EXPECT_EQ(conntrack_entries(32768, 131072, 2), 2u * 131072) << "min wins on a small machine";
  EXPECT_EQ(conntrack_entries(32768, 131072, 16), 2u * 32768 * 16) << "per core wins on a big one";
  EXPECT_EQ(conntrack_entries(0, 131072, 2), static_cast<uint32_t>(KPX_DEFAULT_CT_ENTRIES));
  EXPECT_EQ(conntrack_entries(1, 1, 1), static_cast<uint32_t>(KPX_MIN_CT_ENTRIES));
  testing::ScopedPinDir pins;
  {
    auto obj = LxcObject::load(pins.path(), false, 4096);
    ASSERT_TRUE(obj.ok()) << obj.error().message;
  }
  auto maps = PinnedMaps::open(pins.path());
  ASSERT_TRUE(maps.ok());
  EXPECT_EQ(maps->ct_max_entries, 4096u);
  EXPECT_EQ(maps->abi.lookup(0)->ct_max_entries, 4096u);
  // A later load asking for another size reuses the pinned table.
  auto obj = LxcObject::load(pins.path(), true, 8192);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  auto again = PinnedMaps::open(pins.path());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ct_max_entries, 4096u);
}

}  // namespace
}  // namespace kpx::bpf

namespace kpx::bpf {
namespace {

// The agent refuses an older kpx's pins with a message naming --cleanup,
// `kpx agent --cleanup` removes them, and the agent then makes new ones.
TEST(MapAbi, TheAgentRefusesOldPinsAndCleanupClearsTheWay) {
  testing::ScopedPinDir pins;
  pin_map(pins.path(), "kpx_svc_v4", BPF_MAP_TYPE_HASH, 8, 24, 16);
  pin_map(pins.path(), "kpx_ct_v4", BPF_MAP_TYPE_LRU_HASH, 16, 32, 1024);
  const std::string err = "/tmp/" + testing::unique_name("kpx-abi-err");
  const std::string agent = std::string(KPX_BINARY) + " agent --pin-dir " + pins.path() +
                            " --master http://127.0.0.1:9 --healthz-bind-address 127.0.0.1:0"
                            " --metrics-bind-address 127.0.0.1:0";
  EXPECT_EQ(testing::sh(agent + " 2>" + err), 1);
  std::string msg;
  {
    FILE* f = std::fopen(err.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[4096];
    size_t n = std::fread(buf, 1, sizeof(buf), f);
    std::fclose(f);
    msg.assign(buf, n);
  }
  std::remove(err.c_str());
  EXPECT_NE(msg.find("ABI v1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("kpx agent --cleanup"), std::string::npos) << msg;
  EXPECT_TRUE(std::filesystem::exists(pins.path() + "/kpx_svc_v4")) << "refused pins must stay";
  EXPECT_FALSE(std::filesystem::exists(pins.path() + "/kpx_abi"));
  EXPECT_EQ(testing::sh(std::string(KPX_BINARY) + " agent --cleanup --pin-dir " + pins.path()), 0);
  EXPECT_FALSE(std::filesystem::exists(pins.path()));
  // A new instance there now.
  auto m = PinnedMaps::open_or_create(pins.path());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(*pinned_abi_version(pins.path()), KPX_ABI_VERSION);
}

}  // namespace
}  // namespace kpx::bpf

// ---- the library at XDP ------------------------------------------------------

#include "datapath_fixture.h"
#include "kpx_xdp_probe.skel.h"

namespace kpx::bpftest {
namespace {

// The shared parse, rewrite, checksum and bounce code built for struct
// xdp_md loads (the verifier accepts it) and rewrites like the tc build.
TEST(XdpLibrary, SharedParseAndRewriteWorkAtXdp) {
  for (bool bounce : {false, true}) {
    struct kpx_xdp_probe* skel = kpx_xdp_probe__open();
    ASSERT_NE(skel, nullptr);
    skel->rodata->probe_from_addr = ipv4("10.96.0.10");
    skel->rodata->probe_from_port = htons(80);
    skel->rodata->probe_to_addr = ipv4("10.244.2.3");
    skel->rodata->probe_to_port = htons(8080);
    skel->rodata->probe_bounce = bounce;
    ASSERT_EQ(kpx_xdp_probe__load(skel), 0);
    for (uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP}) {
      const auto in_spec = spec(proto, "10.244.3.5", 40000, "10.96.0.10", 80);
      const Frame in = packet::build_frame(in_spec);
      auto r = test_run(bpf_program__fd(skel->progs.kpx_xdp_probe), in);
      ASSERT_EQ(r.err, 0);
      EXPECT_EQ(r.retval, static_cast<uint32_t>(bounce ? XDP_TX : XDP_PASS));
      auto p = packet::parse_frame(r.out);
      ASSERT_TRUE(p.has_value());
      EXPECT_EQ(addr_str(p->daddr_be), "10.244.2.3");
      EXPECT_EQ(p->dport, 8080);
      EXPECT_TRUE(p->ip_csum_ok);
      EXPECT_TRUE(p->l4_csum_ok) << "the full L4 checksum must follow at XDP";
      auto out_spec = in_spec;
      out_spec.daddr_be = ipv4("10.244.2.3");
      out_spec.dport = 8080;
      EXPECT_EQ(r.out, expected_translation(out_spec, r.out, /*swap_macs=*/bounce));
      // Other traffic passes untouched.
      const Frame other = packet::build_frame(spec(proto, "10.244.3.5", 40000, "10.96.0.11", 80));
      auto o = test_run(bpf_program__fd(skel->progs.kpx_xdp_probe), other);
      EXPECT_EQ(o.retval, static_cast<uint32_t>(XDP_PASS));
      EXPECT_EQ(o.out, other);
    }
    kpx_xdp_probe__destroy(skel);
  }
}

}  // namespace
}  // namespace kpx::bpftest
