// kpx-bench loadgen rr and stream, and what every mode's document shares
// (loadgen.h; crr in loadgen_crr.cpp).
#include "loadgen.h"

#include <fcntl.h>
#include <linux/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>

#include "load_io.h"
#include "load_stats.h"

namespace kpx::bench {

using nlohmann::json;

json load_document(const std::string& mode, const net::BackendAddr& target) {
  return {{"tool", "kpx-bench loadgen"}, {"schema", 1}, {"mode", mode}, {"target", net::format(target)}};
}

int print_load(const Result<json>& doc, std::ostream& out, std::ostream& err) {
  if (!doc) {
    err << "kpx-bench loadgen: " << doc.error().message << "\n";
    return 1;
  }
  out << doc->dump() << std::endl;
  return doc->value("ok", false) ? 0 : 1;
}

// ---- rr ------------------------------------------------------------------------------

namespace {

struct RrConn {
  bpf::UniqueFd fd;
  bool alive = true;
  bool busy = false;         // a transaction in flight
  bool sending = false;      // its request not all written yet
  bool out_watched = false;  // EPOLLOUT too, for the rest of a request
  uint64_t seq = 0;          // the transaction's number on this connection, for its deadline
  uint64_t sent_ns = 0;
  uint32_t sent = 0;
  ResponseHead head;
};

class RrRun {
 public:
  RrRun(const RrLoadOptions& o, Epoll ep)
      : o_(o), ep_(std::move(ep)), request_(request_of_size(o.request_size)) {}
  Result<json> run();

 private:
  void issue(uint32_t idx, uint64_t now);
  void on_event(uint32_t idx, uint64_t now);
  void fail(uint32_t idx, const char* what, int err);
  bool may_issue(uint64_t now) const { return now < end_ && (o_.count == 0 || issued_ < o_.count); }

  const RrLoadOptions& o_;
  Epoll ep_;
  const std::string request_;
  std::vector<RrConn> conns_;
  struct Deadline {
    uint64_t at_ns;
    uint32_t conn;
    uint64_t seq;
  };
  std::deque<Deadline> deadlines_;  // in issue order: one timeout for all, so in deadline order too
  std::vector<uint64_t> latency_;
  uint64_t end_ = 0, issued_ = 0, completed_ = 0, in_flight_ = 0;
  FailureCounts failures_;
  Status broken_;
};

void RrRun::issue(uint32_t idx, uint64_t now) {
  RrConn& c = conns_[idx];
  c.busy = c.sending = true;
  c.sent = 0;
  c.head = ResponseHead();
  c.sent_ns = now;
  ++c.seq;
  ++issued_;
  ++in_flight_;
  deadlines_.push_back({now + uint64_t{o_.timeout_ms} * 1'000'000u, idx, c.seq});
  on_event(idx, now);
}

void RrRun::on_event(uint32_t idx, uint64_t now) {
  RrConn& c = conns_[idx];
  int err = 0;
  if (!c.busy) {
    // Idle once the count is issued: only the server's close can wake it.
    c.fd.reset();
    c.alive = false;
    return;
  }
  if (c.sending) {
    switch (send_rest(c.fd.get(), request_, &c.sent, &err)) {
      case Io::kAgain:
        if (!c.out_watched) {
          c.out_watched = true;
          if (auto st = ep_.mod(c.fd.get(), EPOLLIN | EPOLLOUT, idx); !st) broken_ = st;
        }
        return;
      case Io::kFailed:
        return fail(idx, "write", err);
      case Io::kDone:
        c.sending = false;
        if (c.out_watched) {
          c.out_watched = false;
          if (auto st = ep_.mod(c.fd.get(), EPOLLIN, idx); !st) broken_ = st;
        }
        return;  // the response cannot be there yet
    }
  }
  switch (read_response(c.fd.get(), &c.head, &err)) {
    case Io::kAgain:
      return;
    case Io::kFailed:
      return fail(idx, "read", err);
    case Io::kDone:
      latency_.push_back(now - c.sent_ns);
      ++completed_;
      --in_flight_;
      c.busy = false;
      if (may_issue(now)) issue(idx, mono_ns());
      return;
  }
}

void RrRun::fail(uint32_t idx, const char* what, int err) {
  RrConn& c = conns_[idx];
  failures_.add(failure_of_errno(err), std::string(what) + ": " + error_text(err));
  c.fd.reset();
  c.alive = false;
  if (c.busy) --in_flight_;
  c.busy = false;
}

Result<json> RrRun::run() {
  // Connected before the clock starts: the run measures transactions only.
  const sockaddr_in dst = to_sockaddr(o_.target);
  for (uint32_t i = 0; i < o_.connections; ++i) {
    int err = 0;
    bpf::UniqueFd fd = connect_within(dst, o_.timeout_ms, &err);
    if (!fd.valid()) {
      failures_.add(failure_of_errno(err), "connect: " + error_text(err));
      continue;
    }
    RrConn c;
    c.fd = std::move(fd);
    conns_.push_back(std::move(c));
  }
  const uint64_t connect_failures = failures_.total();
  for (uint32_t i = 0; i < conns_.size(); ++i) KPX_TRY(ep_.add(conns_[i].fd.get(), EPOLLIN, i));
  latency_.reserve(1u << 20);
  std::vector<epoll_event> events(std::max<size_t>(conns_.size(), 1));
  const CpuMark c0 = cpu_mark();
  const uint64_t t0 = mono_ns();
  end_ = t0 + uint64_t{o_.duration_s} * 1'000'000'000u;
  for (uint32_t i = 0; i < conns_.size() && may_issue(t0); ++i) issue(i, mono_ns());
  while (in_flight_ > 0 && broken_) {
    const uint64_t now = mono_ns();
    while (!deadlines_.empty() && deadlines_.front().at_ns <= now) {
      const Deadline d = deadlines_.front();
      deadlines_.pop_front();
      if (conns_[d.conn].busy && conns_[d.conn].seq == d.seq) fail(d.conn, "response", ETIMEDOUT);
    }
    if (now >= end_) break;
    const uint64_t wake = deadlines_.empty() ? end_ : std::min(end_, deadlines_.front().at_ns);
    const int n = ep_.wait(events.data(), static_cast<int>(events.size()), wake > now ? wake - now : 0);
    if (n < 0) return errno_error("epoll_pwait2", errno);
    for (int i = 0; i < n; ++i) {
      const uint32_t idx = static_cast<uint32_t>(events[i].data.u64);
      if (conns_[idx].alive) on_event(idx, mono_ns());
    }
  }
  if (!broken_) return broken_.error();
  const uint64_t t1 = mono_ns();
  const CpuMark c1 = cpu_mark();
  const double elapsed = static_cast<double>(t1 - t0) / 1e9;
  const uint64_t failed = failures_.total();
  json j = load_document("rr", o_.target);
  j["connections"] = o_.connections;
  j["connect_failed"] = connect_failures;  // of "failed": connections that never opened
  j["request_bytes"] = o_.request_size;
  j["timeout_ms"] = o_.timeout_ms;
  j["duration_limit_s"] = o_.duration_s;
  j["count_limit"] = o_.count;
  j["completed"] = completed_;
  failures_.put_into(j);
  j["unfinished"] = in_flight_;
  j["elapsed_s"] = elapsed;
  j["rate"] = elapsed > 0 ? static_cast<double>(completed_) / elapsed : 0;
  j["latency_us"] = latency_json(summarize(std::move(latency_)));
  j["cpu"] = cpu_json(c0, c1);
  j["ok"] = failed == 0 && completed_ > 0;
  return j;
}

}  // namespace

Result<json> rr_load(const RrLoadOptions& o) { return run_on_epoll<RrRun>(o); }

// ---- stream --------------------------------------------------------------------------

namespace {

Result<tcp_info> read_tcp_info(int fd) {
  tcp_info t{};
  socklen_t len = sizeof t;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &t, &len) != 0) return errno_error("TCP_INFO", errno);
  return t;
}

}  // namespace

Result<json> stream_load(const StreamLoadOptions& o) {
  json j = load_document("stream", o.target);
  j["direction"] = o.receive ? "receive" : "send";
  j["duration_limit_s"] = o.duration_s;
  j["max_bytes"] = o.max_bytes;
  j["chunk_bytes"] = o.chunk_size;
  FailureCounts failures;
  auto finish = [&](uint64_t bytes, double elapsed) {
    j["bytes"] = bytes;
    j["elapsed_s"] = elapsed;
    j["gbit_s"] = elapsed > 0 ? static_cast<double>(bytes) * 8 / elapsed / 1e9 : 0;
    failures.put_into(j);
    j["ok"] = failures.total() == 0 && bytes > 0;
    return j;
  };
  int err = 0;
  bpf::UniqueFd fd = connect_within(to_sockaddr(o.target), o.timeout_ms, &err);
  if (!fd.valid()) {
    failures.add(failure_of_errno(err), "connect: " + error_text(err));
    return finish(0, 0);
  }
  // Blocking from here, each call bounded (100 ms) so the clock is looked at.
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  const timeval step{0, 100'000};
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &step, sizeof step);
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &step, sizeof step);
  const std::string hello = o.receive ? "source\n" : "discard\n";
  if (send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
    failures.add(failure_of_errno(errno), std::string("write: ") + error_text(errno));
    return finish(0, 0);
  }
  auto info0 = read_tcp_info(fd.get());
  if (!info0) return info0.error();
  std::vector<char> buf(o.chunk_size, 'x');
  const uint64_t limit = o.max_bytes == 0 ? UINT64_MAX : o.max_bytes;
  const CpuMark c0 = cpu_mark();
  const uint64_t t0 = mono_ns(), end = t0 + uint64_t{o.duration_s} * 1'000'000'000u;
  uint64_t moved = 0;  // written (send) or read (receive)
  while (moved < limit && mono_ns() < end) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), limit - moved));
    const ssize_t n =
        o.receive ? recv(fd.get(), buf.data(), want, 0) : send(fd.get(), buf.data(), want, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) {
      const int e = n == 0 ? kClosedEarly : errno;
      failures.add(failure_of_errno(e), std::string(o.receive ? "read: " : "write: ") + error_text(e));
      break;
    }
    moved += static_cast<uint64_t>(n);
  }
  uint64_t bytes = moved;
  auto info1 = read_tcp_info(fd.get());
  if (!info1) return info1.error();
  if (!o.receive) {
    // What the server's TCP acknowledged, not what sits in the send buffer.
    // A run that stopped at max_bytes waits (within the duration) for the rest.
    while (failures.total() == 0 && info1->tcpi_bytes_acked - info0->tcpi_bytes_acked < moved &&
           mono_ns() < end) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      info1 = read_tcp_info(fd.get());
      if (!info1) return info1.error();
    }
    bytes = info1->tcpi_bytes_acked - info0->tcpi_bytes_acked;
    j["written"] = moved;
  }
  const uint64_t t1 = mono_ns();
  const CpuMark c1 = cpu_mark();
  j["retransmits"] = info1->tcpi_total_retrans - info0->tcpi_total_retrans;
  j["cpu"] = cpu_json(c0, c1);
  return finish(bytes, static_cast<double>(t1 - t0) / 1e9);
}

}  // namespace kpx::bench
