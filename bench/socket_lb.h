// kpx-bench socket-lb: what socket-level load balancing (bpf/kpx_sock.bpf.c,
// issue 11) costs and saves a client on the node.
//  - connect: ns per socket+connect+close, TCP and UDP, in a network
//    namespace and cgroup of the bench's own: to a backend's address
//    without the hooks (the floor), to the same address with the hooks
//    (their cost for traffic that is no Service's) and to a ClusterIP with
//    the hooks (translated).
//  - CRR (connect, request, response, close) in a lab of the bench's own,
//    from node1 (socket LB) and from a pod on node1 (the per-packet tc path)
//    to a ClusterIP, each against the same client to the backend pod's
//    address.
#pragma once

#include <cstdint>
#include <ostream>

namespace kpx::bench {

struct SocketLbOptions {
  bool json = false;
  uint32_t rounds = 7;
  uint32_t connects = 10000;  // per connect case and round
  uint32_t crrs = 5000;       // per CRR case and round
  bool crr = true;           // the lab part
};

int run_socket_lb(const SocketLbOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
