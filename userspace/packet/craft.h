// Crafting Ethernet/IPv4/TCP|UDP frames and checking their checksums
// independently of the kernel: for BPF_PROG_TEST_RUN tests and kpx-bench.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kpx::packet {

struct FrameSpec {
  uint32_t saddr_be = 0, daddr_be = 0;  // network order
  uint16_t sport = 0, dport = 0;        // host order
  uint8_t proto = 6;                    // IPPROTO_TCP / IPPROTO_UDP
  uint8_t tcp_flags = 0x10;             // ACK
  size_t payload_len = 64;
  uint8_t ip_options_len = 0;           // multiple of 4, at most 40
  uint16_t frag_off = 0;                // host order: flags (MF=0x2000) and offset
  bool udp_zero_csum = false;           // UDP: send "no checksum"
  uint16_t ip_id = 0x1234;
};

// A frame with correct IPv4 and L4 checksums (unless udp_zero_csum).
std::vector<uint8_t> build_frame(const FrameSpec& s);

// What a frame says, as read independently of kpx's parser.
struct Parsed {
  uint32_t saddr_be, daddr_be;
  uint16_t sport, dport;
  uint8_t proto;
  uint16_t ip_csum, l4_csum;
  bool ip_csum_ok;
  bool l4_csum_ok;  // UDP with checksum 0 counts as ok (no checksum)
};
std::optional<Parsed> parse_frame(const std::vector<uint8_t>& f);

// An ICMP error frame (Ethernet/IPv4/ICMP), read independently of kpx: the
// outer header, the ICMP type and code, whether both checksums hold, and the
// datagram it quotes (the offending IP header and what follows of it).
struct ParsedIcmpError {
  uint8_t dst_mac[6], src_mac[6];
  uint32_t saddr_be, daddr_be;
  uint8_t type, code;
  bool ip_csum_ok, icmp_csum_ok;
  std::vector<uint8_t> quoted;
};
std::optional<ParsedIcmpError> parse_icmp_error(const std::vector<uint8_t>& f);

// An ICMP error frame from saddr to daddr (network order) of type and code,
// `rest` its second word (host order: for fragmentation needed, the next
// hop's MTU in the low 16 bits), quoting `quoted` (an IP header and what
// follows of its datagram), with correct IP and ICMP checksums.
std::vector<uint8_t> build_icmp_error(uint32_t saddr_be, uint32_t daddr_be, uint8_t type, uint8_t code,
                                      uint32_t rest, const std::vector<uint8_t>& quoted);

// RFC 1071 checksum over the IPv4 header and over pseudo-header + L4.
uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl_bytes);
uint16_t l4_checksum(const uint8_t* ip, size_t ihl_bytes, const uint8_t* l4, size_t l4_len);

uint32_t ipv4(const char* dotted);  // network order; aborts on a bad literal

}  // namespace kpx::packet
