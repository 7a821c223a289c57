// The lab's echo server and probe: every pod runs the server, which answers
// each TCP connection and UDP datagram with the pod's name and the client
// address it saw; the probe sends requests and prints who answered.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::lab {

struct EchoServerOptions {
  std::string name;          // the pod's name, echoed back
  uint16_t port = 8080;      // TCP and UDP on 0.0.0.0:port
  int exit_after_s = 0;      // stop by itself after this long (0: run until SIGTERM/SIGINT)
  std::string container;     // if set, replies end with " container=<name>"
  bool log_requests = false; // print "<proto> request from=<ip:port>" for each request
};

// Serve until SIGTERM/SIGINT or exit_after_s. Prints "ready" on out once
// both sockets listen.
Status run_echo_server(const EchoServerOptions& o, std::ostream& out);

// The reply line: "pod=<name> client=<ip>:<port>" (then " container=<c>"
// when the server was given a container name).
std::string echo_reply(const std::string& name, const std::string& client);

struct ProbeOptions {
  net::ServiceAddr target;   // address, port, protocol
  int count = 1;
  std::chrono::milliseconds timeout{1000};
  std::chrono::milliseconds interval{0};  // pause between requests
  // UDP: one connected socket for every request (connect, send, recv), as a
  // stub resolver keeps one; after an error it is closed and the next
  // request connects a new one. from= is its getpeername().
  bool keep_socket = false;
};

// Send `count` requests, one after another, each on a new connection (TCP)
// or from a new socket (UDP; see keep_socket). Prints one line per request:
//   "<n> ok from=<ip:port> <reply>" or "<n> fail <reason>".
// Returns the number of answered requests.
int run_probe(const ProbeOptions& o, std::ostream& out);

// One line of run_probe's output, parsed.
struct ProbeAnswer {
  bool ok = false;
  std::string from;       // reply source as the client saw it (ip:port)
  std::string pod;        // which pod answered
  std::string client;     // the client address the pod saw (ip:port)
  std::string container;  // which container, when the server names it
  std::string line;
  std::string client_ip() const { return client.substr(0, client.rfind(':')); }
};
std::vector<ProbeAnswer> parse_probe_output(const std::string& text);

}  // namespace kpx::lab
