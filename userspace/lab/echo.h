// The lab's echo server and probe: every pod runs the server, which answers
// each TCP connection and UDP datagram with the pod's name and the client
// address it saw; the probe sends requests and prints who answered.
#pragma once

#include <chrono>
#include <ostream>
#include <string>

#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::lab {

struct EchoServerOptions {
  std::string name;          // the pod's name, echoed back
  uint16_t port = 8080;      // TCP and UDP on 0.0.0.0:port
  int exit_after_s = 0;      // stop by itself after this long (0: run until SIGTERM/SIGINT)
};

// Serve until SIGTERM/SIGINT or exit_after_s. Prints "ready" on out once
// both sockets listen.
Status run_echo_server(const EchoServerOptions& o, std::ostream& out);

// The reply line: "pod=<name> client=<ip>:<port>".
std::string echo_reply(const std::string& name, const std::string& client);

struct ProbeOptions {
  net::ServiceAddr target;   // address, port, protocol
  int count = 1;
  std::chrono::milliseconds timeout{1000};
};

// Send `count` requests, one after another, each on a new connection (TCP)
// or from a new socket (UDP). Prints one line per request:
//   "<n> ok from=<ip:port> <reply>" or "<n> fail <reason>".
// Returns the number of answered requests.
int run_probe(const ProbeOptions& o, std::ostream& out);

}  // namespace kpx::lab
