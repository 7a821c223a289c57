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
#include "support/dns_message.h"

namespace kpx::lab {
namespace {

using apiserver::Json;
using testing::dns_query;
using testing::parse_dns_response;
using Bytes = std::vector<uint8_t>;

uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

// A fixed zone: web (ClusterIP), db (headless, two ready endpoints), empty,
// and ExternalName aliases: ext (outside the zone), alias (to web), dangling
// (to a name the zone does not have), loop-a and loop-b (to each other), self.
std::optional<DnsRecords> fixed(std::string_view fqdn) {
  auto alias = [](const char* target) { return DnsRecords{{}, target}; };
  static const std::map<std::string, DnsRecords, std::less<>> names = {
      {"web.default.svc.cluster.local", {{ip("10.96.0.20")}, {}}},
      {"db.default.svc.cluster.local", {{ip("10.244.1.5"), ip("10.244.2.7")}, {}}},
      {"default.svc.cluster.local", {}},
      {"ext.default.svc.cluster.local", alias("db.example.com")},
      {"alias.default.svc.cluster.local", alias("web.default.svc.cluster.local")},
      {"dangling.default.svc.cluster.local", alias("gone.default.svc.cluster.local")},
      {"loop-a.default.svc.cluster.local", alias("loop-b.default.svc.cluster.local")},
      {"loop-b.default.svc.cluster.local", alias("Loop-A.default.svc.cluster.local.")},
      {"self.default.svc.cluster.local", alias("self.default.svc.cluster.local")}};
  auto it = names.find(fqdn);
  if (it == names.end()) return std::nullopt;
  return it->second;
}

int rcode(const Bytes& r) { return r.at(3) & 0x0F; }
int count(const Bytes& r, int section) { return r.at(4 + 2 * section) << 8 | r.at(5 + 2 * section); }

TEST(DnsAnswer, ServiceNameGetsItsClusterIp) {
  Bytes q = dns_query("web.default.svc.cluster.local");
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
  Bytes q = dns_query("WEB.Default.SVC.cluster.LOCAL");
  Bytes r = dns_answer(q, fixed);
  EXPECT_EQ(count(r, 1), 1);
  EXPECT_TRUE(std::equal(q.begin() + 12, q.end(), r.begin() + 12));
}

TEST(DnsAnswer, HeadlessServiceGetsEveryAddress) {
  Bytes r = dns_answer(dns_query("db.default.svc.cluster.local"), fixed);
  EXPECT_EQ(count(r, 1), 2);
  EXPECT_EQ(Bytes(r.end() - 4, r.end()), (Bytes{10, 244, 2, 7}));
}

TEST(DnsAnswer, NegativeAnswersCarryTheSoa) {
  Bytes nx = dns_answer(dns_query("nope.default.svc.cluster.local"), fixed);
  EXPECT_EQ(rcode(nx), 3);
  EXPECT_EQ(count(nx, 1), 0);
  EXPECT_EQ(count(nx, 2), 1);
  EXPECT_EQ(nx[2] & 0x04, 0x04) << "authoritative";
  Bytes aaaa = dns_answer(dns_query("web.default.svc.cluster.local", 28), fixed);
  EXPECT_EQ(rcode(aaaa), 0) << "the name exists: NODATA, not NXDOMAIN";
  EXPECT_EQ(count(aaaa, 1), 0);
  EXPECT_EQ(count(aaaa, 2), 1);
  Bytes ns = dns_answer(dns_query("default.svc.cluster.local"), fixed);
  EXPECT_EQ(rcode(ns), 0);
  EXPECT_EQ(count(ns, 1), 0);
}

TEST(DnsAnswer, OutsideTheZoneIsRefused) {
  for (const char* name : {"example.com", "local", "cluster.local.evil.com", "web.default.svc.cluster.locale"}) {
    Bytes r = dns_answer(dns_query(name), fixed);
    EXPECT_EQ(rcode(r), 5) << name;
    EXPECT_EQ(count(r, 0), 1) << name;
    EXPECT_EQ(count(r, 1), 0) << name;
  }
}

TEST(DnsAnswer, MalformedQueries) {
  EXPECT_TRUE(dns_answer(Bytes{1, 2, 3}, fixed).empty()) << "shorter than a header: dropped";
  Bytes response = dns_query("web.default.svc.cluster.local", 1, 7, 0x81);
  EXPECT_TRUE(dns_answer(response, fixed).empty()) << "a response is never answered";
  Bytes two = dns_query("web.default.svc.cluster.local");
  two[5] = 2;
  EXPECT_EQ(rcode(dns_answer(two, fixed)), 1);
  Bytes cut = dns_query("web.default.svc.cluster.local");
  cut.resize(cut.size() - 3);
  EXPECT_EQ(rcode(dns_answer(cut, fixed)), 1);
  Bytes notify = dns_query("web.default.svc.cluster.local", 1, 7, 0x20);  // opcode 4
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
  auto many = [](std::string_view) { return std::optional<DnsRecords>({std::vector<uint32_t>(100, 1), {}}); };
  Bytes r = dns_answer(dns_query("big.default.svc.cluster.local"), many);
  EXPECT_LE(r.size(), 512u);
  EXPECT_EQ(r[2] & 0x02, 0x02) << "TC";
  EXPECT_EQ(static_cast<size_t>(count(r, 1)), (r.size() - dns_query("big.default.svc.cluster.local").size()) / 16);
}

// ---- ExternalName: CNAMEs ----------------------------------------------------

Bytes answer_section(const Bytes& q, const Bytes& r) {
  return Bytes(r.begin() + static_cast<long>(q.size()), r.end());
}

TEST(DnsAnswer, ExternalNameOutsideTheZoneIsItsCnameAlone) {
  Bytes q = dns_query("ext.default.svc.cluster.local");
  Bytes r = dns_answer(q, fixed);
  EXPECT_EQ(rcode(r), 0);
  EXPECT_EQ(count(r, 1), 1);
  EXPECT_EQ(count(r, 2), 0) << "not negative: the name is an alias (no upstream to follow it to)";
  // Owner: a pointer to the question; RDATA: the target, uncompressed (no
  // suffix of it is in the message).
  EXPECT_EQ(answer_section(q, r), (Bytes{0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 5, 0, 16, 2, 'd', 'b', 7, 'e', 'x', 'a', 'm',
                                         'p', 'l', 'e', 3, 'c', 'o', 'm', 0}));
  auto parsed = parse_dns_response(r);
  ASSERT_TRUE(parsed);
  ASSERT_EQ(parsed->answers.size(), 1u);
  EXPECT_EQ(parsed->answers[0].owner, "ext.default.svc.cluster.local");
  EXPECT_EQ(parsed->answers[0].type, 5);
  EXPECT_EQ(parsed->answers[0].ttl, kDnsTtl);
  EXPECT_EQ(parsed->answers[0].data, "db.example.com");
}

TEST(DnsAnswer, ExternalNameInTheZoneIsFollowedToItsAddresses) {
  Bytes q = dns_query("alias.default.svc.cluster.local");
  Bytes r = dns_answer(q, fixed);
  EXPECT_EQ(rcode(r), 0);
  EXPECT_EQ(count(r, 1), 2);
  EXPECT_EQ(count(r, 2), 0);
  // The target's "default.svc.cluster.local" is the question's from offset
  // 12 + 6 ("\5alias"); the A record's owner points at the CNAME's RDATA.
  uint8_t rdata = static_cast<uint8_t>(q.size() + 12);
  EXPECT_EQ(answer_section(q, r), (Bytes{0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 5, 0, 6, 3, 'w', 'e', 'b', 0xC0, 18,  //
                                         0xC0, rdata, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20}));
  auto parsed = parse_dns_response(r);
  ASSERT_TRUE(parsed);
  ASSERT_EQ(parsed->answers.size(), 2u);
  EXPECT_EQ(parsed->answers[0].data, "web.default.svc.cluster.local");
  EXPECT_EQ(parsed->answers[1].owner, "web.default.svc.cluster.local");
  EXPECT_EQ(parsed->answers[1].data, "10.96.0.20");
  EXPECT_EQ(parsed->answers[1].ttl, kDnsTtl);
}

TEST(DnsAnswer, CnameAndAnyQueriesGetTheCnameOnly) {
  for (uint16_t type : {5, 255}) {
    auto parsed = parse_dns_response(dns_answer(dns_query("ALIAS.default.svc.cluster.local", type), fixed));
    ASSERT_TRUE(parsed) << type;
    EXPECT_EQ(parsed->rcode, 0) << type;
    ASSERT_EQ(parsed->answers.size(), 1u) << type;
    EXPECT_EQ(parsed->answers[0].type, 5) << type;
    EXPECT_EQ(parsed->answers[0].owner, "ALIAS.default.svc.cluster.local") << "the question's name, as sent";
    EXPECT_EQ(parsed->authority, 0) << type;
  }
  auto web = parse_dns_response(dns_answer(dns_query("web.default.svc.cluster.local", 5), fixed));
  ASSERT_TRUE(web);
  EXPECT_TRUE(web->answers.empty()) << "a ClusterIP Service has no CNAME: NODATA";
  EXPECT_EQ(web->authority, 1);
}

TEST(DnsAnswer, OtherTypesGetTheCnameAndTheTargetsNegativeAnswer) {
  auto aaaa = parse_dns_response(dns_answer(dns_query("alias.default.svc.cluster.local", 28), fixed));
  ASSERT_TRUE(aaaa);
  EXPECT_EQ(aaaa->rcode, 0);
  ASSERT_EQ(aaaa->answers.size(), 1u);
  EXPECT_EQ(aaaa->answers[0].type, 5);
  EXPECT_EQ(aaaa->authority, 1) << "web has no AAAA: NODATA after the CNAME";
  // A target in the zone that does not exist: NXDOMAIN after the CNAME
  // (RFC 2308 2.1), the SOA in the authority section.
  auto dangling = parse_dns_response(dns_answer(dns_query("dangling.default.svc.cluster.local"), fixed));
  ASSERT_TRUE(dangling);
  EXPECT_EQ(dangling->rcode, 3);
  ASSERT_EQ(dangling->answers.size(), 1u);
  EXPECT_EQ(dangling->answers[0].data, "gone.default.svc.cluster.local");
  EXPECT_EQ(dangling->authority, 1);
}

TEST(DnsAnswer, CnameLoopsAndLongChainsEnd) {
  auto loop = parse_dns_response(dns_answer(dns_query("loop-a.default.svc.cluster.local"), fixed));
  ASSERT_TRUE(loop);
  EXPECT_EQ(loop->rcode, 0);
  ASSERT_EQ(loop->answers.size(), 1u) << "a → b, and not b → a again";
  EXPECT_EQ(loop->answers[0].data, "loop-b.default.svc.cluster.local");
  EXPECT_EQ(loop->authority, 1);
  auto self = parse_dns_response(dns_answer(dns_query("self.default.svc.cluster.local"), fixed));
  ASSERT_TRUE(self);
  EXPECT_TRUE(self->answers.empty()) << "x CNAME x is left out, as CoreDNS does";
  EXPECT_EQ(self->rcode, 0);
  auto self_cname = parse_dns_response(dns_answer(dns_query("self.default.svc.cluster.local", 5), fixed));
  ASSERT_TRUE(self_cname);
  EXPECT_EQ(self_cname->answers.size(), 1u) << "asked for the CNAME itself: there it is";

  // c0 → c1 → ... → c11 → web: followed for 8 CNAMEs, then no further.
  auto chain = [](std::string_view fqdn) -> std::optional<DnsRecords> {
    std::string name(fqdn.substr(0, fqdn.find('.')));
    if (name == "web") return DnsRecords{{ip("10.96.0.20")}, {}};
    if (name.size() < 2 || name[0] != 'c') return std::nullopt;
    int n = std::stoi(name.substr(1));
    return DnsRecords{{}, (n == 11 ? std::string("web") : "c" + std::to_string(n + 1)) + ".default.svc.cluster.local"};
  };
  auto long_chain = parse_dns_response(dns_answer(dns_query("c0.default.svc.cluster.local"), chain));
  ASSERT_TRUE(long_chain);
  EXPECT_EQ(long_chain->answers.size(), 8u);
  for (const auto& rr : long_chain->answers) EXPECT_EQ(rr.type, 5);
  auto short_chain = parse_dns_response(dns_answer(dns_query("c9.default.svc.cluster.local"), chain));
  ASSERT_TRUE(short_chain);
  ASSERT_EQ(short_chain->answers.size(), 4u) << "c9 → c10 → c11 → web, then web's address";
  EXPECT_EQ(short_chain->answers[3].data, "10.96.0.20");
  EXPECT_EQ(short_chain->answers[3].owner, "web.default.svc.cluster.local");
}

TEST(DnsAnswer, InvalidExternalNamesDoNotExist) {
  std::string target;
  DnsLookup lookup = [&](std::string_view fqdn) -> std::optional<DnsRecords> {
    if (fqdn != "x.default.svc.cluster.local") return std::nullopt;
    return DnsRecords{{}, target};
  };
  for (std::string bad : {std::string(""), std::string("."), std::string("10.1.2.3"), std::string("a..example.com"),
                          std::string("-a.example.com"), std::string("a-.example.com"), std::string("a b.example.com"),
                          std::string("a.example.com.."), std::string(".a.example.com"), std::string("a\\.b.com"),
                          std::string(64, 'a') + ".com",
                          std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
                              std::string(63, 'd')}) {  // 255 characters: over 253
    target = bad;
    Bytes r = dns_answer(dns_query("x.default.svc.cluster.local"), lookup);
    EXPECT_EQ(rcode(r), 3) << "'" << bad << "': as CoreDNS, NXDOMAIN";
    EXPECT_EQ(count(r, 1), 0) << bad;
    EXPECT_EQ(count(r, 2), 1) << bad;
  }
  for (std::string good : {std::string("db.example.com."), std::string("DB.Example.COM"), std::string("localhost"),
                           std::string("_sip._udp.example.com"), std::string("1.2.3.example"),
                           std::string(63, 'a') + ".com"}) {
    target = good;
    auto parsed = parse_dns_response(dns_answer(dns_query("x.default.svc.cluster.local"), lookup));
    ASSERT_TRUE(parsed) << good;
    ASSERT_EQ(parsed->answers.size(), 1u) << good;
    std::string want = good.back() == '.' ? good.substr(0, good.size() - 1) : good;
    EXPECT_EQ(parsed->answers[0].data, want) << "spelled as the Service spells it";
  }
}

TEST(DnsAnswer, AnAnswerWithACnameIsTruncatedWholeRecords) {
  DnsLookup lookup = [](std::string_view fqdn) -> std::optional<DnsRecords> {
    if (fqdn == "big.default.svc.cluster.local") return DnsRecords{std::vector<uint32_t>(100, 1), {}};
    return DnsRecords{{}, "big.default.svc.cluster.local"};
  };
  Bytes r = dns_answer(dns_query("alias.default.svc.cluster.local"), lookup);
  EXPECT_LE(r.size(), 512u);
  EXPECT_EQ(r[2] & 0x02, 0x02) << "TC";
  auto parsed = parse_dns_response(r);
  ASSERT_TRUE(parsed) << "every record counted is whole";
  ASSERT_GT(parsed->answers.size(), 1u);
  EXPECT_EQ(parsed->answers[0].type, 5);
  EXPECT_EQ(parsed->answers.back().type, 1);
  // A target too long for what is left of 512 bytes: TC, no answer.
  std::string l63(63, 'a');
  std::string name = l63 + "." + l63 + "." + l63 + "." + std::string(40, 'x') + ".svc.cluster.local";  // 252 bytes
  DnsLookup huge = [&](std::string_view) {
    return std::optional<DnsRecords>({{}, l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b')});  // 255 bytes
  };
  Bytes t = dns_answer(dns_query(name), huge);
  EXPECT_EQ(t[2] & 0x02, 0x02);
  EXPECT_EQ(count(t, 1), 0);
  EXPECT_LE(t.size(), 512u);
}

TEST(DnsAnswer, RandomBytesNeverCrashIt) {
  std::mt19937 rng(42);
  const Bytes valid[] = {dns_query("web.default.svc.cluster.local"), dns_query("alias.default.svc.cluster.local"),
                         dns_query("loop-a.default.svc.cluster.local")};
  int answered = 0;
  for (int i = 0; i < 50000; ++i) {
    Bytes m;
    if (i % 2) {
      m.resize(rng() % 300);
      for (auto& b : m) b = static_cast<uint8_t>(rng());
    } else {
      m = valid[rng() % 3];  // a valid query with a few bytes changed or cut
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
    for (auto [name, target] : {std::pair{"ext", "db.example.com"}, std::pair{"alias", "web.default.svc.cluster.local"},
                                std::pair{"by-ip", "192.0.2.1"}}) {
      Json svc = Json::parse(R"({"metadata":{"namespace":"default"},"spec":{"type":"ExternalName"}})");
      svc["metadata"]["name"] = name;
      svc["spec"]["externalName"] = target;
      ASSERT_TRUE(store_.create(services, svc).ok()) << name;
    }

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

  // The answers via res_nquery ("10.96.0.20 ttl=5", "CNAME x ttl=5");
  // h_errno in *herr on failure.
  std::vector<std::string> resolve(const std::string& name, int* herr = nullptr, int type = ns_t_a) {
    unsigned char answer[1024];
    int n = res_nquery(&res_, name.c_str(), ns_c_in, type, answer, sizeof answer);
    if (herr) *herr = n < 0 ? res_.res_h_errno : 0;
    if (n < 0) return {};
    auto parsed = parse_dns_response(std::span<const uint8_t>(answer, static_cast<size_t>(n)));
    if (!parsed) return {"unparseable"};
    std::vector<std::string> out;
    for (const auto& rr : parsed->answers)
      out.push_back((rr.type == ns_t_cname ? "CNAME " : rr.type == ns_t_a ? "" : "? ") + rr.data +
                    " ttl=" + std::to_string(rr.ttl));
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

TEST_F(DnsServerTest, GlibcResolverGetsExternalNamesAsCnames) {
  EXPECT_EQ(resolve("ext.default.svc.cluster.local"), (std::vector<std::string>{"CNAME db.example.com ttl=5"}))
      << "no upstream: the CNAME alone";
  EXPECT_EQ(resolve("alias.default.svc.cluster.local"),
            (std::vector<std::string>{"CNAME web.default.svc.cluster.local ttl=5", "10.96.0.20 ttl=5"}));
  EXPECT_EQ(resolve("ext.default.svc.cluster.local", nullptr, ns_t_cname),
            (std::vector<std::string>{"CNAME db.example.com ttl=5"}));
  int herr = 0;
  EXPECT_TRUE(resolve("by-ip.default.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, HOST_NOT_FOUND) << "an IP address is no externalName, as CoreDNS has it";
  EXPECT_TRUE(resolve("x.ext.default.svc.cluster.local", &herr).empty());
  EXPECT_EQ(herr, HOST_NOT_FOUND) << "an ExternalName Service has no endpoint names";
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
