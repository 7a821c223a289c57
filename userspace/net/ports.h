// A free TCP port on 127.0.0.1, for servers that tests, benches and the lab
// start as separate processes and must name a port for in advance.
#pragma once

#include <cstdint>

namespace kpx::net {

// The port the kernel picks for a socket bound to 127.0.0.1:0, released at
// once; 0 if none could be had. Another process may take it in between:
// callers retry or tolerate that.
uint16_t free_loopback_port();

}  // namespace kpx::net
