// DNS messages for tests of the lab's DNS: queries built byte by byte, and
// responses parsed back by glibc's libresolv (ns_initparse, names
// uncompressed by it), so a test checks the wire format with a parser that
// is not the server's own.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kpx::testing {

// A standard query for `name` (dots between labels, no compression).
std::vector<uint8_t> dns_query(const std::string& name, uint16_t qtype = 1, uint16_t id = 0x1234,
                               uint8_t flags = 0x01);

struct DnsRecord {
  std::string owner;  // as libresolv uncompresses it, no trailing dot
  uint16_t type = 0;
  uint32_t ttl = 0;
  std::string data;  // A: the dotted address; CNAME: the target; else "?"
};

struct DnsResponse {
  int rcode = 0;
  bool truncated = false;
  std::vector<DnsRecord> answers;
  int authority = 0;  // records in the authority section
};

// nullopt when libresolv cannot parse the message (or a record of it).
std::optional<DnsResponse> parse_dns_response(std::span<const uint8_t> message);

}  // namespace kpx::testing
