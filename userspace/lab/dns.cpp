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
#include <set>

#include "apiserver/resources.h"

namespace kpx::lab {

namespace {

constexpr size_t kHeader = 12;
constexpr size_t kUdpLimit = 512;  // no EDNS0: what every client accepts
constexpr uint16_t kTypeA = 1, kTypeSoa = 6, kTypeAny = 255, kClassIn = 1;
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
  void name(const std::vector<std::string>& labels) {
    for (const auto& l : labels) {
      u8(static_cast<uint8_t>(l.size()));
      b_.insert(b_.end(), l.begin(), l.end());
    }
    u8(0);
  }
  void set16(size_t at, uint16_t v) {
    b_[at] = static_cast<uint8_t>(v >> 8);
    b_[at + 1] = static_cast<uint8_t>(v);
  }
  size_t size() const { return b_.size(); }
  std::vector<uint8_t> take() { return std::move(b_); }

 private:
  std::vector<uint8_t> b_;
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

void soa(Writer& w, const std::vector<std::string>& zone) {
  std::vector<std::string> mname{"ns", "dns"}, rname{"hostmaster"};
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

  std::vector<std::string> zone_labels = split(lower(zone));
  std::vector<std::string> name;
  for (const auto& l : q->labels) name.push_back(lower(l));
  bool in_zone = name.size() >= zone_labels.size() &&
                 std::equal(zone_labels.begin(), zone_labels.end(), name.end() - zone_labels.size());
  bool in_class = q->qclass == kClassIn || q->qclass == kTypeAny;
  auto echo_question = [&] {
    w.name(q->labels);
    w.u16(q->qtype);
    w.u16(q->qclass);
  };
  if (!in_zone || !in_class) {
    header(w, query, false, kRefused, 1);
    echo_question();
    return w.take();
  }

  std::optional<std::vector<uint32_t>> found;
  if (std::all_of(name.begin(), name.end(), plain_label)) {
    std::string fqdn;
    for (const auto& l : name) fqdn += (fqdn.empty() ? "" : ".") + l;
    found = lookup(fqdn);
  }
  std::vector<uint32_t> answers;
  if (found && (q->qtype == kTypeA || q->qtype == kTypeAny)) answers = *found;
  header(w, query, true, found ? kNoError : kNxDomain, 1);
  echo_question();
  if (answers.empty()) {
    soa(w, zone_labels);
    w.set16(8, 1);  // NSCOUNT
    return w.take();
  }
  uint16_t count = 0;
  for (uint32_t ip : answers) {
    if (w.size() + 16 > kUdpLimit) {
      std::vector<uint8_t> out = w.take();
      out[2] |= 0x02;  // TC: the client may ask again over TCP
      out[6] = static_cast<uint8_t>(count >> 8);
      out[7] = static_cast<uint8_t>(count);
      return out;
    }
    w.u16(0xC000 | kHeader);  // the question's name
    w.u16(kTypeA);
    w.u16(kClassIn);
    w.u32(kDnsTtl);
    w.u16(4);
    w.u32(ip);
    ++count;
  }
  w.set16(6, count);  // ANCOUNT
  return w.take();
}

namespace {

std::optional<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

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

std::optional<std::vector<uint32_t>> lookup_service_name(const apiserver::Store& store, std::string_view fqdn,
                                                         std::string_view zone) {
  std::string name = lower(fqdn), z = lower(zone);
  if (name == z) return std::vector<uint32_t>{};
  if (name.size() <= z.size() + 1 || name.compare(name.size() - z.size(), z.size(), z) != 0 ||
      name[name.size() - z.size() - 1] != '.')
    return std::nullopt;
  std::vector<std::string> rel = split(std::string_view(name).substr(0, name.size() - z.size() - 1));
  if (rel.empty() || rel.back() != "svc" || rel.size() > 4) return std::nullopt;
  if (rel.size() == 1) return std::vector<uint32_t>{};
  const std::string& ns = rel[rel.size() - 2];
  if (rel.size() == 2) {
    if (!store.get(apiserver::namespaces_type(), apiserver::ObjectKey{"", ns})) return std::nullopt;
    return std::vector<uint32_t>{};
  }
  const std::string& svc_name = rel[rel.size() - 3];
  const auto& services = *apiserver::find_resource("", "v1", "services");
  auto svc = store.get(services, apiserver::ObjectKey{ns, svc_name});
  if (!svc) return std::nullopt;
  const apiserver::Json& obj = **svc;
  const apiserver::Json spec = obj.contains("spec") && obj["spec"].is_object() ? obj["spec"] : apiserver::Json::object();
  std::string ip = apiserver::string_at(spec, "clusterIP");
  if (ip == "None") {
    // As CoreDNS: a headless Service is its ready endpoints, and without any it does not exist.
    auto addrs = endpoint_addresses(store, ns, svc_name, rel.size() == 4 ? rel[0] : "");
    if (addrs.empty()) return std::nullopt;
    return addrs;
  }
  if (rel.size() == 4) return std::nullopt;  // endpoint names only under headless Services
  if (apiserver::string_at(spec, "type") == "ExternalName") return std::vector<uint32_t>{};  // no CNAMEs here
  if (auto v4 = parse_ipv4(ip)) return std::vector<uint32_t>{*v4};
  return std::vector<uint32_t>{};  // no ClusterIP (yet), or an IPv6 one
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
