// kpx-bench socket-lb.
//
// How the connect cases are measured
// ----------------------------------
// The hooks act on the sockets of a cgroup, in the node's network namespace
// (the config's netns cookie), so the bench makes both of its own and
// touches neither the machine's root cgroup nor the root namespace:
//  - the namespace kpx-bench-<pid>-sock: lo up, the backend's address
//    10.244.1.10/32 on lo;
//  - the cgroup kpx-bench-<pid> under the cgroup v2 root, with two children:
//    hooked/, where the socket hooks are attached, and bare/, where none
//    are (a socket belongs to the cgroup of the process that made it, so
//    moving the measuring process between the two switches the hooks on and
//    off for the sockets it makes next, with nothing attached or detached
//    during the run);
//  - the pin directory /sys/fs/bpf/kpx-bench-<pid>-sock with kpx_lxc's maps
//    (no tc programs: nothing here is per packet), kpx_sock loaded on them,
//    the config naming that namespace's cookie, and the frontend ClusterIP
//    10.96.0.10:80, TCP and UDP, -> 10.244.1.10:8080 written through
//    dataplane::Dataplane as the agent writes it.
// A forked child joins bare/, enters the namespace, pins itself to one CPU,
// listens on 10.244.1.10:8080 (a thread on the same CPU accepts and
// closes) and runs the loops; it
// reports its figures over a pipe as JSON and exits; the parent then removes
// the cgroup, the pin directory and the namespace (also on a failure or
// Ctrl-C: each is a scope guard).
//
// One operation is socket() + connect() + close(): TCP to the listening
// backend (blocking connect: the handshake completes on lo before it
// returns; SO_LINGER 0, so close sends RST and no TIME_WAIT piles up over
// the loop's ports), UDP on a datagram socket (connect() only picks the
// route and the source; nothing is sent). Per round, for TCP then UDP, the
// three cases in order, each `connects` operations (or 10 s, whichever
// comes first), its figure the loop's mean ns per operation (after an
// untimed round of a tenth of that):
//  - backend_no_hooks: to 10.244.1.10:8080 from bare/: the floor. (The
//    kernel's static key for cgroup connect hooks is on, as on any node
//    where they are attached somewhere: the floor includes the check that
//    this socket's cgroup has none.)
//  - backend_hooks: the same from hooked/: kpx_sock_connect4 runs, finds no
//    frontend (a classification filter read) and lets the call go on: what
//    the hooks cost traffic that is no Service's.
//  - cluster_ip_hooks: to 10.96.0.10:80 from hooked/: translated to the
//    backend (frontend lookup, backend pick, the socket's storage entry).
// The table gives the median over rounds. Checked: every connect succeeds
// (an untranslated one to the ClusterIP could not: the namespace has no
// route to it), kpx's sock_lb counter grew by exactly the number of
// ClusterIP connects and by nothing else, and the listener accepted every
// TCP connection.
#include "socket_lb.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bpf/fd.h"
#include "bpf/object.h"
#include "bpf/pinned_maps.h"
#include "crr.h"
#include "dataplane/dataplane.h"
#include "lab/cgroup.h"
#include "lab/proc.h"
#include "net/netns.h"
#include "packet/craft.h"
#include "prog_run.h"

namespace kpx::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr const char* kVip = "10.96.0.10";       // kServicePort (80)
constexpr const char* kBackend = "10.244.1.10";  // kBackendPort (8080)
const char* const kProtos[] = {"tcp", "udp"};
const char* const kCases[] = {"backend_no_hooks", "backend_hooks", "cluster_ip_hooks"};
const char* const kCaseLabels[] = {"backend address, no hooks (floor)", "backend address, hooks attached",
                                   "ClusterIP, hooks attached (translated)"};
// A case's loop stops at its count or after this long.
constexpr auto kCaseCap = std::chrono::seconds(10);

// ---- the cgroup and the measuring process -------------------------------------

// <cgroup2 root>/kpx-bench-<pid> with hooked/ and bare/: made fresh (one of
// that name is refused), on destruction the hooks detached, whatever still
// runs in it killed (only the bench's child can) and the tree removed.
class BenchCgroup {
 public:
  BenchCgroup() : rel_("kpx-bench-" + std::to_string(getpid())) {}
  ~BenchCgroup() {
    if (!owned_) return;
    (void)bpf::detach_sock_hooks(path("hooked"));
    (void)lab::remove_cgroup(rel_, 2000);
  }
  BenchCgroup(const BenchCgroup&) = delete;
  BenchCgroup& operator=(const BenchCgroup&) = delete;

  Status create() {
    auto root = lab::cgroup2_root();
    if (!root) return root.error();
    top_ = *root + "/" + rel_;
    if (mkdir(top_.c_str(), 0755) != 0) {
      if (errno == EEXIST) return invalid_argument("cgroup " + top_ + " already exists; not reusing it");
      return errno_error("mkdir " + top_, errno);
    }
    owned_ = true;
    for (const char* c : {"hooked", "bare"})
      if (mkdir(path(c).c_str(), 0755) != 0) return errno_error("mkdir " + path(c), errno);
    return {};
  }
  std::string path(const char* child) const { return top_ + "/" + child; }
  const std::string& rel() const { return rel_; }

 private:
  std::string rel_, top_;
  bool owned_ = false;
};

// The forked measuring process: killed and reaped on destruction unless it
// was reaped before.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

sockaddr_in sockaddr_of(const char* addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = packet::ipv4(addr);
  a.sin_port = htons(port);
  return a;
}

// The calling process (all its threads) into the cgroup directory dir.
Status join_cgroup(const std::string& dir) {
  const std::string pid = std::to_string(getpid());
  bpf::UniqueFd fd(open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_error("open " + dir + "/cgroup.procs", errno);
  if (write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()))
    return errno_error("join cgroup " + dir, errno);
  return {};
}

// The calling thread (and the threads it starts) on the last CPU it may
// use. Left to the scheduler, the loop and the accepting thread moved
// between the two cores from run to run, and the TCP figures with them
// (24.6 or 34 us for the same case in one run); pinned, a case's rounds
// agree within a few per cent.
Status pin_to_one_cpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return errno_error("sched_getaffinity", errno);
  int cpu = -1;
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &set)) cpu = i;
  if (cpu < 0) return system_error("no CPU to run on");
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) return errno_error("sched_setaffinity", errno);
  return {};
}

// The TCP backend in the child's namespace: a listener on
// kBackend:kBackendPort and a thread that accepts and closes until stop().
class Backend {
 public:
  ~Backend() { stop(); }
  Status start() {
    fd_ = bpf::UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_.valid()) return errno_error("socket", errno);
    const int one = 1;
    setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const sockaddr_in a = sockaddr_of(kBackend, kBackendPort);
    if (bind(fd_.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
      return errno_error(std::string("bind ") + kBackend + ":" + std::to_string(kBackendPort), errno);
    // A backlog the accepting thread cannot fall behind: an overflowing
    // accept queue drops a SYN, and its connect would wait a second for the
    // retransmission.
    if (listen(fd_.get(), 4096) != 0) return errno_error("listen", errno);
    thread_ = std::thread([this] {
      for (;;) {
        int c = accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          close(c);
          accepted_.fetch_add(1, std::memory_order_relaxed);
        } else if (errno != EINTR && errno != ECONNABORTED) {
          return;  // shut down
        }
      }
    });
    return {};
  }
  uint64_t accepted() const { return accepted_.load(); }
  // Stops the accepting thread (shutdown wakes its accept).
  void stop() {
    if (!thread_.joinable()) return;
    shutdown(fd_.get(), SHUT_RDWR);
    thread_.join();
  }

 private:
  bpf::UniqueFd fd_;
  std::thread thread_;
  std::atomic<uint64_t> accepted_{0};
};

// One case: up to n sockets of `type`, each connected to dst and closed.
// Returns the mean ns per socket+connect+close; *done, how many there were.
Result<double> connect_loop(int type, const sockaddr_in& dst, uint32_t n, uint32_t* done) {
  const linger rst{1, 0};
  const auto start = Clock::now(), cap = start + kCaseCap;
  uint32_t i = 0;
  while (i < n) {
    if (interrupted()) return system_error("interrupted");
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket", errno);
    if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0) {
      const int e = errno;
      close(fd);
      return errno_error(std::string(type == SOCK_STREAM ? "TCP" : "UDP") + " connect to " +
                             net::format(net::BackendAddr{dst.sin_addr.s_addr, ntohs(dst.sin_port)}),
                         e);
    }
    close(fd);
    ++i;
    if (Clock::now() >= cap) break;
  }
  *done = i;
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / i;
}

// The child's work: every round's figures, as JSON (or {"error": ...}).
json child_main(const std::string& netns, const BenchCgroup& cg, uint32_t rounds, uint32_t connects,
                std::ostream& err) {
  auto fail = [](const Error& e) { return json{{"error", e.message}}; };
  if (auto st = join_cgroup(cg.path("bare")); !st) return fail(st.error());
  auto scope = net::NetnsScope::enter(netns);  // for the rest of the child's life
  if (!scope) return fail(scope.error());
  if (auto st = pin_to_one_cpu(); !st) return fail(st.error());
  Backend backend;  // its thread inherits the CPU
  if (auto st = backend.start(); !st) return fail(st.error());
  const sockaddr_in to_backend = sockaddr_of(kBackend, kBackendPort), to_vip = sockaddr_of(kVip, kServicePort);
  json res = {{"ns", json::object()}, {"done", json::object()}};
  uint64_t vip_connects = 0, tcp_connects = 0;
  // Round 0 warms up (a tenth of the count, untimed): the first timed round
  // was otherwise 15% slower than the rest in every case.
  for (uint32_t r = 0; r <= rounds; ++r) {
    if (r > 0) err << "kpx-bench socket-lb: connect round " << r << "/" << rounds << "\n";
    for (const char* proto : kProtos) {
      const int type = std::string(proto) == "tcp" ? SOCK_STREAM : SOCK_DGRAM;
      for (const char* c : kCases) {
        const std::string name = c;
        if (auto st = join_cgroup(cg.path(name == "backend_no_hooks" ? "bare" : "hooked")); !st)
          return fail(st.error());
        uint32_t done = 0;
        auto ns = connect_loop(type, name == "cluster_ip_hooks" ? to_vip : to_backend,
                               r == 0 ? std::max(connects / 10, 1u) : connects, &done);
        if (!ns) return fail(Error{ns.error().kind, name + ", " + proto + ": " + ns.error().message});
        if (name == "cluster_ip_hooks") vip_connects += done;
        if (type == SOCK_STREAM) tcp_connects += done;
        if (r == 0) continue;
        res["ns"][proto][name].push_back(*ns);
        res["done"][proto][name].push_back(done);
      }
    }
  }
  // Every TCP connection was in the accept queue before its connect
  // returned; wait (briefly) for the thread to have taken the last ones.
  for (int i = 0; i < 100 && backend.accepted() < tcp_connects; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  backend.stop();
  res["cluster_ip_connects"] = vip_connects;
  res["tcp_connects"] = tcp_connects;
  res["tcp_accepted"] = backend.accepted();
  return res;
}

// Everything the child wrote to fd until it closed it, or an error after
// `timeout`.
Result<std::string> read_all(int fd, Clock::duration timeout) {
  std::string out;
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return system_error("the measuring process did not finish in time");
    pollfd p{fd, POLLIN, 0};
    const int rc = poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno != EINTR) return errno_error("poll", errno);
    if (rc < 0 && interrupted()) return system_error("interrupted");
    if (rc <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read from the measuring process", errno);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// ---- the connect part -----------------------------------------------------------

struct ConnectResults {
  json child;  // ns and done per protocol, case and round; the counts
  uint64_t sock_lb_delta = 0;
  std::string netns, cgroup;
};

Result<ConnectResults> measure_connects(const SocketLbOptions& o, std::ostream& err) {
  ConnectResults res;
  BenchNetns netns("-sock");
  BenchPinDir pin("-sock");
  KPX_TRY(netns.create());
  res.netns = netns.name();
  KPX_TRY(lab::run_ok({"ip", "-n", netns.name(), "-batch", "-"},
                      std::string("link set lo up\naddr add ") + kBackend + "/32 dev lo\n"));
  KPX_TRY(pin.create());
  auto lxc = bpf::LxcObject::load(pin.path(), /*load_programs=*/false);
  if (!lxc) return lxc.error();
  auto maps = bpf::PinnedMaps::open(pin.path());
  if (!maps) return maps.error();
  auto sock = bpf::SockObject::load(pin.path());
  if (!sock) return sock.error();
  // The bench's namespace is the node's, as the agent writes it for its own.
  uint64_t cookie = 0;
  {
    auto scope = net::NetnsScope::enter(netns.name());
    if (!scope) return scope.error();
    auto c = net::netns_cookie();
    if (!c) return c.error();
    cookie = *c;
  }
  kpx_config cfg = maps->read_config();
  cfg.sock_netns_cookie_lo = static_cast<uint32_t>(cookie);
  cfg.sock_netns_cookie_hi = static_cast<uint32_t>(cookie >> 32);
  KPX_TRY(maps->config.update(0, cfg));
  auto dp = dataplane::Dataplane::recover(*maps);
  if (!dp) return dp.error();
  for (net::Proto proto : {net::Proto::kTcp, net::Proto::kUdp})
    KPX_TRY(dp->upsert({net::IpAddr::from_v4(packet::ipv4(kVip)), kServicePort, proto, dataplane::Scope::kClusterIP},
                       dataplane::frontend_of({{packet::ipv4(kBackend), kBackendPort}}, "bench/socket-lb")));
  BenchCgroup cg;
  KPX_TRY(cg.create());
  res.cgroup = cg.rel();
  KPX_TRY(sock->attach(cg.path("hooked")));
  Counters ctrs(maps->counters.get());
  auto before = ctrs.get(KPX_CTR_SOCK_LB);
  if (!before) return before.error();

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return errno_error("pipe", errno);
  bpf::UniqueFd rd(fds[0]), wr(fds[1]);
  ChildGuard child;
  err.flush();
  child.pid = fork();
  if (child.pid < 0) return errno_error("fork", errno);
  if (child.pid == 0) {
    rd = bpf::UniqueFd();
    const std::string j = child_main(netns.name(), cg, o.rounds, o.connects, err).dump();
    err.flush();
    size_t off = 0;
    while (off < j.size()) {
      const ssize_t n = write(wr.get(), j.data() + off, j.size() - off);
      if (n <= 0 && errno != EINTR) _exit(1);
      if (n > 0) off += static_cast<size_t>(n);
    }
    _exit(0);  // none of the parent's guards run here
  }
  wr = bpf::UniqueFd();
  auto text = read_all(rd.get(), (o.rounds + 1) * 6 * kCaseCap + std::chrono::seconds(30));
  if (!text) return text.error();
  int status = 0;
  if (waitpid(child.pid, &status, 0) == child.pid) child.pid = -1;
  res.child = json::parse(*text, nullptr, false);
  if (res.child.is_discarded() || !res.child.is_object())
    return system_error("the measuring process exited (status " + std::to_string(status) + ") without its figures");
  if (res.child.contains("error")) return system_error(res.child["error"].get<std::string>());

  auto after = ctrs.get(KPX_CTR_SOCK_LB);
  if (!after) return after.error();
  res.sock_lb_delta = *after - *before;
  const uint64_t vip = res.child["cluster_ip_connects"], tcp = res.child["tcp_connects"],
                 accepted = res.child["tcp_accepted"];
  if (res.sock_lb_delta != vip)
    return system_error("kpx's sock_lb counter grew by " + std::to_string(res.sock_lb_delta) + " over " +
                        std::to_string(vip) + " ClusterIP connects: not every one, or not only those, translated");
  if (accepted != tcp)
    return system_error("the backend accepted " + std::to_string(accepted) + " of " + std::to_string(tcp) +
                        " TCP connections");
  return res;
}

// Per protocol and case: median over rounds, ratio to and ns above the floor.
json connect_json(const SocketLbOptions& o, const ConnectResults& r) {
  json cases;
  for (const char* proto : kProtos) {
    const double floor = median(r.child["ns"][proto]["backend_no_hooks"].get<std::vector<double>>());
    for (const char* c : kCases) {
      auto samples = r.child["ns"][proto][c].get<std::vector<double>>();
      const double ns = median(samples);
      cases[proto][c] = {{"ns", ns},
                         {"samples", samples},
                         {"connects", r.child["done"][proto][c]},
                         {"ratio_to_floor", floor > 0 ? ns / floor : 0},
                         {"above_floor_ns", ns - floor}};
    }
  }
  return {{"connects_per_case", o.connects},
          {"operation", "socket+connect+close"},
          {"namespace", r.netns},
          {"cgroup", r.cgroup},
          {"frontend", std::string(kVip) + ":" + std::to_string(kServicePort)},
          {"backend", std::string(kBackend) + ":" + std::to_string(kBackendPort)},
          {"cases", cases},
          {"cluster_ip_connects", r.child["cluster_ip_connects"]},
          {"sock_lb_counter_delta", r.sock_lb_delta},
          {"tcp_connects", r.child["tcp_connects"]},
          {"tcp_accepted", r.child["tcp_accepted"]}};
}

void print_connect_table(const SocketLbOptions& o, const json& j, std::ostream& out) {
  out << "kpx-bench socket-lb, connect: ns per socket+connect+close, median of " << o.rounds << " rounds, "
      << o.connects << " per case and round (cases interleaved per round)\n"
      << "  namespace " << j["namespace"].get<std::string>() << " (" << kBackend
      << " on lo; TCP: a listener on :" << kBackendPort << ", a thread accepting and closing; close with RST)\n"
      << "  cgroup " << j["cgroup"].get<std::string>() << "/{bare,hooked}, kpx's socket hooks on hooked/; ClusterIP "
      << j["frontend"].get<std::string>() << " TCP+UDP -> " << j["backend"].get<std::string>() << "\n\n";
  const size_t label = 40;
  out << std::left << std::setw(label) << "case" << std::right;
  for (const char* h : {"TCP ns", "x floor", "above", "UDP ns", "x floor", "above"}) out << std::setw(10) << h;
  out << "\n";
  for (size_t i = 0; i < std::size(kCases); ++i) {
    out << std::left << std::setw(label) << kCaseLabels[i] << std::right;
    for (const char* proto : kProtos) {
      const json& c = j["cases"][proto][kCases[i]];
      out << std::setw(10) << fmt(c["ns"].get<double>(), 0) << std::setw(10) << fmt(c["ratio_to_floor"].get<double>(), 2)
          << std::setw(10) << fmt(c["above_floor_ns"].get<double>(), 0);
    }
    out << "\n";
  }
  out << "\nsock_lb counter +" << j["sock_lb_counter_delta"].get<uint64_t>() << " for "
      << j["cluster_ip_connects"].get<uint64_t>() << " ClusterIP connects (every one translated, nothing else); "
      << j["tcp_accepted"].get<uint64_t>() << " of " << j["tcp_connects"].get<uint64_t>()
      << " TCP connections accepted\n";
}

}  // namespace

int run_socket_lb(const SocketLbOptions& o, std::ostream& out, std::ostream& err) {
  SignalGuard sig;
  auto conn = measure_connects(o, err);
  if (!conn) {
    err << "\nkpx-bench socket-lb: " << conn.error().message << "\n";
    return interrupted() ? 130 : 1;
  }
  json j = {{"rounds", o.rounds}, {"connect", connect_json(o, *conn)}, {"crr", nullptr}};
  if (!o.json) print_connect_table(o, j["connect"], out);
  if (o.crr) {
    auto crr = measure_crr(o.rounds, o.crrs, err);
    if (!crr) {
      err << "\nkpx-bench socket-lb: CRR: " << crr.error().message << "\n";
      return interrupted() ? 130 : 1;
    }
    j["crr"] = crr_json(*crr);
    if (!o.json) print_crr_table(*crr, out);
  }
  if (o.json) out << j.dump(2) << "\n";
  return 0;
}

}  // namespace kpx::bench
