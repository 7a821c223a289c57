#include "apiserver/table.h"

#include <ctime>

namespace kpx::apiserver {

namespace {

struct Column {
  const char* name;
  const char* type;
  const char* format;
  int priority;
};

const Json* at(const Json& obj, std::initializer_list<const char*> path) {
  const Json* cur = &obj;
  for (const char* k : path) {
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(k);
    if (it == cur->end()) return nullptr;
    cur = &*it;
  }
  return cur;
}

std::string str_at(const Json& obj, std::initializer_list<const char*> path,
                   const std::string& fallback = "") {
  const Json* j = at(obj, path);
  return j && j->is_string() && !j->get<std::string>().empty() ? j->get<std::string>() : fallback;
}

std::string join(const std::vector<std::string>& parts, const std::string& empty) {
  if (parts.empty()) return empty;
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ",") + p;
  return out;
}

std::string number_text(const Json& j) {
  if (j.is_number_integer()) return std::to_string(j.get<long long>());
  return j.is_string() ? j.get<std::string>() : "";
}

std::string age(const Json& obj) {
  std::string ts = str_at(obj, {"metadata", "creationTimestamp"});
  tm t{};
  if (ts.empty() || !strptime(ts.c_str(), "%Y-%m-%dT%H:%M:%SZ", &t)) return "<unknown>";
  return human_duration(static_cast<long>(time(nullptr) - timegm(&t)));
}

std::vector<Column> columns(const ResourceType& t) {
  if (t.name == "services")
    return {{"Name", "string", "name", 0},    {"Type", "string", "", 0},    {"Cluster-IP", "string", "", 0},
            {"External-IP", "string", "", 0}, {"Port(s)", "string", "", 0}, {"Age", "string", "", 0},
            {"Selector", "string", "", 1}};
  if (t.name == "endpointslices")
    return {{"Name", "string", "name", 0},
            {"AddressType", "string", "", 0},
            {"Ports", "string", "", 0},
            {"Endpoints", "string", "", 0},
            {"Age", "string", "", 0}};
  if (t.name == "nodes")
    return {{"Name", "string", "name", 0},
            {"Status", "string", "", 0},
            {"Roles", "string", "", 0},
            {"Age", "string", "", 0},
            {"Version", "string", "", 0}};
  if (t.name == "namespaces")
    return {{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Age", "string", "", 0}};
  if (t.name == "pods")
    return {{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Status", "string", "", 0},
            {"Restarts", "string", "", 0}, {"Age", "string", "", 0},   {"IP", "string", "", 1},
            {"Node", "string", "", 1}};
  return {{"Name", "string", "name", 0}, {"Age", "string", "", 0}};
}

Json service_cells(const Json& o) {
  std::string type = str_at(o, {"spec", "type"}, "ClusterIP");
  std::vector<std::string> external;
  if (const Json* ips = at(o, {"spec", "externalIPs"}); ips && ips->is_array())
    for (const auto& ip : *ips)
      if (ip.is_string()) external.push_back(ip.get<std::string>());
  if (type == "LoadBalancer") {
    if (const Json* ing = at(o, {"status", "loadBalancer", "ingress"}); ing && ing->is_array())
      for (const auto& i : *ing) external.push_back(str_at(i, {"ip"}, str_at(i, {"hostname"})));
  }
  std::string external_text = join(external, type == "LoadBalancer" ? "<pending>" : "<none>");
  if (type == "ExternalName") external_text = str_at(o, {"spec", "externalName"}, "<none>");
  std::vector<std::string> ports;
  if (const Json* ps = at(o, {"spec", "ports"}); ps && ps->is_array()) {
    for (const auto& p : *ps) {
      if (!p.is_object()) continue;
      std::string s = p.contains("port") ? number_text(p["port"]) : "";
      if (p.contains("nodePort")) s += ":" + number_text(p["nodePort"]);
      ports.push_back(s + "/" + str_at(p, {"protocol"}, "TCP"));
    }
  }
  std::vector<std::string> selector;
  if (const Json* sel = at(o, {"spec", "selector"}); sel && sel->is_object())
    for (const auto& [k, v] : sel->items())
      selector.push_back(k + "=" + (v.is_string() ? v.get<std::string>() : ""));
  return {str_at(o, {"metadata", "name"}),
          type,
          str_at(o, {"spec", "clusterIP"}, "<none>"),
          external_text,
          join(ports, "<none>"),
          age(o),
          join(selector, "<none>")};
}

Json endpoint_slice_cells(const Json& o) {
  std::vector<std::string> ports, addresses;
  if (const Json* ps = at(o, {"ports"}); ps && ps->is_array())
    for (const auto& p : *ps) ports.push_back(at(p, {"port"}) ? number_text(*at(p, {"port"})) : "<unset>");
  if (const Json* eps = at(o, {"endpoints"}); eps && eps->is_array())
    for (const auto& e : *eps)
      if (const Json* a = at(e, {"addresses"}); a && a->is_array())
        for (const auto& ip : *a)
          if (ip.is_string()) addresses.push_back(ip.get<std::string>());
  std::string endpoints = "<unset>";
  if (!addresses.empty()) {
    std::vector<std::string> shown(addresses.begin(),
                                   addresses.begin() + std::min<size_t>(3, addresses.size()));
    endpoints = join(shown, "");
    if (addresses.size() > 3) endpoints += " + " + std::to_string(addresses.size() - 3) + " more...";
  }
  return {str_at(o, {"metadata", "name"}), str_at(o, {"addressType"}), join(ports, "<unset>"), endpoints,
          age(o)};
}

Json node_cells(const Json& o) {
  std::string status = "Unknown";
  if (const Json* cs = at(o, {"status", "conditions"}); cs && cs->is_array())
    for (const auto& c : *cs)
      if (str_at(c, {"type"}) == "Ready") status = str_at(c, {"status"}) == "True" ? "Ready" : "NotReady";
  std::vector<std::string> roles;
  if (const Json* labels = at(o, {"metadata", "labels"}); labels && labels->is_object())
    for (const auto& [k, _] : labels->items())
      if (k.rfind("node-role.kubernetes.io/", 0) == 0) roles.push_back(k.substr(24));
  return {str_at(o, {"metadata", "name"}), status, join(roles, "<none>"), age(o),
          str_at(o, {"status", "nodeInfo", "kubeletVersion"})};
}

Json pod_cells(const Json& o) {
  int total = 0, ready = 0;
  long long restarts = 0;
  if (const Json* cs = at(o, {"spec", "containers"}); cs && cs->is_array())
    total = static_cast<int>(cs->size());
  if (const Json* ss = at(o, {"status", "containerStatuses"}); ss && ss->is_array()) {
    for (const auto& s : *ss) {
      if (const Json* r = at(s, {"ready"}); r && r->is_boolean() && r->get<bool>()) ++ready;
      if (const Json* r = at(s, {"restartCount"}); r && r->is_number_integer())
        restarts += r->get<long long>();
    }
  }
  return {str_at(o, {"metadata", "name"}),
          std::to_string(ready) + "/" + std::to_string(total),
          // As kubectl's printer: a Pod being deleted is Terminating.
          at(o, {"metadata", "deletionTimestamp"}) && str_at(o, {"status", "reason"}) != "NodeLost"
              ? "Terminating"
              : str_at(o, {"status", "reason"}, str_at(o, {"status", "phase"}, "Unknown")),
          std::to_string(restarts),
          age(o),
          str_at(o, {"status", "podIP"}, "<none>"),
          str_at(o, {"spec", "nodeName"}, "<none>")};
}

Json cells(const ResourceType& t, const Json& o) {
  if (t.name == "services") return service_cells(o);
  if (t.name == "endpointslices") return endpoint_slice_cells(o);
  if (t.name == "nodes") return node_cells(o);
  if (t.name == "namespaces")
    return {str_at(o, {"metadata", "name"}), str_at(o, {"status", "phase"}), age(o)};
  if (t.name == "pods") return pod_cells(o);
  return {str_at(o, {"metadata", "name"}), age(o)};
}

}  // namespace

std::string human_duration(long s) {
  if (s < -1) return "<invalid>";
  if (s < 0) return "0s";
  if (s < 120) return std::to_string(s) + "s";
  long m = s / 60;
  if (m < 10)
    return s % 60 == 0 ? std::to_string(m) + "m" : std::to_string(m) + "m" + std::to_string(s % 60) + "s";
  if (m < 180) return std::to_string(m) + "m";
  long h = m / 60;
  if (h < 8)
    return m % 60 == 0 ? std::to_string(h) + "h" : std::to_string(h) + "h" + std::to_string(m % 60) + "m";
  if (h < 48) return std::to_string(h) + "h";
  if (h < 24 * 8)
    return h % 24 == 0 ? std::to_string(h / 24) + "d"
                       : std::to_string(h / 24) + "d" + std::to_string(h % 24) + "h";
  if (h < 24 * 365 * 2) return std::to_string(h / 24) + "d";
  long y = h / (24 * 365);
  if (h < 24 * 365 * 8) return std::to_string(y) + "y" + std::to_string((h / 24) % 365) + "d";
  return std::to_string(y) + "y";
}

Json table_for(const ResourceType& t, const std::vector<Json>& objects, const std::string& rv,
               const std::string& next_continue, const std::string& include_object) {
  Json defs = Json::array();
  for (const auto& c : columns(t))
    defs.push_back({{"name", c.name},
                    {"type", c.type},
                    {"format", c.format},
                    {"description", ""},
                    {"priority", c.priority}});
  Json rows = Json::array();
  for (const auto& o : objects) {
    Json row = {{"cells", cells(t, o)}};
    if (include_object == "Object") {
      row["object"] = o;
    } else if (include_object != "None") {
      const Json* meta = at(o, {"metadata"});
      row["object"] = {{"kind", "PartialObjectMetadata"},
                       {"apiVersion", "meta.k8s.io/v1"},
                       {"metadata", meta ? *meta : Json::object()}};
    }
    rows.push_back(std::move(row));
  }
  Json list_meta = Json::object();
  if (!rv.empty()) list_meta["resourceVersion"] = rv;
  if (!next_continue.empty()) list_meta["continue"] = next_continue;
  return {{"kind", "Table"},
          {"apiVersion", "meta.k8s.io/v1"},
          {"metadata", list_meta},
          {"columnDefinitions", defs},
          {"rows", rows}};
}

}  // namespace kpx::apiserver
