// Env-style Service discovery: the variables the kubelet puts in every
// container's environment for the Services of its namespace
// (REDIS_MASTER_SERVICE_HOST=10.0.0.11, the Docker-links REDIS_MASTER_PORT...).
#pragma once

#include <string>
#include <vector>

#include "apiserver/api_status.h"

namespace kpx::lab {

// "NAME=value" lines for `services` (the Pod's namespace's; with
// enableServiceLinks false, pass only the default namespace's `kubernetes`
// Service, as the kubelet does). Services without a ClusterIP (headless,
// ExternalName, not yet allocated) are skipped. Per Service, in the kubelet's
// order: <N>_SERVICE_HOST, <N>_SERVICE_PORT (first port), <N>_SERVICE_PORT_<PORTNAME>
// (named ports), <N>_PORT (first port, proto://ip:port), then per port
// <N>_PORT_<port>_<PROTO> and its _PROTO, _PORT, _ADDR; N is the name upper-cased
// with '-' as '_'. Services in name order; a later duplicate name wins, as in
// the kubelet's map.
std::vector<std::string> service_env(const std::vector<apiserver::Json>& services_in_namespace);

}  // namespace kpx::lab
