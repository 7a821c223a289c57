#include "apiserver/resources.h"

namespace kpx::apiserver {

namespace {

std::vector<std::string_view> split_path(std::string_view p) {
  std::vector<std::string_view> parts;
  while (!p.empty()) {
    size_t s = p.find('/');
    std::string_view part = p.substr(0, s);
    if (!part.empty()) parts.push_back(part);
    if (s == std::string_view::npos) break;
    p.remove_prefix(s + 1);
  }
  return parts;
}

}  // namespace

const std::vector<ResourceType>& resource_types() {
  static const std::vector<ResourceType> types = {
      {"services", "service", "Service", "", "v1", true, true, {"svc"}, {"all"}},
      {"endpointslices", "endpointslice", "EndpointSlice", "discovery.k8s.io", "v1", true, false, {}, {}},
      {"nodes", "node", "Node", "", "v1", false, true, {"no"}, {}},
      {"namespaces", "namespace", "Namespace", "", "v1", false, true, {"ns"}, {}},
      {"pods", "pod", "Pod", "", "v1", true, true, {"po"}, {"all"}},
  };
  return types;
}

const ResourceType* find_resource(std::string_view group, std::string_view version, std::string_view name) {
  for (const auto& t : resource_types())
    if (t.group == group && t.version == version && t.name == name) return &t;
  return nullptr;
}

const ResourceType& namespaces_type() { return *find_resource("", "v1", "namespaces"); }

std::vector<GroupVersion> group_versions() { return {{"", "v1"}, {"discovery.k8s.io", "v1"}}; }

PathMatch parse_resource_path(std::string_view path, ResourcePath* out) {
  auto parts = split_path(path);
  std::string_view group, version;
  size_t i;
  if (parts.size() >= 3 && parts[0] == "api") {
    version = parts[1];
    i = 2;
  } else if (parts.size() >= 4 && parts[0] == "apis") {
    group = parts[1];
    version = parts[2];
    i = 3;
  } else {
    return PathMatch::kOther;
  }
  ResourcePath r;
  if (parts[i] == "watch") {
    r.watch_prefix = true;
    ++i;
  }
  auto rest = std::vector<std::string_view>(parts.begin() + static_cast<long>(i), parts.end());
  // namespaces/{ns}/{resource}... unless it is the namespace object itself
  // (namespaces/{name} or namespaces/{name}/status).
  if (rest.size() >= 3 && rest[0] == "namespaces" && rest[2] != "status" && rest[2] != "finalize") {
    r.ns = std::string(rest[1]);
    rest.erase(rest.begin(), rest.begin() + 2);
  }
  if (rest.empty() || rest.size() > 3) return PathMatch::kUnknown;
  r.type = find_resource(group, version, rest[0]);
  if (!r.type) return PathMatch::kUnknown;
  if (!r.ns.empty() && !r.type->namespaced) return PathMatch::kUnknown;
  if (rest.size() >= 2) r.name = std::string(rest[1]);
  if (rest.size() == 3) {
    if (rest[2] != "status" || !r.type->has_status || r.watch_prefix) return PathMatch::kUnknown;
    r.subresource = "status";
  }
  *out = std::move(r);
  return PathMatch::kResource;
}

}  // namespace kpx::apiserver
