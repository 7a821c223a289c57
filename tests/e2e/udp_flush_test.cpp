// UDP flows when a Service's endpoints change, end to end in the lab (as
// kube-proxy's pkg/proxy/conntrack cleans them up): a client that keeps
// sending on one socket, so that every datagram refreshes its conntrack
// entry, is moved off an endpoint that is removed; a client refused while
// the Service had no endpoints is served on its next datagram once it has
// some; a flow to a terminating endpoint that still serves finishes there.
// The Services have no selector: their EndpointSlices are written here,
// conditions included, and replaced in place (never deleted on the way).
#include <arpa/inet.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>

#include "e2e/lab_fixture.h"
#include "net/endpoint.h"
#include "net/socket.h"

namespace kpx::e2e {
namespace {

struct Ep {
  std::string pod;
  bool ready = true, serving = true, terminating = false;
};

class UdpFlushTest : public LabTest {
 protected:
  // kubectl `verb` (create, replace) of the JSON objects in `objs`.
  int kubectl_objects(const std::string& verb, const std::string& objs) {
    return sh("printf '%s' '" + objs + "' | kubectl --server " + api_ + " " + verb +
              " --validate=false -f - >/dev/null");
  }
  // A Service without selector, one UDP port named dns: 53 to 8080.
  static std::string service(const std::string& name) {
    return "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"" + name +
           "\"},\"spec\":{\"ports\":[{\"name\":\"dns\",\"protocol\":\"UDP\",\"port\":53,\"targetPort\":8080}]}}\n";
  }
  // The Service's one EndpointSlice with these endpoints (lab pods).
  std::string slice(const std::string& service, const std::vector<Ep>& eps) {
    json endpoints = json::array();
    for (const Ep& e : eps) {
      const std::string ip = pod_ip(e.pod);
      EXPECT_FALSE(ip.empty()) << e.pod;
      endpoints.push_back({{"addresses", {ip}},
                           {"conditions", {{"ready", e.ready}, {"serving", e.serving}, {"terminating", e.terminating}}},
                           {"nodeName", kubectl_json("get pod " + e.pod)["spec"].value("nodeName", "")},
                           {"targetRef", {{"kind", "Pod"}, {"name", e.pod}, {"namespace", "default"}}}});
    }
    json s = {{"apiVersion", "discovery.k8s.io/v1"},
              {"kind", "EndpointSlice"},
              {"metadata", {{"name", service + "-1"}, {"labels", {{"kubernetes.io/service-name", service}}}}},
              {"addressType", "IPv4"},
              {"endpoints", endpoints},
              {"ports", {{{"name", "dns"}, {"protocol", "UDP"}, {"port", 8080}}}}};
    return s.dump() + "\n";
  }
  // node's datapath holds frontend (IP:53/UDP) with exactly these pods'
  // backends (none: an empty set, which refuses).
  bool programmed(const std::string& node, const std::string& frontend, const std::vector<std::string>& pods) {
    std::set<std::string> want;
    for (const auto& p : pods) want.insert(pod_ip(p) + ":8080");
    for (int i = 0; i < 200; ++i) {
      std::string out;
      kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-" + node + " svc list -o json", &out);
      json list = json::parse(out, nullptr, false);
      if (list.is_array())
        for (const auto& s : list)
          if (s.value("service", "") == frontend) {
            std::set<std::string> have;
            for (const auto& b : s["backends"]) have.insert(b.get<std::string>());
            if (have == want) return true;
          }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  // node's UDP flows (FORWARD entries) through vip:53 translated to pod:8080.
  size_t udp_flows_to(const std::string& node, const std::string& vip, const std::string& pod) {
    std::string out;
    EXPECT_EQ(kpx("--pin-dir /sys/fs/bpf/kpx-" + name_ + "-" + node + " ct list -o json", &out), 0) << out;
    size_t n = 0;
    json list = json::parse(out, nullptr, false);
    if (list.is_array())
      for (const auto& e : list)
        n += e.value("direction", "") == "forward" && e.value("protocol", "") == "UDP" &&
             e.value("dst", "") == vip + ":53" && e.value("nat", "") == pod_ip(pod) + ":8080";
    return n;
  }

  // A UDP socket made in `pod`'s network namespace, connected to vip:53:
  // one flow (one source port) for as long as it lives.
  bpf::UniqueFd connected_socket(const std::string& pod, const std::string& vip) {
    auto s = net::bound_socket_in_netns("kpxlab-" + name_ + "-pod-default." + pod, SOCK_DGRAM, 0, 0);
    EXPECT_TRUE(s) << s.error().message;
    if (!s) return {};
    const int big = 4 << 20;  // room for every reply a one-way sender leaves unread
    EXPECT_EQ(setsockopt(s->get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big), 0);
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(53);
    dst.sin_addr.s_addr = *net::parse_ipv4(vip);
    EXPECT_EQ(connect(s->get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0) << strerror(errno);
    return std::move(s).value();
  }
  // The next reply on fd within timeout_ms: the answering pod's name, ""
  // on a timeout, "refused" for the ICMP port unreachable of a refusal.
  static std::string reply(int fd, int timeout_ms) {
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0) return errno == ECONNREFUSED ? "refused" : "";
    std::string line(buf, static_cast<size_t>(n));
    if (line.rfind("pod=", 0) != 0) return "?" + line;
    return line.substr(4, line.find(' ') - 4);
  }
  static std::string ask(int fd, int timeout_ms = 1000) {
    if (send(fd, "hello", 5, 0) != 5) return errno == ECONNREFUSED ? "refused" : "";
    return reply(fd, timeout_ms);
  }

  // A Service on echo-1-1 and echo-1-2 and a client in echo-2-1 (node2)
  // with one flow to it: which pod that flow is on (first) and the other.
  struct Flow {
    std::string vip, first, other;
    bpf::UniqueFd sock;
  };
  void flow_to_one_of_two(const std::string& name, Flow* f) {
    ASSERT_EQ(kubectl_objects("create", service(name)), 0);
    ASSERT_EQ(kubectl_objects("create", slice(name, {{"echo-1-1"}, {"echo-1-2"}})), 0);
    f->vip = cluster_ip(name);
    ASSERT_TRUE(programmed("node2", f->vip + ":53/UDP", {"echo-1-1", "echo-1-2"}));
    f->sock = connected_socket("echo-2-1", f->vip);
    ASSERT_TRUE(f->sock.valid());
    f->first = ask(f->sock.get());
    ASSERT_TRUE(f->first == "echo-1-1" || f->first == "echo-1-2") << f->first;
    f->other = f->first == "echo-1-1" ? "echo-1-2" : "echo-1-1";
    ASSERT_EQ(udp_flows_to("node2", f->vip, f->first), 1u);
  }
};

// A client that sends one datagram every 20 ms on one socket and never
// waits for an answer (its replies are read afterwards, to see where each
// datagram landed) keeps its conntrack entry fresh forever: only the flush
// moves it off the endpoint removed from the slice (whose pod still runs
// and would answer), to the one that stays, without a datagram lost.
TEST_F(UdpFlushTest, AOneWayClientIsMovedOffARemovedEndpointToTheOneThatStays) {
  Flow f;
  ASSERT_NO_FATAL_FAILURE(flow_to_one_of_two("sink", &f));
  const std::string &vip = f.vip, &first = f.first, &other = f.other;
  const bpf::UniqueFd& sock = f.sock;

  // Sends until stopped (at most 1500, 30 s): from before the change until
  // a second after it is programmed, however long that takes on a loaded
  // machine.
  std::atomic<int> sent{0};
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    for (int i = 0; i < 1500 && !stop; ++i) {
      sent += send(sock.get(), "ping", 4, 0) == 4;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(kubectl_objects("replace", slice("sink", {{other}})), 0);  // EXPECT: the sender must be joined
  EXPECT_TRUE(programmed("node2", vip + ":53/UDP", {other}));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  stop = true;
  sender.join();
  const size_t kDatagrams = static_cast<size_t>(sent.load());
  ASSERT_GE(kDatagrams, 60u);

  std::vector<std::string> landed;
  for (std::string r; !(r = reply(sock.get(), 500)).empty();) landed.push_back(r);
  std::string order;
  for (const auto& r : landed) order += (r == first ? "F" : r == other ? "O" : "[" + r + "]");
  EXPECT_EQ(landed.size(), kDatagrams) << "every datagram answered: " << order;
  size_t i = 0;
  for (; i < landed.size() && landed[i] == first; ++i) {
  }
  EXPECT_GE(i, 10u) << "the client was on " << first << " before the change: " << order;
  EXPECT_GE(landed.size() - i, 30u) << "the client moved: " << order;
  for (; i < landed.size(); ++i) EXPECT_EQ(landed[i], other) << "once moved it stays moved: " << order;
  EXPECT_EQ(udp_flows_to("node2", vip, first), 0u);
  EXPECT_EQ(udp_flows_to("node2", vip, other), 1u);
}

// A Service without endpoints refuses each datagram (ICMP port unreachable:
// a connected socket reads ECONNREFUSED, and stays usable); kube-proxy
// clears what the refused flow left when endpoints come. Here the same
// socket's first datagram after the endpoint is programmed is answered.
TEST_F(UdpFlushTest, ARefusedClientIsServedOnItsNextDatagramOnceTheServiceHasEndpoints) {
  ASSERT_EQ(kubectl_objects("create", service("late")), 0);
  ASSERT_EQ(kubectl_objects("create", slice("late", {})), 0);
  const std::string vip = cluster_ip("late");
  ASSERT_TRUE(programmed("node2", vip + ":53/UDP", {}));

  bpf::UniqueFd sock = connected_socket("echo-2-1", vip);
  ASSERT_TRUE(sock.valid());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ask(sock.get(), 2000), "refused") << "datagram " << i;

  ASSERT_EQ(kubectl_objects("replace", slice("late", {{"echo-1-3"}})), 0);
  ASSERT_TRUE(programmed("node2", vip + ":53/UDP", {"echo-1-3"}));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ask(sock.get()), "echo-1-3") << "datagram " << i << " after the change";

  // And back to none: its flow is flushed, the next datagram refused.
  ASSERT_EQ(kubectl_objects("replace", slice("late", {})), 0);
  ASSERT_TRUE(programmed("node2", vip + ":53/UDP", {}));
  EXPECT_EQ(udp_flows_to("node2", vip, "echo-1-3"), 0u);
  EXPECT_EQ(ask(sock.get(), 2000), "refused");
}

// An endpoint that terminates while it still serves (ready=false,
// serving=true, terminating=true): the client on it stays on it, new
// clients go to the ready endpoint; once it is gone from the slice, the
// client moves.
TEST_F(UdpFlushTest, AFlowToATerminatingEndpointFinishesThereAndMovesWhenItIsGone) {
  Flow f;
  ASSERT_NO_FATAL_FAILURE(flow_to_one_of_two("drain", &f));
  const std::string &vip = f.vip, &first = f.first, &other = f.other;
  const bpf::UniqueFd& sock = f.sock;

  ASSERT_EQ(kubectl_objects("replace", slice("drain", {{first, false, true, true}, {other}})), 0);
  ASSERT_TRUE(programmed("node2", vip + ":53/UDP", {other}));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ask(sock.get()), first) << "the flow finishes on the terminating endpoint";
  for (const auto& a : probe("echo-2-2", vip + ":53/udp", 10)) {
    EXPECT_TRUE(a.ok) << a.line;
    EXPECT_EQ(a.pod, other) << "a new flow goes to the ready endpoint";
  }

  // Gone from the slice: the maps already hold only `other`, so the
  // agent's flush is all that changes. The client moves within the bound.
  ASSERT_EQ(kubectl_objects("replace", slice("drain", {{other}})), 0);
  std::vector<std::string> seen;
  for (int i = 0; i < 100 && (seen.empty() || seen.back() != other); ++i) {
    seen.push_back(ask(sock.get(), 500));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), other) << "the client moved once the endpoint was gone";
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ask(sock.get()), other);
  EXPECT_EQ(udp_flows_to("node2", vip, first), 0u);
}

}  // namespace
}  // namespace kpx::e2e
