#include "prog_run.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "dataplane/conntrack.h"
#include "kpx_floor.skel.h"
#include "lab/network.h"
#include "lab/proc.h"
#include "packet/craft.h"

namespace kpx::bench {

void FloorDeleter::operator()(kpx_floor* s) const { kpx_floor__destroy(s); }

// ---- BPF_PROG_TEST_RUN ---------------------------------------------------

Result<RunResult> test_run(int prog_fd, const Frame& in, uint32_t repeat, Frame* out, const RunCtx& ctx) {
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in.data(), .data_size_in = static_cast<__u32>(in.size()),
              .repeat = static_cast<int>(repeat));
  if (out) {
    out->assign(in.size() + 256, 0);
    o.data_out = out->data();
    o.data_size_out = static_cast<__u32>(out->size());
  }
  __sk_buff skb_in{}, skb_out{};
  if (ctx.ifindex || ctx.mark) {
    skb_in.ifindex = ctx.ifindex;
    skb_in.mark = ctx.mark;
    o.ctx_in = &skb_in;
    o.ctx_size_in = sizeof(skb_in);
    o.ctx_out = &skb_out;
    o.ctx_size_out = sizeof(skb_out);
  }
  if (int rc = bpf_prog_test_run_opts(prog_fd, &o); rc != 0) {
    KPX_TRY(check_interrupt());
    return errno_error("BPF_PROG_TEST_RUN", rc);
  }
  KPX_TRY(check_interrupt());
  if (out) out->resize(o.data_size_out);
  return RunResult{o.duration, o.retval, skb_out.mark};
}

Frame tcp_frame(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t flags) {
  packet::FrameSpec s;
  s.saddr_be = saddr;
  s.daddr_be = daddr;
  s.sport = sport;
  s.dport = dport;
  s.proto = IPPROTO_TCP;
  s.tcp_flags = flags;
  s.payload_len = 64;
  return packet::build_frame(s);
}

Counters::Counters(int fd) : fd_(fd), per_cpu_(static_cast<size_t>(std::max(1, libbpf_num_possible_cpus()))) {}

Result<uint64_t> Counters::get(kpx_counter reason) {
  uint32_t key = reason;
  if (bpf_map_lookup_elem(fd_, &key, per_cpu_.data()) != 0) return errno_error("read counters", errno);
  uint64_t sum = 0;
  for (uint64_t v : per_cpu_) sum += v;
  return sum;
}

Status expect_counter_delta(Counters& c, kpx_counter r, uint64_t before, uint64_t delta, const std::string& what) {
  auto now = c.get(r);
  if (!now) return now.error();
  if (*now - before != delta)
    return system_error(what + ": counter " + std::to_string(r) + " grew by " + std::to_string(*now - before) +
                        ", expected " + std::to_string(delta));
  return {};
}

// ---- interruption and cleanup -----------------------------------------------

namespace {
volatile sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) { g_interrupted = 1; }
}  // namespace

SignalGuard::SignalGuard() {
  g_interrupted = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, &old_int_);
  sigaction(SIGTERM, &sa, &old_term_);
}

SignalGuard::~SignalGuard() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

bool interrupted() { return g_interrupted != 0; }

Status check_interrupt() {
  if (g_interrupted) return system_error("interrupted");
  return {};
}

BenchPinDir::BenchPinDir(const std::string& suffix)
    : path_("/sys/fs/bpf/kpx-bench-" + std::to_string(getpid()) + suffix) {}

BenchPinDir::~BenchPinDir() {
  if (!owned_) return;
  if (auto st = bpf::remove_pin_dir(path_); !st) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

Status BenchPinDir::create() {
  KPX_TRY(bpf::check_pin_dir(path_));
  if (mkdir(path_.c_str(), 0700) != 0) {
    if (errno == EEXIST) return invalid_argument(path_ + " already exists; not reusing it");
    return errno_error("mkdir " + path_, errno);
  }
  owned_ = true;
  return {};
}

BenchNetns::BenchNetns(const std::string& suffix) : name_("kpx-bench-" + std::to_string(getpid()) + suffix) {}

BenchNetns::~BenchNetns() {
  if (owned_) (void)lab::remove_netns(name_);
}

Status BenchNetns::create() {
  struct stat st {};
  if (stat(("/var/run/netns/" + name_).c_str(), &st) == 0)
    return invalid_argument("network namespace " + name_ + " already exists; not reusing it");
  KPX_TRY(lab::run_ok({"ip", "netns", "add", name_}));
  owned_ = true;
  return {};
}

size_t erase_flows(bpf::PinnedMaps& m, const std::vector<kpx_ct_key_v4>& forward_keys) {
  std::vector<kpx_ct_key_v4> keys;
  keys.reserve(2 * forward_keys.size());
  for (const auto& fk : forward_keys)
    if (auto v = m.conntrack.lookup(fk)) {
      keys.push_back(fk);
      keys.push_back(dataplane::reply_key_of(fk, *v));
      // A bound uplink flow's REPLY tuple stays reserved on interface 0
      // (kpx_lxc's uplink_bind_reply); missing keys are skipped.
      if ((v->flags & KPX_CT_F_UPLINK) && keys.back().ifindex != 0) {
        keys.push_back(keys.back());
        keys.back().ifindex = 0;
      }
    }
  const size_t deleted = m.conntrack.erase_many(keys);
  (void)m.bump_ct_epoch();
  return deleted;
}

// ---- the layout of the programmed Services -----------------------------------

uint32_t host_addr(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return static_cast<uint32_t>(a) << 24 | static_cast<uint32_t>(b) << 16 | static_cast<uint32_t>(c) << 8 | d;
}
uint32_t vip_be(uint32_t i) { return htonl(host_addr(10, 96, 0, 0) + i + 1); }
uint32_t backend_be(uint32_t i, uint32_t s) {
  return htonl(host_addr(10, 64, 0, 0) + kBackendsPerService * i + s + 1);
}

namespace {
// The client of prefill flow j: 10.128.0.0 + j + 1.
uint32_t prefill_client_be(uint32_t j) { return htonl(host_addr(10, 128, 0, 0) + j + 1); }
}  // namespace

kpx_ct_value_v4 sealed(const kpx_ct_key_v4& k, kpx_ct_value_v4 v) {
  if (v.gen == KPX_CT_GEN_DEAD) v.gen = 0x6b707801u;
  v.check = kpx_ct_check_v4(&k, &v);
  return v;
}

kpx_ct_key_v4 ct_key(uint32_t saddr, uint32_t daddr, uint16_t sport_h, uint16_t dport_h, uint8_t dir,
                     uint32_t ifindex) {
  kpx_ct_key_v4 k{};
  k.saddr = saddr;
  k.daddr = daddr;
  k.sport = htons(sport_h);
  k.dport = htons(dport_h);
  k.proto = IPPROTO_TCP;
  k.dir = dir;
  k.ifindex = ifindex;
  return k;
}

Status add_prefill(bpf::PinnedMaps& m, uint32_t from, uint32_t to) {
  if (from >= to) return {};
  const uint64_t now = dataplane::monotonic_coarse_ns();
  std::vector<kpx_ct_key_v4> keys;
  std::vector<kpx_ct_value_v4> vals;
  for (uint32_t j = from; j < to; ++j) {
    const uint32_t be = backend_be(j, 0);
    kpx_ct_value_v4 v{};
    v.svc_id = j + 1;
    v.last_seen_ns = now;
    v.created_ns = now;
    v.nat_addr = be;
    v.nat_port = htons(kBackendPort);
    v.flags = KPX_CT_F_SYN | KPX_CT_F_ESTABLISHED;
    v.nat_kind = KPX_NAT_DNAT;
    v.gen = j + 1;
    keys.push_back(ct_key(prefill_client_be(j), vip_be(j), kPrefillSport, kServicePort, KPX_CT_FORWARD));
    vals.push_back(sealed(keys.back(), v));
    v.nat_addr = vip_be(j);
    v.nat_port = htons(kServicePort);
    keys.push_back(ct_key(be, prefill_client_be(j), kBackendPort, kPrefillSport, KPX_CT_REPLY));
    vals.push_back(sealed(keys.back(), v));
  }
  return update_many(m.conntrack.fd(), keys, vals);
}

Status remove_prefill(bpf::PinnedMaps& m, uint32_t from, uint32_t to) {
  std::vector<kpx_ct_key_v4> keys;
  for (uint32_t j = from; j < to; ++j) {
    keys.push_back(ct_key(prefill_client_be(j), vip_be(j), kPrefillSport, kServicePort, KPX_CT_FORWARD));
    keys.push_back(ct_key(backend_be(j, 0), prefill_client_be(j), kBackendPort, kPrefillSport, KPX_CT_REPLY));
  }
  KPX_TRY(delete_many(m.conntrack.fd(), keys));
  return m.bump_ct_epoch();
}

// ---- statistics ---------------------------------------------------------------

std::string fmt(double v, int prec) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
  return buf;
}

}  // namespace kpx::bench
