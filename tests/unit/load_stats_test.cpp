// kpx-bench loadgen's pure parts: exact percentiles, the open-loop
// schedule, failure reasons, /proc/stat and the response framing.
#include "load_stats.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <numeric>
#include <random>

#include "load_io.h"

namespace kpx::bench {
namespace {

std::vector<uint64_t> one_to(uint64_t n) {
  std::vector<uint64_t> v(n);
  std::iota(v.begin(), v.end(), 1);
  return v;
}

TEST(LoadPercentiles, AreTheNearestRankOfEverySample) {
  const auto v = one_to(100);
  EXPECT_EQ(nearest_rank(v, 50), 50u);
  EXPECT_EQ(nearest_rank(v, 90), 90u);
  EXPECT_EQ(nearest_rank(v, 99), 99u);
  EXPECT_EQ(nearest_rank(v, 99.9), 100u);  // rank ceil(99.9) = 100
  EXPECT_EQ(nearest_rank(v, 100), 100u);
  const auto w = one_to(1000);
  EXPECT_EQ(nearest_rank(w, 99.9), 999u);  // 99.9% of 1000 is a whole rank, not the next
  EXPECT_EQ(nearest_rank(w, 99), 990u);
  const auto ten = one_to(10);
  EXPECT_EQ(nearest_rank(ten, 99), 10u);  // the tail of a small run is its max, not hidden
  EXPECT_EQ(nearest_rank(ten, 50), 5u);
  EXPECT_EQ(nearest_rank({}, 50), 0u);
  EXPECT_EQ(nearest_rank({7}, 1), 7u);
}

TEST(LoadPercentiles, SummarizeSortsAndOrdersTheFigures) {
  std::vector<uint64_t> v = one_to(1000);
  std::shuffle(v.begin(), v.end(), std::mt19937(1));
  v.push_back(1'000'000);  // one outlier: max and nothing else
  const LatencySummary s = summarize(v);
  EXPECT_EQ(s.count, 1001u);
  EXPECT_EQ(s.min_ns, 1u);
  EXPECT_EQ(s.max_ns, 1'000'000u);
  EXPECT_EQ(s.p50_ns, 501u);
  EXPECT_EQ(s.p99_ns, 991u);
  EXPECT_EQ(s.p999_ns, 1000u);
  EXPECT_DOUBLE_EQ(s.mean_ns, (500500.0 + 1e6) / 1001);
  const auto j = latency_json(s);
  EXPECT_DOUBLE_EQ(j["max"].get<double>(), 1000.0);  // µs
  EXPECT_DOUBLE_EQ(j["p50"].get<double>(), 0.501);
  for (const char* k : {"count", "min", "mean", "p50", "p90", "p99", "p999", "max"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(summarize({}).count, 0u);
  EXPECT_EQ(summarize({}).max_ns, 0u);
}

TEST(LoadSchedule, DueTimesAreExactAndDoNotDrift) {
  const OpenLoopSchedule s(1000, 5000);
  EXPECT_EQ(s.due_ns(0), 0u);
  EXPECT_EQ(s.due_ns(1), 1'000'000u);
  EXPECT_EQ(s.due_ns(1000), 1'000'000'000u);
  // A period that is no whole number of ns: computed from i, never summed.
  const OpenLoopSchedule third(3, 10'000'000);
  EXPECT_EQ(third.due_ns(1), 333'333'333u);
  EXPECT_EQ(third.due_ns(3), 1'000'000'000u);
  EXPECT_EQ(third.due_ns(3'000'000), 1'000'000'000'000'000u);
  // No overflow at large indices and rates.
  const OpenLoopSchedule fast(10'000'000, UINT64_MAX);
  EXPECT_EQ(fast.due_ns(100'000'000'000u), 10'000'000'000'000u);
}

TEST(LoadSchedule, DueByCountsTheConnectionsDueAtATime) {
  const OpenLoopSchedule s(1000, 5);
  EXPECT_EQ(s.due_by(0), 1u);  // connection 0 is due at the start
  EXPECT_EQ(s.due_by(999'999), 1u);
  EXPECT_EQ(s.due_by(1'000'000), 2u);
  EXPECT_EQ(s.due_by(3'500'000), 4u);
  EXPECT_EQ(s.due_by(60'000'000'000u), 5u);  // never more than the count
  // Against the definition, for rates whose period is no whole ns.
  for (uint64_t rate : {3u, 7u, 999u, 1000u, 33333u}) {
    const OpenLoopSchedule r(rate, 1'000'000);
    std::mt19937_64 g(rate);
    for (int k = 0; k < 200; ++k) {
      const uint64_t t = g() % 2'000'000'000u;
      const uint64_t n = r.due_by(t);
      ASSERT_LE(r.due_ns(n - 1), t) << rate << " " << t;
      if (n < r.count()) {
        ASSERT_GT(r.due_ns(n), t) << rate << " " << t;
      }
    }
  }
}

TEST(LoadFailures, ErrnosAreCountedByReason) {
  EXPECT_EQ(failure_of_errno(ECONNREFUSED), Failure::kRefused);
  EXPECT_EQ(failure_of_errno(ETIMEDOUT), Failure::kTimeout);
  EXPECT_EQ(failure_of_errno(ECONNRESET), Failure::kReset);
  EXPECT_EQ(failure_of_errno(EPIPE), Failure::kReset);
  EXPECT_EQ(failure_of_errno(EHOSTUNREACH), Failure::kUnreachable);
  EXPECT_EQ(failure_of_errno(ENETUNREACH), Failure::kUnreachable);
  EXPECT_EQ(failure_of_errno(EADDRNOTAVAIL), Failure::kNoLocalPort);
  EXPECT_EQ(failure_of_errno(kClosedEarly), Failure::kClosed);
  EXPECT_EQ(failure_of_errno(kBytesAfterResponse), Failure::kOther);
  EXPECT_EQ(failure_of_errno(EMFILE), Failure::kOther);
  FailureCounts f;
  EXPECT_EQ(f.json().size(), kFailureNames.size());  // every reason, also at 0
  f.add(Failure::kRefused, "connect: Connection refused");
  f.add(Failure::kTimeout, "response: Connection timed out");
  f.add(Failure::kRefused, "connect: again");
  EXPECT_EQ(f.total(), 3u);
  EXPECT_EQ(f.json()["refused"], 2);
  EXPECT_EQ(f.json()["timeout"], 1);
  EXPECT_EQ(f.json()["reset"], 0);
  EXPECT_EQ(f.first_error, "connect: Connection refused");
}

TEST(LoadCpu, ProcStatFieldsAndBusyAsWhatWasNotIdle) {
  // user nice system idle iowait irq softirq steal guest guest_nice
  auto a = parse_proc_stat(
      "cpu  100 5 50 1000 20 3 2 7 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\ncpu1 1 2 3 4 5 6 7 8 9 10\n"
      "intr 1 2\nctxt 3\n",
      1'000'000'000);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->busy, 160u);  // guest is already in user
  EXPECT_EQ(a->idle, 1000u);
  EXPECT_EQ(a->iowait, 20u);
  EXPECT_EQ(a->steal, 7u);
  EXPECT_EQ(a->cpus, 2u);
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  // 3 s later: 6 CPU-seconds, of which idle, iowait and steal grew by 2 s.
  const uint64_t not_busy = static_cast<uint64_t>(2 * hz);
  const std::string later =
      "cpu  101 5 50 " + std::to_string(1000 + not_busy - 2) + " 21 3 2 8 40 0\ncpu0 0\ncpu1 0\n";
  auto b = parse_proc_stat(later, 4'000'000'000);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_NEAR(cpu_seconds(*a, *b), 4.0, 1e-9);
  EXPECT_DOUBLE_EQ(sampled_busy_seconds(*a, *b), 1 / hz);  // the ticks saw one
  EXPECT_DOUBLE_EQ(steal_seconds(*a, *b), 1 / hz);
  EXPECT_DOUBLE_EQ(cpu_seconds(*b, *b), 0);
  EXPECT_FALSE(parse_proc_stat("intr 1 2 3", 0).ok());
  EXPECT_FALSE(parse_proc_stat("cpu  1 2 3", 0).ok());
  EXPECT_FALSE(parse_proc_stat("cpu  1 2 3 4 5 6 7 8\n", 0).ok());  // no cpuN line
  auto now = read_cpu();
  ASSERT_TRUE(now.ok()) << now.error().message;
  EXPECT_GT(now->cpus, 0u);
  EXPECT_GT(now->at_ns, 0u);
}

TEST(LoadFraming, RequestsAreOneLineAndResponsesNameTheirPod) {
  EXPECT_EQ(request_of_size(0), "");
  EXPECT_EQ(request_of_size(1), "\n");
  const std::string r = request_of_size(64);
  EXPECT_EQ(r.size(), 64u);
  EXPECT_EQ(r.find('\n'), 63u);
  ResponseHead h;
  const std::string line = "pod=echo-1-1 client=10.0.0.1:40000...\n";
  std::copy(line.begin(), line.end(), h.bytes);
  h.len = static_cast<uint32_t>(line.size());
  EXPECT_EQ(h.pod(), "echo-1-1");
  h.len = 6;  // "pod=ec": cut before the name's end
  EXPECT_EQ(h.pod(), "");
  ResponseHead other;
  other.len = 3;
  std::copy_n("abc", 3, other.bytes);
  EXPECT_EQ(other.pod(), "");
}

}  // namespace
}  // namespace kpx::bench
