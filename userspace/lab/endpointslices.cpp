#include "lab/endpointslices.h"

#include <ctime>
#include <map>
#include <set>

namespace kpx::lab {

namespace {

using apiserver::member;
using apiserver::string_at;

std::string meta(const Json& obj, const char* key) { return string_at(member(obj, "metadata"), key); }

// targetPort resolved for the Pod, as the real FindPort: a number as is, a
// name looked up among the containers' ports of the same protocol.
std::optional<int64_t> find_port(const Json& pod, const Json& service_port) {
  const Json& target = member(service_port, "targetPort");
  if (target.is_number_integer() && target.get<int64_t>() > 0) return target.get<int64_t>();
  if (!target.is_string() || target.get<std::string>().empty()) {
    const Json& port = member(service_port, "port");
    if (port.is_number_integer()) return port.get<int64_t>();
    return std::nullopt;
  }
  std::string name = target.get<std::string>();
  std::string proto = string_at(service_port, "protocol");
  if (proto.empty()) proto = "TCP";
  const Json& containers = member(member(pod, "spec"), "containers");
  if (!containers.is_array()) return std::nullopt;
  for (const Json& c : containers) {
    const Json& ports = member(c, "ports");
    if (!ports.is_array()) continue;
    for (const Json& p : ports) {
      std::string p_proto = string_at(p, "protocol");
      if (p_proto.empty()) p_proto = "TCP";
      const Json& number = member(p, "containerPort");
      if (string_at(p, "name") == name && p_proto == proto && number.is_number_integer())
        return number.get<int64_t>();
    }
  }
  return std::nullopt;
}

Json slice_labels(const Json& service) {
  // As the real controller: the Service's labels, then its own.
  Json labels = Json::object();
  const Json& svc_labels = member(member(service, "metadata"), "labels");
  if (svc_labels.is_object())
    for (const auto& [k, v] : svc_labels.items())
      if (k != kServiceNameLabel && k != kManagedByLabel && k != kHeadlessLabel) labels[k] = v;
  labels[kServiceNameLabel] = meta(service, "name");
  labels[kManagedByLabel] = kManagedByController;
  if (string_at(member(service, "spec"), "clusterIP") == "None") labels[kHeadlessLabel] = "";
  return labels;
}

Json owner_references(const Json& service) {
  return Json::array({{{"apiVersion", "v1"},
                       {"kind", "Service"},
                       {"name", meta(service, "name")},
                       {"uid", meta(service, "uid")},
                       {"controller", true},
                       {"blockOwnerDeletion", true}}});
}

Json ports_of(const Json& slice) {
  const Json& p = member(slice, "ports");
  return p.is_array() ? p : Json::array();
}

Json endpoints_of(const Json& slice) {
  const Json& e = member(slice, "endpoints");
  return e.is_array() ? e : Json::array();
}

std::string address_of(const Json& endpoint) {
  const Json& a = member(endpoint, "addresses");
  return a.is_array() && !a.empty() && a[0].is_string() ? a[0].get<std::string>() : "";
}

// The slice's state as the controller wants it; everything else on it (other
// annotations, say) is kept.
Json desired_slice(const Json& base, const Json& service, Json endpoints, Json ports, const std::string& trigger) {
  Json s = base;
  if (s.is_null()) {
    s = {{"kind", "EndpointSlice"},
         {"apiVersion", "discovery.k8s.io/v1"},
         {"metadata",
          {{"generateName", meta(service, "name").substr(0, 58) + "-"}, {"namespace", meta(service, "namespace")}}}};
  }
  s["addressType"] = "IPv4";
  s["endpoints"] = std::move(endpoints);
  s["ports"] = std::move(ports);
  Json& m = s["metadata"];  // taken after the inserts above, which may move it
  m["labels"] = slice_labels(service);
  m["ownerReferences"] = owner_references(service);
  if (!trigger.empty()) {
    if (!m["annotations"].is_object()) m["annotations"] = Json::object();
    m["annotations"][kTriggerTimeAnnotation] = trigger;
  }
  return s;
}

// The fields the controller owns: a change to any of them is a write.
bool same_content(const Json& a, const Json& b) {
  return member(member(a, "metadata"), "labels") == member(member(b, "metadata"), "labels") &&
         member(member(a, "metadata"), "ownerReferences") == member(member(b, "metadata"), "ownerReferences") &&
         member(a, "addressType") == member(b, "addressType") && endpoints_of(a) == endpoints_of(b) &&
         ports_of(a) == ports_of(b);
}

struct Group {
  Json ports;
  std::map<std::string, Json> endpoints;  // by address
};

}  // namespace

bool has_managed_slices(const Json& service) {
  const Json& spec = member(service, "spec");
  const Json& sel = member(spec, "selector");
  return string_at(spec, "type") != "ExternalName" && sel.is_object() && !sel.empty();
}

bool selects(const Json& service, const Json& pod) {
  const Json& sel = member(member(service, "spec"), "selector");
  const Json& labels = member(member(pod, "metadata"), "labels");
  if (!sel.is_object() || sel.empty()) return false;
  for (const auto& [k, v] : sel.items()) {
    const Json& have = member(labels, k.c_str());
    if (!have.is_string() || have != v) return false;
  }
  return true;
}

std::optional<Json> pod_endpoint(const Json& service, const Json& pod, const std::string& zone) {
  const Json& status = member(pod, "status");
  std::string ip = string_at(status, "podIP");
  if (ip.empty()) return std::nullopt;
  std::string phase = string_at(status, "phase");
  std::string restart = string_at(member(pod, "spec"), "restartPolicy");
  if (restart == "Never" && (phase == "Succeeded" || phase == "Failed")) return std::nullopt;
  if (restart == "OnFailure" && phase == "Succeeded") return std::nullopt;

  const Json& spec = member(service, "spec");
  bool publish = member(spec, "publishNotReadyAddresses") == true;
  bool serving = publish || pod_ready(pod);
  bool terminating = member(member(pod, "metadata"), "deletionTimestamp").is_string();
  bool ready = publish || (serving && !terminating);
  Json ep = {{"addresses", Json::array({ip})},
             {"conditions", {{"ready", ready}, {"serving", serving}, {"terminating", terminating}}}};
  const Json& pod_spec = member(pod, "spec");
  std::string hostname = string_at(pod_spec, "hostname");
  if (!hostname.empty() && string_at(pod_spec, "subdomain") == meta(service, "name")) ep["hostname"] = hostname;
  ep["targetRef"] = {{"kind", "Pod"}, {"namespace", meta(pod, "namespace")}, {"name", meta(pod, "name")},
                     {"uid", meta(pod, "uid")}};
  std::string node = string_at(pod_spec, "nodeName");
  if (!node.empty()) ep["nodeName"] = node;
  if (!zone.empty()) ep["zone"] = zone;
  return ep;
}

Json endpoint_ports(const Json& service, const Json& pod) {
  Json out = Json::array();
  const Json& ports = member(member(service, "spec"), "ports");
  if (!ports.is_array()) return out;
  for (const Json& sp : ports) {
    auto number = find_port(pod, sp);
    if (!number) continue;
    std::string proto = string_at(sp, "protocol");
    Json p = {{"name", string_at(sp, "name")}, {"protocol", proto.empty() ? "TCP" : proto}, {"port", *number}};
    if (sp.contains("appProtocol")) p["appProtocol"] = sp["appProtocol"];
    out.push_back(std::move(p));
  }
  return out;
}

SliceChanges plan_endpoint_slices(const Json& service, const std::vector<ObjectPtr>& pods,
                                  const std::vector<ObjectPtr>& slices,
                                  const std::function<std::string(const std::string& node)>& zone_of,
                                  size_t max_per_slice, const std::string& trigger_time) {
  if (max_per_slice == 0) max_per_slice = kMaxEndpointsPerSlice;
  // Desired endpoints, grouped by the ports they serve.
  std::map<std::string, Group> groups;
  for (const ObjectPtr& pod : pods) {
    if (!selects(service, *pod)) continue;
    std::string node = string_at(member(*pod, "spec"), "nodeName");
    auto ep = pod_endpoint(service, *pod, node.empty() || !zone_of ? "" : zone_of(node));
    if (!ep) continue;
    Json ports = endpoint_ports(service, *pod);
    Group& g = groups[ports.dump()];
    g.ports = ports;
    g.endpoints.emplace(address_of(*ep), std::move(*ep));  // the first Pod with an address wins
  }

  SliceChanges out;
  struct Kept {
    ObjectPtr current;
    std::string key;
    Json endpoints;
  };
  std::vector<Kept> kept;
  std::map<std::string, std::set<std::string>> placed;
  for (const ObjectPtr& slice : slices) {
    std::string key = ports_of(*slice).dump();
    auto g = groups.find(key);
    if (member(*slice, "addressType") != "IPv4" || g == groups.end()) {
      out.remove.push_back(slice);
      continue;
    }
    Json eps = Json::array();
    for (const Json& old : endpoints_of(*slice)) {
      std::string addr = address_of(old);
      auto want = g->second.endpoints.find(addr);
      if (want == g->second.endpoints.end() || !placed[key].insert(addr).second) continue;
      if (eps.size() < max_per_slice) {
        eps.push_back(want->second);
      } else {
        placed[key].erase(addr);  // an over-full slice (max lowered): placed again below
      }
    }
    kept.push_back({slice, key, std::move(eps)});
  }

  // New endpoints: into kept slices with room, then into new slices.
  for (auto& [key, group] : groups) {
    std::vector<const Json*> left;
    for (const auto& [addr, ep] : group.endpoints)
      if (!placed[key].count(addr)) left.push_back(&ep);
    size_t next = 0;
    for (Kept& k : kept) {
      if (k.key != key) continue;
      while (next < left.size() && k.endpoints.size() < max_per_slice) k.endpoints.push_back(*left[next++]);
    }
    while (next < left.size()) {
      Json eps = Json::array();
      while (next < left.size() && eps.size() < max_per_slice) eps.push_back(*left[next++]);
      out.create.push_back(desired_slice(Json(), service, std::move(eps), group.ports, trigger_time));
    }
  }

  if (groups.empty()) {
    // No endpoints: one placeholder slice (no ports, no endpoints), as the
    // real controller keeps, reusing an existing one.
    auto reuse = std::find_if(out.remove.begin(), out.remove.end(), [](const ObjectPtr& s) {
      return member(*s, "addressType") == "IPv4" && ports_of(*s).empty() && endpoints_of(*s).empty();
    });
    if (reuse != out.remove.end()) {
      Json next = desired_slice(**reuse, service, Json::array(), Json::array(), "");
      if (!same_content(**reuse, next))
        out.update.emplace_back(*reuse, desired_slice(**reuse, service, Json::array(), Json::array(), trigger_time));
      out.remove.erase(reuse);
    } else {
      out.create.push_back(desired_slice(Json(), service, Json::array(), Json::array(), trigger_time));
    }
    return out;
  }

  for (Kept& k : kept) {
    if (k.endpoints.empty()) {
      out.remove.push_back(k.current);
      continue;
    }
    Json ports = groups[k.key].ports;
    Json next = desired_slice(*k.current, service, k.endpoints, ports, "");
    if (!same_content(*k.current, next))
      out.update.emplace_back(k.current, desired_slice(*k.current, service, std::move(k.endpoints), ports, trigger_time));
  }
  return out;
}

std::string rfc3339_nano(std::chrono::system_clock::time_point t) {
  auto since = t.time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  long nanos = static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(since - secs).count());
  time_t s = static_cast<time_t>(secs.count());
  tm utc{};
  gmtime_r(&s, &utc);
  char buf[48];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  std::string out(buf, n);
  if (nanos > 0) {
    char frac[16];
    snprintf(frac, sizeof frac, ".%09ld", nanos);
    std::string f = frac;
    while (f.back() == '0') f.pop_back();
    out += f;
  }
  return out + "Z";
}

}  // namespace kpx::lab
