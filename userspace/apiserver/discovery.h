// The discovery documents clients read before anything else: /api, /apis,
// /api/v1, /apis/{group}[/{version}] and /version. Only the plain (legacy)
// forms: a client asking for aggregated discovery
// (as=APIGroupDiscoveryList) gets these and falls back, as client-go does.
#pragma once

#include <optional>
#include <string>

#include "apiserver/api_status.h"

namespace kpx::apiserver {

// The document for a discovery path, or nullopt when path is not one.
// server_address: "127.0.0.1:PORT", for serverAddressByClientCIDRs.
std::optional<Json> discovery_document(const std::string& path, const std::string& server_address);

}  // namespace kpx::apiserver
