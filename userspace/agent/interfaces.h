// Follows the interfaces of the agent's network namespace whose names
// match a glob (the host ends of pod veths, e.g. "veth*"): those present at
// start, then every one that appears, through a netlink link-event socket.
#pragma once

#include <functional>
#include <set>
#include <stop_token>
#include <string>

#include "bpf/fd.h"
#include "status/status.h"

namespace kpx::agent {

class InterfaceFollower {
 public:
  // on_link is called (from run()'s thread) for each matching interface
  // index that appears, until it returns true (attached); a re-created
  // interface (new index) counts as new. on_gone follows for those that go.
  using OnLink = std::function<bool(int ifindex, const std::string& name)>;
  using OnGone = std::function<void(int ifindex)>;

  static Result<InterfaceFollower> open(std::string glob, OnLink on_link, OnGone on_gone = {});
  // Report the interfaces present now (call once, before run()).
  void scan();
  // Read link events until stop is requested.
  void run(std::stop_token stop);

 private:
  InterfaceFollower(std::string glob, OnLink on_link, OnGone on_gone, bpf::UniqueFd sock)
      : glob_(std::move(glob)), on_link_(std::move(on_link)), on_gone_(std::move(on_gone)), sock_(std::move(sock)) {}
  void seen(int ifindex, const std::string& name);
  void gone(int ifindex);

  std::string glob_;
  OnLink on_link_;
  OnGone on_gone_;
  bpf::UniqueFd sock_;
  std::set<int> known_;
};

}  // namespace kpx::agent
