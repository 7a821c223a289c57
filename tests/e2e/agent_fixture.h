// The AgentTest fixture: `kpx agent` against its own `kpx apiserver`, and
// the helpers its tests share (objects, what the maps hold, HTTP, metrics).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cpprest/http_client.h>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "lab/cgroup.h"
#include "net/ports.h"
#include "bpf/pinned_maps.h"
#include "dataplane/service_writer.h"
#include "k8s/client.h"
#include "support/scoped.h"

namespace kpx::e2e {

using json = nlohmann::json;
using namespace std::chrono_literals;

inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

inline json service(const std::string& name, const std::string& ip, int port = 80) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"type", "ClusterIP"},
            {"clusterIP", ip},
            {"clusterIPs", {ip}},
            {"ports", {{{"name", "http"}, {"port", port}, {"protocol", "TCP"}, {"targetPort", 8080}}}}}}};
}

inline json slice(const std::string& name, const std::string& svc, const std::vector<std::string>& addrs) {
  json eps = json::array();
  for (const auto& a : addrs) eps.push_back({{"addresses", {a}}, {"conditions", {{"ready", true}}}});
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", "IPv4"},
          {"endpoints", eps},
          {"ports", {{{"name", "http"}, {"port", 8080}, {"protocol", "TCP"}}}}};
}

// What the maps hold: "VIP:PORT/PROTO" -> "slot_base|backend,backend" (a
// rewrite of a Service moves it to a new slot range).
inline std::map<std::string, std::string> snapshot(const std::string& pin_dir) {
  std::map<std::string, std::string> out;
  auto maps = bpf::PinnedMaps::open(pin_dir);
  if (!maps) return out;
  dataplane::ServiceWriter w(*maps);
  for (const auto& e : w.list()) {
    std::string v = std::to_string(e.slot_base) + "|";
    for (const auto& b : e.backends) v += net::format(b) + ",";
    out[net::format(e.svc)] = v;
  }
  return out;
}

inline std::string backends_of(const std::map<std::string, std::string>& snap, const std::string& svc) {
  auto it = snap.find(svc);
  if (it == snap.end()) return "<none>";
  return it->second.substr(it->second.find('|') + 1);
}

inline int http_get(uint16_t port, const std::string& path, std::string* body = nullptr) {
  try {
    web::http::client::http_client c("http://127.0.0.1:" + std::to_string(port));
    auto r = c.request(web::http::methods::GET, path).get();
    if (body) *body = r.extract_utf8string(true).get();
    return r.status_code();
  } catch (...) {
    return 0;
  }
}

// One sample's value in the /metrics text ("" labels: the bare name), or -1.
inline double metric(uint16_t metrics_port, const std::string& series) {
  std::string text;
  if (http_get(metrics_port, "/metrics", &text) != 200) return -1;
  auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

// The agent reported a successful sync (its /healthz is 200 from the start).
inline bool synced(uint16_t metrics_port) {
  return metric(metrics_port, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}") > 0;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "agent tests need root (BPF maps)";
    api_port = net::free_loopback_port();
    api = "http://127.0.0.1:" + std::to_string(api_port);
    procs.spawn({KPX_BINARY, "apiserver", "--listen", "127.0.0.1:" + std::to_string(api_port),
                 "--bookmark-interval-ms", "500"});
    k8s::ClientConfig cfg;
    cfg.server = api;
    auto c = k8s::Client::create(cfg);
    ASSERT_TRUE(c.ok());
    client = std::move(*c);
    ASSERT_TRUE(wait_for([&] { return client->version().ok(); }, 5s)) << "kpx apiserver did not come up";
    (void)client->send("POST", "/api/v1/namespaces", {{"metadata", {{"name", "default"}}}});
  }

  int start_agent(const std::vector<std::string>& extra = {}) { return start_agent_at(api, extra); }
  // `extra` may name its own --healthz-bind-address (healthz_port is then 0).
  int start_agent_at(const std::string& master, const std::vector<std::string>& extra = {}) {
    const bool own_healthz = std::find(extra.begin(), extra.end(), "--healthz-bind-address") != extra.end();
    healthz_port = own_healthz ? 0 : net::free_loopback_port();
    metrics_port = net::free_loopback_port();
    std::vector<std::string> args = {KPX_BINARY, "agent", "--master", master, "--pin-dir", pins.path(),
                                     "--hostname-override", "node-1", "--min-sync-period", "10ms",
                                     "--metrics-bind-address", "127.0.0.1:" + std::to_string(metrics_port)};
    if (!own_healthz) {
      args.push_back("--healthz-bind-address");
      args.push_back("127.0.0.1:" + std::to_string(healthz_port));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return agents.spawn(args);
  }
  json config_show() {
    std::string out = testing::sh_out(std::string(KPX_BINARY) + " --pin-dir " + pins.path() + " config show -o json");
    json j = json::parse(out, nullptr, false);
    return j.is_object() ? j : json::object();  // {} before the agent made the maps
  }
  void stop_agent(int pid) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "agent exit status " << status;
  }

  void create(const std::string& path, const json& obj) {
    auto r = client->send("POST", path, obj);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
  }
  void put(const std::string& path, json obj) {
    auto cur = client->get(path);
    ASSERT_TRUE(cur.ok()) << cur.error().to_string();
    obj["metadata"]["resourceVersion"] = (*cur)["metadata"]["resourceVersion"];
    auto r = client->send("PUT", path, obj);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
  }
  void fault(const std::string& what) {
    auto r = client->send("POST", "/kpx/faults/" + what, nullptr);
    ASSERT_TRUE(r.ok()) << what << ": " << r.error().to_string();
  }

  static constexpr const char* kSvcPath = "/api/v1/namespaces/default/services";
  static constexpr const char* kSlicePath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

  testing::ScopedPinDir pins;
  testing::ScopedProcesses procs;
  uint16_t api_port = 0, healthz_port = 0, metrics_port = 0;
  std::string api;
  std::unique_ptr<k8s::Client> client;
  testing::ScopedProcesses agents;  // destroyed before procs: agents stop before the API server
};

}  // namespace kpx::e2e
