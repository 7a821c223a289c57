#include "packet/craft.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <cstring>

namespace kpx::packet {

namespace {

constexpr size_t kEth = 14;

uint32_t sum16(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(p[n - 1] << 8);
  return s;
}

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s & 0xffff);
}

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

}  // namespace

uint32_t ipv4(const char* dotted) {
  in_addr a{};
  if (inet_pton(AF_INET, dotted, &a) != 1) std::abort();
  return a.s_addr;
}

uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl_bytes) {
  uint32_t s = sum16(ip, 10);
  s = sum16(ip + 12, ihl_bytes - 12, s);
  return fold(s);
}

uint16_t l4_checksum(const uint8_t* ip, size_t /*ihl_bytes*/, const uint8_t* l4, size_t l4_len) {
  uint8_t pseudo[12];
  std::memcpy(pseudo, ip + 12, 8);
  pseudo[8] = 0;
  pseudo[9] = ip[9];
  put16(pseudo + 10, static_cast<uint16_t>(l4_len));
  uint32_t s = sum16(pseudo, 12);
  size_t csum_off = ip[9] == IPPROTO_TCP ? 16 : 6;
  s = sum16(l4, csum_off, s);
  s = sum16(l4 + csum_off + 2, l4_len - csum_off - 2, s);
  return fold(s);
}

std::vector<uint8_t> build_frame(const FrameSpec& s) {
  const size_t ihl = 20 + s.ip_options_len;
  const size_t l4h = s.proto == IPPROTO_TCP ? 20 : 8;
  std::vector<uint8_t> f(kEth + ihl + l4h + s.payload_len, 0);
  uint8_t* eth = f.data();
  const uint8_t dmac[6] = {0x02, 0, 0, 0, 0, 0x01}, smac[6] = {0x02, 0, 0, 0, 0, 0x02};
  std::memcpy(eth, dmac, 6);
  std::memcpy(eth + 6, smac, 6);
  put16(eth + 12, 0x0800);
  uint8_t* ip = eth + kEth;
  ip[0] = static_cast<uint8_t>(0x40 | (ihl / 4));
  put16(ip + 2, static_cast<uint16_t>(ihl + l4h + s.payload_len));
  put16(ip + 4, s.ip_id);
  put16(ip + 6, s.frag_off);
  ip[8] = 64;
  ip[9] = s.proto;
  std::memcpy(ip + 12, &s.saddr_be, 4);
  std::memcpy(ip + 16, &s.daddr_be, 4);
  for (size_t i = 20; i < ihl; ++i) ip[i] = 1;  // NOP options
  put16(ip + 10, ipv4_header_checksum(ip, ihl));
  uint8_t* l4 = ip + ihl;
  put16(l4, s.sport);
  put16(l4 + 2, s.dport);
  if (s.proto == IPPROTO_TCP) {
    put16(l4 + 4, 0x0102);
    l4[12] = 5 << 4;
    l4[13] = s.tcp_flags;
    put16(l4 + 14, 65535);
  } else {
    put16(l4 + 4, static_cast<uint16_t>(l4h + s.payload_len));
  }
  for (size_t i = 0; i < s.payload_len; ++i) l4[l4h + i] = static_cast<uint8_t>(i * 7 + 3);
  if (!(s.proto == IPPROTO_UDP && s.udp_zero_csum)) {
    uint16_t c = l4_checksum(ip, ihl, l4, l4h + s.payload_len);
    if (s.proto == IPPROTO_UDP && c == 0) c = 0xffff;
    put16(l4 + (s.proto == IPPROTO_TCP ? 16 : 6), c);
  }
  return f;
}

std::optional<Parsed> parse_frame(const std::vector<uint8_t>& f) {
  if (f.size() < kEth + 20 || get16(f.data() + 12) != 0x0800) return std::nullopt;
  const uint8_t* ip = f.data() + kEth;
  size_t ihl = (ip[0] & 0xf) * 4u;
  size_t tot = get16(ip + 2);
  if (ihl < 20 || f.size() < kEth + tot || tot < ihl) return std::nullopt;
  Parsed p{};
  std::memcpy(&p.saddr_be, ip + 12, 4);
  std::memcpy(&p.daddr_be, ip + 16, 4);
  p.proto = ip[9];
  p.ip_csum = get16(ip + 10);
  p.ip_csum_ok = ipv4_header_checksum(ip, ihl) == p.ip_csum;
  const uint8_t* l4 = ip + ihl;
  size_t l4_len = tot - ihl;
  size_t need = p.proto == IPPROTO_TCP ? 20 : 8;
  if (l4_len < need) return std::nullopt;
  p.sport = get16(l4);
  p.dport = get16(l4 + 2);
  p.l4_csum = get16(l4 + (p.proto == IPPROTO_TCP ? 16 : 6));
  uint16_t expect = l4_checksum(ip, ihl, l4, l4_len);
  if (p.proto == IPPROTO_UDP) {
    if (expect == 0) expect = 0xffff;
    p.l4_csum_ok = p.l4_csum == 0 || p.l4_csum == expect;
  } else {
    p.l4_csum_ok = p.l4_csum == expect;
  }
  return p;
}

std::optional<ParsedIcmpError> parse_icmp_error(const std::vector<uint8_t>& f) {
  if (f.size() < kEth + 20 + 8 || get16(f.data() + 12) != 0x0800) return std::nullopt;
  const uint8_t* ip = f.data() + kEth;
  size_t ihl = (ip[0] & 0xf) * 4u;
  size_t tot = get16(ip + 2);
  if (ihl < 20 || ip[9] != IPPROTO_ICMP || f.size() < kEth + tot || tot < ihl + 8) return std::nullopt;
  ParsedIcmpError e{};
  std::memcpy(e.dst_mac, f.data(), 6);
  std::memcpy(e.src_mac, f.data() + 6, 6);
  std::memcpy(&e.saddr_be, ip + 12, 4);
  std::memcpy(&e.daddr_be, ip + 16, 4);
  e.ip_csum_ok = ipv4_header_checksum(ip, ihl) == get16(ip + 10);
  const uint8_t* icmp = ip + ihl;
  e.type = icmp[0];
  e.code = icmp[1];
  // Over the whole message, its own checksum field included, the sum folds to 0.
  e.icmp_csum_ok = fold(sum16(icmp, tot - ihl)) == 0;
  e.quoted.assign(icmp + 8, ip + tot);
  return e;
}

std::vector<uint8_t> build_icmp_error(uint32_t saddr_be, uint32_t daddr_be, uint8_t type, uint8_t code,
                                      uint32_t rest, const std::vector<uint8_t>& quoted) {
  std::vector<uint8_t> f(kEth + 20 + 8 + quoted.size(), 0);
  const uint8_t dmac[6] = {0x02, 0, 0, 0, 0, 0x01}, smac[6] = {0x02, 0, 0, 0, 0, 0x02};
  std::memcpy(f.data(), dmac, 6);
  std::memcpy(f.data() + 6, smac, 6);
  put16(f.data() + 12, 0x0800);
  uint8_t* ip = f.data() + kEth;
  ip[0] = 0x45;
  ip[1] = 0xc0;
  put16(ip + 2, static_cast<uint16_t>(20 + 8 + quoted.size()));
  ip[8] = 64;
  ip[9] = IPPROTO_ICMP;
  std::memcpy(ip + 12, &saddr_be, 4);
  std::memcpy(ip + 16, &daddr_be, 4);
  put16(ip + 10, ipv4_header_checksum(ip, 20));
  uint8_t* icmp = ip + 20;
  icmp[0] = type;
  icmp[1] = code;
  put16(icmp + 4, static_cast<uint16_t>(rest >> 16));
  put16(icmp + 6, static_cast<uint16_t>(rest));
  std::memcpy(icmp + 8, quoted.data(), quoted.size());
  put16(icmp + 2, fold(sum16(icmp, 8 + quoted.size())));
  return f;
}

}  // namespace kpx::packet
