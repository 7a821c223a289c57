#include "net/endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace kpx::net {
namespace {

TEST(ParseService, AcceptsVipPortProto) {
  auto s = parse_service("10.96.0.10:53/udp");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->addr_be, htonl(0x0a60000a));
  EXPECT_EQ(s->port, 53);
  EXPECT_EQ(s->proto, Proto::kUdp);
  EXPECT_EQ(format(*s), "10.96.0.10:53/UDP");
}

TEST(ParseService, ProtocolIsCaseInsensitiveAndDefaultsToTcp) {
  EXPECT_EQ(parse_service("10.0.0.1:80/TCP")->proto, Proto::kTcp);
  EXPECT_EQ(parse_service("10.0.0.1:80/Udp")->proto, Proto::kUdp);
  EXPECT_EQ(parse_service("10.0.0.1:80")->proto, Proto::kTcp);
}

struct Bad {
  const char* input;
  const char* message_part;
};

class ParseServiceRejects : public ::testing::TestWithParam<Bad> {};

TEST_P(ParseServiceRejects, WithAClearMessage) {
  auto s = parse_service(GetParam().input);
  ASSERT_FALSE(s.ok()) << GetParam().input;
  EXPECT_EQ(s.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(s.error().message.find(GetParam().message_part), std::string::npos) << s.error().message;
}

INSTANTIATE_TEST_SUITE_P(Inputs, ParseServiceRejects,
                         ::testing::Values(Bad{"", "expected IP:PORT"}, Bad{"10.0.0.1", "expected IP:PORT"},
                                           Bad{"10.0.0.256:80/tcp", "invalid IPv4 address"},
                                           Bad{"10.0.0:80/tcp", "invalid IPv4 address"},
                                           Bad{"010.0.0.1x:80/tcp", "invalid IPv4 address"},
                                           Bad{"::1:80/tcp", "invalid IPv4 address"},
                                           Bad{"10.0.0.1:0/tcp", "invalid port"},
                                           Bad{"10.0.0.1:65536/tcp", "invalid port"},
                                           Bad{"10.0.0.1:-1/tcp", "invalid port"},
                                           Bad{"10.0.0.1:8o/tcp", "invalid port"},
                                           Bad{"10.0.0.1:/tcp", "invalid port"},
                                           Bad{"10.0.0.1:80/icmp", "invalid protocol"},
                                           Bad{"10.0.0.1:80/", "invalid protocol"},
                                           Bad{"10.0.0.1:80/sctp", "SCTP is not supported"}));

TEST(ParseBackend, AcceptsIpPort) {
  auto b = parse_backend("10.244.1.5:8080");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(format(*b), "10.244.1.5:8080");
  EXPECT_EQ(b->port, 8080);
}

TEST(ParseBackend, RejectsProtocolSuffixAndBadPorts) {
  EXPECT_FALSE(parse_backend("10.244.1.5:8080/tcp").ok());
  EXPECT_FALSE(parse_backend("10.244.1.5").ok());
  EXPECT_FALSE(parse_backend("10.244.1.5:99999").ok());
  EXPECT_FALSE(parse_backend("pod.example:80").ok());
}

TEST(ParsePort, Bounds) {
  EXPECT_EQ(*parse_port("1"), 1);
  EXPECT_EQ(*parse_port("65535"), 65535);
  EXPECT_FALSE(parse_port("0").ok());
  EXPECT_FALSE(parse_port("100000").ok());
  EXPECT_FALSE(parse_port(" 80").ok());
}

}  // namespace
}  // namespace kpx::net
