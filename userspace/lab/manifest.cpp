#include "lab/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <regex>

#include "apiserver/api_status.h"
#include "k8s/client.h"

namespace kpx::lab {

using nlohmann::json;

namespace {

json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: a string whatever it looks like
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  static const std::regex int_re("[-+]?[0-9]+"), float_re("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (std::regex_match(s, int_re)) {
    try {
      return std::stoll(s);
    } catch (...) {
      return s;
    }
  }
  if (std::regex_match(s, float_re)) return std::stod(s);
  return s;
}

json to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = to_json(kv.second);
      return o;
    }
  }
  return nullptr;
}

// metadata.<key> when it is a string, else "".
std::string meta_string(const json& obj, const char* key) {
  return apiserver::string_at(apiserver::member(obj, "metadata"), key);
}

struct KindInfo {
  const char* kind;
  const char* api_version;
  const char* resource;
  bool namespaced;
};
constexpr KindInfo kKinds[] = {
    {"Service", "v1", "services", true},
    {"Pod", "v1", "pods", true},
    {"Namespace", "v1", "namespaces", false},
    {"Node", "v1", "nodes", false},
    {"EndpointSlice", "discovery.k8s.io/v1", "endpointslices", true},
};

}  // namespace

Result<std::vector<json>> parse_manifests(const std::string& yaml) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml);
  } catch (const YAML::Exception& e) {
    return invalid_argument("invalid YAML: " + std::string(e.what()));
  }
  std::vector<json> out;
  int i = 0;
  for (const auto& d : docs) {
    ++i;
    if (d.IsNull()) continue;
    json obj = to_json(d);
    if (!obj.is_object() || !obj.contains("kind") || !obj["kind"].is_string())
      return invalid_argument("document " + std::to_string(i) + ": not a Kubernetes object (no kind)");
    if (obj["kind"] == "List") {
      if (!obj.contains("items") || !obj["items"].is_array())
        return invalid_argument("document " + std::to_string(i) + ": a List needs an items sequence");
      for (const auto& item : obj["items"]) {
        if (!item.is_object() || !item.contains("kind") || !item["kind"].is_string())
          return invalid_argument("document " + std::to_string(i) + ": a List item is not a Kubernetes object");
        out.push_back(item);
      }
      continue;
    }
    out.push_back(std::move(obj));
  }
  return out;
}

Result<std::string> collection_path(const json& obj) {
  auto field = [&](const char* f) { return obj.contains(f) && obj[f].is_string() ? obj[f].get<std::string>() : ""; };
  std::string kind = field("kind"), av = field("apiVersion");
  if (obj.contains("metadata") && !obj["metadata"].is_object())
    return invalid_argument(describe(obj) + ": metadata must be a mapping");
  for (const char* f : {"name", "namespace"})
    if (obj.contains("metadata") && obj["metadata"].contains(f) && !obj["metadata"][f].is_string())
      return invalid_argument(describe(obj) + ": metadata." + f + " must be a string (quote it)");
  for (const auto& k : kKinds) {
    if (kind != k.kind) continue;
    if (av != k.api_version)
      return invalid_argument(describe(obj) + ": apiVersion '" + av + "' is not served (use " + k.api_version + ")");
    std::string base = std::string(k.api_version) == "v1" ? "/api/v1" : std::string("/apis/") + k.api_version;
    if (!k.namespaced) return base + "/" + k.resource;
    std::string ns = meta_string(obj, "namespace");
    if (ns.empty()) ns = "default";
    return base + "/namespaces/" + ns + "/" + k.resource;
  }
  return invalid_argument("kind '" + kind + "' is not served by the lab (Service, Pod, Namespace, Node, EndpointSlice)");
}

std::string describe(const json& obj) {
  std::string kind = obj.is_object() && obj.contains("kind") && obj["kind"].is_string() ? obj["kind"].get<std::string>()
                                                                                         : "object";
  std::transform(kind.begin(), kind.end(), kind.begin(), [](unsigned char c) { return std::tolower(c); });
  return kind + "/" + meta_string(obj, "name");
}

Result<Applied> apply_object(k8s::Client& client, const json& obj) {
  auto path = collection_path(obj);
  if (!path) return path.error();
  if (meta_string(obj, "name").empty()) return invalid_argument(describe(obj) + ": metadata.name is required");
  auto created = client.send("POST", *path, obj);
  if (created) return Applied::kCreated;
  if (created.error().code != 409) return created.error().to_error();
  std::string item = *path + "/" + meta_string(obj, "name");
  auto before = client.get(item);
  if (!before) return before.error().to_error();
  auto patched = client.send("PATCH", item, obj);
  if (!patched) return patched.error().to_error();
  return meta_string(*patched, "resourceVersion") == meta_string(*before, "resourceVersion")
             ? Applied::kUnchanged
             : Applied::kConfigured;
}

}  // namespace kpx::lab
