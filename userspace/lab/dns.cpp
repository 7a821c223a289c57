#include "lab/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "apiserver/resources.h"

namespace kpx::lab {

namespace {

constexpr size_t kHeader = 12;
constexpr size_t kUdpLimit = 512;  // no EDNS0: what every client accepts
constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeSoa = 6, kTypeAny = 255, kClassIn = 1;
constexpr size_t kMaxCnames = 8;  // as CoreDNS: a chain is not followed further
enum Rcode : uint8_t { kNoError = 0, kFormErr = 1, kNxDomain = 3, kNotImp = 4, kRefused = 5 };

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    out.emplace_back(s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

struct Question {
  std::vector<std::string> labels;  // as sent (case kept)
  uint16_t qtype = 0, qclass = 0;
};

// The question at offset 12. Compression pointers may only point backwards,
// before the labels being read, so following them always ends.
std::optional<Question> parse_question(std::span<const uint8_t> m) {
  Question q;
  size_t pos = kHeader, seq_start = kHeader, after = 0, name_len = 1;
  bool jumped = false;
  for (;;) {
    if (pos >= m.size()) return std::nullopt;
    uint8_t len = m[pos];
    if ((len & 0xC0) == 0xC0) {
      if (pos + 1 >= m.size()) return std::nullopt;
      size_t target = (static_cast<size_t>(len & 0x3F) << 8) | m[pos + 1];
      if (!jumped) after = pos + 2;
      jumped = true;
      if (target >= seq_start) return std::nullopt;  // forward or looping
      seq_start = pos = target;
      continue;
    }
    if (len & 0xC0) return std::nullopt;  // extended label types
    if (len == 0) {
      if (!jumped) after = pos + 1;
      break;
    }
    if (pos + 1 + len > m.size()) return std::nullopt;
    name_len += len + 1;
    if (name_len > 255) return std::nullopt;
    q.labels.emplace_back(reinterpret_cast<const char*>(&m[pos + 1]), len);
    pos += 1 + len;
  }
  if (after + 4 > m.size()) return std::nullopt;
  q.qtype = static_cast<uint16_t>(m[after] << 8 | m[after + 1]);
  q.qclass = static_cast<uint16_t>(m[after + 2] << 8 | m[after + 3]);
  return q;
}

using Labels = std::vector<std::string>;

Labels lower(const Labels& labels) {
  Labels out;
  for (const auto& l : labels) out.push_back(lower(l));
  return out;
}

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) {
    u8(static_cast<uint8_t>(v >> 8));
    u8(static_cast<uint8_t>(v));
  }
  void u32(uint32_t v) {
    u16(static_cast<uint16_t>(v >> 16));
    u16(static_cast<uint16_t>(v));
  }
  // A name, compressed (RFC 1035 4.1.4): its longest suffix already in the
  // message becomes a pointer. Suffixes compare case-insensitively, as names
  // do; the labels before the pointer are written as given, so the question
  // (written first) is echoed exactly.
  void name(const Labels& labels) {
    for (size_t i = 0; i < labels.size(); ++i) {
      Labels suffix = lower(Labels(labels.begin() + static_cast<long>(i), labels.end()));
      if (auto it = names_.find(suffix); it != names_.end()) {
        u16(static_cast<uint16_t>(0xC000 | it->second));
        return;
      }
      if (b_.size() < 0x4000) names_.emplace(std::move(suffix), static_cast<uint16_t>(b_.size()));
      u8(static_cast<uint8_t>(labels[i].size()));
      b_.insert(b_.end(), labels[i].begin(), labels[i].end());
    }
    u8(0);
  }
  void set16(size_t at, uint16_t v) {
    b_[at] = static_cast<uint8_t>(v >> 8);
    b_[at + 1] = static_cast<uint8_t>(v);
  }
  size_t size() const { return b_.size(); }
  // Cuts what was written from `at` on (a record that did not fit); its
  // names leave the table, so no later pointer points past the end.
  void cut(size_t at) {
    b_.resize(at);
    std::erase_if(names_, [at](const auto& n) { return n.second >= at; });
  }
  std::vector<uint8_t> take() { return std::move(b_); }

 private:
  std::vector<uint8_t> b_;
  std::map<Labels, uint16_t> names_;  // lower-case suffix -> its offset
};

// The header of the response to `m`: ID, opcode and RD echoed, QR set.
void header(Writer& w, std::span<const uint8_t> m, bool authoritative, Rcode rcode, uint16_t qdcount) {
  w.u8(m[0]);
  w.u8(m[1]);
  w.u8(static_cast<uint8_t>(0x80 | (m[2] & 0x78) | (authoritative ? 0x04 : 0) | (m[2] & 0x01)));
  w.u8(rcode);
  w.u16(qdcount);
  w.u16(0);  // ANCOUNT, NSCOUNT, ARCOUNT: set as records are added
  w.u16(0);
  w.u16(0);
}

void soa(Writer& w, const Labels& zone) {
  Labels mname{"ns", "dns"}, rname{"hostmaster"};
  mname.insert(mname.end(), zone.begin(), zone.end());
  rname.insert(rname.end(), zone.begin(), zone.end());
  w.name(zone);
  w.u16(kTypeSoa);
  w.u16(kClassIn);
  w.u32(kDnsTtl);
  size_t rdlength = w.size();
  w.u16(0);
  size_t start = w.size();
  w.name(mname);
  w.name(rname);
  w.u32(1);      // serial
  w.u32(7200);   // refresh
  w.u32(1800);   // retry
  w.u32(86400);  // expire
  w.u32(kDnsTtl);  // minimum: the negative answers' TTL
  w.set16(rdlength, static_cast<uint16_t>(w.size() - start));
}

bool plain_label(const std::string& l) {
  return std::all_of(l.begin(), l.end(), [](char c) { return c > 0x20 && c < 0x7f && c != '.'; });
}

bool in_zone(const Labels& name, const Labels& zone) {
  return name.size() >= zone.size() && std::equal(zone.begin(), zone.end(), name.end() - zone.size());
}

std::optional<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

// The labels of a CNAME's target: a host name (letters, digits, '-' and
// '_', labels of 1 to 63 not starting or ending with '-', at most 253
// characters, one trailing dot allowed); not an IP address, which CoreDNS
// answers with NXDOMAIN. Anything else would make a CNAME no resolver reads.
std::optional<Labels> alias_target(std::string_view target) {
  if (!target.empty() && target.back() == '.') target.remove_suffix(1);
  if (target.empty() || target.size() > 253 || parse_ipv4(std::string(target))) return std::nullopt;
  Labels labels = split(target);
  auto host_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; };
  for (const auto& l : labels)
    if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-' ||
        !std::all_of(l.begin(), l.end(), host_char))
      return std::nullopt;
  return labels;
}

std::optional<DnsRecords> lookup_labels(const Labels& name, const DnsLookup& lookup) {
  if (!std::all_of(name.begin(), name.end(), plain_label)) return std::nullopt;
  std::string fqdn;
  for (const auto& l : name) fqdn += (fqdn.empty() ? "" : ".") + l;
  return lookup(fqdn);
}

// What the answer holds for a (lower-case) name in the zone: the CNAMEs
// from it (their targets as the Services spell them), then the addresses of
// the chain's last name.
struct Resolution {
  Rcode rcode = kNoError;
  std::vector<Labels> cnames;
  std::vector<uint32_t> addresses;
  bool negative = false;  // the zone's SOA goes in the authority section
};

Resolution resolve(Labels name, uint16_t qtype, const Labels& zone, const DnsLookup& lookup) {
  Resolution r;
  // CNAME and ANY ask for the record at the name itself: no following.
  bool follow = qtype != kTypeCname && qtype != kTypeAny;
  std::set<Labels> seen{name};
  for (;;) {
    auto found = lookup_labels(name, lookup);
    std::optional<Labels> target = found && found->alias ? alias_target(*found->alias) : std::nullopt;
    if (!found || (found->alias && !target)) {
      r.rcode = kNxDomain;  // also at the end of a chain (RFC 2308 2.1)
      r.negative = true;
      return r;
    }
    if (!target) {
      if (qtype == kTypeA || qtype == kTypeAny) r.addresses = found->addresses;
      r.negative = r.addresses.empty();
      return r;
    }
    Labels next = lower(*target);
    if (follow && (seen.contains(next) || r.cnames.size() == kMaxCnames)) {
      // As CoreDNS: the CNAME closing a loop (or one too many) is left out,
      // and the chain so far has no data of the type.
      r.negative = true;
      return r;
    }
    r.cnames.push_back(std::move(*target));
    if (!follow || !in_zone(next, zone)) return r;  // outside: no upstream to ask
    seen.insert(next);
    name = std::move(next);
  }
}

}  // namespace

std::vector<uint8_t> dns_answer(std::span<const uint8_t> query, const DnsLookup& lookup, std::string_view zone) {
  if (query.size() < kHeader || (query[2] & 0x80)) return {};  // not a query: never answer it
  Writer w;
  uint8_t opcode = (query[2] >> 3) & 0x0F;
  if (opcode != 0) {
    header(w, query, false, kNotImp, 0);
    return w.take();
  }
  uint16_t qdcount = static_cast<uint16_t>(query[4] << 8 | query[5]);
  auto q = qdcount == 1 ? parse_question(query) : std::nullopt;
  if (!q) {
    header(w, query, false, kFormErr, 0);
    return w.take();
  }

  Labels zone_labels = split(lower(zone));
  Labels name = lower(q->labels);
  bool in_class = q->qclass == kClassIn || q->qclass == kTypeAny;
  auto echo_question = [&] {
    w.name(q->labels);
    w.u16(q->qtype);
    w.u16(q->qclass);
  };
  if (!in_zone(name, zone_labels) || !in_class) {
    header(w, query, false, kRefused, 1);
    echo_question();
    return w.take();
  }

  Resolution r = resolve(name, q->qtype, zone_labels, lookup);
  header(w, query, true, r.rcode, 1);
  echo_question();
  // Records whole or not at all: the first that does not fit 512 bytes
  // ends the message, with TC set (the client may ask again over TCP).
  uint16_t count = 0;
  auto fits = [&](size_t start) {
    if (w.size() <= kUdpLimit) return true;
    w.cut(start);
    return false;
  };
  auto truncated = [&] {
    std::vector<uint8_t> out = w.take();
    out[2] |= 0x02;
    out[6] = static_cast<uint8_t>(count >> 8);
    out[7] = static_cast<uint8_t>(count);
    return out;
  };
  auto record = [&](const Labels& owner, uint16_t type, const auto& rdata) {
    size_t start = w.size();
    w.name(owner);
    w.u16(type);
    w.u16(kClassIn);
    w.u32(kDnsTtl);
    size_t rdlength = w.size();
    w.u16(0);
    rdata();
    w.set16(rdlength, static_cast<uint16_t>(w.size() - rdlength - 2));
    if (!fits(start)) return false;
    ++count;
    return true;
  };
  const Labels* owner = &q->labels;  // as sent: compressed to the question
  for (const Labels& target : r.cnames) {
    if (!record(*owner, kTypeCname, [&] { w.name(target); })) return truncated();
    owner = &target;
  }
  for (uint32_t ip : r.addresses)
    if (!record(*owner, kTypeA, [&] { w.u32(ip); })) return truncated();
  w.set16(6, count);  // ANCOUNT
  if (r.negative) {
    size_t start = w.size();
    soa(w, zone_labels);
    if (!fits(start)) return truncated();
    w.set16(8, 1);  // NSCOUNT
  }
  return w.take();
}

namespace {

// Ready IPv4 addresses of a headless Service's slices (those of `hostname` only, when given).
std::vector<uint32_t> endpoint_addresses(const apiserver::Store& store, const std::string& ns, const std::string& svc,
                                         const std::string& hostname) {
  const auto& slices = *apiserver::find_resource("discovery.k8s.io", "v1", "endpointslices");
  auto sel = apiserver::LabelSelector::parse("kubernetes.io/service-name=" + svc);
  if (!sel) return {};
  auto page = store.list(slices, ns, apiserver::Selector{*sel, {}}, 0, std::nullopt, std::nullopt);
  if (!page) return {};
  std::set<uint32_t> out;
  for (const auto& s : page->items) {
    if (apiserver::string_at(*s, "addressType") != "IPv4" || !s->contains("endpoints") ||
        !(*s)["endpoints"].is_array())
      continue;
    for (const auto& ep : (*s)["endpoints"]) {
      if (!ep.is_object()) continue;
      auto cond = ep.find("conditions");
      if (cond != ep.end() && cond->is_object() && cond->contains("ready") && (*cond)["ready"] == false) continue;
      if (!hostname.empty() && apiserver::string_at(ep, "hostname") != hostname) continue;
      auto addrs = ep.find("addresses");
      if (addrs == ep.end() || !addrs->is_array()) continue;
      for (const auto& a : *addrs)
        if (auto ip = a.is_string() ? parse_ipv4(a.get<std::string>()) : std::nullopt) out.insert(*ip);
    }
  }
  return {out.begin(), out.end()};
}

}  // namespace

std::optional<DnsRecords> lookup_service_name(const apiserver::Store& store, std::string_view fqdn,
                                              std::string_view zone) {
  std::string name = lower(fqdn), z = lower(zone);
  if (name == z) return DnsRecords{};
  if (name.size() <= z.size() + 1 || name.compare(name.size() - z.size(), z.size(), z) != 0 ||
      name[name.size() - z.size() - 1] != '.')
    return std::nullopt;
  std::vector<std::string> rel = split(std::string_view(name).substr(0, name.size() - z.size() - 1));
  if (rel.empty() || rel.back() != "svc" || rel.size() > 4) return std::nullopt;
  if (rel.size() == 1) return DnsRecords{};
  const std::string& ns = rel[rel.size() - 2];
  if (rel.size() == 2) {
    if (!store.get(apiserver::namespaces_type(), apiserver::ObjectKey{"", ns})) return std::nullopt;
    return DnsRecords{};
  }
  const std::string& svc_name = rel[rel.size() - 3];
  const auto& services = *apiserver::find_resource("", "v1", "services");
  auto svc = store.get(services, apiserver::ObjectKey{ns, svc_name});
  if (!svc) return std::nullopt;
  const apiserver::Json& obj = **svc;
  const apiserver::Json spec = obj.contains("spec") && obj["spec"].is_object() ? obj["spec"] : apiserver::Json::object();
  // As CoreDNS: an ExternalName Service is its alias whatever else its spec
  // says, and has no endpoint names.
  if (apiserver::string_at(spec, "type") == "ExternalName") {
    if (rel.size() == 4) return std::nullopt;
    return DnsRecords{{}, apiserver::string_at(spec, "externalName")};
  }
  std::string ip = apiserver::string_at(spec, "clusterIP");
  if (ip == "None") {
    // As CoreDNS: a headless Service is its ready endpoints, and without any it does not exist.
    auto addrs = endpoint_addresses(store, ns, svc_name, rel.size() == 4 ? rel[0] : "");
    if (addrs.empty()) return std::nullopt;
    return DnsRecords{addrs, std::nullopt};
  }
  if (rel.size() == 4) return std::nullopt;  // endpoint names only under headless Services
  if (auto v4 = parse_ipv4(ip)) return DnsRecords{{*v4}, std::nullopt};
  return DnsRecords{};  // no ClusterIP (yet), or an IPv6 one
}

DnsServer::DnsServer(int fd, int wake_fd, apiserver::Store& store, std::string zone)
    : fd_(fd), wake_fd_(wake_fd), store_(store), zone_(std::move(zone)) {}

Result<std::unique_ptr<DnsServer>> DnsServer::start(int bound_udp_fd, apiserver::Store& store, std::string zone) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(bound_udp_fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_DGRAM)
    return invalid_argument("DNS server: fd " + std::to_string(bound_udp_fd) + " is not a UDP socket");
  sockaddr_storage ss{};
  len = sizeof ss;
  if (getsockname(bound_udp_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      (ss.ss_family == AF_INET && reinterpret_cast<sockaddr_in*>(&ss)->sin_port == 0) ||
      (ss.ss_family == AF_INET6 && reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port == 0))
    return invalid_argument("DNS server: the UDP socket (fd " + std::to_string(bound_udp_fd) + ") is not bound");
  zone = lower(zone);
  if (zone.empty() || zone.front() == '.' || zone.back() == '.' || zone.find("..") != std::string::npos)
    return invalid_argument("DNS server: invalid zone '" + zone + "' (expected a name like cluster.local)");
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) return system_error(std::string("eventfd: ") + strerror(errno));
  std::unique_ptr<DnsServer> s(new DnsServer(bound_udp_fd, wake, store, std::move(zone)));
  DnsServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->serve(); });
  return s;
}

void DnsServer::serve() {
  DnsLookup lookup = [this](std::string_view fqdn) { return lookup_service_name(store_, fqdn, zone_); };
  std::vector<uint8_t> buf(65536);
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    if (!(p[0].revents & POLLIN)) continue;
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n <= 0) continue;
    auto reply = dns_answer(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)), lookup, zone_);
    if (reply.empty()) continue;
    // Counted before it is sent: a client holding the reply must see it
    // counted (the count was racing the client's receive).
    ++answered_;
    if (sendto(fd_, reply.data(), reply.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), from_len) <= 0)
      --answered_;
  }
}

DnsServer::~DnsServer() {
  stop();
  close(fd_);
  close(wake_fd_);
}

void DnsServer::stop() {
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // Full counter or closed: the thread has been told already.
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace kpx::lab
