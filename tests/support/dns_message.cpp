#include "support/dns_message.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>

namespace kpx::testing {

std::vector<uint8_t> dns_query(const std::string& name, uint16_t qtype, uint16_t id, uint8_t flags) {
  std::vector<uint8_t> q = {
      static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), flags, 0, 0, 1, 0, 0, 0, 0, 0, 0};
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

std::optional<DnsResponse> parse_dns_response(std::span<const uint8_t> message) {
  ns_msg msg;
  if (ns_initparse(message.data(), static_cast<int>(message.size()), &msg) != 0) return std::nullopt;
  DnsResponse r;
  r.rcode = ns_msg_getflag(msg, ns_f_rcode);
  r.truncated = ns_msg_getflag(msg, ns_f_tc);
  r.authority = ns_msg_count(msg, ns_s_ns);
  for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) != 0) return std::nullopt;
    DnsRecord rec{ns_rr_name(rr), ns_rr_type(rr), ns_rr_ttl(rr), "?"};
    if (rec.type == ns_t_a && ns_rr_rdlen(rr) == 4) {
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, ns_rr_rdata(rr), buf, sizeof buf);
      rec.data = buf;
    } else if (rec.type == ns_t_cname) {
      char target[NS_MAXDNAME];
      if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr), target, sizeof target) < 0)
        return std::nullopt;
      rec.data = target;
    }
    r.answers.push_back(std::move(rec));
  }
  return r;
}

}  // namespace kpx::testing
