// kpx-bench loadgen crr (loadgen.h): slots of connections in one epoll
// thread. A slot's connection goes connecting -> sending -> reading, then
// is closed with RST and the slot takes the next one. Each slot has a
// generation in its epoll key, so an event of a connection already closed
// (later in the same batch) is not taken for its successor's.
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>

#include "load_io.h"
#include "load_stats.h"
#include "loadgen.h"

namespace kpx::bench {

namespace {

using nlohmann::json;

enum class Phase : uint8_t { kFree, kConnecting, kSending, kReading };

struct Slot {
  bpf::UniqueFd fd;
  uint32_t gen = 0;
  Phase phase = Phase::kFree;
  uint64_t origin_ns = 0;   // latency from here: the due time (open loop) or socket() (maximum rate)
  uint64_t connect_ns = 0;  // connect() called
  uint32_t sent = 0;
  ResponseHead head;
};

uint64_t key_of(uint32_t slot, uint32_t gen) { return uint64_t{gen} << 32 | slot; }

class CrrRun {
 public:
  CrrRun(const CrrLoadOptions& o, Epoll ep)
      : o_(o),
        ep_(std::move(ep)),
        dst_(to_sockaddr(o.target)),
        request_(request_of_size(o.request_size)),
        open_loop_(o.rate > 0),
        schedule_(o.rate > 0 ? o.rate : 1, o.count) {
    const uint64_t cap = std::min<uint64_t>(open_loop_ ? o.max_inflight : o.concurrency, o.count);
    slots_.resize(cap);
    for (uint64_t i = cap; i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
    const size_t reserve = std::min<uint64_t>(o.count, 1u << 20);
    latency_.reserve(reserve);
    connect_.reserve(reserve);
    if (open_loop_) lag_.reserve(reserve);
  }

  Result<json> run();

 private:
  void start(uint64_t origin_ns);
  void on_event(uint32_t idx, uint64_t now);
  void expire(uint64_t now);
  void fail(uint32_t idx, const char* what, int err);
  void complete(uint32_t idx, uint64_t now);
  void release(uint32_t idx);
  void watch(uint32_t idx, uint32_t events);
  json document(uint64_t t0, uint64_t t1, const CpuMark& c0, const CpuMark& c1);

  const CrrLoadOptions& o_;
  Epoll ep_;
  const sockaddr_in dst_;
  const std::string request_;
  const bool open_loop_;
  const OpenLoopSchedule schedule_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  // (deadline, key) in start order: one timeout for all, so deadlines are in order too.
  std::deque<std::pair<uint64_t, uint64_t>> deadlines_;
  std::vector<uint64_t> latency_, connect_, lag_;
  uint64_t started_ = 0, completed_ = 0, capped_ = 0, blocked_until_ = 0, received_ = 0;
  FailureCounts failures_;
  std::map<std::string, uint64_t> backends_;
  Status broken_;  // an epoll_ctl failure: the run cannot go on
};

void CrrRun::watch(uint32_t idx, uint32_t events) {
  Slot& s = slots_[idx];
  if (auto st = ep_.mod(s.fd.get(), events, key_of(idx, s.gen)); !st) broken_ = st;
}

void CrrRun::start(uint64_t origin_ns) {
  const uint32_t idx = free_.back();
  free_.pop_back();
  ++started_;
  Slot& s = slots_[idx];
  s.origin_ns = origin_ns;
  s.sent = 0;
  s.head = ResponseHead();
  int err = 0;
  bool connected = false;
  s.connect_ns = mono_ns();
  s.fd = start_connect(dst_, &err, &connected);
  if (!s.fd.valid()) {
    s.phase = Phase::kConnecting;
    fail(idx, "connect", err);
    return;
  }
  s.phase = Phase::kConnecting;
  if (auto st = ep_.add(s.fd.get(), EPOLLOUT, key_of(idx, s.gen)); !st) {
    broken_ = st;
    return;
  }
  deadlines_.emplace_back(s.connect_ns + uint64_t{o_.timeout_ms} * 1'000'000u, key_of(idx, s.gen));
  if (connected) on_event(idx, mono_ns());
}

// Drives slot idx's connection as far as it goes without waiting.
void CrrRun::on_event(uint32_t idx, uint64_t now) {
  Slot& s = slots_[idx];
  int err = 0;
  if (s.phase == Phase::kConnecting) {
    if ((err = socket_error(s.fd.get())) != 0) return fail(idx, "connect", err);
    connect_.push_back(now - s.connect_ns);
    s.phase = request_.empty() ? Phase::kReading : Phase::kSending;
    if (s.phase == Phase::kReading) return watch(idx, EPOLLIN);
  }
  if (s.phase == Phase::kSending) {
    switch (send_rest(s.fd.get(), request_, &s.sent, &err)) {
      case Io::kAgain:
        return;  // still watched for EPOLLOUT
      case Io::kFailed:
        return fail(idx, "write", err);
      case Io::kDone:
        s.phase = Phase::kReading;
        return watch(idx, EPOLLIN);  // the response cannot be there yet
    }
  }
  switch (read_response(s.fd.get(), &s.head, &err)) {
    case Io::kAgain:
      return;
    case Io::kFailed:
      return fail(idx, "read", err);
    case Io::kDone:
      return complete(idx, now);
  }
}

void CrrRun::expire(uint64_t now) {
  while (!deadlines_.empty() && deadlines_.front().first <= now) {
    const uint64_t key = deadlines_.front().second;
    deadlines_.pop_front();
    const uint32_t idx = static_cast<uint32_t>(key);
    const Slot& s = slots_[idx];
    if (s.phase == Phase::kFree || s.gen != key >> 32) continue;  // finished in time
    fail(idx, s.phase == Phase::kConnecting ? "connect" : "response", ETIMEDOUT);
  }
}

void CrrRun::fail(uint32_t idx, const char* what, int err) {
  failures_.add(failure_of_errno(err), std::string(what) + ": " + error_text(err));
  release(idx);
}

void CrrRun::complete(uint32_t idx, uint64_t now) {
  Slot& s = slots_[idx];
  latency_.push_back(now - s.origin_ns);
  received_ += s.head.received;
  ++completed_;
  if (std::string pod = s.head.pod(); !pod.empty()) ++backends_[pod];
  release(idx);
}

void CrrRun::release(uint32_t idx) {
  Slot& s = slots_[idx];
  s.fd.reset();  // RST (SO_LINGER {1,0}); epoll forgets it
  s.phase = Phase::kFree;
  ++s.gen;
  free_.push_back(idx);
}

Result<json> CrrRun::run() {
  std::vector<epoll_event> events(std::min<size_t>(slots_.size(), 1024));
  const CpuMark c0 = cpu_mark();
  const uint64_t t0 = mono_ns(), end = t0 + uint64_t{o_.duration_s} * 1'000'000'000u;
  for (;;) {
    uint64_t now = mono_ns();
    expire(now);
    if (completed_ + failures_.total() >= o_.count || now >= end) break;
    if (open_loop_) {
      const uint64_t due = schedule_.due_by(now - t0);
      while (started_ < due && !free_.empty()) {
        if (started_ < blocked_until_) ++capped_;
        const uint64_t origin = t0 + schedule_.due_ns(started_);
        lag_.push_back(mono_ns() - origin);
        start(origin);
      }
      if (started_ < due) blocked_until_ = due;  // these wait for a slot
    } else {
      while (started_ < o_.count && !free_.empty()) start(mono_ns());
    }
    if (!broken_) return broken_.error();
    uint64_t wake = end;
    if (open_loop_ && started_ < o_.count && !free_.empty())
      wake = std::min(wake, t0 + schedule_.due_ns(started_));
    if (!deadlines_.empty()) wake = std::min(wake, deadlines_.front().first);
    now = mono_ns();
    const int n = ep_.wait(events.data(), static_cast<int>(events.size()), wake > now ? wake - now : 0);
    if (n < 0) return errno_error("epoll_pwait2", errno);
    for (int i = 0; i < n; ++i) {
      const uint32_t idx = static_cast<uint32_t>(events[i].data.u64);
      const Slot& s = slots_[idx];
      if (s.phase == Phase::kFree || s.gen != events[i].data.u64 >> 32)
        continue;  // closed earlier in this batch
      on_event(idx, mono_ns());
    }
    if (!broken_) return broken_.error();
  }
  const uint64_t t1 = mono_ns();
  const CpuMark c1 = cpu_mark();
  return document(t0, t1, c0, c1);
}

json CrrRun::document(uint64_t t0, uint64_t t1, const CpuMark& c0, const CpuMark& c1) {
  const uint64_t unfinished = slots_.size() - free_.size();
  const double elapsed = static_cast<double>(t1 - t0) / 1e9;
  json j = load_document("crr", o_.target);
  j["schedule"] = open_loop_ ? "open_loop" : "max_rate";
  if (open_loop_) {
    j["offered_rate"] = o_.rate;
    j["max_inflight"] = o_.max_inflight;
  } else {
    j["concurrency"] = o_.concurrency;
  }
  j["latency_from"] = open_loop_ ? "due_time" : "socket";
  j["request_bytes"] = o_.request_size;
  j["timeout_ms"] = o_.timeout_ms;
  j["duration_limit_s"] = o_.duration_s;
  j["requested"] = o_.count;
  j["started"] = started_;
  j["completed"] = completed_;
  failures_.put_into(j);
  j["unfinished"] = unfinished;
  j["not_started"] = o_.count - started_;
  j["elapsed_s"] = elapsed;
  j["rate"] = elapsed > 0 ? static_cast<double>(completed_) / elapsed : 0;
  j["latency_us"] = latency_json(summarize(std::move(latency_)));
  j["connect_us"] = latency_json(summarize(std::move(connect_)));
  if (open_loop_) {
    j["start_lag_us"] = latency_json(summarize(std::move(lag_)));
    j["capped_starts"] = capped_;
  }
  j["bytes_received"] = received_;
  j["backends"] = backends_;
  j["cpu"] = cpu_json(c0, c1);
  j["ok"] = completed_ == o_.count;
  return j;
}

}  // namespace

Result<json> crr_load(const CrrLoadOptions& o) { return run_on_epoll<CrrRun>(o); }

}  // namespace kpx::bench
