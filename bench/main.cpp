// kpx-bench: micro-benchmarks of the kpx datapath.
//   kpx-bench datapath [--json] [--services LIST] [--repeats N] [--paths pod,uplink] [--uplink-frames N]
//   kpx-bench sync [--json] ...
//   kpx-bench lab [--json] [--rounds N]
//   kpx-bench socket-lb [--json] [--rounds N] [--connects N] [--crrs N] [--no-crr]
// Hidden, run inside network namespaces by the benches (not for users):
//   kpx-bench crr-client --target ADDR:PORT ...
//   kpx-bench loadgen crr|rr|stream --target ADDR:PORT ...   (bench/loadgen.h)
//   kpx-bench loadserver [--port P] ...                      (bench/loadserver.h)
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

#include "crr.h"
#include "datapath.h"
#include "lab_up.h"
#include "loadgen.h"
#include "loadserver.h"
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

  // Run by kpx-bench compare inside the lab (kpx lab exec); not for users.
  auto* loadgen = app.add_subcommand("loadgen", "load against one target, one JSON document on stdout");
  loadgen->group("");
  loadgen->require_subcommand(1);
  // ADDR:PORT, checked as parsed (a clear error, exit 2).
  const auto backend = [](kpx::net::BackendAddr& to) {
    return [&to](const std::string& s) -> std::string {
      auto b = kpx::net::parse_backend(s);
      if (!b) return b.error().message;
      to = *b;
      return "";
    };
  };
  std::string target_text;
  kpx::bench::CrrLoadOptions crr_o;
  auto* lg_crr = loadgen->add_subcommand(
      "crr", "connect, request, response, close (RST): at the maximum rate with --concurrency connections in "
             "flight, or at --rate a second (open loop)");
  lg_crr->add_option("--target", target_text, "ADDR:PORT: a ClusterIP or a pod IP, and port")->required()->check(CLI::Validator(backend(crr_o.target), "ADDR:PORT"));
  // Every latency is kept (8 bytes a sample, three a CRR): the bounds keep a run's memory in hundreds of MiB.
  lg_crr->add_option("--count", crr_o.count, "CRRs")->check(CLI::Range(uint64_t{1}, uint64_t{10000000}))
      ->capture_default_str();
  auto* rate = lg_crr->add_option("--rate", crr_o.rate, "CRRs a second, open loop (default: the maximum rate)")
                   ->check(CLI::Range(uint64_t{1}, uint64_t{10000000}));
  lg_crr->add_option("--concurrency", crr_o.concurrency, "maximum rate: connections in flight")
      ->check(CLI::Range(1u, 20000u))->capture_default_str()->excludes(rate);
  lg_crr->add_option("--max-inflight", crr_o.max_inflight,
                     "open loop: connections in flight at most (a start due beyond waits, and its latency counts the "
                     "wait)")
      ->check(CLI::Range(1u, 20000u))->capture_default_str()->needs(rate);
  lg_crr->add_option("--duration-s", crr_o.duration_s, "the run stops after this long, done or not")
      ->check(CLI::Range(1u, 3600u))->capture_default_str();
  lg_crr->add_option("--timeout-ms", crr_o.timeout_ms, "per CRR, from connect() to the whole response")
      ->check(CLI::Range(1u, 60000u))->capture_default_str();
  lg_crr->add_option("--request-size", crr_o.request_size,
                     "request bytes ('x's and a '\\n'); 0: send nothing (the lab's echo server answers on accept)")
      ->check(CLI::Range(0u, 65536u))->capture_default_str();

  kpx::bench::RrLoadOptions rr_o;
  auto* lg_rr = loadgen->add_subcommand("rr", "request/response on connections kept open, each closed-loop");
  lg_rr->add_option("--target", target_text, "ADDR:PORT: a ClusterIP or a pod IP, and port")->required()->check(CLI::Validator(backend(rr_o.target), "ADDR:PORT"));
  lg_rr->add_option("--connections", rr_o.connections, "connections kept open")
      ->check(CLI::Range(1u, 20000u))->capture_default_str();
  lg_rr->add_option("--duration-s", rr_o.duration_s, "the measured run")
      ->check(CLI::Range(1u, 300u))->capture_default_str();
  lg_rr->add_option("--count", rr_o.count, "stop after this many transactions too (0: the duration alone)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{100000000}))->capture_default_str();
  lg_rr->add_option("--timeout-ms", rr_o.timeout_ms, "per connect and per transaction")
      ->check(CLI::Range(1u, 60000u))->capture_default_str();
  lg_rr->add_option("--request-size", rr_o.request_size, "request bytes ('x's and a '\\n')")
      ->check(CLI::Range(1u, 65536u))->capture_default_str();

  kpx::bench::StreamLoadOptions st_o;
  std::string direction = "send";
  auto* lg_stream = loadgen->add_subcommand("stream", "one connection's throughput (needs kpx-bench loadserver)");
  lg_stream->add_option("--target", target_text, "ADDR:PORT: a ClusterIP or a pod IP, and port")->required()->check(CLI::Validator(backend(st_o.target), "ADDR:PORT"));
  lg_stream->add_option("--direction", direction, "send: the client sends, the server discards; receive: the reverse")
      ->check(CLI::IsMember({"send", "receive"}))->capture_default_str();
  lg_stream->add_option("--duration-s", st_o.duration_s, "the measured run")
      ->check(CLI::Range(1u, 3600u))->capture_default_str();
  lg_stream->add_option("--max-bytes", st_o.max_bytes, "stop after this many bytes too (0: the duration alone)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 50))->capture_default_str();
  lg_stream->add_option("--chunk-size", st_o.chunk_size, "bytes a write() or read()")
      ->check(CLI::Range(1024u, 16u << 20))->capture_default_str();
  lg_stream->add_option("--timeout-ms", st_o.timeout_ms, "the connect")
      ->check(CLI::Range(1u, 60000u))->capture_default_str();

  kpx::bench::LoadServerOptions ls;
  std::string ls_addr = "0.0.0.0";
  auto* loadserver = app.add_subcommand("loadserver", "the server of kpx-bench loadgen");
  loadserver->group("");
  loadserver->add_option("--name", ls.name, "NAME in responses (default: $HOSTNAME, the pod's name in the lab)");
  loadserver->add_option("--addr", ls_addr, "listen address")
      ->check(CLI::Validator(
          [&ls](const std::string& s) -> std::string {
            auto a = kpx::net::parse_ipv4(s);
            if (!a) return a.error().message;
            ls.addr_be = *a;
            return "";
          },
          "IPV4"))
      ->capture_default_str();
  loadserver->add_option("--port", ls.port, "TCP port")->check(CLI::Range(1, 65535))->capture_default_str();
  loadserver->add_option("--response-size", ls.response_size, "bytes of each response, its '\\n' included")
      ->check(CLI::Range(1u, 1u << 20))->capture_default_str();
  loadserver->add_option("--exit-after-s", ls.exit_after_s, "stop by itself after this long (0: at SIGTERM/SIGINT)")
      ->check(CLI::Range(0u, 86400u))->capture_default_str();

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
  if (lg_crr->parsed()) return kpx::bench::print_load(kpx::bench::crr_load(crr_o), std::cout, std::cerr);
  if (lg_rr->parsed()) return kpx::bench::print_load(kpx::bench::rr_load(rr_o), std::cout, std::cerr);
  if (lg_stream->parsed()) {
    st_o.receive = direction == "receive";
    return kpx::bench::print_load(kpx::bench::stream_load(st_o), std::cout, std::cerr);
  }
  if (loadserver->parsed()) return kpx::bench::run_loadserver(ls, std::cout, std::cerr);
  return 2;
}
