// What the kpx-bench datapath cases are made of: BPF_PROG_TEST_RUN calls
// (a frame, a repeat count, the skb's interface and mark), the datapath's
// counters, test frames, a run that SIGINT/SIGTERM end cleanly, a pin
// directory and a network namespace of the bench's own, and the layout of
// the Services and conntrack entries the bench programs.
#pragma once

#include <bpf/bpf.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "bpf/pinned_maps.h"
#include "kpx/abi.h"
#include "status/status.h"

struct kpx_floor;  // kpx_floor.skel.h: the baselines (bpf/kpx_floor.bpf.c)

namespace kpx::bench {

struct FloorDeleter {
  void operator()(kpx_floor* s) const;
};

using Frame = std::vector<uint8_t>;

// ---- BPF_PROG_TEST_RUN ---------------------------------------------------

struct RunResult {
  uint32_t ns;      // kernel: mean ns per run
  uint32_t retval;  // the last run's return value
  uint32_t mark;    // skb->mark as the last run left it
};

// The skb's device and mark. ifindex 0: the kernel's default, the loopback
// of the calling thread's namespace (whose device the program's FIB lookups
// and interface-keyed conntrack entries then see).
struct RunCtx {
  uint32_t ifindex = 0;
  uint32_t mark = 0;
};

Result<RunResult> test_run(int prog_fd, const Frame& in, uint32_t repeat, Frame* out = nullptr,
                           const RunCtx& ctx = {});

// A TCP frame with a 64-byte payload and correct checksums.
Frame tcp_frame(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t flags);

// The datapath's per-CPU counters, summed.
class Counters {
 public:
  explicit Counters(int fd);
  Result<uint64_t> get(kpx_counter reason);

 private:
  int fd_;
  std::vector<uint64_t> per_cpu_;
};

// Fails unless counter r grew by exactly delta since `before`.
Status expect_counter_delta(Counters& c, kpx_counter r, uint64_t before, uint64_t delta, const std::string& what);

// ---- interruption and cleanup -----------------------------------------------

// While one lives, SIGINT/SIGTERM set a flag (no SA_RESTART: a running
// BPF_PROG_TEST_RUN returns EINTR) and the bench unwinds, removing what it
// made. A second signal gets the default action.
class SignalGuard {
 public:
  SignalGuard();
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};
bool interrupted();
Status check_interrupt();  // an error once interrupted

// /sys/fs/bpf/kpx-bench-<pid><suffix>: made fresh, unpinned and removed on
// destruction (also when the bench fails or is interrupted).
class BenchPinDir {
 public:
  explicit BenchPinDir(const std::string& suffix = "");
  ~BenchPinDir();
  BenchPinDir(const BenchPinDir&) = delete;
  BenchPinDir& operator=(const BenchPinDir&) = delete;

  Status create();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool owned_ = false;
};

// The namespace kpx-bench-<pid><suffix>, made with `ip netns add` (its
// interfaces are made inside it: nothing is made in or moved through the
// root namespace); deleted on destruction, also after a failure.
class BenchNetns {
 public:
  explicit BenchNetns(const std::string& suffix);
  ~BenchNetns();
  BenchNetns(const BenchNetns&) = delete;
  BenchNetns& operator=(const BenchNetns&) = delete;

  Status create();  // refuses a namespace of that name that already exists
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool owned_ = false;
};

// ---- map helpers ------------------------------------------------------------

template <typename K, typename V>
Status update_many(int fd, const std::vector<K>& keys, const std::vector<V>& vals) {
  if (keys.empty()) return {};
  __u32 count = static_cast<__u32>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_update_batch(fd, keys.data(), vals.data(), &count, &opts) == 0) return {};
  // No batch support (or it stopped part way): per element, idempotent.
  for (size_t i = 0; i < keys.size(); ++i) {
    if (bpf_map_update_elem(fd, &keys[i], &vals[i], BPF_ANY) != 0) return errno_error("bpf map update", errno);
  }
  return {};
}

template <typename K>
Status delete_many(int fd, const std::vector<K>& keys) {
  if (keys.empty()) return {};
  __u32 count = static_cast<__u32>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_delete_batch(fd, keys.data(), &count, &opts) == 0) return {};
  for (const K& k : keys) {
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return errno_error("bpf map delete", errno);
  }
  return {};
}

// The flows of these FORWARD keys removed from conntrack, each with its
// REPLY entry and, for a bound uplink flow, its REPLY tuple's reservation
// (the keys of flows that are not there are skipped), and the
// conntrack epoch bumped (the ABI's rule: no cached copy of a deleted
// entry). Returns how many entries were deleted.
size_t erase_flows(bpf::PinnedMaps& m, const std::vector<kpx_ct_key_v4>& forward_keys);

// ---- the layout of the programmed Services -----------------------------------

inline constexpr uint16_t kServicePort = 80;
inline constexpr uint16_t kBackendPort = 8080;  // targetPort != port: the port rewrite is included
inline constexpr uint16_t kPrefillSport = 33000;
inline constexpr uint32_t kBackendsPerService = 2;

uint32_t host_addr(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
// Service i: VIP 10.96.0.0 + i + 1 (10.96.0.1, ...), port 80/TCP.
uint32_t vip_be(uint32_t i);
// Its backends: 10.64.0.0 + 2i + s + 1, port 8080.
uint32_t backend_be(uint32_t i, uint32_t s);

kpx_ct_key_v4 ct_key(uint32_t saddr, uint32_t daddr, uint16_t sport_h, uint16_t dport_h, uint8_t dir,
                     uint32_t ifindex = 1 /* BPF_PROG_TEST_RUN's default device: loopback */);
// An entry as the datapath writes it: gen and check word.
kpx_ct_value_v4 sealed(const kpx_ct_key_v4& k, kpx_ct_value_v4 v);

// Conntrack prefill flows [from, to): flow j is 10.128.x.y:33000 -> VIP_j:80,
// pinned to Service j's first backend, established in both directions, as
// the datapath leaves it (lookups are then not into an empty map).
Status add_prefill(bpf::PinnedMaps& m, uint32_t from, uint32_t to);
Status remove_prefill(bpf::PinnedMaps& m, uint32_t from, uint32_t to);

// ---- statistics ---------------------------------------------------------------

template <typename T>
double median(std::vector<T> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? static_cast<double>(v[n / 2])
               : (static_cast<double>(v[n / 2 - 1]) + static_cast<double>(v[n / 2])) / 2;
}
std::string fmt(double v, int prec = 1);

}  // namespace kpx::bench
