// Timestamps as the Kubernetes API writes them.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace kpx::k8s {

// RFC 3339 with optional fractional seconds (Go's time.RFC3339Nano, which
// the API's clients parse with): "2024-05-01T10:00:00Z",
// "2024-05-01T10:00:00.123456789+02:00". Anything else (a missing offset,
// a 61st second, February 30th, trailing text) is nullopt.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s);

}  // namespace kpx::k8s
