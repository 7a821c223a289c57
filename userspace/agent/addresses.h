// The node's own addresses, read at start and followed at run time through
// a netlink address-event socket: NodePorts appear on an address added
// after the agent started and go with one removed, and the masquerade
// source follows the uplink's primary address.
#pragma once

#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include "bpf/fd.h"
#include "status/status.h"

namespace kpx::agent {

struct NodeAddresses {
  // The IPv4 addresses of this network namespace's interfaces, loopback's
  // excepted (network byte order, in the kernel's order, no duplicates).
  std::vector<uint32_t> all;
  // The first IPv4 address of the first interface (by name) matching the
  // uplink glob (0: none): the source of translated north-south traffic.
  uint32_t primary = 0;

  bool operator==(const NodeAddresses&) const = default;
};

NodeAddresses read_node_addresses(const std::string& uplink_glob);

class AddressFollower {
 public:
  using OnChange = std::function<void(const NodeAddresses&)>;

  // `current` is what the caller applied already; on_change is called (from
  // run()'s thread) with the new set whenever it differs from the last one.
  static Result<AddressFollower> open(std::string uplink_glob, NodeAddresses current, OnChange on_change);
  // Read address events until stop is requested. A burst of events (an
  // interface going down drops all its addresses) is read in full before
  // the addresses are read again, so one change is applied once.
  void run(std::stop_token stop);

 private:
  AddressFollower(std::string glob, NodeAddresses current, OnChange on_change, bpf::UniqueFd sock)
      : glob_(std::move(glob)), last_(std::move(current)), on_change_(std::move(on_change)), sock_(std::move(sock)) {}
  void reread();

  std::string glob_;
  NodeAddresses last_;
  OnChange on_change_;
  bpf::UniqueFd sock_;
};

}  // namespace kpx::agent
