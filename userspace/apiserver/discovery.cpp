#include "apiserver/discovery.h"

#include "apiserver/resources.h"

namespace kpx::apiserver {

namespace {

std::string trim_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string group_version(const GroupVersion& gv) {
  return gv.group.empty() ? gv.version : gv.group + "/" + gv.version;
}

Json api_resource_list(const GroupVersion& gv) {
  Json resources = Json::array();
  const Json verbs = {"create", "delete", "get", "list", "patch", "update", "watch"};
  for (const auto& t : resource_types()) {
    if (t.group != gv.group || t.version != gv.version) continue;
    Json r = {{"name", t.name},
              {"singularName", t.singular},
              {"namespaced", t.namespaced},
              {"kind", t.kind},
              {"verbs", verbs}};
    if (!t.short_names.empty()) r["shortNames"] = t.short_names;
    if (!t.categories.empty()) r["categories"] = t.categories;
    resources.push_back(r);
    if (t.has_status)
      resources.push_back({{"name", t.name + "/status"},
                           {"singularName", ""},
                           {"namespaced", t.namespaced},
                           {"kind", t.kind},
                           {"verbs", {"get", "patch", "update"}}});
  }
  return {{"kind", "APIResourceList"},
          {"apiVersion", "v1"},
          {"groupVersion", group_version(gv)},
          {"resources", resources}};
}

Json api_group(const std::string& group) {
  Json versions = Json::array();
  for (const auto& gv : group_versions())
    if (gv.group == group) versions.push_back({{"groupVersion", group_version(gv)}, {"version", gv.version}});
  return {{"name", group}, {"versions", versions}, {"preferredVersion", versions[0]}};
}

}  // namespace

std::optional<Json> discovery_document(const std::string& raw_path, const std::string& server_address) {
  std::string path = trim_slashes(raw_path);
  if (path == "/version") {
    return Json{{"major", "1"},
                {"minor", "32"},
                {"gitVersion", "v1.32.0-kpx"},
                {"gitCommit", "0000000000000000000000000000000000000000"},
                {"gitTreeState", "clean"},
                {"buildDate", "2024-12-11T00:00:00Z"},
                {"goVersion", "go1.23.3"},
                {"compiler", "gc"},
                {"platform", "linux/amd64"}};
  }
  if (path == "/api") {
    return Json{
        {"kind", "APIVersions"},
        {"versions", {"v1"}},
        {"serverAddressByClientCIDRs", {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", server_address}}}}};
  }
  if (path == "/apis") {
    Json groups = Json::array();
    for (const auto& gv : group_versions()) {
      if (gv.group.empty()) continue;
      bool seen = false;
      for (const auto& g : groups) seen = seen || g["name"] == gv.group;
      if (!seen) groups.push_back(api_group(gv.group));
    }
    return Json{{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}};
  }
  for (const auto& gv : group_versions()) {
    std::string base = gv.group.empty() ? "/api/" + gv.version : "/apis/" + gv.group + "/" + gv.version;
    if (path == base) return api_resource_list(gv);
    if (!gv.group.empty() && path == "/apis/" + gv.group) {
      Json g = api_group(gv.group);
      Json doc = {{"kind", "APIGroup"}, {"apiVersion", "v1"}};
      for (auto& [k, v] : g.items()) doc[k] = v;
      return doc;
    }
  }
  return std::nullopt;
}

}  // namespace kpx::apiserver
