// kpx-bench loadgen: the load generator of kpx-bench compare, run inside a
// network namespace (`kpx lab exec`) against one target, a ClusterIP or a
// pod IP, printing one JSON document. Three modes, each bounded in count
// and in time, so a run stops by itself whatever the dataplane does:
//
//  crr     connect, request, response, close with RST (SO_LINGER {1,0}: no
//          TIME_WAIT piles up on either side), on non-blocking sockets in
//          one epoll thread. Either at the maximum rate with C connections
//          in flight (closed loop: latency from socket()), or at a fixed
//          offered rate R (open loop: connection i is due at i/R s; latency
//          from the due time, so a generator or server that falls behind
//          shows its queueing instead of hiding it: no coordinated
//          omission). The connect time (connect() until the socket is
//          writable: SYN to SYN-ACK, plus the loop's delay in noticing) is
//          kept apart: the first-packet latency a dataplane's new-flow path
//          adds to.
//  rr      request/response on K connections kept open, each closed-loop.
//  stream  one connection, bulk data for a duration: the client sends and
//          the server discards (bytes the server's TCP acknowledged, from
//          TCP_INFO, so the send buffer's backlog is not counted), or the
//          server sends and the client counts what it read.
//
// The wire protocol (kpx-bench loadserver serves it; loadserver.h):
//  - a request is request_size bytes, 'x's and a last '\n'; the response is
//    one line: everything up to and including the first '\n'. The lab's
//    echo server (userspace/lab/echo.cpp) answers every connection with one
//    line without reading, so crr with --request-size 0 (send nothing)
//    measures against it too; rr and stream need loadserver.
//  - stream: the client's first line is "discard" (then bulk data, which
//    the server reads and drops) or "source" (the server writes bulk data
//    until the client closes).
// Percentiles are exact (load_stats.h): every sample is kept, 8 bytes
// each, which is why the CLI bounds a crr run's count (10 million) and an
// rr run's duration (300 s).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "net/endpoint.h"
#include "status/status.h"

namespace kpx::bench {

struct CrrLoadOptions {
  net::BackendAddr target;
  uint64_t count = 10000;        // CRRs to make
  uint64_t rate = 0;             // CRRs a second, open loop; 0: the maximum rate
  uint32_t concurrency = 16;     // maximum rate: connections in flight
  uint32_t max_inflight = 1000;  // open loop: a start due while this many are in flight waits (and counts it)
  uint32_t duration_s = 60;      // the run stops after this long, done or not
  uint32_t timeout_ms = 3000;    // per CRR: connect and the whole response
  uint32_t request_size = 64;    // 0: send nothing (the lab's echo server answers on accept)
};

struct RrLoadOptions {
  net::BackendAddr target;
  uint32_t connections = 1;    // kept open, each one transaction at a time
  uint32_t duration_s = 10;    // the measured run
  uint64_t count = 0;          // at most this many transactions (0: the duration alone)
  uint32_t timeout_ms = 3000;  // per connect and per transaction
  uint32_t request_size = 64;
};

struct StreamLoadOptions {
  net::BackendAddr target;
  bool receive = false;  // false: the client sends (server discards); true: the server sends
  uint32_t duration_s = 10;
  uint64_t max_bytes = 0;            // stop after this many bytes too (0: the duration alone)
  uint32_t chunk_size = 128 * 1024;  // bytes a write() or read()
  uint32_t timeout_ms = 3000;        // the connect
};

// The runs: the JSON document, or an error that kept the run from
// starting (a failed connection is a figure of the document, not an error).
Result<nlohmann::json> crr_load(const CrrLoadOptions& o);
Result<nlohmann::json> rr_load(const RrLoadOptions& o);
Result<nlohmann::json> stream_load(const StreamLoadOptions& o);

// What every document begins with: {"tool": "kpx-bench loadgen", "schema": 1, "mode", "target"}.
nlohmann::json load_document(const std::string& mode, const net::BackendAddr& target);

// Prints the document on out. Exit status: 0 when every requested
// operation completed (crr: count CRRs; rr and stream: no failure), 1 when
// some failed or did not finish in time (the document says which), or when
// the run could not start (no document; the reason on err).
int print_load(const Result<nlohmann::json>& doc, std::ostream& out, std::ostream& err);

}  // namespace kpx::bench
