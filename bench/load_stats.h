// The pure parts of kpx-bench loadgen, unit-tested on their own: exact
// percentiles of recorded latencies, the open-loop start schedule, how a
// failed connection's errno is counted, and the machine's CPU counters
// (/proc/stat) that the compare harness reads around a run.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "status/status.h"

namespace kpx::bench {

// ---- latencies ---------------------------------------------------------------------

// Summary of latency samples (nanoseconds), exact: computed from every
// sample, sorted. A percentile is the nearest rank (the smallest sample
// with at least p% of the samples at or below it; no interpolation, so
// every figure is a latency some operation really had). All zero when
// there are no samples.
struct LatencySummary {
  uint64_t count = 0;
  uint64_t min_ns = 0, max_ns = 0;
  double mean_ns = 0;
  uint64_t p50_ns = 0, p90_ns = 0, p99_ns = 0, p999_ns = 0;
};

// The nearest-rank percentile p (0 < p <= 100) of samples sorted ascending.
uint64_t nearest_rank(const std::vector<uint64_t>& sorted, double p);
// Sorts `samples` (hence by value) and summarises them.
LatencySummary summarize(std::vector<uint64_t> samples);
// {"count", "min", "mean", "p50", "p90", "p99", "p999", "max"}, in µs.
nlohmann::json latency_json(const LatencySummary& s);

// ---- the open-loop schedule --------------------------------------------------------

// Connection i (from 0) is due at i/rate seconds after the start: a uniform
// schedule computed from i, never accumulated, so it does not drift however
// long it runs. Latency is measured from the due time, so a start that the
// generator (or an in-flight cap) made late counts its wait.
class OpenLoopSchedule {
 public:
  OpenLoopSchedule(uint64_t rate_per_s, uint64_t count) : rate_(rate_per_s), count_(count) {}
  uint64_t count() const { return count_; }
  // The due time of connection i, ns after the start.
  uint64_t due_ns(uint64_t i) const;
  // How many connections are due at `elapsed_ns` (i with due_ns(i) <= elapsed_ns), at most count().
  uint64_t due_by(uint64_t elapsed_ns) const;

 private:
  uint64_t rate_, count_;
};

// ---- failures ----------------------------------------------------------------------

// Why an operation failed, as the JSON's "failures" object counts it (every
// key always present).
enum class Failure : uint8_t {
  kRefused,      // ECONNREFUSED: RST to the SYN (no listener, or a dataplane's reject)
  kTimeout,      // no connect, or no whole response, within --timeout-ms
  kReset,        // ECONNRESET / EPIPE after the connection was up
  kClosed,       // the server closed before the whole response
  kUnreachable,  // EHOSTUNREACH / ENETUNREACH (ICMP unreachable, failed neighbour resolution, no route)
  kNoLocalPort,  // EADDRNOTAVAIL: no ephemeral port left
  kOther,        // anything else (first_error says what)
};
inline constexpr std::array<const char*, 7> kFailureNames = {
    "refused", "timeout", "reset", "closed", "unreachable", "no_local_port", "other"};
// Read failures that are no errno (negative, so never one).
inline constexpr int kClosedEarly = -1;  // the peer closed before the response's end
inline constexpr int kBytesAfterResponse =
    -2;  // more than one line came: the peer does not speak the protocol
// An errno from connect() (or SO_ERROR), read() or write(), or one of the above.
Failure failure_of_errno(int err);
// strerror, or what the above mean.
std::string error_text(int err);

struct FailureCounts {
  std::array<uint64_t, kFailureNames.size()> n{};
  std::string first_error;  // "connect: Connection refused", the first failure's
  void add(Failure f, const std::string& what);
  uint64_t total() const;
  nlohmann::json json() const;
  // "failed" (the total), "failures" (json()) and "first_error" into doc.
  void put_into(nlohmann::json& doc) const;
};

// ---- CPU ---------------------------------------------------------------------------

// /proc/stat's first ("cpu ") line, summed over every CPU, in clock ticks
// (sysconf(_SC_CLK_TCK) a second). busy is user + nice + system + irq +
// softirq (guest time is already inside user); steal, time the hypervisor
// gave to someone else, is no work of this machine's.
//
// Those busy fields are sampled at the scheduler tick, and miss work that
// falls between ticks: on this project's VM, a loadgen run of 2000 CRRs/s
// for 3 s showed 0.04 s busy in them while the CPUs were 0.9 s not idle
// (the loadgen alone used 0.5 s by its rusage). Idle and iowait are
// measured at every idle entry and exit (NOHZ, the usual kernel), so
// cpu_seconds counts busy as what was not idle: the CPUs' wall time
// between the samples less idle, iowait and steal.
struct CpuSample {
  uint64_t busy = 0, idle = 0, iowait = 0, steal = 0;
  uint32_t cpus = 0;   // the "cpuN" lines: the CPUs the first line sums
  uint64_t at_ns = 0;  // CLOCK_MONOTONIC when read
};
Result<CpuSample> parse_proc_stat(std::string_view text, uint64_t at_ns);
Result<CpuSample> read_cpu();  // /proc/stat now
// CPU seconds the machine was busy (not idle, iowait or stolen) between two
// samples, to a tick per CPU and sample (10 ms): a figure per 100,000
// connections wants runs of tens of seconds.
double cpu_seconds(const CpuSample& a, const CpuSample& b);
// The tick-sampled busy fields' seconds (for comparison; see above).
double sampled_busy_seconds(const CpuSample& a, const CpuSample& b);
double steal_seconds(const CpuSample& a, const CpuSample& b);

// This process's own CPU (getrusage RUSAGE_SELF), seconds. Their sum is
// measured; the split between user and system is scaled by tick samples.
struct ProcessCpu {
  double user_s = 0, system_s = 0;
};
ProcessCpu process_cpu();

// The machine's and this process's CPU at one moment, taken around a run.
struct CpuMark {
  Result<CpuSample> machine = CpuSample{};
  ProcessCpu self;
};
CpuMark cpu_mark();
// Between two marks: {"process_s", "process_user_s", "process_system_s",
// "machine_busy_s", "machine_busy_sampled_s", "machine_steal_s", "cpus"}
// (the machine's figures null if /proc/stat could not be read).
nlohmann::json cpu_json(const CpuMark& a, const CpuMark& b);

}  // namespace kpx::bench
