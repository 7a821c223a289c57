// Kubernetes YAML for `kpx lab apply -f` and the lab's own objects: decoding
// (multi-document YAML, and `kind: List`) and create-or-update against the
// API server, as `kubectl apply` would for the kinds the lab serves.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::k8s {
class Client;
}

namespace kpx::lab {

// Every document, as JSON (YAML scalars typed as YAML 1.2's core schema
// types them; quoted ones stay strings). Errors name the document.
Result<std::vector<nlohmann::json>> parse_manifests(const std::string& yaml);

// The collection path of an object: "/api/v1/namespaces/default/services".
// Namespaced kinds without metadata.namespace go to "default".
Result<std::string> collection_path(const nlohmann::json& obj);

enum class Applied { kCreated, kConfigured, kUnchanged };
// POST; when the object exists, a merge PATCH with what the manifest says.
Result<Applied> apply_object(k8s::Client& client, const nlohmann::json& obj);
std::string describe(const nlohmann::json& obj);  // "service/web"

}  // namespace kpx::lab
