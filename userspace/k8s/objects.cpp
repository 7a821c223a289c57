#include "k8s/objects.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "k8s/time.h"

namespace kpx::k8s {

std::string ObjectMeta::key() const { return namespace_.empty() ? name : namespace_ + "/" + name; }

std::optional<std::string> ObjectMeta::label(std::string_view key) const {
  auto it = labels.find(key);
  if (it == labels.end()) return std::nullopt;
  return it->second;
}

std::string EndpointSlice::service_name() const { return metadata.label(kLabelServiceName).value_or(""); }

std::optional<std::chrono::system_clock::time_point> EndpointSlice::trigger_time() const {
  if (last_change_trigger_time.empty()) return std::nullopt;
  return parse_rfc3339(last_change_trigger_time);
}

std::string EndpointSlice::service_key() const { return metadata.namespace_ + "/" + service_name(); }

std::string Node::zone() const { return metadata.label(kLabelTopologyZone).value_or(""); }

namespace {

using json = nlohmann::json;

// Thrown inside this file only: decode_* turn it into an Error.
struct FieldError {
  std::string field;
  std::string problem;
};

[[noreturn]] void wrong_type(const std::string& field, const char* want, const json& got) {
  throw FieldError{field, std::string("expected ") + want + ", got " + got.type_name()};
}

// A JSON object being read, with its path for error messages. Absent and
// null members both mean "not set", as the API's Go clients read them.
class Reader {
 public:
  Reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) wrong_type(path_.empty() ? "object" : path_, "an object", j_);
  }

  const json* find(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::string field(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  std::optional<std::string> opt_string(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(field(key), "a string", *v);
    return v->get<std::string>();
  }

  std::string string(const char* key, std::string fallback = "") const {
    return opt_string(key).value_or(std::move(fallback));
  }

  std::optional<bool> opt_bool(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(field(key), "a boolean", *v);
    return v->get<bool>();
  }

  std::optional<int32_t> opt_int32(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_int32(*v, field(key));
  }

  int32_t int32(const char* key, int32_t fallback = 0) const { return opt_int32(key).value_or(fallback); }

  std::vector<std::string> strings(const char* key) const {
    std::vector<std::string> out;
    const json* v = find(key);
    if (!v) return out;
    if (!v->is_array()) wrong_type(field(key), "an array", *v);
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_string()) wrong_type(field(key) + "[" + std::to_string(i) + "]", "a string", e);
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  Labels string_map(const char* key) const {
    Labels out;
    const json* v = find(key);
    if (!v) return out;
    if (!v->is_object()) wrong_type(field(key), "an object", *v);
    for (const auto& [k, e] : v->items()) {
      if (!e.is_string()) wrong_type(field(key) + "[\"" + k + "\"]", "a string", e);
      out.emplace(k, e.get<std::string>());
    }
    return out;
  }

  std::optional<Reader> object(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return Reader(*v, field(key));
  }

  std::vector<Reader> objects(const char* key) const {
    std::vector<Reader> out;
    const json* v = find(key);
    if (!v) return out;
    if (!v->is_array()) wrong_type(field(key), "an array", *v);
    for (size_t i = 0; i < v->size(); ++i)
      out.emplace_back((*v)[i], field(key) + "[" + std::to_string(i) + "]");
    return out;
  }

  static int32_t to_int32(const json& v, const std::string& field) {
    // Floats are refused as the API's decoder refuses them for int32 fields.
    if (!v.is_number_integer()) wrong_type(field, "an integer", v);
    bool fits = v.is_number_unsigned()
                    ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
                    : v.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
                          v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!fits) throw FieldError{field, "integer " + v.dump() + " out of range"};
    return static_cast<int32_t>(v.get<int64_t>());
  }

 private:
  const json& j_;
  std::string path_;
};

ObjectMeta read_meta(const Reader& r) {
  ObjectMeta m;
  auto meta = r.object("metadata");
  if (!meta) return m;
  m.name = meta->string("name");
  m.namespace_ = meta->string("namespace");
  m.uid = meta->string("uid");
  m.resource_version = meta->string("resourceVersion");
  m.labels = meta->string_map("labels");
  m.deletion_timestamp = meta->opt_string("deletionTimestamp");
  return m;
}

ServicePort read_service_port(const Reader& r) {
  ServicePort p;
  p.name = r.string("name");
  p.protocol = r.string("protocol", "TCP");
  p.port = r.int32("port");
  if (const json* t = r.find("targetPort")) {
    if (t->is_string())
      p.target_port = t->get<std::string>();
    else
      p.target_port = Reader::to_int32(*t, r.field("targetPort"));
  }
  p.node_port = r.int32("nodePort");
  return p;
}

Service read_service(const Reader& r) {
  Service s;
  s.metadata = read_meta(r);
  if (auto spec = r.object("spec")) {
    s.type = spec->string("type", "ClusterIP");
    s.cluster_ip = spec->string("clusterIP");
    s.cluster_ips = spec->strings("clusterIPs");
    s.ip_families = spec->strings("ipFamilies");
    for (const Reader& p : spec->objects("ports")) s.ports.push_back(read_service_port(p));
    s.external_ips = spec->strings("externalIPs");
    s.session_affinity = spec->string("sessionAffinity", "None");
    if (auto config = spec->object("sessionAffinityConfig"))
      if (auto client_ip = config->object("clientIP"))
        s.client_ip_timeout_seconds = client_ip->int32("timeoutSeconds", kDefaultClientIpTimeoutSeconds);
    s.external_traffic_policy = spec->string("externalTrafficPolicy");
    s.internal_traffic_policy = spec->string("internalTrafficPolicy");
    s.health_check_node_port = spec->int32("healthCheckNodePort");
    s.load_balancer_source_ranges = spec->strings("loadBalancerSourceRanges");
    s.traffic_distribution = spec->string("trafficDistribution");
  }
  if (auto status = r.object("status"))
    if (auto lb = status->object("loadBalancer"))
      for (const Reader& in : lb->objects("ingress"))
        s.load_balancer_ingress.push_back({in.string("ip"), in.string("ipMode")});
  return s;
}

Endpoint read_endpoint(const Reader& r) {
  Endpoint e;
  e.addresses = r.strings("addresses");
  if (auto c = r.object("conditions")) {
    e.conditions.ready = c->opt_bool("ready");
    e.conditions.serving = c->opt_bool("serving");
    e.conditions.terminating = c->opt_bool("terminating");
  }
  e.node_name = r.string("nodeName");
  e.zone = r.string("zone");
  if (auto h = r.object("hints")) {
    EndpointHints hints;
    for (const Reader& z : h->objects("forZones")) hints.for_zones.push_back(z.string("name"));
    for (const Reader& n : h->objects("forNodes")) hints.for_nodes.push_back(n.string("name"));
    e.hints = std::move(hints);
  }
  return e;
}

EndpointSlice read_endpoint_slice(const Reader& r) {
  EndpointSlice s;
  s.metadata = read_meta(r);
  if (auto meta = r.object("metadata"))
    if (auto annotations = meta->object("annotations"))
      s.last_change_trigger_time = annotations->string(std::string(kAnnotationLastChangeTriggerTime).c_str());
  s.address_type = r.string("addressType");
  for (const Reader& e : r.objects("endpoints")) s.endpoints.push_back(read_endpoint(e));
  for (const Reader& p : r.objects("ports"))
    s.ports.push_back({p.string("name"), p.string("protocol", "TCP"), p.opt_int32("port")});
  return s;
}

Node read_node(const Reader& r) {
  Node n;
  n.metadata = read_meta(r);
  if (auto spec = r.object("spec")) {
    n.pod_cidr = spec->string("podCIDR");
    n.pod_cidrs = spec->strings("podCIDRs");
  }
  if (auto status = r.object("status"))
    for (const Reader& a : status->objects("addresses"))
      n.addresses.push_back({a.string("type"), a.string("address")});
  return n;
}

// "namespace/name" read without assuming anything of the JSON, for messages
// about objects that failed to decode.
std::string describe(const json& j) {
  if (!j.is_object()) return "(not an object)";
  auto meta = j.find("metadata");
  if (meta == j.end() || !meta->is_object()) return "(no metadata)";
  auto str = [&](const char* key) -> std::string {
    auto it = meta->find(key);
    return it != meta->end() && it->is_string() ? it->get<std::string>() : "";
  };
  std::string ns = str("namespace"), name = str("name");
  if (name.empty()) name = "(no name)";
  return ns.empty() ? name : ns + "/" + name;
}

template <typename T>
Result<T> decode(const json& j, const char* kind, T (*read)(const Reader&)) {
  std::string what = std::string(kind) + " " + describe(j);
  try {
    Reader r(j, "");
    if (auto k = r.opt_string("kind"); k && *k != kind)
      return invalid_argument(what + ": kind is " + *k + ", expected " + kind);
    return read(r);
  } catch (const FieldError& e) {
    return invalid_argument(what + ": " + e.field + ": " + e.problem);
  } catch (const json::exception& e) {
    // Not expected (every access is type-checked first), but never let one out.
    return invalid_argument(what + ": " + e.what());
  }
}

}  // namespace

Result<Service> decode_service(const json& j) { return decode<Service>(j, "Service", read_service); }

Result<EndpointSlice> decode_endpoint_slice(const json& j) {
  return decode<EndpointSlice>(j, "EndpointSlice", read_endpoint_slice);
}

Result<Node> decode_node(const json& j) { return decode<Node>(j, "Node", read_node); }

}  // namespace kpx::k8s
