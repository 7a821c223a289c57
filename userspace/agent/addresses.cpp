#include "agent/addresses.h"

#include <fnmatch.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "log/log.h"

namespace kpx::agent {

NodeAddresses read_node_addresses(const std::string& uplink_glob) {
  NodeAddresses out;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) {
    log::warning("reading the node's addresses failed: " + std::string(std::strerror(errno)));
    return out;
  }
  std::string primary_if;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    const uint32_t a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr;
    if ((ntohl(a) >> 24) == 127) continue;
    if (std::find(out.all.begin(), out.all.end(), a) == out.all.end()) out.all.push_back(a);
    // The first interface by name, so that the choice does not depend on
    // the order the kernel lists them in; its first address.
    if (!uplink_glob.empty() && fnmatch(uplink_glob.c_str(), i->ifa_name, 0) == 0 &&
        (!out.primary || std::string(i->ifa_name) < primary_if)) {
      primary_if = i->ifa_name;
      out.primary = a;
    }
  }
  freeifaddrs(ifs);
  return out;
}

Result<AddressFollower> AddressFollower::open(std::string uplink_glob, NodeAddresses current, OnChange on_change) {
  bpf::UniqueFd s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (!s.valid()) return errno_error("netlink socket", errno);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_IPV4_IFADDR;
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error("bind netlink address events", errno);
  return AddressFollower(std::move(uplink_glob), std::move(current), std::move(on_change), std::move(s));
}

void AddressFollower::reread() {
  NodeAddresses now = read_node_addresses(glob_);
  if (now == last_) return;
  last_ = now;
  on_change_(now);
}

void AddressFollower::run(std::stop_token stop) {
  alignas(nlmsghdr) char buf[16384];
  while (!stop.stop_requested()) {
    pollfd p{sock_.get(), POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    // Drain what is queued: the events only say "look again"; the
    // addresses are read whole (getifaddrs) afterwards. ENOBUFS (events
    // lost) is a reason to look again as well.
    bool changed = false;
    for (;;) {
      ssize_t n = recv(sock_.get(), buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == ENOBUFS) {
          changed = true;
          continue;
        }
        break;  // EAGAIN: drained
      }
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n))
        changed |= h->nlmsg_type == RTM_NEWADDR || h->nlmsg_type == RTM_DELADDR;
    }
    if (changed) reread();
  }
}

}  // namespace kpx::agent
