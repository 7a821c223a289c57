// The resource types the server serves and how request paths name them:
// /api/v1/[namespaces/{ns}/]{resource}[/{name}[/status]] and the same under
// /apis/{group}/{version}, plus the deprecated /watch/ prefix.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kpx::apiserver {

struct ResourceType {
  std::string name;      // plural: "services"
  std::string singular;  // "service"
  std::string kind;      // "Service"
  std::string group;     // "" (core) or "discovery.k8s.io"
  std::string version;   // "v1"
  bool namespaced = true;
  bool has_status = false;  // a /status subresource
  std::vector<std::string> short_names;
  std::vector<std::string> categories;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  std::string list_kind() const { return kind + "List"; }
  // As the real server names it in messages: "services", "endpointslices.discovery.k8s.io".
  std::string qualified() const { return group.empty() ? name : name + "." + group; }
};

// Services, EndpointSlices, Nodes, Namespaces, Pods.
const std::vector<ResourceType>& resource_types();
const ResourceType* find_resource(std::string_view group, std::string_view version, std::string_view name);
const ResourceType& namespaces_type();

// The group versions served: "v1" (core) and "discovery.k8s.io/v1".
struct GroupVersion {
  std::string group, version;
};
std::vector<GroupVersion> group_versions();

struct ResourcePath {
  const ResourceType* type = nullptr;
  std::string ns;             // "" for cluster-scoped types or all namespaces
  std::string name;           // "" for the collection
  std::string subresource;    // "" or "status"
  bool watch_prefix = false;  // /api/v1/watch/...: a watch whatever the query says
};

enum class PathMatch {
  kResource,  // a resource path, filled in
  kUnknown,   // under /api or /apis but no such resource or subresource: 404
  kOther,     // not a resource path at all (discovery, health, ...)
};
PathMatch parse_resource_path(std::string_view path, ResourcePath* out);

}  // namespace kpx::apiserver
