// One writer per instance: the process that changes an instance's maps
// (a running agent, or one CLI write) holds an exclusive flock on its pin
// directory, so two writers never interleave a generation flip or hand out
// the same backend id.
#pragma once

#include <string>

#include "bpf/fd.h"
#include "status/status.h"

namespace kpx::bpf {

// Take the lock without waiting; the directory must exist. Fails with a
// message naming the directory when another process holds it.
Result<UniqueFd> lock_pin_dir(const std::string& pin_dir, const std::string& holder_hint);

}  // namespace kpx::bpf
