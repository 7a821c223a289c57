#include "apiserver/node_port.h"

#include <algorithm>
#include <climits>
#include <map>
#include <utility>
#include <vector>

namespace kpx::apiserver {

namespace {

const Json& spec_of(const Json& svc) {
  static const Json kNoSpec = Json::object();
  const Json& spec = member(svc, "spec");
  return spec.is_object() ? spec : kNoSpec;
}

std::string type_of(const Json& spec) {
  std::string t = string_at(spec, "type");
  return t.empty() ? "ClusterIP" : t;
}

bool needs_node_ports(const Json& spec) {
  std::string t = type_of(spec);
  return t == "NodePort" || t == "LoadBalancer";
}

// Whether ports without a nodePort get one; a LoadBalancer may opt out
// (allocateLoadBalancerNodePorts: false) and still keep the ones it asks for.
bool allocates_node_ports(const Json& spec) {
  std::string t = type_of(spec);
  const Json& allocate = member(spec, "allocateLoadBalancerNodePorts");
  return t == "NodePort" || (t == "LoadBalancer" && !(allocate.is_boolean() && !allocate.get<bool>()));
}

bool needs_health_check(const Json& spec) {
  return type_of(spec) == "LoadBalancer" && string_at(spec, "externalTrafficPolicy") == "Local";
}

// An int32 field; 0 when absent or not a number (0 means "none" in the API).
int int_at(const Json& obj, const char* key) {
  const Json& v = member(obj, key);
  if (!v.is_number_integer()) return 0;
  return static_cast<int>(std::clamp<int64_t>(v.get<int64_t>(), INT_MIN, INT_MAX));
}

// The ports array to fill in, or null when there is none.
Json* mutable_ports(Json& spec) {
  auto it = spec.find("ports");
  return it != spec.end() && it->is_array() ? &*it : nullptr;
}

const Json& ports_of(const Json& spec) {
  static const Json kNoPorts = Json::array();
  const Json& ports = member(spec, "ports");
  return ports.is_array() ? ports : kNoPorts;
}

std::set<int> node_port_set(const Json& spec) {
  std::set<int> out;
  for (const Json& p : ports_of(spec))
    if (int np = int_at(p, "nodePort")) out.insert(np);
  return out;
}

// The ports a stored Service holds: its nodePorts while its type uses them,
// its healthCheckNodePort while it needs one.
std::set<int> held(const Json& svc) {
  const Json& spec = spec_of(svc);
  std::set<int> out;
  if (needs_node_ports(spec)) out = node_port_set(spec);
  if (int hc = int_at(spec, "healthCheckNodePort"); hc && needs_health_check(spec)) out.insert(hc);
  return out;
}

// The first nodePort asked for by a port of this number (findRequestedNodePort).
int requested_node_port(const Json& ports, int number) {
  for (const Json& p : ports)
    if (int np = int_at(p, "nodePort"); np && int_at(p, "port") == number) return np;
  return 0;
}

std::string node_port_field(size_t i) { return "spec.ports[" + std::to_string(i) + "].nodePort"; }

std::string protocol_of(const Json& port) {
  std::string p = string_at(port, "protocol");
  return p.empty() ? "TCP" : p;
}

// One field error as the Status message carries it, or several as "[a, b]".
std::optional<ApiStatus> invalid(const Json& svc, const std::vector<std::string>& errors) {
  if (errors.empty()) return std::nullopt;
  std::string text = errors.front();
  if (errors.size() > 1) {
    text = "[" + text;
    for (size_t i = 1; i < errors.size(); ++i) text += ", " + errors[i];
    text += "]";
  }
  return invalid_status("Service", string_at(member(svc, "metadata"), "name"), text);
}

ApiStatus port_invalid(const Json& svc, size_t i, int port, const std::string& why) {
  return *invalid(svc, {node_port_field(i) + ": Invalid value: " + std::to_string(port) + ": " + why});
}

ApiStatus node_ports_full() { return internal_error_status("failed to allocate a nodePort: range is full"); }

// What the real server's validation (ValidateService) says of these fields;
// it runs after allocation there, so allocation errors come first.
std::vector<std::string> validation_errors(const Json& spec) {
  std::vector<std::string> errors;
  const Json& ports = ports_of(spec);
  if (type_of(spec) == "ClusterIP")
    for (size_t i = 0; i < ports.size(); ++i)
      if (int_at(ports[i], "nodePort"))
        errors.push_back(node_port_field(i) + ": Forbidden: may not be used when `type` is 'ClusterIP'");
  // One nodePort may serve two ports that differ in protocol (53/TCP, 53/UDP).
  std::set<std::pair<std::string, int>> seen;
  for (size_t i = 0; i < ports.size(); ++i) {
    int np = int_at(ports[i], "nodePort");
    if (np && !seen.insert({protocol_of(ports[i]), np}).second)
      errors.push_back(node_port_field(i) + ": Duplicate value: " + std::to_string(np));
  }
  if (int hc = int_at(spec, "healthCheckNodePort"); hc && !needs_health_check(spec))
    errors.push_back("spec.healthCheckNodePort: Invalid value: " + std::to_string(hc) +
                     ": may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'");
  return errors;
}

// As the real registry's patchAllocatedValues: an update that leaves out a
// nodePort keeps the one the port of that name has (unless another port now
// asks for it), and likewise the healthCheckNodePort.
void keep_allocated(const Json& cur, Json& spec) {
  Json* ports = mutable_ports(spec);
  if (ports && needs_node_ports(cur) && needs_node_ports(spec)) {
    std::set<int> old_ports = node_port_set(cur), new_ports = node_port_set(spec), in_both;
    std::set_intersection(old_ports.begin(), old_ports.end(), new_ports.begin(), new_ports.end(),
                          std::inserter(in_both, in_both.begin()));
    std::map<std::string, int> by_name;
    for (const Json& p : ports_of(cur)) by_name[string_at(p, "name")] = int_at(p, "nodePort");
    for (Json& p : *ports) {
      if (!p.is_object() || int_at(p, "nodePort")) continue;
      auto old = by_name.find(string_at(p, "name"));
      if (old != by_name.end() && old->second && !in_both.count(old->second)) p["nodePort"] = old->second;
    }
  }
  int cur_hc = int_at(cur, "healthCheckNodePort");
  if (cur_hc && needs_health_check(cur) && needs_health_check(spec) && !int_at(spec, "healthCheckNodePort"))
    spec["healthCheckNodePort"] = cur_hc;
}

// As the real strategy's dropTypeDependentFields: a type that uses no
// nodePorts (or no healthCheckNodePort) drops the values the client left as
// they were; values it changed stay, for validation to refuse.
void drop_unneeded(const Json& cur, Json& spec) {
  Json* ports = mutable_ports(spec);
  if (ports && needs_node_ports(cur) && !needs_node_ports(spec)) {
    std::set<int> old_ports = node_port_set(cur), new_ports = node_port_set(spec);
    if (std::includes(old_ports.begin(), old_ports.end(), new_ports.begin(), new_ports.end()))
      for (Json& p : *ports)
        if (p.is_object()) p.erase("nodePort");
  }
  int cur_hc = int_at(cur, "healthCheckNodePort");
  if (needs_health_check(cur) && !needs_health_check(spec) && int_at(spec, "healthCheckNodePort") == cur_hc)
    spec.erase("healthCheckNodePort");
}

}  // namespace

Result<std::unique_ptr<NodePortAllocator>> NodePortAllocator::create(const std::string& range) {
  auto fail = [&](const std::string& why) -> Error {
    return invalid_argument("invalid service node port range '" + range + "': " + why);
  };
  auto number = [](const std::string& s) -> std::optional<int> {
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::stoi(s);
  };
  size_t dash = range.find('-'), plus = range.find('+');
  std::optional<int> lo, hi;
  if (dash != std::string::npos && plus == std::string::npos) {
    lo = number(range.substr(0, dash));
    hi = number(range.substr(dash + 1));
  } else if (plus != std::string::npos && dash == std::string::npos) {
    lo = number(range.substr(0, plus));
    auto offset = number(range.substr(plus + 1));
    if (lo && offset) hi = *lo + *offset;
  } else if (dash == std::string::npos) {
    lo = hi = number(range);
  }
  if (!lo || !hi) return fail("expected MIN-MAX such as 30000-32767 (or BASE+OFFSET, or one PORT)");
  if (*lo < 1 || *hi > 65535) return fail("ports must be between 1 and 65535");
  if (*hi < *lo) return fail("the end port is below the start port");
  return std::unique_ptr<NodePortAllocator>(new NodePortAllocator(*lo, *hi - *lo + 1));
}

NodePortAllocator::NodePortAllocator(int base, int size) : base_(base), size_(size) {
  // As the real allocator (ServiceNodePortStaticSubrange): the lower band,
  // size/32 clamped to 16..128 ports, is left to static requests as long as
  // the upper band has room. Ranges of 16 ports or fewer have no such band.
  split_ = size_ <= 16 ? 0 : std::clamp(size_ / 32, 16, 128);
}

std::string NodePortAllocator::range() const {
  return std::to_string(base_) + "-" + std::to_string(base_ + size_ - 1);
}

size_t NodePortAllocator::allocated() const {
  std::lock_guard lk(mu_);
  return used_.size();
}

bool NodePortAllocator::is_allocated(int port) const {
  std::lock_guard lk(mu_);
  return used_.count(port) > 0;
}

std::string NodePortAllocator::refusal(int port, const std::set<int>& claimed) const {
  if (!in_range(port))
    return "provided port is not in the valid range. The range of valid ports is " + range();
  if (used_.count(port) || claimed.count(port)) return "provided port is already allocated";
  return "";
}

std::optional<int> NodePortAllocator::pick_free(const std::set<int>& claimed) {
  auto scan = [&](int lo, int hi) -> std::optional<int> {  // offsets [lo, hi)
    if (lo >= hi) return std::nullopt;
    int start = static_cast<int>(rng_() % static_cast<unsigned>(hi - lo));
    for (int i = 0; i < hi - lo; ++i) {
      int port = base_ + lo + (start + i) % (hi - lo);
      if (!used_.count(port) && !claimed.count(port)) return port;
    }
    return std::nullopt;
  };
  if (auto port = scan(split_, size_)) return port;
  return scan(0, split_);
}

std::optional<ApiStatus> NodePortAllocator::claim_health_check(Json& spec, std::set<int>& claimed) {
  // Refusals are internal errors here, as the real registry reports them.
  int hc = int_at(spec, "healthCheckNodePort");
  if (hc) {
    if (std::string why = refusal(hc, claimed); !why.empty())
      return internal_error_status("failed to allocate requested HealthCheck NodePort " + std::to_string(hc) +
                                   ": " + why);
  } else {
    auto free = pick_free(claimed);
    if (!free) return internal_error_status("failed to allocate a HealthCheck NodePort 0: range is full");
    spec["healthCheckNodePort"] = hc = *free;
  }
  claimed.insert(hc);
  return std::nullopt;
}

std::optional<ApiStatus> NodePortAllocator::on_create(Json& svc) {
  std::lock_guard lk(mu_);
  if (!svc["spec"].is_object()) svc["spec"] = Json::object();
  Json& spec = svc["spec"];
  std::set<int> claimed;
  Json* ports = mutable_ports(spec);
  if (ports && needs_node_ports(spec)) {
    // As the real registry's initNodePorts: ports of one number (53/TCP and
    // 53/UDP) share a nodePort, the first one asked for among them or a free one.
    bool allocates = allocates_node_ports(spec);
    std::map<int, int> by_number;  // service port -> its nodePort
    for (size_t i = 0; i < ports->size(); ++i) {
      Json& p = (*ports)[i];
      if (!p.is_object()) continue;
      int np = int_at(p, "nodePort"), number = int_at(p, "port");
      if (!np && !allocates) continue;
      auto shared = by_number.find(number);
      if (shared != by_number.end() && (!np || np == shared->second)) {
        p["nodePort"] = shared->second;
        continue;
      }
      if (shared == by_number.end()) np = requested_node_port(*ports, number);
      if (!np) {
        auto free = pick_free(claimed);
        if (!free) return node_ports_full();
        np = *free;
      } else if (std::string why = refusal(np, claimed); !why.empty()) {
        return port_invalid(svc, i, np, why);
      }
      claimed.insert(np);
      p["nodePort"] = np;
      if (shared == by_number.end()) by_number[number] = np;
    }
  }
  if (needs_health_check(spec))
    if (auto refused = claim_health_check(spec, claimed)) return refused;
  if (auto bad = invalid(svc, validation_errors(spec))) return bad;
  used_.insert(claimed.begin(), claimed.end());
  return std::nullopt;
}

std::optional<ApiStatus> NodePortAllocator::on_update(const Json& current, Json& next) {
  std::lock_guard lk(mu_);
  if (!next["spec"].is_object()) next["spec"] = Json::object();
  Json& spec = next["spec"];
  const Json& cur = spec_of(current);
  keep_allocated(cur, spec);
  drop_unneeded(cur, spec);
  // As the real registry's updateNodePorts: the current nodePorts are this
  // Service's already; any other one asked for is claimed, ports without
  // one get a free one each.
  std::set<int> before = needs_node_ports(cur) ? node_port_set(cur) : std::set<int>{}, claimed;
  Json* ports = mutable_ports(spec);
  if (ports && needs_node_ports(spec)) {
    bool allocates = allocates_node_ports(spec);
    for (size_t i = 0; i < ports->size(); ++i) {
      Json& p = (*ports)[i];
      if (!p.is_object()) continue;
      int np = int_at(p, "nodePort");
      if (!np && allocates) {
        auto free = pick_free(claimed);
        if (!free) return node_ports_full();
        p["nodePort"] = *free;
        claimed.insert(*free);
      } else if (np && !before.count(np) && !claimed.count(np)) {
        if (std::string why = refusal(np, claimed); !why.empty()) return port_invalid(next, i, np, why);
        claimed.insert(np);
      }
    }
  }
  bool needed = needs_health_check(cur), needs = needs_health_check(spec);
  if (needs && !needed)
    if (auto refused = claim_health_check(spec, claimed)) return refused;
  int hc = int_at(spec, "healthCheckNodePort");
  std::vector<std::string> errors = validation_errors(spec);
  if (needed && needs && hc != int_at(cur, "healthCheckNodePort"))
    errors.push_back("spec.healthCheckNodePort: Invalid value: " + std::to_string(hc) + ": field is immutable");
  if (auto bad = invalid(next, errors)) return bad;
  std::set<int> after = held(next);
  for (int port : held(current))
    if (!after.count(port)) used_.erase(port);
  used_.insert(claimed.begin(), claimed.end());
  return std::nullopt;
}

void NodePortAllocator::revert_update(const Json& current, const Json& next) {
  std::lock_guard lk(mu_);
  std::set<int> was = held(current), is = held(next);
  for (int port : is)
    if (!was.count(port)) used_.erase(port);
  for (int port : was)
    if (!is.count(port) && in_range(port)) used_.insert(port);
}

void NodePortAllocator::on_remove(const Json& svc) {
  std::lock_guard lk(mu_);
  for (int port : held(svc)) used_.erase(port);
}

}  // namespace kpx::apiserver
