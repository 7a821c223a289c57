// CRRs (connect, request, response, close) against the lab's echo server:
// the client (`kpx-bench crr-client`, hidden: the bench runs it inside the
// lab with `kpx lab exec`) and kpx-bench socket-lb's lab part, which runs it
// from node1 (socket-level load balancing) and from a pod on node1 (the
// per-packet tc path), to a ClusterIP and to its backend's pod IP.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::bench {

struct CrrClientOptions {
  std::vector<std::string> targets;  // ADDR:PORT of echo servers or Services, CRR by CRR in turn
  uint32_t count = 1000;             // CRRs to each target
  bool json = false;                 // one JSON document on stdout
  uint32_t timeout_ms = 1000;        // per CRR (connect, then the reply)
  uint32_t max_seconds = 60;         // the whole loop stops after this long
};

// Runs the CRRs; exits 1 at the first that fails (the reason on err).
int run_crr_client(const CrrClientOptions& o, std::ostream& out, std::ostream& err);

// The lab part of kpx-bench socket-lb.
struct CrrResults {
  std::string lab, cluster_ip, backend, client_pod;
  uint32_t rounds = 0, crrs = 0;
  // Per case: the client's median / mean of a run's CRRs, one per round;
  // the CRRs over every round.
  std::map<std::string, std::vector<double>> median_ns, mean_ns;
  std::map<std::string, uint64_t> done;
  // Per client (node1, pod): node1's counters, grown during its runs.
  std::map<std::string, uint64_t> sock_lb, dnat_new;
};

// `kpx lab up` of a lab of the bench's own (always `kpx lab down` after),
// a Service with one backend pod on node1, then `rounds` rounds of every
// case, `crrs` CRRs each. Fails unless each client's ClusterIP CRRs took
// the path they name (node1's counters: socket LB for node1's, a new
// per-packet translation for each of the pod's, nothing else).
Result<CrrResults> measure_crr(uint32_t rounds, uint32_t crrs, std::ostream& err);
nlohmann::json crr_json(const CrrResults& r);
void print_crr_table(const CrrResults& r, std::ostream& out);

}  // namespace kpx::bench
