// Socket-level load balancing (bpf/kpx_sock.bpf.c) with real sockets: the
// hooks attached to a cgroup of the test's own, clients in a namespace of
// the test's own that join that cgroup, TCP (connect, getpeername) and
// unconnected UDP (sendmsg, recvmsg) to a ClusterIP and to a NodePort on
// 127.0.0.1 and on the node's address. A process outside the cgroup, or in
// another namespace, is not translated.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "dataplane/dataplane.h"
#include "datapath_fixture.h"
#include "lab/cgroup.h"
#include "lab/echo.h"
#include "net/netns.h"
#include "support/scoped.h"

namespace kpx::bpftest {
namespace {

using net::Proto;
using testing::sh_out;
namespace fs = std::filesystem;

constexpr const char* kVip = "10.96.0.77";
constexpr const char* kNode = "10.0.0.11";
constexpr const char* kBackend = "10.244.9.2";

class SockLb : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (HasFatalFailure()) return;
    auto s = bpf::SockObject::load(pins.path());
    ASSERT_TRUE(s.ok()) << s.error().message;
    sock_.emplace(std::move(*s));
    ns_ = netns_.add("sock");
    other_ns_ = netns_.add("other");
    ASSERT_FALSE(ns_.empty() || other_ns_.empty());
    for (const std::string& ns : {ns_, other_ns_})
      for (const char* c : {"link set lo up", "link add d0 type veth peer name d1", "link set d0 up", "link set d1 up", "addr add 10.0.0.11/24 dev d0",
                            "addr add 10.244.9.2/24 dev d0", "route add 10.96.0.0/16 dev d0"})
        ASSERT_EQ(std::system(("ip -n " + ns + " " + c).c_str()), 0) << c;
    auto root = lab::cgroup2_root();
    ASSERT_TRUE(root.ok()) << root.error().message;
    cgroup_ = *root + "/kpx-test-" + std::to_string(getpid()) + "-sock" + std::to_string(seq_++);
    ASSERT_TRUE(fs::create_directory(cgroup_)) << cgroup_;
    auto st = sock_->attach(cgroup_);
    ASSERT_TRUE(st.ok()) << st.error().message;
    // Two backends of every frontend: one echo server each, by port.
    for (const auto& [name, port] : {std::pair{"be1", 8080}, std::pair{"be2", 8081}})
      procs_->spawn({"ip", "netns", "exec", ns_, KPX_BINARY, "lab", "echo-server", "--name", name, "--port",
                    std::to_string(port)});
    // The node's namespace is the one socket LB acts on.
    kpx_config c = maps->read_config();
    const uint64_t cookie = netns_cookie(ns_);
    ASSERT_NE(cookie, 0u);
    c.sock_netns_cookie_lo = static_cast<uint32_t>(cookie);
    c.sock_netns_cookie_hi = static_cast<uint32_t>(cookie >> 32);
    set_config(c);
    auto dp = dataplane::Dataplane::recover(*maps);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    ASSERT_TRUE(dp->set_node_addresses({ipv4(kNode)}, 0, std::nullopt).ok());
    for (Proto proto : {Proto::kTcp, Proto::kUdp}) {
      std::vector<net::BackendAddr> bs = {{ipv4(kBackend), 8080}, {ipv4(kBackend), 8081}};
      ASSERT_TRUE(dp->upsert({net::IpAddr::from_v4(ipv4(kVip)), 80, proto, dataplane::Scope::kClusterIP},
                             dataplane::frontend_of(bs, "default/web"))
                      .ok());
      ASSERT_TRUE(dp->upsert({net::IpAddr::from_v4(0), 30080, proto, dataplane::Scope::kNodePort},
                             dataplane::frontend_of(bs, "default/web"))
                      .ok());
    }
    // The servers listen.
    for (int i = 0; i < 100 && probe(ns_, std::string(kBackend) + ":8081/tcp", 1, false)[0].ok == false; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  void TearDown() override {
    procs_.reset();  // the servers stop before the cgroup and namespaces go
    if (!cgroup_.empty()) {
      (void)bpf::detach_sock_hooks(cgroup_);
      // Whatever ran in it has exited: it can go.
      for (int i = 0; i < 50 && rmdir(cgroup_.c_str()) != 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      EXPECT_FALSE(fs::exists(cgroup_));
    }
    sock_.reset();
    DatapathTest::TearDown();
  }

  static uint64_t netns_cookie(const std::string& ns) {
    auto scope = net::NetnsScope::enter(ns);
    if (!scope.ok()) return 0;
    auto cookie = net::netns_cookie();
    return cookie ? *cookie : 0;
  }

  // `kpx lab probe` in namespace ns, inside the test's cgroup or not.
  std::vector<lab::ProbeAnswer> probe(const std::string& ns, const std::string& target, int count, bool in_cgroup = true) {
    std::string cmd = std::string("ip netns exec ") + ns + " " + KPX_BINARY + " lab probe " + target + " --count " +
                      std::to_string(count) + " --timeout-ms 500";
    if (in_cgroup) cmd = "sh -c 'echo $$ > " + cgroup_ + "/cgroup.procs && exec " + cmd + "'";
    auto a = lab::parse_probe_output(sh_out(cmd + " 2>&1"));
    if (a.empty()) a.push_back({});
    return a;
  }

  std::optional<bpf::SockObject> sock_;
  testing::ScopedNetns netns_;
  std::optional<testing::ScopedProcesses> procs_{std::in_place};
  std::string ns_, other_ns_, cgroup_;
  static inline int seq_ = 0;
};

TEST_F(SockLb, ANodeLocalClientReachesClusterIpsAndNodePortsOverTcpAndUdp) {
  for (const std::string& target : {std::string(kVip) + ":80", std::string("127.0.0.1:30080"), std::string(kNode) + ":30080"}) {
    for (const char* proto : {"tcp", "udp"}) {
      std::set<std::string> pods;
      for (const auto& r : probe(ns_, target + "/" + proto, 12)) {
        EXPECT_TRUE(r.ok) << target << "/" << proto << ": " << r.line;
        EXPECT_EQ(r.from, target) << "getpeername / recvfrom name the frontend, not the backend: " << r.line;
        pods.insert(r.pod);
      }
      EXPECT_EQ(pods, (std::set<std::string>{"be1", "be2"})) << target << "/" << proto << ": both backends";
    }
  }
  EXPECT_GE(counter(KPX_CTR_SOCK_LB), 72u);
}

TEST_F(SockLb, OnlyTheNodesNamespaceInsideTheCgroupIsTranslated) {
  // Outside the cgroup: the VIP is no one's (nothing answers).
  for (const auto& r : probe(ns_, std::string(kVip) + ":80/udp", 2, false)) EXPECT_FALSE(r.ok) << r.line;
  // In the cgroup but another namespace (a pod's, in host mode): untouched.
  for (const auto& r : probe(other_ns_, std::string(kVip) + ":80/tcp", 2)) EXPECT_FALSE(r.ok) << r.line;
  EXPECT_EQ(counter(KPX_CTR_SOCK_LB), 0u);
  // --socket-lb=all: every namespace in the cgroup (the other one has no
  // servers: translated, then refused by the backend's absence).
  kpx_config c = maps->read_config();
  c.flags |= KPX_CFG_F_SOCK_LB_ALL;
  set_config(c);
  for (const auto& r : probe(other_ns_, std::string(kVip) + ":80/tcp", 2)) EXPECT_NE(r.line.find("refused"), std::string::npos) << r.line;
  EXPECT_EQ(counter(KPX_CTR_SOCK_LB), 2u);
}

// kube-proxy's REJECT of a Service without endpoints makes connect() fail
// with ECONNREFUSED at once; under policy Local without a local endpoint
// (DROP) kpx fails the call with EPERM at once, where kube-proxy's dropped
// SYN would retry until the connect times out.
TEST_F(SockLb, AFrontendWithoutEndpointsRefusesTheConnectAndIsCounted) {
  auto dp = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(dp.ok());
  dataplane::Frontend empty = dataplane::frontend_of({}, "default/empty");
  empty.flags |= dataplane::kRejectEmpty;
  ASSERT_TRUE(dp->upsert({net::IpAddr::from_v4(ipv4("10.96.0.78")), 80, Proto::kTcp, dataplane::Scope::kClusterIP},
                         empty)
                  .ok());
  auto a = probe(ns_, "10.96.0.78:80/tcp", 1);
  EXPECT_FALSE(a[0].ok);
  EXPECT_NE(a[0].line.find("refused"), std::string::npos) << a[0].line;
  EXPECT_EQ(counter(KPX_CTR_REJECT), 1u);

  // internalTrafficPolicy Local, the endpoints elsewhere.
  dataplane::Frontend elsewhere = dataplane::frontend_of({{ipv4("10.244.2.7"), 8080}}, "default/elsewhere");
  elsewhere.flags |= dataplane::kRejectEmpty | dataplane::kLocalOnly;
  ASSERT_TRUE(dp->upsert({net::IpAddr::from_v4(ipv4("10.96.0.79")), 80, Proto::kTcp, dataplane::Scope::kClusterIP},
                         elsewhere)
                  .ok());
  auto b = probe(ns_, "10.96.0.79:80/tcp", 1);
  EXPECT_FALSE(b[0].ok);
  EXPECT_NE(b[0].line.find("not permitted"), std::string::npos) << b[0].line;
  EXPECT_EQ(counter(KPX_CTR_DROP_NO_LOCAL), 1u);
  EXPECT_EQ(counter(KPX_CTR_REJECT), 1u);
}

// The stale-resolver failure: a client keeps one connected UDP socket (as
// a stub resolver does) and its backend leaves the Service. The agent's
// sink destroys that socket (the UDP socket iterator, bpf_sock_destroy):
// the client's next request fails, it connects again and reaches the
// backend that is left. A socket connected to the same backend by its own
// address, not through the Service, is left alone. The removed backend's
// server keeps running here: without the destroy, the client would go on
// talking to it for as long as it lives.
TEST_F(SockLb, AConnectedUdpSocketWhoseBackendLeavesTheServiceIsDestroyedAndReconnects) {
  auto dp = dataplane::Dataplane::recover(*maps);
  ASSERT_TRUE(dp.ok()) << dp.error().message;
  size_t sink_calls = 0;
  dp->set_lost_udp_sink([&](const std::vector<kpx_sock_lost_key>& lost) -> size_t {
    ++sink_calls;
    auto n = sock_->destroy_udp_sockets(lost, {"/var/run/netns/" + ns_});
    EXPECT_TRUE(n.ok()) << n.error().message;
    return n ? static_cast<size_t>(*n) : 0;
  });
  const std::string dir = fs::temp_directory_path() / ("kpx-test-" + std::to_string(getpid()) + "-udp-reap");
  fs::create_directories(dir);
  struct Cleanup {
    std::string d;
    ~Cleanup() { fs::remove_all(d); }
  } cleanup{dir};
  auto client = [&](const std::string& target, const std::string& file) {
    return std::thread([this, target, file] {
      (void)sh_out("sh -c 'echo $$ > " + cgroup_ + "/cgroup.procs && exec ip netns exec " + ns_ + " " + KPX_BINARY +
                   " lab probe " + target + " --keep-socket --count 40 --interval-ms 50 --timeout-ms 300' > " + file +
                   " 2>&1");
    });
  };
  std::thread via_vip = client(std::string(kVip) + ":80/udp", dir + "/vip");
  std::thread direct = client(std::string(kBackend) + ":8080/udp", dir + "/direct");
  auto read = [](const std::string& f) {
    std::ifstream in(f);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // The pod the Service's socket talks to.
  std::string first;
  for (int i = 0; i < 100 && first.empty(); ++i) {
    auto a = lab::parse_probe_output(read(dir + "/vip"));
    if (a.size() >= 3 && a[0].ok) first = a[0].pod;
    else std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(first.empty()) << read(dir + "/vip");
  const uint16_t gone_port = first == "be1" ? 8080 : 8081, left_port = first == "be1" ? 8081 : 8080;
  const std::string left = first == "be1" ? "be2" : "be1";
  const uint64_t destroyed_before = counter(KPX_CTR_SOCK_UDP_DESTROYED);
  auto st = dp->upsert({net::IpAddr::from_v4(ipv4(kVip)), 80, Proto::kUdp, dataplane::Scope::kClusterIP},
                       dataplane::frontend_of({{ipv4(kBackend), left_port}}, "default/web"));
  ASSERT_TRUE(st.ok()) << st.error().message;
  via_vip.join();
  direct.join();
  EXPECT_EQ(sink_calls, 1u);
  EXPECT_EQ(counter(KPX_CTR_SOCK_UDP_DESTROYED) - destroyed_before, 1u) << "one socket: the Service's, not the direct one";
  (void)gone_port;

  // Before: the first pod; one failed request (the destroyed socket); after:
  // only the pod that is left, through the Service's address all along.
  auto answers = lab::parse_probe_output(read(dir + "/vip"));
  ASSERT_EQ(answers.size(), 40u) << read(dir + "/vip");
  size_t failed = 0, i = 0;
  for (; i < answers.size() && answers[i].ok; ++i) EXPECT_EQ(answers[i].pod, first) << answers[i].line;
  for (; i < answers.size() && !answers[i].ok; ++i) {
    ++failed;
    // The destroyed socket's error (it is disconnected), not a lost reply.
    EXPECT_EQ(answers[i].line.find("timeout"), std::string::npos) << answers[i].line;
  }
  EXPECT_EQ(failed, 1u) << read(dir + "/vip");
  EXPECT_GE(answers.size() - i, 20u) << "answered again after the reconnect: " << read(dir + "/vip");
  for (; i < answers.size(); ++i) {
    EXPECT_TRUE(answers[i].ok) << answers[i].line;
    EXPECT_EQ(answers[i].pod, left) << answers[i].line;
    EXPECT_EQ(answers[i].from, std::string(kVip) + ":80") << answers[i].line;
  }
  // The direct socket never failed, and still talks to its pod.
  auto d = lab::parse_probe_output(read(dir + "/direct"));
  ASSERT_EQ(d.size(), 40u) << read(dir + "/direct");
  for (const auto& r : d) {
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_EQ(r.pod, "be1") << r.line;
  }
}

}  // namespace
}  // namespace kpx::bpftest
