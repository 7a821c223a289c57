// `kpx lab demo`: builds a lab, walks every path of the seed article's
// picture of Kubernetes networking through it with real traffic, prints
// which pod answered and what source address it saw, and removes the lab.
#pragma once

#include <ostream>
#include <string>

#include "status/status.h"

namespace kpx::lab {

// Fails (after removing the lab, unless keep) when any path does not work.
Status lab_demo(const std::string& name, bool keep, std::ostream& out);

}  // namespace kpx::lab
