// The test frame builder's own checksums, checked against known frames, so
// the bpf tests' independent checksum verification can be trusted.
#include "packet/craft.h"

#include <gtest/gtest.h>

namespace kpx::packet {
namespace {

TEST(Craft, Ipv4HeaderChecksumMatchesAKnownHeader) {
  // The classic example header (Wikipedia, "IPv4 header checksum"): 0xb861.
  const uint8_t hdr[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                           0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(ipv4_header_checksum(hdr, 20), 0xb861);
}

TEST(Craft, BuiltFramesVerifyAndCorruptionIsDetected) {
  for (uint8_t proto : {uint8_t{6}, uint8_t{17}}) {
    FrameSpec s;
    s.saddr_be = ipv4("10.244.1.2");
    s.daddr_be = ipv4("10.96.0.10");
    s.sport = 40000;
    s.dport = 80;
    s.proto = proto;
    s.ip_options_len = 8;
    auto f = build_frame(s);
    auto p = parse_frame(f);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->ip_csum_ok);
    EXPECT_TRUE(p->l4_csum_ok);
    EXPECT_EQ(p->daddr_be, s.daddr_be);
    EXPECT_EQ(p->dport, 80);
    f[f.size() - 1] ^= 0xff;  // payload
    EXPECT_FALSE(parse_frame(f)->l4_csum_ok);
    f[14 + 16] ^= 1;  // destination address
    EXPECT_FALSE(parse_frame(f)->ip_csum_ok);
  }
}

TEST(Craft, UdpZeroChecksumMeansNone) {
  FrameSpec s;
  s.saddr_be = ipv4("10.244.1.2");
  s.daddr_be = ipv4("10.96.0.10");
  s.proto = 17;
  s.udp_zero_csum = true;
  auto p = parse_frame(build_frame(s));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->l4_csum, 0);
  EXPECT_TRUE(p->l4_csum_ok);
}

}  // namespace
}  // namespace kpx::packet
