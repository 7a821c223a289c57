#include "agent/agent.h"

#include <signal.h>

#include <set>
#include <thread>

#include "agent/http_endpoints.h"
#include "agent/interfaces.h"
#include "agent/sync_loop.h"
#include "bpf/object.h"
#include "bpf/tc.h"
#include "dataplane/counters.h"
#include "k8s/config.h"
#include "k8s/reflector.h"
#include "log/log.h"

namespace kpx::agent {

namespace {

constexpr auto kHealthTimeout = std::chrono::seconds(60);

// The set of namespace/name keys a reflector last delivered, so that a
// relist (on_replace) removes what the API no longer has.
struct KnownKeys {
  std::set<std::string> keys;
};

std::optional<SyncLoop::Clock::time_point> trigger_time(const k8s::EndpointSlice& s) {
  (void)s;  // the trigger-time annotation is not decoded yet: use arrival time
  return std::nullopt;
}

void wire_services(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics, KnownKeys& known) {
  h.on_replace = [&](std::vector<nlohmann::json> items) {
    sync.update(Source::kServices, [&](proxy::Model& m) {
      std::set<std::string> now;
      for (const auto& item : items) {
        auto svc = k8s::decode_service(item);
        if (!svc) {
          metrics.rejected_objects++;
          log::warning("Service rejected: " + svc.error().message);
          continue;
        }
        now.insert(svc->metadata.key());
        if (auto r = m.upsert_service(std::move(*svc))) {
          metrics.rejected_objects++;
          log::warning(proxy::to_string(*r));
        }
      }
      for (const auto& k : known.keys)
        if (!now.count(k)) {
          auto slash = k.find('/');
          m.remove_service(k.substr(0, slash), k.substr(slash + 1));
        }
      known.keys = std::move(now);
    });
    sync.mark_listed(Source::kServices);
  };
  h.on_event = [&](k8s::EventType type, const nlohmann::json& obj) {
    auto svc = k8s::decode_service(obj);
    if (!svc) {
      metrics.rejected_objects++;
      log::warning("Service rejected: " + svc.error().message);
      return;
    }
    sync.update(Source::kServices, [&](proxy::Model& m) {
      const std::string key = svc->metadata.key();
      if (type == k8s::EventType::kDeleted) {
        m.remove_service(svc->metadata.namespace_, svc->metadata.name);
        known.keys.erase(key);
        return;
      }
      known.keys.insert(key);
      if (auto r = m.upsert_service(std::move(*svc))) {
        metrics.rejected_objects++;
        log::warning(proxy::to_string(*r));
      }
    });
  };
}

void wire_slices(k8s::ReflectorHandlers& h, SyncLoop& sync, Metrics& metrics, KnownKeys& known) {
  h.on_replace = [&](std::vector<nlohmann::json> items) {
    sync.update(Source::kEndpointSlices, [&](proxy::Model& m) {
      std::set<std::string> now;
      for (const auto& item : items) {
        auto s = k8s::decode_endpoint_slice(item);
        if (!s) {
          metrics.rejected_objects++;
          log::warning("EndpointSlice rejected: " + s.error().message);
          continue;
        }
        now.insert(s->metadata.key());
        if (auto r = m.upsert_endpoint_slice(std::move(*s))) {
          metrics.rejected_objects++;
          log::warning(proxy::to_string(*r));
        }
      }
      for (const auto& k : known.keys)
        if (!now.count(k)) {
          auto slash = k.find('/');
          m.remove_endpoint_slice(k.substr(0, slash), k.substr(slash + 1));
        }
      known.keys = std::move(now);
    });
    sync.mark_listed(Source::kEndpointSlices);
  };
  h.on_event = [&](k8s::EventType type, const nlohmann::json& obj) {
    auto s = k8s::decode_endpoint_slice(obj);
    if (!s) {
      metrics.rejected_objects++;
      log::warning("EndpointSlice rejected: " + s.error().message);
      return;
    }
    auto trigger = trigger_time(*s);
    sync.update(
        Source::kEndpointSlices,
        [&](proxy::Model& m) {
          const std::string key = s->metadata.key();
          if (type == k8s::EventType::kDeleted) {
            m.remove_endpoint_slice(s->metadata.namespace_, s->metadata.name);
            known.keys.erase(key);
            return;
          }
          known.keys.insert(key);
          if (auto r = m.upsert_endpoint_slice(std::move(*s))) {
            metrics.rejected_objects++;
            log::warning(proxy::to_string(*r));
          }
        },
        trigger);
  };
}

Status write_datapath_config(bpf::PinnedMaps& maps, const Options& o) {
  kpx_config c = maps.read_config();
  if (!o.hairpin_snat_ip.empty()) {
    auto ip = net::parse_ipv4(o.hairpin_snat_ip);
    if (!ip) return invalid_argument("--hairpin-snat-ip: " + ip.error().message);
    c.hairpin_snat_addr_v4 = *ip;
  }
  auto secs = [](std::chrono::seconds s) { return static_cast<uint32_t>(s.count()); };
  if (o.tcp_established_timeout.count() > 0) c.tcp_established_timeout_s = secs(o.tcp_established_timeout);
  if (o.tcp_close_wait_timeout.count() > 0) c.tcp_closing_timeout_s = secs(o.tcp_close_wait_timeout);
  if (o.udp_timeout.count() > 0) c.udp_timeout_s = secs(o.udp_timeout);
  return maps.config.update(0, c);
}

Status cleanup(const Options& o) {
  if (!o.pod_interfaces.empty()) {
    auto follower = InterfaceFollower::open(o.pod_interfaces, [](int ifindex, const std::string& name) {
      if (auto st = bpf::tc_detach(ifindex); !st) log::warning("detach " + name + ": " + st.error().message);
      else log::info("detached from " + name);
    });
    if (!follower) return follower.error();
    follower->scan();
  }
  KPX_TRY(bpf::remove_pin_dir(o.pin_dir));
  log::info("removed the datapath maps in " + o.pin_dir);
  return {};
}

}  // namespace

Status run_agent(const Options& o) {
  log::set_verbosity(o.verbosity);
  if (o.cleanup) return cleanup(o);

  auto healthz_addr = parse_bind_address(o.healthz_bind_address);
  if (!healthz_addr) return healthz_addr.error();
  auto metrics_addr = parse_bind_address(o.metrics_bind_address);
  if (!metrics_addr) return metrics_addr.error();
  // --master alone (no kubeconfig): an unauthenticated server, as kube-proxy
  // allows; with a kubeconfig it only replaces the server address.
  Result<k8s::ClientConfig> client_config = k8s::ClientConfig{};
  if (o.master.empty() || !o.kubeconfig.empty()) client_config = k8s::load_client_config(o.kubeconfig);
  if (!client_config) return client_config.error();
  if (!o.master.empty()) {
    client_config->server = o.master;
    if (client_config->source.empty()) client_config->source = "--master";
  }

  // Signals are taken by sigwait below, never by the worker threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Load the datapath first: its maps are created, or reused as pinned.
  auto object = bpf::LxcObject::load(o.pin_dir, /*load_programs=*/!o.pod_interfaces.empty());
  if (!object) return object.error();
  auto maps = bpf::PinnedMaps::open(o.pin_dir);
  if (!maps) return maps.error();
  KPX_TRY(write_datapath_config(*maps, o));
  auto dp = dataplane::Dataplane::recover(*maps);
  if (!dp) return dp.error();
  dp->remove_leftovers();
  log::info("recovered " + std::to_string(dp->services().size()) + " service addresses from " + o.pin_dir);

  auto client = k8s::Client::create(*client_config);
  if (!client) return client.error();
  if (auto v = (*client)->version(); v.ok())
    log::info("API server " + (*client)->server() + " version " + v->value("gitVersion", std::string("?")));
  else
    log::warning("API server " + (*client)->server() + " not answering yet: " + v.error().message);

  Metrics metrics;
  SyncLoop sync(*dp, metrics, o.min_sync_period, kHealthTimeout);
  bpf::PinnedMaps* maps_ptr = &*maps;
  auto endpoints = HttpEndpoints::start(*healthz_addr, *metrics_addr, sync, metrics, [maps_ptr] {
    auto c = dataplane::read_counters(*maps_ptr);
    return c ? *c : std::vector<std::pair<std::string, uint64_t>>{};
  });
  if (!endpoints) return endpoints.error();
  log::info("healthz on port " + std::to_string((*endpoints)->healthz_port()) + ", metrics on port " +
            std::to_string((*endpoints)->metrics_port()));

  KnownKeys known_services, known_slices;
  k8s::ReflectorHandlers svc_handlers, slice_handlers, node_handlers;
  wire_services(svc_handlers, sync, metrics, known_services);
  wire_slices(slice_handlers, sync, metrics, known_slices);
  const std::string node = node_name(o);
  auto set_node = [&sync](const nlohmann::json& obj) {
    if (auto n = k8s::decode_node(obj))
      sync.update(Source::kNode, [&](proxy::Model& m) { m.set_node(std::move(*n)); });
  };
  node_handlers.on_replace = [set_node](std::vector<nlohmann::json> items) {
    for (const auto& i : items) set_node(i);
  };
  node_handlers.on_event = [set_node](k8s::EventType type, const nlohmann::json& obj) {
    if (type != k8s::EventType::kDeleted) set_node(obj);
  };
  k8s::Reflector services(**client, k8s::services_resource(), svc_handlers);
  k8s::Reflector slices(**client, k8s::endpoint_slices_resource(), slice_handlers);
  k8s::Reflector node_reflector(**client, k8s::node_resource(node), node_handlers);

  std::vector<std::jthread> threads;
  threads.emplace_back([&](std::stop_token st) { sync.run(st); });
  threads.emplace_back([&](std::stop_token st) { services.run(st); });
  threads.emplace_back([&](std::stop_token st) { slices.run(st); });
  threads.emplace_back([&](std::stop_token st) { node_reflector.run(st); });

  std::optional<InterfaceFollower> follower;
  if (!o.pod_interfaces.empty()) {
    auto f = InterfaceFollower::open(o.pod_interfaces, [&](int ifindex, const std::string& name) {
      if (auto st = bpf::tc_attach(ifindex, object->from_pod_fd(), object->to_pod_fd()); !st) {
        log::warning("attach to " + name + ": " + st.error().message);
        return;
      }
      metrics.attached_interfaces++;
      log::info("attached to " + name);
    });
    if (!f) return f.error();
    follower.emplace(std::move(*f));
    follower->scan();
    threads.emplace_back([&](std::stop_token st) { follower->run(st); });
  }

  int sig = 0;
  sigwait(&signals, &sig);
  log::info(std::string("shutting down on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
            "; the datapath stays in place (kpx agent --cleanup removes it)");
  for (auto& t : threads) t.request_stop();
  threads.clear();  // joins
  (*endpoints)->stop();
  return {};
}

}  // namespace kpx::agent
