// The lab's DNS responder: crafted queries (answers, negative answers,
// REFUSED, FORMERR, compression pointers, case), random bytes, and glibc's
// own stub resolver (res_nquery from libresolv) against the server on a
// loopback socket, looking names up in a real store.
#include "lab/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <random>

#include "apiserver/resources.h"

namespace kpx::lab {
namespace {

using apiserver::Json;
using Bytes = std::vector<uint8_t>;

uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

Bytes query(const std::string& name, uint16_t qtype = 1, uint16_t id = 0x1234, uint8_t flags = 0x01) {
  Bytes q = {static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), flags, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    std::string l = name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    q.push_back(static_cast<uint8_t>(l.size()));
    q.insert(q.end(), l.begin(), l.end());
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  q.push_back(0);
  q.push_back(static_cast<uint8_t>(qtype >> 8));
  q.push_back(static_cast<uint8_t>(qtype));
  q.push_back(0);
  q.push_back(1);  // IN
  return q;
}

// A fixed zone: web (ClusterIP), db (headless, two ready endpoints), empty.
std::optional<std::vector<uint32_t>> fixed(std::string_view fqdn) {
  static const std::map<std::string, std::vector<uint32_t>, std::less<>> names = {
      {"web.default.svc.cluster.local", {ip("10.96.0.20")}},
      {"db.default.svc.cluster.local", {ip("10.244.1.5"), ip("10.244.2.7")}},
      {"default.svc.cluster.local", {}}};
  auto it = names.find(fqdn);
  if (it == names.end()) return std::nullopt;
  return it->second;
}

int rcode(const Bytes& r) { return r.at(3) & 0x0F; }
int count(const Bytes& r, int section) { return r.at(4 + 2 * section) << 8 | r.at(5 + 2 * section); }

TEST(DnsAnswer, ServiceNameGetsItsClusterIp) {
  Bytes q = query("web.default.svc.cluster.local");
  Bytes r = dns_answer(q, fixed);
  ASSERT_GE(r.size(), q.size() + 16);
  EXPECT_EQ(r[0], 0x12);
  EXPECT_EQ(r[1], 0x34);
  EXPECT_EQ(r[2], 0x85) << "QR, AA and the query's RD";
  EXPECT_EQ(rcode(r), 0);
  EXPECT_EQ(count(r, 0), 1);
  EXPECT_EQ(count(r, 1), 1);
  EXPECT_EQ(count(r, 2), 0);
  EXPECT_TRUE(std::equal(q.begin() + 12, q.end(), r.begin() + 12)) << "the question, echoed";
  Bytes answer(r.begin() + static_cast<long>(q.size()), r.end());
  EXPECT_EQ(answer, (Bytes{0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20}));
}

TEST(DnsAnswer, CaseInsensitiveAndEchoedAsSent) {
  Bytes q = query("WEB.Default.SVC.cluster.LOCAL");
  Bytes r = dns_answer(q, fixed);
  EXPECT_EQ(count(r, 1), 1);
  EXPECT_TRUE(std::equal(q.begin() + 12, q.end(), r.begin() + 12));
}

TEST(DnsAnswer, HeadlessServiceGetsEveryAddress) {
  Bytes r = dns_answer(query("db.default.svc.cluster.local"), fixed);
  EXPECT_EQ(count(r, 1), 2);
  EXPECT_EQ(Bytes(r.end() - 4, r.end()), (Bytes{10, 244, 2, 7}));
}

TEST(DnsAnswer, NegativeAnswersCarryTheSoa) {
  Bytes nx = dns_answer(query("nope.default.svc.cluster.local"), fixed);
  EXPECT_EQ(rcode(nx), 3);
  EXPECT_EQ(count(nx, 1), 0);
  EXPECT_EQ(count(nx, 2), 1);
  EXPECT_EQ(nx[2] & 0x04, 0x04) << "authoritative";
  Bytes aaaa = dns_answer(query("web.default.svc.cluster.local", 28), fixed);
  EXPECT_EQ(rcode(aaaa), 0) << "the name exists: NODATA, not NXDOMAIN";
  EXPECT_EQ(count(aaaa, 1), 0);
  EXPECT_EQ(count(aaaa, 2), 1);
  Bytes ns = dns_answer(query("default.svc.cluster.local"), fixed);
  EXPECT_EQ(rcode(ns), 0);
  EXPECT_EQ(count(ns, 1), 0);
}

TEST(DnsAnswer, OutsideTheZoneIsRefused) {
  for (const char* name : {"example.com", "local", "cluster.local.evil.com", "web.default.svc.cluster.locale"}) {
    Bytes r = dns_answer(query(name), fixed);
    EXPECT_EQ(rcode(r), 5) << name;
    EXPECT_EQ(count(r, 0), 1) << name;
    EXPECT_EQ(count(r, 1), 0) << name;
  }
}

TEST(DnsAnswer, MalformedQueries) {
  EXPECT_TRUE(dns_answer(Bytes{1, 2, 3}, fixed).empty()) << "shorter than a header: dropped";
  Bytes response = query("web.default.svc.cluster.local", 1, 7, 0x81);
  EXPECT_TRUE(dns_answer(response, fixed).empty()) << "a response is never answered";
  Bytes two = query("web.default.svc.cluster.local");
  two[5] = 2;
  EXPECT_EQ(rcode(dns_answer(two, fixed)), 1);
  Bytes cut = query("web.default.svc.cluster.local");
  cut.resize(cut.size() - 3);
  EXPECT_EQ(rcode(dns_answer(cut, fixed)), 1);
  Bytes notify = query("web.default.svc.cluster.local", 1, 7, 0x20);  // opcode 4
  EXPECT_EQ(rcode(dns_answer(notify, fixed)), 4);

  // Compression pointers: to itself, forward, out of the message: FORMERR.
  Bytes self = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e', 'b', 0xC0, 12, 0, 1, 0, 1};
  EXPECT_EQ(rcode(dns_answer(self, fixed)), 1);
  Bytes forward = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 14, 3, 'w', 'e', 'b', 0, 0, 1, 0, 1};
  EXPECT_EQ(rcode(dns_answer(forward, fixed)), 1);
  Bytes outside = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 1, 0, 1};
  EXPECT_EQ(rcode(dns_answer(outside, fixed)), 1);
  // A backward pointer is followed: into the header, whose ID 0x0161 and
  // RD flag read as labels "a" and "\0" (not a name in the zone).
  Bytes back = {0x01, 0x61, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e', 'b', 0xC0, 0, 0, 1, 0, 1};
  EXPECT_EQ(rcode(dns_answer(back, fixed)), 5);
  // A label longer than 63 (an extended label type).
  Bytes ext = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 'a', 0, 0, 1, 0, 1};
  EXPECT_EQ(rcode(dns_answer(ext, fixed)), 1);
}

TEST(DnsAnswer, TooManyAnswersAreTruncatedTo512Bytes) {
  auto many = [](std::string_view) { return std::optional<std::vector<uint32_t>>(std::vector<uint32_t>(100, 1)); };
  Bytes r = dns_answer(query("big.default.svc.cluster.local"), many);
  EXPECT_LE(r.size(), 512u);
  EXPECT_EQ(r[2] & 0x02, 0x02) << "TC";
  EXPECT_EQ(static_cast<size_t>(count(r, 1)), (r.size() - query("big.default.svc.cluster.local").size()) / 16);
}

TEST(DnsAnswer, RandomBytesNeverCrashIt) {
  std::mt19937 rng(42);
  Bytes valid = query("web.default.svc.cluster.local");
  int answered = 0;
  for (int i = 0; i < 50000; ++i) {
    Bytes m;
    if (i % 2) {
      m.resize(rng() % 300);
      for (auto& b : m) b = static_cast<uint8_t>(rng());
    } else {
      m = valid;  // a valid query with a few bytes changed or cut
      for (int k = 0; k < 3; ++k) m[rng() % m.size()] = static_cast<uint8_t>(rng());
      m.resize(rng() % (m.size() + 1));
    }
    Bytes r = dns_answer(m, fixed);
    if (r.empty()) continue;
    ++answered;
    ASSERT_GE(r.size(), 12u);
    ASSERT_LE(r.size(), 512u);
    EXPECT_EQ(r[0], m[0]);
    EXPECT_EQ(r[1], m[1]);
    EXPECT_EQ(r[2] & 0x80, 0x80);
  }
  EXPECT_GT(answered, 1000);
}

// ---- the server against the store, asked by glibc's resolver -------------------------

class DnsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* ns : {"default", "kube-system"})
      ASSERT_TRUE(store_.create(apiserver::namespaces_type(), Json{{"metadata", {{"name", ns}}}}).ok());
    const auto& services = *apiserver::find_resource("", "v1", "services");
    const auto& slices = *apiserver::find_resource("discovery.k8s.io", "v1", "endpointslices");
    ASSERT_TRUE(store_.create(services, Json::parse(R"({"metadata":{"name":"web","namespace":"default"},
      "spec":{"clusterIP":"10.96.0.20","ports":[{"port":80}]}})")).ok());
    ASSERT_TRUE(store_.create(services, Json::parse(R"({"metadata":{"name":"db","namespace":"default"},
      "spec":{"clusterIP":"None","selector":{"app":"db"}}})")).ok());
    ASSERT_TRUE(store_.create(slices, Json::parse(R"({"metadata":{"name":"db-1","namespace":"default",
      "labels":{"kubernetes.io/service-name":"db"}},"addressType":"IPv4","endpoints":[
      {"addresses":["10.244.1.5"],"conditions":{"ready":true},"hostname":"db-0"},
      {"addresses":["10.244.2.7"]},
      {"addresses":["10.244.2.9"],"conditions":{"ready":false}}]})")).ok());

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    server_addr_ = a;
    auto s = DnsServer::start(fd, store_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);

    ASSERT_EQ(res_ninit(&res_), 0);
    res_.nscount = 1;
    res_.nsaddr_list[0] = server_addr_;
    res_.retrans = 1;
    res_.retry = 2;
  }
  void TearDown() override {
    res_nclose(&res_);
    server_.reset();
  }

  // A records via res_nquery; h_errno in *herr on failure.
  std::vector<std::string> resolve(const std::string& name, int* herr = nullptr, int type = ns_t_a) {
    unsigned char answer[1024];
    int n = res_nquery(&res_, name.c_str(), ns_c_in, type, answer, sizeof answer);
    if (herr) *herr = n < 0 ? res_.res_h_errno : 0;
    std::vector<std::string> out;
    if (n < 0) return out;
    ns_msg msg;
    if (ns_initparse(answer, n, &msg) != 0) return {"unparseable"};
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
      ns_rr rr;
      if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_a) continue;
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, ns_rr_rdata(rr), buf, sizeof buf);
      out.push_back(std::string(buf) + " ttl=" + std::to_string(ns_rr_ttl(rr)));
    }
    return out;
  }

  apiserver::Store store_{1000};
  std::unique_ptr<DnsServer> server_;
  sockaddr_in server_addr_{};
  struct __res_state res_ {};
};

TEST_F(DnsServerTest, GlibcResolverGetsServiceAddresses) {
  EXPECT_EQ(resolve("web.default.svc.cluster.local"), (std::vector<std::string>{"10.96.0.20 ttl=5"}));
  EXPECT_EQ(resolve("Web.Default.Svc.Cluster.Local."), (std::vector<std::string>{"10.96.0.20 ttl=5"}));
  EXPECT_EQ(resolve("db.default.svc.cluster.local"),
            (std::vector<std::string>{"10.244.1.5 ttl=5", "10.244.2.7 ttl=5"}))
      << "the ready endpoints only";
  EXPECT_EQ(resolve("db-0.db.default.svc.cluster.local"), (std::vector<std::string>{"10.244.1.5 ttl=5"}));
  EXPECT_GE(server_->answered(), 4u);
}

TEST_F(DnsServerTest, GlibcResolverSeesNegativeAnswers) {
  int herr = 0;
  EXPECT_TRUE(resolve("nope.default.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, HOST_NOT_FOUND);
  EXPECT_TRUE(resolve("web.nowhere.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, HOST_NOT_FOUND);
  EXPECT_TRUE(resolve("web.default.svc.cluster.local", &herr, ns_t_aaaa).empty());
  EXPECT_EQ(herr, NO_DATA);
  EXPECT_TRUE(resolve("kube-system.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, NO_DATA) << "a namespace exists as a name";
  EXPECT_TRUE(resolve("example.com", &herr).empty());
  EXPECT_EQ(herr, TRY_AGAIN) << "REFUSED: glibc gives up on that server";
}

TEST_F(DnsServerTest, FollowsTheStore) {
  const auto& services = *apiserver::find_resource("", "v1", "services");
  ASSERT_TRUE(store_.create(services, Json::parse(R"({"metadata":{"name":"late","namespace":"kube-system"},
      "spec":{"clusterIP":"10.96.0.10"}})")).ok());
  EXPECT_EQ(resolve("late.kube-system.svc.cluster.local"), (std::vector<std::string>{"10.96.0.10 ttl=5"}));
  ASSERT_TRUE(store_.remove(services, apiserver::ObjectKey{"kube-system", "late"}, {}).ok());
  int herr = 0;
  EXPECT_TRUE(resolve("late.kube-system.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, HOST_NOT_FOUND);
}

TEST(DnsServerStart, RefusesWhatIsNotABoundUdpSocket) {
  apiserver::Store store(10);
  int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_FALSE(DnsServer::start(tcp, store).ok());
  close(tcp);
  int unbound = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  auto r = DnsServer::start(unbound, store);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not bound"), std::string::npos) << r.error().message;
  close(unbound);
  EXPECT_FALSE(DnsServer::start(-1, store).ok());
}

}  // namespace
}  // namespace kpx::lab
