#include "lab/lb_controller.h"

#include <chrono>
#include <arpa/inet.h>

#include <set>

#include "apiserver/resources.h"
#include "apiserver/strategy.h"
#include "lab/plan.h"
#include "log/log.h"
#include "net/endpoint.h"

namespace kpx::lab {

namespace {

using apiserver::Json;
using apiserver::ObjectKey;
using apiserver::ObjectPtr;

std::string field(const Json& obj, const char* a, const char* b) {
  auto x = obj.find(a);
  if (x == obj.end() || !x->is_object()) return "";
  return apiserver::string_at(*x, b);
}

// The IPv4 ingress addresses a Service's status holds.
std::vector<std::string> ingress_ips(const Json& svc) {
  std::vector<std::string> out;
  auto st = svc.find("status");
  if (st == svc.end() || !st->is_object()) return out;
  auto lb = st->find("loadBalancer");
  if (lb == st->end() || !lb->is_object()) return out;
  auto ing = lb->find("ingress");
  if (ing == lb->end() || !ing->is_array()) return out;
  for (const Json& i : *ing)
    if (i.is_object() && i.contains("ip") && i["ip"].is_string()) out.push_back(i["ip"].get<std::string>());
  return out;
}

}  // namespace

Result<std::unique_ptr<LoadBalancerController>> LoadBalancerController::start(apiserver::Store& store) {
  std::unique_ptr<LoadBalancerController> c(new LoadBalancerController(store));
  LoadBalancerController* raw = c.get();
  c->thread_ = std::thread([raw] { raw->run(); });
  return c;
}

LoadBalancerController::~LoadBalancerController() { stop(); }

void LoadBalancerController::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void LoadBalancerController::run() {
  using namespace std::chrono_literals;
  const apiserver::ResourceType& services = *apiserver::find_resource("", "v1", "services");
  auto pool = net::parse_ipv4_cidr(kLoadBalancerPool);
  if (!pool) return;
  const uint32_t base = ntohl(pool->addr_be), size = 1u << (32 - pool->prefix);
  apiserver::Store::WatchCursor cursor = store_.watch_cursor(store_.current_rv());
  while (!stopping_) {
    // Every pass looks at all Services: the lab holds few, and a pass after
    // any change keeps the pool consistent without bookkeeping of its own.
    auto page = store_.list(services, "", apiserver::Selector{}, 0, std::nullopt, std::nullopt);
    if (page) {
      std::set<std::string> used;
      std::vector<ObjectKey> want;
      for (const ObjectPtr& s : page->items) {
        if (apiserver::string_at((*s)["spec"], "type") != "LoadBalancer") continue;
        auto ips = ingress_ips(*s);
        if (ips.empty()) want.push_back({field(*s, "metadata", "namespace"), field(*s, "metadata", "name")});
        used.insert(ips.begin(), ips.end());
      }
      for (const ObjectKey& key : want) {
        std::string ip;
        for (uint32_t off = 1; off + 1 < size && ip.empty(); ++off) {
          std::string cand = net::format_ipv4(htonl(base + off));
          if (!used.count(cand)) ip = cand;
        }
        if (ip.empty()) {
          log::warning("load balancer pool " + std::string(kLoadBalancerPool) + " is exhausted");
          break;
        }
        auto r = store_.update(services, key, [&](const Json& now) -> apiserver::ApiResult<Json> {
          Json next = now;
          if (apiserver::string_at(now["spec"], "type") != "LoadBalancer" || !ingress_ips(now).empty()) return next;
          next["status"]["loadBalancer"]["ingress"] = Json::array({{{"ip", ip}, {"ipMode", "VIP"}}});
          return next;
        });
        if (r) used.insert(ip);
      }
    }
    auto wake = store_.wait(services, cursor, std::chrono::steady_clock::now() + 100ms);
    if (wake.reason == apiserver::WakeReason::kStopped) return;
    if (wake.reason != apiserver::WakeReason::kEvents && wake.reason != apiserver::WakeReason::kTimeout)
      cursor = store_.watch_cursor(store_.current_rv());
  }
}

}  // namespace kpx::lab
