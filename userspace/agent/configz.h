// What the metrics server's /configz shows: the effective configuration,
// as kube-proxy's configz does (one object per configuration group): the
// KubeProxyConfiguration fields kpx honours under "kubeproxy.config.k8s.io",
// and kpx's own settings under "kpx".
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/options.h"

namespace kpx::agent {

// As Go's time.Duration prints: "0s", "250ms", "1.5s", "1m30s", "24h0m0s".
std::string format_go_duration(std::chrono::milliseconds d);

nlohmann::json configz(const Options& o);

}  // namespace kpx::agent
