#include "sync.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
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

struct InProcess {
  double compute_ms = 0, apply_ms = 0, change_p50_ms = 0, change_p99_ms = 0;
};

// The agent's own sync path (SyncLoop: model -> compute -> dataplane), on
// real pinned maps, without the API in between.
Result<InProcess> in_process(uint32_t n, uint32_t changes) {
  PinDir pins;
  auto maps = bpf::PinnedMaps::open_or_create(pins.path);
  if (!maps) return maps.error();
  auto dp = dataplane::Dataplane::recover(*maps);
  if (!dp) return dp.error();
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
  if (desired.services.size() != n) return system_error("bench: compute() did not give every Service");
  t = Clock::now();
  if (auto st = sync.sync_once(); !st) return st.error();
  r.apply_ms = ms_since(t) - r.compute_ms;  // sync_once computes too
  if (dp->services().size() != n) return system_error("bench: not every Service was programmed");

  std::vector<double> lat;
  for (uint32_t c = 0; c < changes; ++c) {
    uint32_t i = (c * 7919u) % n;
    auto e = k8s::decode_endpoint_slice(slice_json(i, pod_ip(64, i), pod_ip(192, c)));
    const auto want = *net::parse_ipv4(pod_ip(192, c));
    t = Clock::now();
    sync.update(agent::Source::kEndpointSlices, [&](proxy::Model& m) { m.upsert_endpoint_slice(std::move(*e)); });
    if (auto st = sync.sync_once(); !st) return st.error();
    lat.push_back(ms_since(t));
    auto it = dp->services().find(net::ServiceAddr{*net::parse_ipv4(vip(i)), 80, net::Proto::kTcp});
    if (it == dp->services().end() ||
        std::none_of(it->second.backends.begin(), it->second.backends.end(),
                     [&](const net::BackendAddr& b) { return b.addr_be == want; }))
      return system_error("bench: a change was not programmed");
  }
  r.change_p50_ms = percentile(lat, 0.5);
  r.change_p99_ms = percentile(lat, 0.99);
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
  if (opts.json) out << result.dump(2) << "\n";
  return 0;
}

}  // namespace kpx::bench
