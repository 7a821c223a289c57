#include "apiserver/strategy.h"

#include <cctype>
#include <mutex>
#include <random>

namespace kpx::apiserver {

namespace {

bool is_lower_alnum(char c) {
  return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c));
}

bool dns_label(const std::string& s, bool must_start_alpha) {
  if (s.empty() || s.size() > 63) return false;
  if (must_start_alpha && !std::islower(static_cast<unsigned char>(s.front()))) return false;
  if (!is_lower_alnum(s.front()) || !is_lower_alnum(s.back())) return false;
  for (char c : s)
    if (!is_lower_alnum(c) && c != '-') return false;
  return true;
}

bool dns_subdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    if (!dns_label(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start), false))
      return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

void set_default(Json& obj, const char* key, Json value) {
  if (!obj.contains(key) || obj[key].is_null()) obj[key] = std::move(value);
}

// The defaults the real server's v1 defaulting fills in for a Service
// (cluster IPs and node ports are allocated later, by the store's hooks:
// cluster_ip.h, node_port.h).
void default_service(Json& svc) {
  if (!svc["spec"].is_object()) svc["spec"] = Json::object();
  Json& spec = svc["spec"];
  set_default(spec, "type", "ClusterIP");
  set_default(spec, "sessionAffinity", "None");
  std::string type = spec["type"].is_string() ? spec["type"].get<std::string>() : "";
  if (type != "ExternalName") set_default(spec, "internalTrafficPolicy", "Cluster");
  if (type == "NodePort" || type == "LoadBalancer") set_default(spec, "externalTrafficPolicy", "Cluster");
  if (spec["sessionAffinity"] == "ClientIP")
    set_default(spec, "sessionAffinityConfig", Json{{"clientIP", {{"timeoutSeconds", 10800}}}});
  if (spec["ports"].is_array()) {
    for (Json& p : spec["ports"]) {
      if (!p.is_object()) continue;
      set_default(p, "protocol", "TCP");
      if (p.contains("port")) set_default(p, "targetPort", p["port"]);
    }
  }
  if (spec["clusterIP"].is_string() && !spec["clusterIP"].get<std::string>().empty())
    set_default(spec, "clusterIPs", Json::array({spec["clusterIP"]}));
  else if (spec["clusterIPs"].is_array() && !spec["clusterIPs"].empty() && spec["clusterIPs"][0].is_string())
    spec["clusterIP"] = spec["clusterIPs"][0];
  if (spec["clusterIP"].is_string() && spec["clusterIP"] != "None" &&
      !spec["clusterIP"].get<std::string>().empty()) {
    Json families = Json::array();
    for (const Json& ip : spec["clusterIPs"])
      if (ip.is_string())
        families.push_back(ip.get<std::string>().find(':') == std::string::npos ? "IPv4" : "IPv6");
    set_default(spec, "ipFamilies", families);
    set_default(spec, "ipFamilyPolicy", families.size() > 1 ? "RequireDualStack" : "SingleStack");
  }
  // The serializer drops a null field; a defaulted spec never leaves one.
  for (auto it = spec.begin(); it != spec.end();) it = it->is_null() ? spec.erase(it) : std::next(it);
}

void default_endpoint_slice(Json& slice) {
  if (!slice.contains("ports") || !slice["ports"].is_array()) return;
  for (Json& p : slice["ports"])
    if (p.is_object()) set_default(p, "protocol", "TCP");
}

void default_namespace(Json& ns) {
  // Since 1.21 every namespace carries its name as a label.
  Json& meta = ns["metadata"];
  if (!meta["labels"].is_object()) meta["labels"] = Json::object();
  meta["labels"]["kubernetes.io/metadata.name"] = string_at(meta, "name");
  if (!ns["spec"].is_object()) ns["spec"] = Json::object();
  set_default(ns["spec"], "finalizers", Json::array({"kubernetes"}));
}

// The v1 Pod defaults a client sees (those the lab's kubelet and the
// EndpointSlice controller read).
void default_pod(Json& pod) {
  if (!pod["spec"].is_object()) pod["spec"] = Json::object();
  Json& spec = pod["spec"];
  set_default(spec, "restartPolicy", "Always");
  set_default(spec, "terminationGracePeriodSeconds", 30);
  set_default(spec, "dnsPolicy", "ClusterFirst");
  set_default(spec, "schedulerName", "default-scheduler");
  set_default(spec, "enableServiceLinks", true);
  if (!spec["containers"].is_array()) return;
  for (Json& c : spec["containers"]) {
    if (!c.is_object() || !c["ports"].is_array()) continue;
    for (Json& p : c["ports"])
      if (p.is_object()) set_default(p, "protocol", "TCP");
  }
}

void apply_defaults(const ResourceType& t, Json& obj) {
  if (t.name == "pods") default_pod(obj);
  if (t.name == "services") default_service(obj);
  if (t.name == "endpointslices") default_endpoint_slice(obj);
  if (t.name == "namespaces") default_namespace(obj);
}

}  // namespace

void prepare_for_create(const ResourceType& t, Json& obj) {
  if (t.name == "services") obj["status"] = Json{{"loadBalancer", Json::object()}};
  if (t.name == "pods") obj["status"] = Json{{"phase", "Pending"}};
  if (t.name == "namespaces") obj["status"] = Json{{"phase", "Active"}};
  apply_defaults(t, obj);
}

Json prepare_for_update(const ResourceType& t, const Json& current, Json next, bool status_subresource) {
  if (status_subresource) {
    Json out = current;
    if (next.contains("status")) {
      out["status"] = next["status"];
    } else {
      out.erase("status");
    }
    return out;
  }
  if (t.has_status) {
    if (current.contains("status")) {
      next["status"] = current["status"];
    } else {
      next.erase("status");
    }
  }
  apply_defaults(t, next);
  return next;
}

std::string generate_name(const std::string& base) {
  static std::mutex mu;
  static std::mt19937 rng{std::random_device{}()};
  static const char kChars[] = "bcdfghjklmnpqrstvwxz2456789";
  std::lock_guard lk(mu);
  std::string s = base.substr(0, 58);
  for (int i = 0; i < 5; ++i) s.push_back(kChars[rng() % (sizeof kChars - 1)]);
  return s;
}

std::optional<ApiStatus> validate_name(const ResourceType& t, const std::string& name) {
  if (name.empty())
    return invalid_status(t.kind, name, "metadata.name: Required value: name or generateName is required");
  if (t.name == "services" && !dns_label(name, true))
    return invalid_status(
        t.kind, name,
        "metadata.name: Invalid value: \"" + name +
            "\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
            "start with an alphabetic character, and end with an alphanumeric character");
  if (t.name == "namespaces" && !dns_label(name, false))
    return invalid_status(t.kind, name,
                          "metadata.name: Invalid value: \"" + name +
                              "\": a lowercase RFC 1123 label must consist of lower case alphanumeric "
                              "characters or '-', and must start and end with an alphanumeric character");
  if (!dns_subdomain(name))
    return invalid_status(
        t.kind, name,
        "metadata.name: Invalid value: \"" + name +
            "\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character");
  return std::nullopt;
}

}  // namespace kpx::apiserver
