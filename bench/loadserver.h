// kpx-bench loadserver: the server side of kpx-bench loadgen (its wire
// protocol in loadgen.h), for the backend pods of kpx-bench compare. One
// epoll thread, non-blocking sockets. Per connection, line by line:
//  - "discard": from then on, what the client sends is read and dropped;
//  - "source": from then on, the server writes bulk data until the client
//    closes;
//  - any other line: one response of exactly response_size bytes,
//    "pod=NAME client=IP:PORT" (cut to fit), '.'s, and a last '\n'; the
//    same first words as the lab's echo server's reply, so loadgen counts
//    which backend answered.
// A connection ends when the client closes or resets it.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace kpx::bench {

struct LoadServerOptions {
  std::string name;      // NAME in responses ("" : $HOSTNAME, which kpx lab exec sets to the pod's name)
  uint32_t addr_be = 0;  // 0: any
  uint16_t port = 8080;
  uint32_t response_size = 128;
  uint32_t exit_after_s = 0;  // 0: until SIGTERM/SIGINT
};

// Prints "ready" on out once listening; at the end one JSON line of what
// it served: {"accepted", "requests", "discarded_bytes", "sourced_bytes"}.
// Exit status 0, or 1 when it could not listen (the reason on err).
int run_loadserver(const LoadServerOptions& o, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
