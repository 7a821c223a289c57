#include "agent/interfaces.h"

#include <fnmatch.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace kpx::agent {

Result<InterfaceFollower> InterfaceFollower::open(std::string glob, OnLink on_link, OnGone on_gone) {
  bpf::UniqueFd s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (!s.valid()) return errno_error("netlink socket", errno);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK;
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error("bind netlink link events", errno);
  return InterfaceFollower(std::move(glob), std::move(on_link), std::move(on_gone), std::move(s));
}

void InterfaceFollower::seen(int ifindex, const std::string& name) {
  if (fnmatch(glob_.c_str(), name.c_str(), 0) != 0) return;
  if (known_.count(ifindex)) return;
  // Remembered only once handled: a failed attach is tried again on the
  // interface's next event (e.g. when it comes up) or rescan.
  if (on_link_(ifindex, name)) known_.insert(ifindex);
}

void InterfaceFollower::gone(int ifindex) {
  if (known_.erase(ifindex) && on_gone_) on_gone_(ifindex);
}

void InterfaceFollower::scan() {
  struct if_nameindex* list = if_nameindex();
  if (!list) return;
  for (struct if_nameindex* i = list; i->if_index != 0; ++i) seen(static_cast<int>(i->if_index), i->if_name);
  if_freenameindex(list);
}

void InterfaceFollower::run(std::stop_token stop) {
  alignas(nlmsghdr) char buf[16384];
  while (!stop.stop_requested()) {
    pollfd p{sock_.get(), POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n = recv(sock_.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == ENOBUFS) scan();  // events were lost: look again
      continue;
    }
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) continue;
      auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
      if (h->nlmsg_type == RTM_DELLINK) {
        gone(ifi->ifi_index);
        continue;
      }
      int len = static_cast<int>(IFLA_PAYLOAD(h));
      for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type != IFLA_IFNAME) continue;
        std::string name(static_cast<const char*>(RTA_DATA(a)), strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
        seen(ifi->ifi_index, name);
      }
    }
  }
}

}  // namespace kpx::agent
