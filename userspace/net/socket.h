// Bound IPv4 sockets for servers: the echo server, and the lab daemon's
// API and DNS sockets made inside other network namespaces.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "bpf/fd.h"
#include "status/status.h"

namespace kpx::net {

// addr_be:port (network byte order address, host order port) as a sockaddr.
sockaddr_in ipv4_sockaddr(uint32_t addr_be, uint16_t port);

// An AF_INET socket of `type` (SOCK_STREAM or SOCK_DGRAM), SO_REUSEADDR,
// bound to addr_be:port (network byte order address; 0: any), listening if
// it is a stream socket.
Result<bpf::UniqueFd> bound_socket(int type, uint32_t addr_be, uint16_t port);

// The same, made inside the named network namespace: a socket keeps the
// namespace it was made in, whichever namespace its owner is in.
Result<bpf::UniqueFd> bound_socket_in_netns(const std::string& netns, int type, uint32_t addr_be, uint16_t port);

}  // namespace kpx::net
