// The `kpx` command line. run() is main() without the process: tests call
// it with their own streams.
#pragma once

#include <ostream>

namespace kpx::cli {

// Exit codes: 0 success, 1 the operation failed, 2 bad usage or input (the
// maps are then left as they were).
int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace kpx::cli
