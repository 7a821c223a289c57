#include "apiserver/cluster_ip.h"

#include <arpa/inet.h>

#include <algorithm>

namespace kpx::apiserver {

namespace {

std::optional<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t ip) {
  in_addr a{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

bool needs_cluster_ip(const Json& svc) {
  auto spec = svc.find("spec");
  return spec == svc.end() || !spec->is_object() || string_at(*spec, "type") != "ExternalName";
}

// The IP the Service asks for: clusterIPs[0], else clusterIP ("" for none).
std::string requested_ip(const Json& spec) {
  auto ips = spec.find("clusterIPs");
  if (ips != spec.end() && ips->is_array() && !ips->empty() && (*ips)[0].is_string())
    return (*ips)[0].get<std::string>();
  return string_at(spec, "clusterIP");
}

// As the real server prints a []string in a field error.
std::string go_string_slice(const std::string& ip) { return "[]string{\"" + ip + "\"}"; }

ApiStatus cluster_ips_invalid(const Json& svc, const std::string& field, const std::string& value,
                              const std::string& why) {
  auto meta = svc.find("metadata");
  std::string name = meta != svc.end() ? string_at(*meta, "name") : "";
  return invalid_status("Service", name, field + ": Invalid value: " + value + ": " + why);
}

void set_ip(Json& spec, const std::string& ip) {
  spec["clusterIP"] = ip;
  spec["clusterIPs"] = Json::array({ip});
  spec["ipFamilies"] = Json::array({"IPv4"});
  if (!spec.contains("ipFamilyPolicy") || !spec["ipFamilyPolicy"].is_string()) spec["ipFamilyPolicy"] = "SingleStack";
}

}  // namespace

Result<std::unique_ptr<ServiceIpAllocator>> ServiceIpAllocator::create(const std::string& cidr) {
  size_t slash = cidr.find('/');
  std::string bits = slash == std::string::npos ? "" : cidr.substr(slash + 1);
  auto addr = parse_ipv4(cidr.substr(0, slash));
  if (!addr || bits.empty() || bits.size() > 2 || bits.find_first_not_of("0123456789") != std::string::npos)
    return invalid_argument("invalid service cluster IP range '" + cidr +
                            "': expected an IPv4 network such as 10.96.0.0/16 (IPv6 is not supported)");
  int prefix = std::stoi(bits);
  if (prefix < 8 || prefix > 30)
    return invalid_argument("invalid service cluster IP range '" + cidr +
                            "': the prefix length must be between 8 and 30");
  uint32_t size = 1u << (32 - prefix);
  uint32_t base = *addr & ~(size - 1);
  if (base != *addr)
    return invalid_argument("invalid service cluster IP range '" + cidr + "': host bits are set (the network is " +
                            format_ipv4(base) + "/" + bits + ")");
  return std::unique_ptr<ServiceIpAllocator>(new ServiceIpAllocator(cidr, base, size));
}

ServiceIpAllocator::ServiceIpAllocator(std::string cidr, uint32_t base, uint32_t size)
    : cidr_(std::move(cidr)), base_(base), size_(size) {
  // As the real allocator (ServiceIPStaticSubrange): the lower band, size/16
  // clamped to 16..256 addresses, is left to static requests as long as the
  // upper band has room. Ranges under 16 addresses have no such band.
  split_ = size_ < 16 ? 0 : std::clamp<uint32_t>(size_ / 16, 16, 256);
}

size_t ServiceIpAllocator::allocated() const {
  std::lock_guard lk(mu_);
  return used_.size();
}

std::optional<uint32_t> ServiceIpAllocator::pick_free() {
  // Usable offsets: 1 .. size_-2; offset 1 is the `kubernetes` Service's and
  // is never handed out dynamically.
  auto scan = [&](uint32_t lo, uint32_t hi) -> std::optional<uint32_t> {  // [lo, hi)
    if (lo >= hi) return std::nullopt;
    uint32_t start = lo + static_cast<uint32_t>(rng_() % (hi - lo));
    for (uint32_t i = 0; i < hi - lo; ++i) {
      uint32_t off = lo + (start - lo + i) % (hi - lo);
      if (!used_.count(off)) return off;
    }
    return std::nullopt;
  };
  uint32_t first = 2, end = size_ - 1;
  uint32_t split = std::max(first, std::min(split_, end));
  if (auto off = scan(split, end)) return off;
  return scan(first, split);
}

std::optional<ApiStatus> ServiceIpAllocator::claim(Json& svc) {
  Json& spec = svc["spec"];
  std::string want = requested_ip(spec);
  if (want == "None") {
    spec["clusterIP"] = "None";
    spec["clusterIPs"] = Json::array({"None"});
    if (!spec.contains("ipFamilies")) spec["ipFamilies"] = Json::array({"IPv4"});
    if (!spec.contains("ipFamilyPolicy")) spec["ipFamilyPolicy"] = "SingleStack";
    return std::nullopt;
  }
  if (want.empty()) {
    auto off = pick_free();
    if (!off) return internal_error_status("failed to allocate a serviceIP: range is full");
    used_.insert(*off);
    set_ip(spec, format_ipv4(base_ + *off));
    return std::nullopt;
  }
  auto ip = parse_ipv4(want);
  if (!ip) {
    in6_addr v6{};
    if (inet_pton(AF_INET6, want.c_str(), &v6) != 1)
      return cluster_ips_invalid(svc, "spec.clusterIPs[0]", "\"" + want + "\"",
                                 "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
  }
  uint32_t off = ip ? *ip - base_ : 0;
  if (!ip || *ip < base_ || off >= size_ - 1 || off == 0)
    return cluster_ips_invalid(svc, "spec.clusterIPs", go_string_slice(want),
                               "failed to allocate IP " + want + ": the provided IP (" + want +
                                   ") is not in the valid range. The range of valid IPs is " + cidr_);
  if (used_.count(off))
    return cluster_ips_invalid(svc, "spec.clusterIPs", go_string_slice(want),
                               "failed to allocate IP " + want + ": provided IP is already allocated");
  used_.insert(off);
  set_ip(spec, format_ipv4(*ip));  // normalized, as the real server stores it
  return std::nullopt;
}

std::optional<ApiStatus> ServiceIpAllocator::on_create(Json& svc) {
  std::lock_guard lk(mu_);
  if (!needs_cluster_ip(svc)) return std::nullopt;
  if (!svc["spec"].is_object()) svc["spec"] = Json::object();
  return claim(svc);
}

std::optional<ApiStatus> ServiceIpAllocator::on_update(const Json& current, Json& next) {
  std::lock_guard lk(mu_);
  bool had = needs_cluster_ip(current), needs = needs_cluster_ip(next);
  if (!next["spec"].is_object()) next["spec"] = Json::object();
  Json& spec = next["spec"];
  static const Json kNoSpec = Json::object();
  const Json& cur_spec = current.contains("spec") && current["spec"].is_object() ? current["spec"] : kNoSpec;
  if (had && needs) {
    std::string was = requested_ip(cur_spec), want = requested_ip(spec);
    if (want.empty()) {
      // As the real registry: an update that leaves the IP out keeps it.
      for (const char* f : {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"})
        if (cur_spec.contains(f)) spec[f] = cur_spec[f];
      return std::nullopt;
    }
    if (want != was)
      return cluster_ips_invalid(next, "spec.clusterIPs[0]", go_string_slice(want), "may not change once set");
    spec["clusterIP"] = want;
    return std::nullopt;
  }
  if (!had && needs) return claim(next);
  if (had && !needs) {
    on_remove_locked(current);
    for (const char* f : {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"}) spec.erase(f);
  }
  return std::nullopt;
}

void ServiceIpAllocator::on_remove(const Json& svc) {
  std::lock_guard lk(mu_);
  on_remove_locked(svc);
}

void ServiceIpAllocator::on_remove_locked(const Json& svc) {
  if (!needs_cluster_ip(svc) || !svc.contains("spec") || !svc["spec"].is_object()) return;
  auto ip = parse_ipv4(requested_ip(svc["spec"]));
  if (ip && *ip > base_ && *ip - base_ < size_ - 1) used_.erase(*ip - base_);
}

}  // namespace kpx::apiserver
