// Env-style Service discovery, as the kubelet gives every container.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kpx::lab {

std::vector<std::string> service_env(const std::vector<nlohmann::json>& services_in_namespace);

}  // namespace kpx::lab
