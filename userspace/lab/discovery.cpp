#include "lab/discovery.h"

#include <algorithm>

namespace kpx::lab {

// TEMPORARY (replaced by the full version on the lab-ctl branch).
std::vector<std::string> service_env(const std::vector<nlohmann::json>& services) {
  std::vector<std::string> env;
  for (const auto& s : services) {
    std::string ip = s["spec"].value("clusterIP", "");
    if (ip.empty() || ip == "None") continue;
    std::string n = s["metadata"].value("name", "");
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return c == '-' ? '_' : std::toupper(c); });
    auto ports = s["spec"].value("ports", nlohmann::json::array());
    if (ports.empty()) continue;
    env.push_back(n + "_SERVICE_HOST=" + ip);
    env.push_back(n + "_SERVICE_PORT=" + std::to_string(ports[0].value("port", 0)));
  }
  return env;
}

}  // namespace kpx::lab
