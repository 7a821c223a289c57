#include "dataplane/conntrack.h"

#include <arpa/inet.h>
#include <time.h>

#include <algorithm>
#include <tuple>

namespace kpx::dataplane {

uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

std::vector<CtEntry> list_conntrack(const bpf::PinnedMaps& maps) {
  const uint64_t now = monotonic_coarse_ns();
  auto since = [now](uint64_t t) { return t < now ? (now - t) / 1000000000ULL : 0; };
  std::vector<CtEntry> out;
  maps.conntrack.for_each([&](const kpx_ct_key_v4& k, const kpx_ct_value_v4& v) {
    out.push_back({k, v, since(v.created_ns), since(v.last_seen_ns)});
  });
  auto order = [](const CtEntry& e) {
    return std::make_tuple(ntohl(e.key.saddr), ntohs(e.key.sport), ntohl(e.key.daddr), ntohs(e.key.dport),
                           e.key.proto, e.key.dir);
  };
  std::sort(out.begin(), out.end(), [&](const CtEntry& a, const CtEntry& b) { return order(a) < order(b); });
  return out;
}

std::string ct_flags_string(uint16_t flags) {
  static const std::pair<uint16_t, const char*> kNames[] = {
      {KPX_CT_F_SYN, "SYN"}, {KPX_CT_F_ESTABLISHED, "ESTABLISHED"}, {KPX_CT_F_FIN, "FIN"},
      {KPX_CT_F_RST, "RST"}, {KPX_CT_F_HAIRPIN, "HAIRPIN"},
  };
  std::string s;
  for (const auto& [bit, name] : kNames) {
    if (!(flags & bit)) continue;
    if (!s.empty()) s += '|';
    s += name;
  }
  return s.empty() ? "-" : s;
}

}  // namespace kpx::dataplane
