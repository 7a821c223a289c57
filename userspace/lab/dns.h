// The lab's DNS responder: A records for <svc>.<ns>.svc.<zone> (the
// ClusterIP; a headless Service's ready endpoint addresses) and CNAMEs for
// ExternalName Services, as CoreDNS's kubernetes plugin answers them, over
// UDP on a socket the lab daemon binds inside a pod's network namespace.
// Authoritative for the zone only.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "apiserver/store.h"
#include "status/status.h"

namespace kpx::lab {

// What a name holds: IPv4 addresses (host byte order; none when it exists
// without addresses), or it is an alias (an ExternalName Service: the
// target as the Service spells it, unchecked).
struct DnsRecords {
  std::vector<uint32_t> addresses;
  std::optional<std::string> alias;
};

// The records of a lower-case name without the trailing dot; nullopt when
// the name does not exist.
using DnsLookup = std::function<std::optional<DnsRecords>(std::string_view fqdn)>;

inline constexpr uint32_t kDnsTtl = 5;  // seconds, answers and negative answers

// The response to one query message (RFC 1035 wire format), or an empty
// vector when nothing is to be sent (shorter than a header, or itself a
// response). Names compare case-insensitively; the question is echoed as
// sent. A/ANY for an existing name: its addresses (TTL 5); other types:
// NOERROR without answers (NODATA); an unknown name in the zone: NXDOMAIN;
// both with the zone's SOA in the authority section. An alias: its CNAME
// (TTL 5) for every type; for types other than CNAME and ANY, an alias in
// the zone is followed (as an authoritative server does, RFC 1034 4.3.2;
// up to 8 CNAMEs, never into a loop) and its target's records or negative
// answer come after the CNAMEs; a target outside the zone ends the answer
// (no recursion: there is no upstream). An alias whose target is no valid
// host name (or an IP address) does not exist, as with CoreDNS. Names in
// the answers are compressed (RFC 1035 4.1.4). A name outside the zone:
// REFUSED (the responder is no recursive resolver: a stub resolver moves on
// to its next server at once, where SERVFAIL would read as a failure worth
// retrying). Not a standard query: NOTIMP. Malformed (QDCOUNT != 1, a bad
// label or compression pointer, truncated question): FORMERR. Answers that
// do not fit 512 bytes are cut and TC set.
std::vector<uint8_t> dns_answer(std::span<const uint8_t> query, const DnsLookup& lookup,
                                std::string_view zone = "cluster.local");

// Names in `zone` from the store: the zone, svc.<zone> and <ns>.svc.<zone>
// (for an existing namespace) exist without addresses; <svc>.<ns>.svc.<zone>
// is the Service's ClusterIP, or for a headless Service the ready IPv4
// addresses of its EndpointSlices, or for an ExternalName Service an alias
// of spec.externalName; <hostname>.<svc>.<ns>.svc.<zone> is the headless
// endpoint of that hostname.
std::optional<DnsRecords> lookup_service_name(const apiserver::Store& store, std::string_view fqdn,
                                              std::string_view zone);

class DnsServer {
 public:
  // Serves on bound_udp_fd (a bound AF_INET SOCK_DGRAM socket, owned from now
  // on and closed by the server) until stopped.
  static Result<std::unique_ptr<DnsServer>> start(int bound_udp_fd, apiserver::Store& store,
                                                  std::string zone = "cluster.local");
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  void stop();  // idempotent; the destructor calls it
  uint64_t answered() const { return answered_; }

 private:
  DnsServer(int fd, int wake_fd, apiserver::Store& store, std::string zone);
  void serve();
  int fd_;
  int wake_fd_;  // an eventfd that ends serve()
  apiserver::Store& store_;
  std::string zone_;
  std::atomic<uint64_t> answered_ = 0;
  std::thread thread_;
};

}  // namespace kpx::lab
