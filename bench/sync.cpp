#include "net/ports.h"
#include "sync.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <memory>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/sync_loop.h"
#include "bpf/pinned_maps.h"
#include "dataplane/dataplane.h"
#include "k8s/client.h"
#include "proxy/compute.h"
#include "proxy/model.h"

namespace kpx::bench {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// manifests/kpx.yaml: the agent container's resources.limits.memory (256Mi).
constexpr double kManifestMemoryLimitMib = 256;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Service i: 10.96.(i/256).(i%256):80/TCP "default/svc-i"; its slice holds
// two endpoints 10.(64 + i/65536).(i/256%256).(i%256) and the same in 10.128+.
std::string vip(uint32_t i) { return "10.96." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256); }
std::string pod_ip(uint32_t base, uint32_t i) {
  return "10." + std::to_string(base + i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
         std::to_string(i % 256);
}

json service_json(uint32_t i) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", "svc-" + std::to_string(i)}, {"namespace", "default"}}},
          {"spec",
           {{"type", "ClusterIP"},
            {"clusterIP", vip(i)},
            {"clusterIPs", {vip(i)}},
            {"ports", {{{"name", "http"}, {"port", 80}, {"protocol", "TCP"}, {"targetPort", 8080}}}}}}};
}

json slice_json(uint32_t i, const std::string& a, const std::string& b) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", "svc-" + std::to_string(i) + "-x"},
            {"namespace", "default"},
            {"labels", {{"kubernetes.io/service-name", "svc-" + std::to_string(i)}}}}},
          {"addressType", "IPv4"},
          {"endpoints",
           {{{"addresses", {a}}, {"conditions", {{"ready", true}}}},
            {{"addresses", {b}}, {"conditions", {{"ready", true}}}}}},
          {"ports", {{{"name", "http"}, {"port", 8080}, {"protocol", "TCP"}}}}};
}

struct PinDir {
  std::string path = "/sys/fs/bpf/kpx-bench-sync-" + std::to_string(getpid());
  ~PinDir() { (void)bpf::remove_pin_dir(path); }
};

// Fresh pinned maps and a Dataplane over them, unpinned when this goes.
struct FreshDataplane {
  PinDir pins;
  std::optional<bpf::PinnedMaps> maps;
  std::optional<dataplane::Dataplane> dp;

  static Result<std::unique_ptr<FreshDataplane>> create() {
    auto f = std::make_unique<FreshDataplane>();
    auto maps = bpf::PinnedMaps::open_or_create(f->pins.path);
    if (!maps) return maps.error();
    f->maps.emplace(std::move(*maps));
    auto dp = dataplane::Dataplane::recover(*f->maps);
    if (!dp) return dp.error();
    f->dp.emplace(std::move(*dp));
    return f;
  }
};

struct InProcess {
  double compute_ms = 0, apply_ms = 0, change_p50_ms = 0, change_p99_ms = 0;
};

// The agent's own sync path (SyncLoop: model -> compute -> dataplane), on
// real pinned maps, without the API in between.
Result<InProcess> in_process(uint32_t n, uint32_t changes) {
  auto fresh = FreshDataplane::create();
  if (!fresh) return fresh.error();
  auto& dp = (*fresh)->dp;
  agent::Metrics metrics;
  agent::SyncLoop sync(*dp, metrics, std::chrono::milliseconds(0), std::chrono::seconds(60));
  std::vector<k8s::Service> services;
  std::vector<k8s::EndpointSlice> slices;
  for (uint32_t i = 0; i < n; ++i) {
    auto s = k8s::decode_service(service_json(i));
    auto e = k8s::decode_endpoint_slice(slice_json(i, pod_ip(64, i), pod_ip(128, i)));
    if (!s || !e) return invalid_argument("bench objects do not decode");
    services.push_back(std::move(*s));
    slices.push_back(std::move(*e));
  }
  proxy::Model model;  // a copy, for compute() alone
  sync.update(agent::Source::kServices, [&](proxy::Model& m) {
    for (const auto& s : services) {
      m.upsert_service(s);
      model.upsert_service(s);
    }
  });
  sync.update(agent::Source::kEndpointSlices, [&](proxy::Model& m) {
    for (const auto& e : slices) {
      m.upsert_endpoint_slice(e);
      model.upsert_endpoint_slice(e);
    }
  });
  sync.mark_listed(agent::Source::kServices);
  sync.mark_listed(agent::Source::kEndpointSlices);

  InProcess r;
  auto t = Clock::now();
  auto desired = proxy::compute(model, {});
  r.compute_ms = ms_since(t);
  if (desired.frontends.size() != n) return system_error("bench: compute() did not give every Service");
  t = Clock::now();
  if (auto st = sync.sync_once(); !st) return st.error();
  r.apply_ms = ms_since(t) - r.compute_ms;  // sync_once computes too
  if (dp->frontends().size() != n) return system_error("bench: not every Service was programmed");

  std::vector<double> lat;
  for (uint32_t c = 0; c < changes; ++c) {
    uint32_t i = (c * 7919u) % n;
    auto e = k8s::decode_endpoint_slice(slice_json(i, pod_ip(64, i), pod_ip(192, c)));
    const auto want = *net::parse_ipv4(pod_ip(192, c));
    t = Clock::now();
    sync.update(agent::Source::kEndpointSlices, [&](proxy::Model& m) { m.upsert_endpoint_slice(std::move(*e)); });
    if (auto st = sync.sync_once(); !st) return st.error();
    lat.push_back(ms_since(t));
    auto it = dp->frontends().find(dataplane::cluster_ip_key({*net::parse_ipv4(vip(i)), 80, net::Proto::kTcp}));
    if (it == dp->frontends().end() ||
        std::none_of(it->second.backends.begin(), it->second.backends.end(),
                     [&](const net::BackendAddr& b) { return b.addr_be == want; }))
      return system_error("bench: a change was not programmed");
  }
  r.change_p50_ms = percentile(lat, 0.5);
  r.change_p99_ms = percentile(lat, 0.99);
  return r;
}

// Map writes batched or one by one, on fresh maps, for the cases the agent
// meets: the initial programming of every Service, a large diff (a tenth of
// the Services get new backends, another tenth go), and one Service's change.
struct WriteTimes {
  double initial_ms = 0, diff_ms = 0, one_ms = 0;
};

Result<WriteTimes> write_round(uint32_t n, bool batching) {
  auto fresh = FreshDataplane::create();
  if (!fresh) return fresh.error();
  auto& dp = (*fresh)->dp;
  // Batched: every write kind in one syscall, however few; else one each.
  dp->set_batch_min(batching ? 1 : SIZE_MAX);
  auto be = [](uint32_t base, uint32_t i) { return net::BackendAddr{*net::parse_ipv4(pod_ip(base, i)), 8080}; };
  auto addr = [](uint32_t i) { return net::ServiceAddr{*net::parse_ipv4(vip(i)), 80, net::Proto::kTcp}; };
  dataplane::ServiceTable table;
  for (uint32_t i = 0; i < n; ++i) table[addr(i)] = {be(64, i), be(128, i)};
  dataplane::FrontendTable frontends = dataplane::frontends_of(table);
  WriteTimes r;
  auto t = Clock::now();
  auto st = dp->apply(std::move(frontends));  // as the sync loop does: no copy timed
  r.initial_ms = ms_since(t);
  if (!st || st->added != n) return system_error("bench: the initial programming failed");
  dataplane::ServiceDelta delta;
  for (uint32_t i = 0; i < n / 10; ++i) delta[addr(i * 10)] = std::vector{be(64, i * 10), be(192, i * 10)};
  for (uint32_t i = 0; i < n / 10; ++i) delta[addr(i * 10 + 5)] = std::nullopt;
  dataplane::FrontendDelta fdelta = dataplane::frontends_of(delta);
  t = Clock::now();
  st = dp->apply_delta(std::move(fdelta));
  r.diff_ms = ms_since(t);
  if (!st || st->updated != n / 10 || st->removed != n / 10) return system_error("bench: the diff failed");
  const dataplane::FrontendDelta one =
      dataplane::frontends_of(dataplane::ServiceDelta{{addr(1), std::vector{be(192, 1), be(192, 2), be(192, 3)}}});
  t = Clock::now();
  st = dp->apply_delta(one);
  r.one_ms = ms_since(t);
  if (!st || st->updated != 1) return system_error("bench: the single change failed");
  return r;
}

struct WriteAB {
  WriteTimes batched, single;
};

// Rounds alternate which goes first; medians per case.
Result<WriteAB> write_ab(uint32_t n, uint32_t rounds) {
  std::vector<WriteTimes> b, s;
  for (uint32_t round = 0; round < rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      bool batching = (round + k) % 2 == 0;
      auto r = write_round(n, batching);
      if (!r) return r.error();
      (batching ? b : s).push_back(*r);
    }
  }
  auto median = [](const std::vector<WriteTimes>& v, double WriteTimes::*f) {
    std::vector<double> x;
    for (const auto& w : v) x.push_back(w.*f);
    return percentile(x, 0.5);
  };
  WriteAB out;
  for (auto f : {&WriteTimes::initial_ms, &WriteTimes::diff_ms, &WriteTimes::one_ms}) {
    out.batched.*f = median(b, f);
    out.single.*f = median(s, f);
  }
  return out;
}

// A child process, ended by pid (SIGTERM, then SIGKILL) when this goes.
struct Child {
  pid_t pid = -1;
  explicit Child(const std::vector<std::string>& argv, bool quiet) {
    pid = fork();
    if (pid == 0) {
      if (quiet) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) return;
      usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  // VmRSS (now) or VmHWM (peak) of the process, MiB.
  double memory_mib(const char* field) const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind(field, 0) == 0) return std::stod(line.substr(std::strlen(field))) / 1024.0;
    return 0;
  }
};

// Does the maps' entry for VIP i hold a backend with this address?
bool programmed(const bpf::PinnedMaps& maps, uint32_t i, uint32_t want_be) {
  auto svc = maps.services.lookup(dataplane::service_key({*net::parse_ipv4(vip(i)), 80, net::Proto::kTcp}));
  if (!svc) return false;
  for (uint32_t s = 0; s < svc->backend_count; ++s) {
    auto id = maps.service_slots.lookup(svc->slot_base + s);
    if (!id) continue;
    auto be = maps.backends.lookup(*id);
    if (be && be->addr == want_be) return true;
  }
  return false;
}

struct EndToEnd {
  double create_s = 0, program_ms = 0, change_p50_ms = 0, change_p99_ms = 0, rss_mib = 0, peak_rss_mib = 0;
  double relist_ms = 0, relist_peak_rss_mib = 0;  // a full relist after a watch 410
};

// kpx apiserver -> kpx agent (its default flags) -> maps, all real processes.
Result<EndToEnd> end_to_end(uint32_t n, uint32_t changes, std::ostream& err) {
  EndToEnd r;
  const uint16_t api_port = net::free_loopback_port(), metrics_port = net::free_loopback_port(), healthz_port = net::free_loopback_port();
  const std::string url = "http://127.0.0.1:" + std::to_string(api_port);
  Child api({KPX_BINARY, "apiserver", "--listen", "127.0.0.1:" + std::to_string(api_port), "--compaction-window",
             "1000000"},
            true);
  k8s::ClientConfig cfg;
  cfg.server = url;
  auto client = k8s::Client::create(cfg);
  if (!client) return client.error();
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!(*client)->version().ok())
    if (Clock::now() > deadline) return system_error("kpx apiserver did not start");
  (void)(*client)->send("POST", "/api/v1/namespaces", {{"metadata", {{"name", "default"}}}});

  // Create the objects from 4 connections at once.
  auto t = Clock::now();
  std::vector<std::thread> writers;
  std::atomic<bool> failed{false};
  for (uint32_t w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      auto c = k8s::Client::create(cfg);
      if (!c) return void(failed = true);
      for (uint32_t i = w; i < n; i += 4) {
        if (!(*c)->send("POST", "/api/v1/namespaces/default/services", service_json(i)).ok() ||
            !(*c)->send("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                        slice_json(i, pod_ip(64, i), pod_ip(128, i)))
                 .ok())
          return void(failed = true);
      }
    });
  }
  for (auto& w : writers) w.join();
  if (failed) return system_error("creating the objects failed");
  r.create_s = ms_since(t) / 1000;
  err << "  created " << n << " Services and EndpointSlices in " << r.create_s << " s\n";

  PinDir pins;
  t = Clock::now();
  Child agent({KPX_BINARY, "agent", "--master", url, "--pin-dir", pins.path, "--hostname-override", "bench-node",
               "--healthz-bind-address", "127.0.0.1:" + std::to_string(healthz_port), "--metrics-bind-address",
               "127.0.0.1:" + std::to_string(metrics_port)},
              true);
  // Done when the last Service's entry is there and every one is counted.
  deadline = Clock::now() + std::chrono::seconds(120);
  std::optional<bpf::PinnedMaps> maps;
  for (;;) {
    if (Clock::now() > deadline) return system_error("the agent did not program every Service in 120 s");
    if (!maps) {
      auto m = bpf::PinnedMaps::open(pins.path);
      if (m) maps.emplace(std::move(*m));
    }
    if (maps && programmed(*maps, n - 1, *net::parse_ipv4(pod_ip(64, n - 1))) && programmed(*maps, 0, *net::parse_ipv4(pod_ip(64, 0))) &&
        maps->services.keys().size() == n)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.program_ms = ms_since(t);

  // One EndpointSlice change at a time, from the API write to the map write.
  std::vector<double> lat;
  for (uint32_t c = 0; c < changes; ++c) {
    uint32_t i = (c * 7919u) % n;
    const uint32_t want = *net::parse_ipv4(pod_ip(192, c));
    // Spaced beyond the agent's min sync period, so each change syncs alone.
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    t = Clock::now();
    auto put = (*client)->send("PUT", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/svc-" +
                                          std::to_string(i) + "-x",
                               slice_json(i, pod_ip(64, i), pod_ip(192, c)));
    if (!put) return system_error("PUT failed: " + put.error().to_string());
    deadline = Clock::now() + std::chrono::seconds(5);
    // Poll with a short sleep: a spinning poller would take one of the two
    // cores from the API server and agent it is measuring.
    while (!programmed(*maps, i, want)) {
      if (Clock::now() > deadline) return system_error("a change was not programmed within 5 s");
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    lat.push_back(ms_since(t));
  }
  r.change_p50_ms = percentile(lat, 0.5);
  r.change_p99_ms = percentile(lat, 0.99);
  // Steady state (every Service programmed, changes flowing) and the peak,
  // which the initial list's JSON pages set.
  r.rss_mib = agent.memory_mib("VmRSS:");
  r.peak_rss_mib = agent.memory_mib("VmHWM:");

  // A full relist, as after a watch's 410: the peak is reset (clear_refs 5),
  // every watch gets ERROR 410, and the agent lists everything again at its
  // last version, paged (kpx departs from client-go's unpaged relist there,
  // see k8s/reflector.cpp), each page under the client's rate limit.
  {
    std::ofstream(std::string("/proc/") + std::to_string(agent.pid) + "/clear_refs") << "5";
    auto lists_so_far = [&]() -> size_t {
      auto reqs = (*client)->get("/kpx/faults/requests");
      size_t n_lists = 0;
      if (reqs)
        for (const auto& q : (*reqs)["requests"])
          if (q.value("path", "") == "/apis/discovery.k8s.io/v1/endpointslices" &&
              q["query"].value("watch", std::string()) != "1")
            ++n_lists;
      return n_lists;
    };
    const size_t before = lists_so_far();
    const int watches = (*client)->get("/kpx/faults")->value("openWatches", 0);
    t = Clock::now();
    if (!(*client)->send("POST", "/kpx/faults/compact?expireWatches=true", nullptr))
      return system_error("compacting the API server's history failed");
    deadline = Clock::now() + std::chrono::seconds(120);
    // Done when the slices were listed again and every watch is open again
    // (a reflector watches once its list is handed over).
    for (;;) {
      if (Clock::now() > deadline) return system_error("the agent did not relist within 120 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (lists_so_far() > before && (*client)->get("/kpx/faults")->value("openWatches", 0) >= watches) break;
    }
    r.relist_ms = ms_since(t);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the sync after the relist
    r.relist_peak_rss_mib = agent.memory_mib("VmHWM:");
  }
  return r;
}

}  // namespace

int run_sync(const SyncOptions& opts, std::ostream& out, std::ostream& err) {
  json result = {{"services", json::object()}};
  out << "kpx-bench sync: Services with 2 endpoints each\n";
  out << std::left << std::setw(10) << "services" << std::setw(14) << "compute ms" << std::setw(12) << "apply ms"
      << std::setw(16) << "change p50 ms" << "change p99 ms\n";
  for (uint32_t n : opts.services) {
    err << "in process: " << n << " Services...\n";
    auto r = in_process(n, opts.changes);
    if (!r) {
      err << "kpx-bench sync: " << r.error().message << "\n";
      return 1;
    }
    out << std::setw(10) << n << std::setw(14) << std::fixed << std::setprecision(1) << r->compute_ms
        << std::setw(12) << r->apply_ms << std::setw(16) << std::setprecision(2) << r->change_p50_ms
        << r->change_p99_ms << "\n";
    result["services"][std::to_string(n)] = {{"compute_ms", r->compute_ms},
                                             {"apply_ms", r->apply_ms},
                                             {"compute_apply_ms", r->compute_ms + r->apply_ms},
                                             {"change_p50_ms", r->change_p50_ms},
                                             {"change_p99_ms", r->change_p99_ms}};
  }
  if (opts.batch_rounds > 0) {
    out << "\nmap writes, batched vs one syscall each (ms, median of " << opts.batch_rounds
        << " interleaved rounds; diff: a tenth of the Services changed and a tenth removed)\n";
    out << std::left << std::setw(10) << "services" << std::setw(22) << "initial batch/single" << std::setw(22)
        << "diff batch/single" << "one change batch/single\n";
    for (uint32_t n : opts.services) {
      err << "map writes: " << n << " Services...\n";
      auto r = write_ab(n, opts.batch_rounds);
      if (!r) {
        err << "kpx-bench sync: " << r.error().message << "\n";
        return 1;
      }
      auto pair = [](double a, double b) {
        std::ostringstream o;
        o << std::fixed << std::setprecision(a < 1 ? 3 : 1) << a << " / " << b;
        return o.str();
      };
      out << std::setw(10) << n << std::setw(22) << pair(r->batched.initial_ms, r->single.initial_ms)
          << std::setw(22) << pair(r->batched.diff_ms, r->single.diff_ms)
          << pair(r->batched.one_ms, r->single.one_ms) << "\n";
      result["services"][std::to_string(n)]["map_writes"] = {
          {"initial_batched_ms", r->batched.initial_ms}, {"initial_single_ms", r->single.initial_ms},
          {"diff_batched_ms", r->batched.diff_ms},       {"diff_single_ms", r->single.diff_ms},
          {"one_batched_ms", r->batched.one_ms},         {"one_single_ms", r->single.one_ms}};
    }
  }
  if (opts.e2e) {
    out << "\nend to end: kpx apiserver -> kpx agent (default flags) -> maps\n";
    out << std::left << std::setw(10) << "services" << std::setw(16) << "programmed ms" << std::setw(16)
        << "change p50 ms" << std::setw(16) << "change p99 ms" << std::setw(16) << "agent RSS MiB"
        << std::setw(16) << "peak RSS MiB" << std::setw(14) << "relist ms"
        << "relist peak RSS MiB (limit " << static_cast<int>(kManifestMemoryLimitMib) << ")\n";
    for (uint32_t n : opts.services) {
      err << "end to end: " << n << " Services...\n";
      auto r = end_to_end(n, opts.e2e_changes, err);
      if (!r) {
        err << "kpx-bench sync: " << r.error().message << "\n";
        return 1;
      }
      out << std::setw(10) << n << std::setw(16) << std::fixed << std::setprecision(0) << r->program_ms
          << std::setw(16) << std::setprecision(2) << r->change_p50_ms << std::setw(16) << r->change_p99_ms
          << std::setprecision(1) << std::setw(16) << r->rss_mib << std::setw(16) << r->peak_rss_mib
          << std::setw(14) << std::setprecision(0) << r->relist_ms << std::setprecision(1)
          << r->relist_peak_rss_mib << " (" << std::setprecision(0)
          << 100 * r->relist_peak_rss_mib / kManifestMemoryLimitMib << "% of the limit)\n";
      result["services"][std::to_string(n)]["e2e"] = {{"programmed_ms", r->program_ms},
                                                      {"change_p50_ms", r->change_p50_ms},
                                                      {"change_p99_ms", r->change_p99_ms},
                                                      {"agent_rss_mib", r->rss_mib},
                                                      {"agent_peak_rss_mib", r->peak_rss_mib},
                                                      {"relist_ms", r->relist_ms},
                                                      {"relist_peak_rss_mib", r->relist_peak_rss_mib},
                                                      {"relist_peak_rss_of_limit",
                                                       r->relist_peak_rss_mib / kManifestMemoryLimitMib},
                                                      {"objects_created_s", r->create_s}};
    }
  }
  // Each target against its figure, when that size was run.
  out << "\ntargets:\n";
  auto target = [&](const char* what, const char* n, const char* key, const char* sub, double limit,
                    const char* unit) {
    out << "  " << what << " <= " << static_cast<int>(limit) << " " << unit << ": ";
    const json& r = result["services"];
    if (!r.contains(n) || (sub && !r[n].contains(sub))) {
      out << "not measured in this run\n";
      return;
    }
    double v = sub ? r[n][sub][key].get<double>() : r[n][key].get<double>();
    bool met = v <= limit;
    out << std::setprecision(v < 1 ? 2 : 1) << v << " " << unit << ", " << (met ? "MET" : "NOT MET") << "\n";
    result["targets"][std::string(what)] = {{"value", v}, {"limit", limit}, {"met", met}};
  };
  target("10000 Services compute+apply", "10000", "compute_apply_ms", nullptr, 200, "ms");
  target("one change p99 at 50000 (in process)", "50000", "change_p99_ms", nullptr, 5, "ms");
  target("one change p99 at 50000 (end to end)", "50000", "change_p99_ms", "e2e", 5, "ms");
  target("agent RSS at 50000", "50000", "agent_rss_mib", "e2e", 150, "MiB");
  target("agent peak RSS at 50000", "50000", "agent_peak_rss_mib", "e2e", 150, "MiB");
  target("relist peak RSS at 50000 (manifest limit)", "50000", "relist_peak_rss_mib", "e2e",
         kManifestMemoryLimitMib, "MiB");
  if (opts.json) out << result.dump(2) << "\n";
  return 0;
}

}  // namespace kpx::bench
