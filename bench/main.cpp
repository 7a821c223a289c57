// kpx-bench: micro-benchmarks of the kpx datapath.
//   kpx-bench datapath [--json] [--services LIST] [--repeats N] [--paths pod,uplink] [--uplink-frames N]
//   kpx-bench sync [--json] ...
//   kpx-bench lab [--json] [--rounds N]
//   kpx-bench socket-lb [--json] [--rounds N] [--connects N] [--crrs N] [--no-crr]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

#include "crr.h"
#include "datapath.h"
#include "lab_up.h"
#include "socket_lb.h"
#include "sync.h"
#include "kpx/abi.h"

int main(int argc, char** argv) {
  CLI::App app{"kpx-bench: kpx datapath micro-benchmarks"};
  app.require_subcommand(1);

  kpx::bench::DatapathOptions dp;
  auto* datapath = app.add_subcommand(
      "datapath",
      "ns per packet of kpx_from_pod / kpx_to_pod under BPF_PROG_TEST_RUN, against an empty "
      "tc program, and of kpx_from_uplink on NodePort traffic (in a network namespace of its own), against the same "
      "floor, with 1 to 50000 Services programmed (needs root and bpffs)");
  datapath->add_flag("--json", dp.json, "print the results as one JSON object");
  datapath
      ->add_option("--services", dp.services,
                   "comma-separated Service counts to program (1..65536)")
      ->delimiter(',')
      ->check(CLI::Range(1u, static_cast<unsigned>(KPX_MAX_SERVICES)))
      ->capture_default_str();
  datapath->add_option("--repeats", dp.repeats, "rounds; every figure is the median over rounds")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  datapath
      ->add_option("--iterations", dp.iterations,
                   "BPF_PROG_TEST_RUN repeat count for the looped cases (rounded up to even)")
      ->check(CLI::Range(2u, 100000000u))
      ->capture_default_str();
  datapath
      ->add_option("--new-flow-frames", dp.new_flow_frames,
                   "distinct SYN frames (one test run each) per round and Service count")
      ->check(CLI::Range(1u, 10000u))
      ->capture_default_str();
  datapath
      ->add_option("--mix-flows", dp.mix_flows,
                   "established flows visited round-robin, one test run each (the mix case)")
      ->check(CLI::Range(1u, 30000u))
      ->capture_default_str();
  std::vector<std::string> paths = {"pod", "uplink"};
  datapath
      ->add_option("--paths", paths,
                   "comma-separated: pod (kpx_from_pod / kpx_to_pod), uplink (kpx_from_uplink on NodePort traffic, in "
                   "a network namespace of the bench's own)")
      ->delimiter(',')
      ->check(CLI::IsMember({"pod", "uplink"}))
      ->capture_default_str();
  datapath
      ->add_option("--uplink-frames", dp.uplink_frames,
                   "frames (one test run each) per uplink case, round and Service count")
      ->check(CLI::Range(1u, 10000u))
      ->capture_default_str();

  kpx::bench::SyncOptions so;
  auto* sync = app.add_subcommand("sync", "control plane: compute+apply, change latency, end to end through kpx apiserver and kpx agent");
  sync->add_flag("--json", so.json, "print the results as one JSON object");
  sync->add_option("--services", so.services, "comma-separated Service counts")->delimiter(',')
      ->check(CLI::Range(1u, 60000u))->capture_default_str();
  sync->add_option("--changes", so.changes, "single-slice changes per size (in process)")->capture_default_str();
  sync->add_option("--e2e-changes", so.e2e_changes, "single-slice changes per size (end to end)")->capture_default_str();
  sync->add_flag("!--no-e2e", so.e2e, "skip the end-to-end part (API server and agent processes)");
  sync->add_option("--batch-rounds", so.batch_rounds,
                   "interleaved rounds of map writes batched vs one by one (0: skip)")->capture_default_str();

  kpx::bench::LabBenchOptions lo;
  auto* lab = app.add_subcommand("lab", "time of kpx lab up and down with the defaults (needs root and bpffs)");
  lab->add_flag("--json", lo.json, "print the results as one JSON object");
  lab->add_option("--rounds", lo.rounds, "up/down rounds; figures are medians")
      ->check(CLI::Range(1u, 100u))->capture_default_str();

  kpx::bench::SocketLbOptions sl;
  auto* socket_lb = app.add_subcommand(
      "socket-lb",
      "socket-level load balancing: ns per connect+close with and without the cgroup socket hooks (in a namespace "
      "and cgroup of its own), and CRRs in a lab of its own from the node (socket LB) and from a pod (per-packet "
      "path) (needs root, bpffs and cgroup v2)");
  socket_lb->add_flag("--json", sl.json, "print the results as one JSON object");
  socket_lb->add_option("--rounds", sl.rounds, "rounds, the cases interleaved in each; figures are medians")
      ->check(CLI::Range(1u, 100u))->capture_default_str();
  socket_lb->add_option("--connects", sl.connects, "connects per connect case and round (each case stops after 10 s)")
      ->check(CLI::Range(1u, 10000000u))->capture_default_str();
  socket_lb->add_option("--crrs", sl.crrs, "CRRs per CRR case and round (each run stops after 60 s)")
      ->check(CLI::Range(1u, 1000000u))->capture_default_str();
  socket_lb->add_flag("!--no-crr", sl.crr, "skip the CRR part (the lab)");

  // Run by socket-lb inside the lab (kpx lab exec); not for users.
  kpx::bench::CrrClientOptions cc;
  auto* crr_client = app.add_subcommand("crr-client", "");
  crr_client->group("");
  crr_client->add_option("--target", cc.targets, "ADDR:PORT of a lab echo server or Service (repeat: CRR by CRR in turn)")
      ->required();
  crr_client->add_option("--count", cc.count, "CRRs to each target")->check(CLI::Range(1u, 10000000u));
  crr_client->add_flag("--json", cc.json);
  crr_client->add_option("--timeout-ms", cc.timeout_ms, "per CRR")->check(CLI::Range(1u, 60000u));
  crr_client->add_option("--max-seconds", cc.max_seconds, "the whole run")->check(CLI::Range(1u, 3600u));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; a bad command line exits 2, like the kpx CLI.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (datapath->parsed()) {
    dp.pod = std::find(paths.begin(), paths.end(), "pod") != paths.end();
    dp.uplink = std::find(paths.begin(), paths.end(), "uplink") != paths.end();
    return kpx::bench::run_datapath(dp, std::cout, std::cerr);
  }
  if (sync->parsed()) return kpx::bench::run_sync(so, std::cout, std::cerr);
  if (lab->parsed()) return kpx::bench::run_lab(lo, std::cout, std::cerr);
  if (socket_lb->parsed()) return kpx::bench::run_socket_lb(sl, std::cout, std::cerr);
  if (crr_client->parsed()) return kpx::bench::run_crr_client(cc, std::cout, std::cerr);
  return 2;
}
