#include "load_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace kpx::bench {

using nlohmann::json;

uint64_t nearest_rank(const std::vector<uint64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  // In thousandths of a percent, integers: 99.9 * n / 100 in floating point
  // can land a hair above a whole rank and take the next sample.
  const uint64_t milli = static_cast<uint64_t>(std::llround(p * 1000));
  const unsigned __int128 num = static_cast<unsigned __int128>(milli) * sorted.size();
  uint64_t rank = static_cast<uint64_t>((num + 100000 - 1) / 100000);  // ceil
  rank = std::clamp<uint64_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

LatencySummary summarize(std::vector<uint64_t> samples) {
  LatencySummary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = samples.size();
  s.min_ns = samples.front();
  s.max_ns = samples.back();
  long double sum = 0;
  for (uint64_t v : samples) sum += v;
  s.mean_ns = static_cast<double>(sum / samples.size());
  s.p50_ns = nearest_rank(samples, 50);
  s.p90_ns = nearest_rank(samples, 90);
  s.p99_ns = nearest_rank(samples, 99);
  s.p999_ns = nearest_rank(samples, 99.9);
  return s;
}

json latency_json(const LatencySummary& s) {
  auto us = [](double ns) { return std::round(ns) / 1000.0; };  // µs, to the ns
  return {{"count", s.count},    {"min", us(s.min_ns)}, {"mean", us(s.mean_ns)}, {"p50", us(s.p50_ns)},
          {"p90", us(s.p90_ns)}, {"p99", us(s.p99_ns)}, {"p999", us(s.p999_ns)}, {"max", us(s.max_ns)}};
}

uint64_t OpenLoopSchedule::due_ns(uint64_t i) const {
  return static_cast<uint64_t>(static_cast<unsigned __int128>(i) * 1'000'000'000u / rate_);
}

uint64_t OpenLoopSchedule::due_by(uint64_t elapsed_ns) const {
  // due_ns(i) <= t  <=>  i * 1e9 < (t + 1) * rate  <=>  i < ceil((t + 1) * rate / 1e9).
  const unsigned __int128 bound = static_cast<unsigned __int128>(elapsed_ns + 1) * rate_;
  const unsigned __int128 n = (bound + 1'000'000'000u - 1) / 1'000'000'000u;
  return n >= count_ ? count_ : static_cast<uint64_t>(n);
}

Failure failure_of_errno(int err) {
  switch (err) {
    case ECONNREFUSED:
      return Failure::kRefused;
    case ETIMEDOUT:
      return Failure::kTimeout;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      return Failure::kReset;
    case EHOSTUNREACH:
    case ENETUNREACH:
      return Failure::kUnreachable;
    case EADDRNOTAVAIL:
      return Failure::kNoLocalPort;
    case kClosedEarly:
      return Failure::kClosed;
    default:
      return Failure::kOther;
  }
}

std::string error_text(int err) {
  if (err == kClosedEarly) return "closed before the response's end";
  if (err == kBytesAfterResponse) return "bytes after the response's end";
  return std::strerror(err);
}

void FailureCounts::add(Failure f, const std::string& what) {
  ++n[static_cast<size_t>(f)];
  if (first_error.empty()) first_error = what;
}

uint64_t FailureCounts::total() const {
  uint64_t t = 0;
  for (uint64_t v : n) t += v;
  return t;
}

json FailureCounts::json() const {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < kFailureNames.size(); ++i) j[kFailureNames[i]] = n[i];
  return j;
}

void FailureCounts::put_into(nlohmann::json& doc) const {
  doc["failed"] = total();
  doc["failures"] = json();
  doc["first_error"] = first_error;
}

Result<CpuSample> parse_proc_stat(std::string_view text, uint64_t at_ns) {
  if (text.substr(0, 4) != "cpu ") return system_error("/proc/stat does not start with the cpu line");
  std::istringstream line(std::string(text.substr(4, text.find('\n') - 4)));
  // user nice system idle iowait irq softirq steal [guest guest_nice]
  uint64_t f[8] = {};
  for (uint64_t& v : f)
    if (!(line >> v)) return system_error("/proc/stat: a cpu line of fewer than 8 fields");
  CpuSample s;
  s.busy = f[0] + f[1] + f[2] + f[5] + f[6];
  s.idle = f[3];
  s.iowait = f[4];
  s.steal = f[7];
  s.at_ns = at_ns;
  for (size_t at = text.find('\n'); at != std::string_view::npos; at = text.find('\n', at + 1))
    if (text.substr(at + 1, 3) == "cpu" && at + 4 < text.size() &&
        std::isdigit(static_cast<unsigned char>(text[at + 4])))
      ++s.cpus;
  if (s.cpus == 0) return system_error("/proc/stat: no cpuN line");
  return s;
}

Result<CpuSample> read_cpu() {
  std::ifstream f("/proc/stat");
  std::stringstream text;
  text << f.rdbuf();
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  if (!f) return errno_error("read /proc/stat", errno);
  return parse_proc_stat(text.str(),
                         static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_nsec));
}

namespace {
double ticks_to_s(uint64_t ticks) {
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}
}  // namespace

double cpu_seconds(const CpuSample& a, const CpuSample& b) {
  const double wall = static_cast<double>(b.at_ns - a.at_ns) / 1e9 * std::min(a.cpus, b.cpus);
  const double not_busy = ticks_to_s((b.idle - a.idle) + (b.iowait - a.iowait) + (b.steal - a.steal));
  return std::max(0.0, wall - not_busy);
}
double sampled_busy_seconds(const CpuSample& a, const CpuSample& b) { return ticks_to_s(b.busy - a.busy); }
double steal_seconds(const CpuSample& a, const CpuSample& b) { return ticks_to_s(b.steal - a.steal); }

ProcessCpu process_cpu() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return {s(u.ru_utime), s(u.ru_stime)};
}

CpuMark cpu_mark() { return {read_cpu(), process_cpu()}; }

json cpu_json(const CpuMark& a, const CpuMark& b) {
  json j = {{"process_s", (b.self.user_s + b.self.system_s) - (a.self.user_s + a.self.system_s)},
            {"process_user_s", b.self.user_s - a.self.user_s},
            {"process_system_s", b.self.system_s - a.self.system_s},
            {"machine_busy_s", nullptr},
            {"machine_busy_sampled_s", nullptr},
            {"machine_steal_s", nullptr},
            {"cpus", sysconf(_SC_NPROCESSORS_ONLN)}};
  if (a.machine && b.machine) {
    j["machine_busy_s"] = cpu_seconds(*a.machine, *b.machine);
    j["machine_busy_sampled_s"] = sampled_busy_seconds(*a.machine, *b.machine);
    j["machine_steal_s"] = steal_seconds(*a.machine, *b.machine);
  }
  return j;
}

}  // namespace kpx::bench
